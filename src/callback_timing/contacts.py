"""Contacts: phone number -> E.164, country and time zone; industry taxonomy; pseudonyms.

Every function is vectorised over pandas Series and does its per-value Python work once per
*unique* value (a million calls have far fewer distinct phones and industries), then maps the
results back. The clear phone number is only ever handled here and in the loader; what leaves
is ``phone_hash``, a keyed pseudonym (:func:`pseudonymise`).

Examples
--------
>>> import pandas as pd
>>> normalise_industry(pd.Series(["IT Services", " Banking ", "hospital", "?"])).tolist()
['it', 'finance', 'healthcare', 'other']
>>> parse_phones(pd.Series(["+48 512 345 678"]), pd.Series([None]))[
...     ["country", "timezone", "valid"]].values.tolist()
[['PL', 'Europe/Warsaw', True]]
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.resources
import os
import re
import secrets
import zoneinfo
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import phonenumbers
from phonenumbers import timezone as phone_timezone

from callback_timing import config, schema
from callback_timing.schema import ConfigError

# --- industry taxonomy -----------------------------------------------------------------------

#: Free-text industry labels (after :func:`_industry_key`: lower case, punctuation -> space,
#: single spaces) mapped to the taxonomy :data:`callback_timing.schema.INDUSTRIES`. Taxonomy
#: values themselves (also with a space instead of ``_``) map to themselves.
INDUSTRY_SYNONYMS: dict[str, str] = {
    **{name: "it" for name in (
        "it", "i t", "it services", "information technology", "software", "tech",
        "technology", "saas", "ict", "telecom", "telecommunications", "computer", "internet",
    )},
    **{name: "manufacturing" for name in (
        "manufacturer", "industry", "industrial", "production", "factory", "machinery",
    )},
    **{name: "automotive" for name in (
        "car", "cars", "auto", "automobile", "automotive supplier", "car dealer", "motor vehicles",
    )},
    **{name: "retail" for name in (
        "shop", "store", "retailer", "ecommerce", "e commerce", "wholesale", "trade",
    )},
    **{name: "finance" for name in (
        "banking", "bank", "insurance", "financial services", "financial", "fintech",
        "accounting", "investment",
    )},
    **{name: "healthcare" for name in (
        "health care", "health", "hospital", "medical", "pharma", "pharmaceutical", "clinic",
    )},
    **{name: "logistics" for name in (
        "transport", "transportation", "shipping", "freight", "courier", "warehousing",
    )},
    **{name: "construction" for name in ("building", "real estate", "architecture")},
    **{name: "public_sector" for name in (
        "government", "public administration", "public", "municipality", "administration",
        "education", "school", "university",
    )},
    **{name: "hospitality" for name in (
        "hotel", "hotels", "restaurant", "restaurants", "tourism", "travel", "catering",
        "horeca",
    )},
    **{name: "consumer" for name in (
        "private", "b2c", "individual", "private person", "residential", "household",
    )},
    **{name.replace("_", " "): name for name in schema.INDUSTRIES},
}

_NON_WORD = re.compile(r"[\W_]+")


def _industry_key(value: str) -> str:
    return _NON_WORD.sub(" ", value.lower()).strip()


def industry_of(raw: str) -> str:
    """The whole label's synonym, else the first word that is one ("Retail trade" -> retail)."""
    key = _industry_key(raw)
    if key in INDUSTRY_SYNONYMS:
        return INDUSTRY_SYNONYMS[key]
    for word in key.split():
        if word in INDUSTRY_SYNONYMS:
            return INDUSTRY_SYNONYMS[word]
    return "other"


def normalise_industry(values: pd.Series) -> pd.Series:
    """Map free-text industries onto :data:`~callback_timing.schema.INDUSTRIES`.

    Case, surrounding and inner whitespace and punctuation are ignored; synonyms come from
    :data:`INDUSTRY_SYNONYMS`, for the whole label or else its first word that is one.
    Unknown or missing values become ``"other"``.

    >>> import pandas as pd
    >>> labels = pd.Series(["Information-Technology", "PUBLIC  sector", "Retail trade", None])
    >>> normalise_industry(labels).tolist()
    ['it', 'public_sector', 'retail', 'other']
    """
    uniques = pd.unique(values.dropna().astype(str))
    lookup = {raw: industry_of(raw) for raw in uniques}
    out = values.map(lookup).astype("str").fillna("other")
    return out.rename(values.name)


