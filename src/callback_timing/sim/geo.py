"""Where synthetic contacts live: countries, subdivisions, time zones and phone numbers.

Every region has its own time zone and dialling prefixes, chosen so that ``phonenumbers``
parses a generated number as valid for the region's country and, in the US, maps the area
code to the region's zone (212 -> New York, 602 -> Phoenix, ...).

Examples
--------
>>> import numpy as np
>>> import phonenumbers
>>> ny = [r.subdivision for r in REGIONS].index("NY")
>>> phones = make_phones(np.array([0, ny]), np.array([True, False]), np.random.default_rng(1))
>>> parsed = [phonenumbers.parse(p) for p in phones]
>>> [phonenumbers.region_code_for_number(p) for p in parsed]
['PL', 'US']
>>> all(phonenumbers.is_valid_number(p) for p in parsed)
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import phonenumbers


@dataclass(frozen=True)
class Region:
    """A (country, subdivision) with its zone, share of contacts and phone prefixes.

    ``mobile`` and ``landline`` hold national prefixes; ``length`` is the full national
    number length for each kind.
    """

    country: str
    subdivision: str | None
    timezone: str
    weight: float
    landline: tuple[str, ...]
    landline_length: int
    mobile: tuple[str, ...]
    mobile_length: int


_PL_MOBILE = ("50", "51", "53", "57", "60", "66", "69", "72", "73", "78", "79", "88")
_DE_MOBILE = ("151", "152", "157", "160", "170", "171", "175", "176")
_GB_MOBILE = ("74", "75", "77", "78", "79")

#: The synthetic world's regions (weights sum to 1).
REGIONS: tuple[Region, ...] = (
    Region("PL", None, "Europe/Warsaw", 0.30, ("22", "12", "61", "71", "58"), 9,
           _PL_MOBILE, 9),
    Region("DE", "BY", "Europe/Berlin", 0.10, ("89", "911"), 10, _DE_MOBILE, 11),
    Region("DE", "BE", "Europe/Berlin", 0.07, ("30",), 10, _DE_MOBILE, 11),
    Region("DE", "NW", "Europe/Berlin", 0.08, ("221", "211"), 10, _DE_MOBILE, 11),
    Region("GB", "ENG", "Europe/London", 0.12, ("207", "203", "161"), 10, _GB_MOBILE, 10),
    Region("GB", "SCT", "Europe/London", 0.03, ("131", "141"), 10, _GB_MOBILE, 10),
    Region("US", "NY", "America/New_York", 0.08, ("212", "646", "718", "917"), 10,
           ("212", "646", "718", "917"), 10),
    Region("US", "IL", "America/Chicago", 0.06, ("312", "773", "847"), 10,
           ("312", "773", "847"), 10),
    Region("US", "CO", "America/Denver", 0.04, ("303", "720", "719"), 10,
           ("303", "720", "719"), 10),
    Region("US", "AZ", "America/Phoenix", 0.04, ("602", "480", "520"), 10,
           ("602", "480", "520"), 10),
    Region("US", "CA", "America/Los_Angeles", 0.08, ("415", "213", "310", "650"), 10,
           ("415", "213", "310", "650"), 10),
)
_CALLING_CODE = {"PL": "48", "DE": "49", "GB": "44", "US": "1"}
_MAX_TRIES = 50


def region_weights() -> np.ndarray:
    """Share of contacts per region, aligned with :data:`REGIONS`."""
    w = np.array([r.weight for r in REGIONS])
    return w / w.sum()


def _candidates(region: Region, mobile: np.ndarray, rng: np.random.Generator) -> list[str]:
    n = len(mobile)
    mob = np.array(region.mobile, dtype=object)[rng.integers(0, len(region.mobile), n)]
    land = np.array(region.landline, dtype=object)[rng.integers(0, len(region.landline), n)]
    prefixes = np.where(mobile, mob, land)
    lengths = np.where(mobile, region.mobile_length, region.landline_length)
    # first subscriber digit 2-9 keeps US exchanges and most European ranges valid
    digits = rng.integers(0, 10, (n, 12), dtype=np.uint8)
    digits[:, 0] = rng.integers(2, 10, n, dtype=np.uint8)
    subscriber = (digits + ord("0")).view("S12").ravel().astype(str)
    cc = _CALLING_CODE[region.country]
    return [
        f"+{cc}{prefix}{sub[: length - len(prefix)]}"
        for prefix, sub, length in zip(prefixes, subscriber, lengths.tolist(), strict=True)
    ]


def _valid(number: str, country: str) -> bool:
    parsed = phonenumbers.parse(number, None)
    return phonenumbers.is_valid_number(parsed) and (
        phonenumbers.region_code_for_number(parsed) == country
    )


def make_phones(region: np.ndarray, mobile: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """E.164 numbers valid for each contact's region (index into :data:`REGIONS`).

    Candidates are drawn per region and re-drawn until ``phonenumbers`` accepts them.
    """
    phones = np.empty(len(region), dtype=object)
    todo = np.arange(len(region))
    for _ in range(_MAX_TRIES):
        if len(todo) == 0:
            return phones
        for code in np.unique(region[todo]):
            rows = todo[region[todo] == code]
            phones[rows] = _candidates(REGIONS[code], mobile[rows], rng)
        ok = np.array([_valid(phones[i], REGIONS[region[i]].country) for i in todo], dtype=bool)
        todo = todo[~ok]
    raise RuntimeError(f"could not generate valid phone numbers for {len(todo)} contacts")