# --- time zones ------------------------------------------------------------------------------

#: Main zone of multi-zone countries where the first zone of tzdata's ``zone.tab`` is not the
#: one most people live in.
MAIN_ZONE_OVERRIDES: dict[str, str] = {
    "AU": "Australia/Sydney",
    "BR": "America/Sao_Paulo",
    "CA": "America/Toronto",
    "PS": "Asia/Hebron",
    "RU": "Europe/Moscow",
    "UA": "Europe/Kyiv",
    "UZ": "Asia/Tashkent",
}


@lru_cache(maxsize=1)
def _zone_tab_all() -> dict[str, tuple[str, ...]]:
    """The zones tzdata's ``zone.tab`` lists per country, in its order."""
    try:
        text = (importlib.resources.files("tzdata") / "zoneinfo" / "zone.tab").read_text()
    except (ModuleNotFoundError, FileNotFoundError):  # pragma: no cover - system tz database
        path = Path("/usr/share/zoneinfo/zone.tab")
        text = path.read_text() if path.exists() else ""
    zones: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            parts = line.split("\t")
            zones.setdefault(parts[0], []).append(parts[2])
    return {country: tuple(names) for country, names in zones.items()}


@lru_cache(maxsize=1)
def _zone_tab() -> dict[str, str]:
    """First zone listed per country in tzdata's ``zone.tab``."""
    return {country: zones[0] for country, zones in _zone_tab_all().items()}


@lru_cache(maxsize=1)
def _available_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def is_valid_zone(name: object) -> bool:
    """Whether ``name`` is an IANA zone name known to :mod:`zoneinfo`."""
    return isinstance(name, str) and name in _available_zones()


@lru_cache(maxsize=1)
def _zones_by_lower_name() -> dict[str, str]:
    return {name.lower(): name for name in _available_zones()}


def canonical_zone(values: pd.Series) -> pd.Series:
    """IANA zone names matched case-insensitively; unknown names become missing.

    >>> import pandas as pd
    >>> canonical_zone(pd.Series([" europe/warsaw", "Mars/Base", None])).tolist()
    ['Europe/Warsaw', nan, nan]
    """
    lookup = _zones_by_lower_name()
    key = values.astype("str").str.strip().str.lower()
    return key.map(lookup).astype("str").rename(values.name)


def normalise_country(values: pd.Series) -> pd.Series:
    """ISO 3166-1 alpha-2 codes, upper case; codes neither tzdata nor phonenumbers know -> missing.

    >>> import pandas as pd
    >>> normalise_country(pd.Series([" de", "PL", "Germany", None])).tolist()
    ['DE', 'PL', nan, nan]
    """
    code = values.astype("str").str.strip().str.upper()
    return code.where(code.isin(_known_countries())).astype("str").rename(values.name)


def known_country(code: str) -> bool:
    """Whether tzdata or phonenumbers knows the ISO 3166-1 alpha-2 code (any case)."""
    return code.strip().upper() in _known_countries()


@lru_cache(maxsize=1)
def _known_countries() -> frozenset[str]:
    return frozenset(phonenumbers.SUPPORTED_REGIONS) | frozenset(_zone_tab())


@lru_cache(maxsize=1024)
def country_main_timezone(country: str) -> str | None:
    """The zone most of a country's people live in, or ``None`` for an unknown code.

    Rule: :data:`MAIN_ZONE_OVERRIDES` first; otherwise the first zone tzdata's ``zone.tab``
    lists for the country (tzdata orders a country's zones most populous first where geography
    allows); otherwise the single zone of phonenumbers' example number for the region.

    >>> [country_main_timezone(c) for c in ("US", "de", "PL", "GB", "RU", "XX")]
    ['America/New_York', 'Europe/Berlin', 'Europe/Warsaw', 'Europe/London', 'Europe/Moscow', None]
    """
    if not isinstance(country, str):
        return None
    code = country.strip().upper()
    zone = MAIN_ZONE_OVERRIDES.get(code) or _zone_tab().get(code)
    if zone is None:
        example = phonenumbers.example_number(code)
        zones = phone_timezone.time_zones_for_number(example) if example else ()
        zone = zones[0] if len(zones) == 1 else None
    return zone if is_valid_zone(zone) else None


#: The zone most of a US state's people live in, where the ``us`` package lists another first.
STATE_MAIN_ZONE: dict[str, str] = {"IN": "America/Indiana/Indianapolis", "KY": "America/New_York"}


@lru_cache(maxsize=1)
def _state_zones() -> dict[str, tuple[str, ...]]:
    """US state/territory code -> its time zones (the ``us`` package), main zone first."""
    import us

    out = {}
    for state in us.states.STATES_AND_TERRITORIES:
        zones = [z for z in state.time_zones if is_valid_zone(z)]
        main = STATE_MAIN_ZONE.get(state.abbr, zones[0] if zones else None)
        if main is not None:
            out[state.abbr] = (main, *(z for z in zones if z != main))
    return out


@lru_cache(maxsize=1024)
def _offsets(zone: str) -> tuple[float, float]:
    """A zone's UTC offsets in hours mid-January and mid-July (standard and summer time)."""
    import datetime as dt

    tz = zoneinfo.ZoneInfo(zone)
    return tuple(dt.datetime(2026, month, 15, 12, tzinfo=tz).utcoffset().total_seconds() / 3600
                 for month in (1, 7))


@lru_cache(maxsize=4096)
def region_zones(country: str | None, subdivision: str | None = None) -> tuple[str, ...]:
    """The time zones of a contact known only by its country (and subdivision): the main zone
    first, then -- when the region spans several UTC offsets -- the one farthest from it, whose
    calling hours must hold too. ``()`` for an unknown country.

    US states come from the ``us`` package (a contact in Texas may live in Chicago's or
    Denver's time); other countries give their main zone, see :func:`country_main_timezone`.

    >>> region_zones("US", "TX"), region_zones("US", "CA"), region_zones("PL"), region_zones("XX")
    (('America/Chicago', 'America/Denver'), ('America/Los_Angeles',), ('Europe/Warsaw',), ())
    """
    if not isinstance(country, str):
        return ()
    code = country.strip().upper()
    zones = _state_zones().get(subdivision or "", ()) if code == "US" else ()
    if not zones:
        main = country_main_timezone(code)
        return (main,) if main else ()
    home = _offsets(zones[0])
    far = max(zones[1:], key=lambda z: max(abs(a - b) for a, b in zip(_offsets(z), home,
                                                                         strict=True)),
              default=None)
    return (zones[0], far) if far is not None and _offsets(far) != home else (zones[0],)


@lru_cache(maxsize=1024)
def spans_several_offsets(country: str | None) -> bool:
    """Whether tzdata lists zones of different UTC offsets for the country (US, CA, ES, ...).

    >>> spans_several_offsets("US"), spans_several_offsets("PL")
    (True, False)
    """
    zones = _zone_tab_all().get(country or "", ())
    return len({_offsets(z) for z in zones if is_valid_zone(z)}) > 1


@lru_cache(maxsize=1024)
def _subdivision_table(country: str) -> dict[str, str] | None:
    """Upper-cased subdivision code or name -> the code python-holidays uses; ``None`` for a
    country python-holidays does not cover."""
    import holidays

    try:
        calendar = holidays.country_holidays(country)
    except NotImplementedError:
        return None
    table = {name.upper(): code for name, code in
             (getattr(calendar, "subdivisions_aliases", None) or {}).items()}
    table.update({code.upper(): code for code in calendar.subdivisions})
    return table


def subdivision_code(country: str | None, text: str | None) -> str | None:
    """A subdivision as python-holidays and the calling hours know it: ``FL``, ``us-fl`` and
    ``Florida`` -> ``FL``; ``None`` for one its country does not have (or no text). Without a
    country, or for a country python-holidays does not cover, the text upper-cased.

    >>> [subdivision_code("US", s) for s in ("fl", "US-FL", "Florida", "ZZ")]
    ['FL', 'FL', 'FL', None]
    >>> subdivision_code("DE", "by"), subdivision_code(None, " ny ")
    ('BY', 'NY')
    """
    if not isinstance(text, str) or not text.strip():
        return None
    key = text.strip().upper()
    if not isinstance(country, str) or not country.strip():
        return key
    country = country.strip().upper()
    key = key.removeprefix(f"{country}-")
    table = _subdivision_table(country)
    return key if table is None else table.get(key)


def per_place(country: pd.Series, subdivision: pd.Series, func) -> pd.Series:
    """``func(country, subdivision)`` per row (missing: ``None``), called once per distinct
    pair; a text Series on ``subdivision``'s index."""
    key = country.astype("str").fillna("") + "|" + subdivision.astype("str").fillna("")
    found = {k: func(*(part or None for part in k.split("|", 1))) for k in key.unique()}
    return key.map(found).astype("str").rename(subdivision.name)


def normalise_subdivisions(country: pd.Series, subdivision: pd.Series) -> pd.Series:
    """:func:`subdivision_code` per row, computed once per distinct (country, text) pair."""
    return per_place(country, subdivision, subdivision_code)


# --- phone numbers ---------------------------------------------------------------------------

PHONE_COLUMNS: tuple[str, ...] = ("e164", "country", "timezone", "tz_ambiguous", "valid")
_NO_PHONE = (None, None, None, False, False)


def _parse_one(phone: str, region: str | None) -> tuple:
    try:
        number = phonenumbers.parse(phone, region)
    except phonenumbers.NumberParseException:
        return _NO_PHONE
    # number_type is UNKNOWN exactly when is_valid_number is False; asking it once and then
    # doing what timezone.time_zones_for_number does saves a second, costly type look-up
    kind = phonenumbers.number_type(number)
    if kind == phonenumbers.PhoneNumberType.UNKNOWN:
        return _NO_PHONE
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    country = phonenumbers.region_code_for_number(number)
    country = country if country and country.isalpha() else None  # "001": non-geographic
    if phonenumbers.is_number_type_geographical(kind, number.country_code):
        zones = phone_timezone.time_zones_for_geographical_number(number)
    else:
        zones = phone_timezone.time_zones_for_number(number)
    zones = [z for z in zones if is_valid_zone(z)]
    if len(zones) == 1:
        return e164, country, zones[0], False, True
    main = country_main_timezone(country) if country else None
    return e164, country, main or (zones[0] if zones else None), bool(zones or main), True


def parse_phones(phone: pd.Series, country: pd.Series | None = None) -> pd.DataFrame:
    """Parse phone numbers (E.164, or national format with the row's ``country``).

    Parameters
    ----------
    phone : Series of phone numbers as text; missing values give an invalid, empty row.
    country : Series of ISO alpha-2 codes aligned with ``phone``, used only for numbers
        without a leading ``+``.

    Returns
    -------
    DataFrame with the index of ``phone`` and columns ``e164``, ``country`` (region of the
    number), ``timezone``, ``tz_ambiguous`` (the number's region spans several zones, so the
    country's main zone, see :func:`country_main_timezone`, was used) and ``valid``.
    Each distinct (number, country) pair is parsed once.

    >>> import pandas as pd
    >>> out = parse_phones(pd.Series(["0151 23456789", "+1 800 555 0100", "12"]),
    ...                    pd.Series(["DE", None, "PL"]))
    >>> out[["e164", "timezone", "tz_ambiguous", "valid"]].values.tolist()
    [['+4915123456789', 'Europe/Berlin', False, True], \
['+18005550100', 'America/New_York', True, True], [nan, nan, False, False]]
    """
    text = phone.astype("str").str.strip()
    text = text.where(text != "")
    if country is None:
        region = pd.Series(np.nan, index=phone.index, dtype="str")
    else:
        region = country.astype("str").str.strip().str.upper()
        region = region.where(region.isin(phonenumbers.SUPPORTED_REGIONS))
    # the region only matters for numbers written without the international "+"
    region = region.where(~text.str.startswith("+", na=False))
    phone_codes, phones = pd.factorize(text)
    region_codes, regions = pd.factorize(region)
    pair = phone_codes.astype(np.int64) * (len(regions) + 1) + region_codes + 1
    pairs, inverse = np.unique(pair, return_inverse=True)
    parsed = [
        _parse_one(phones[p], regions[r - 1] if r else None) if p >= 0 else _NO_PHONE
        for p, r in zip(*np.divmod(pairs, len(regions) + 1), strict=True)
    ]
    table = pd.DataFrame(parsed or [_NO_PHONE], columns=list(PHONE_COLUMNS)).astype(
        {"e164": "str", "country": "str", "timezone": "str", "tz_ambiguous": bool, "valid": bool})
    return table.take(inverse).set_axis(phone.index)


# --- pseudonymisation ------------------------------------------------------------------------

#: Length of a pseudonym (hex characters of the HMAC-SHA256 digest; 80 bits).
PSEUDONYM_HEX_CHARS = 20


def load_key() -> bytes:
    """The current pseudonymisation key (the first of :func:`load_keys`)."""
    return load_keys()[0]


def load_keys(create: bool = True) -> list[bytes]:
    """The pseudonymisation keys, the current one first.

    ``$CALLBACK_TIMING_PSEUDONYM_KEY`` (any string; one key) when set; else the key file
    ``$CALLBACK_TIMING_PSEUDONYM_KEY_FILE`` (a mounted secret) or ``config.home_dir() /
    "pseudonym.key"``, the latter created once with 256 random bits and file mode 0600. A
    key file holds one key per line, the current one first: to rotate, put a new key on the
    first line and keep the earlier ones below it, so that pseudonyms made with them (the
    forget list of erased contacts) still match. ``create=False``: a missing key file is a
    ``ConfigError`` (matching pseudonyms made elsewhere needs their key, not a new one).
    """
    env = os.environ.get(config.PSEUDONYM_KEY_ENV)
    if env:
        return [env.encode()]
    secret = os.environ.get(config.PSEUDONYM_KEY_FILE_ENV)
    if secret:
        try:
            return _keys_of(Path(secret).read_bytes(), Path(secret))
        except OSError as exc:
            raise ConfigError(f"{config.PSEUDONYM_KEY_FILE_ENV}: cannot read {secret}: "
                              f"{exc.strerror or exc}") from None
    path = config.home_dir() / "pseudonym.key"
    if not create and not path.is_file():
        raise ConfigError(f"no pseudonymisation key: set {config.PSEUDONYM_KEY_ENV}, "
                          f"{config.PSEUDONYM_KEY_FILE_ENV} or {path} to the server's key")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _keys_of(path.read_bytes(), path)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    return _keys_of(path.read_bytes(), path)


def _keys_of(text: bytes, path: Path) -> list[bytes]:
    keys = [line.strip() for line in text.splitlines() if line.strip()]
    if not keys:
        raise ConfigError(f"pseudonymisation key file {path} is empty")
    return keys


def pseudonymise(values: pd.Series, key: bytes) -> pd.Series:
    """Keyed pseudonyms: HMAC-SHA256 hex, first :data:`PSEUDONYM_HEX_CHARS` characters.

    Equal inputs give equal pseudonyms under the same key; missing stays missing.

    >>> import pandas as pd
    >>> out = pseudonymise(pd.Series(["+48512345678", None, "+48512345678"]), b"k")
    >>> out.str.len().tolist(), out[0] == out[2], out.isna().tolist()
    ([20.0, nan, 20.0], True, [False, True, False])
    """
    uniques = pd.unique(values.dropna().astype(str))
    lookup = {
        v: hmac.new(key, v.encode(), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_CHARS]
        for v in uniques
    }
    return values.map(lookup).astype("str").rename(values.name)
