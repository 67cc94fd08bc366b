"""Make a clean synthetic export look like a real CRM export: inject known dirt.

A share ``rate`` of the rows gets exactly one kind of dirt each (kinds in equal numbers,
variants in turn), so a loader's rejects and repairs can be checked against the log.

Kinds
-----
``duplicate``            an exact copy of the row right after it (the loader drops it)
``bad_timestamp``        ``called_at`` unparseable, empty, or naive (no offset)
``bad_outcome``          outcome not in the vocabulary (``maybe``, ``ans``, empty)
``mixed_case_outcome``   valid outcome in other case (``Answered``, ``NO_ANSWER``)
``missing_tz_country``   no ``timezone`` and no ``country``; the phone still tells both
``invalid_phone``        invalid phone and no ``country``/``timezone`` (a reject)
``unknown_timezone``     a zone name that does not exist (``Europe/Wrsaw``)
``empty_contact_id``     empty ``contact_id`` (a reject)
``messy_industry``       the industry as people type it (``" it services "``, ``Banking``)

Examples
--------
>>> import pandas as pd
>>> frame = pd.DataFrame({"contact_id": ["c-1"] * 3, "called_at": ["2026-03-02T09:00:00Z"] * 3,
...                       "outcome": ["answered"] * 3, "industry": ["it"] * 3,
...                       "call_id": ["x-1", "x-2", "x-3"], "phone": ["+48512345678"] * 3,
...                       "country": ["PL"] * 3, "timezone": ["Europe/Warsaw"] * 3})
>>> dirty, log = inject_dirt(frame, 0.0, np.random.default_rng(0))
>>> len(dirty), len(log)
(3, 0)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

KINDS: tuple[str, ...] = (
    "duplicate", "bad_timestamp", "bad_outcome", "mixed_case_outcome", "missing_tz_country",
    "invalid_phone", "unknown_timezone", "empty_contact_id", "messy_industry",
)
BAD_TIMESTAMPS = ("2026-13-45T25:00", "yesterday", "")  # plus the row's own time, naive
BAD_OUTCOMES = ("maybe", "ans", "")
INVALID_PHONES = ("+48 123", "12345", "000000000", "+1 555 0100", "call me later")
UNKNOWN_TIMEZONES = ("Europe/Wrsaw", "Mars/Olympus", "Europe/Berlim", "America/NewYork")
MESSY_INDUSTRY: dict[str, tuple[str, ...]] = {
    "it": ("IT", " it services ", "Information Technology", "Software"),
    "manufacturing": ("Manufacturing ", "MANUFACTURING", "manufacturer"),
    "automotive": ("Automotive", "automotive supplier", "AUTO"),
    "retail": ("RETAIL", "Retail trade", "shop"),
    "finance": ("Banking", "Financial Services", "insurance", "FINANCE"),
    "healthcare": ("health care", "Healthcare", "hospital"),
    "logistics": ("Logistics ", "transport", "Shipping"),
    "construction": ("Construction", " building "),
    "public_sector": ("Public Sector", "government", "Public administration"),
    "hospitality": ("Hospitality", "hotels", "Restaurant"),
    "consumer": ("Consumer", "private", "B2C"),
    "other": ("Other", "agriculture", "n/a"),
}


def _cycle(options: tuple[str, ...], n: int) -> np.ndarray:
    return np.array(options, dtype=object)[np.arange(n) % len(options)]


def inject_dirt(
    frame: pd.DataFrame, rate: float, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return a dirty copy of a clean export and the log of what was done.

    Parameters
    ----------
    frame : clean export (text columns of the call-history schema).
    rate : share of rows made dirty, 0 to 1.
    rng : random generator.

    Returns
    -------
    (dirty frame, log) where the log has columns ``row`` (position in the dirty frame),
    ``call_id``, ``kind`` (see :data:`KINDS`) and ``value`` (what was written).
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"dirt_rate must be between 0 and 1, got {rate}")
    n = len(frame)
    count = int(round(rate * n))
    log_columns = ["row", "call_id", "kind", "value"]
    if count == 0:
        return frame.copy(), pd.DataFrame({c: pd.Series(dtype=object) for c in log_columns})
    rows = np.sort(rng.choice(n, count, replace=False))
    kinds = np.array(KINDS, dtype=object)[rng.permutation(np.arange(count) % len(KINDS))]
    out = frame.copy()
    values = np.empty(count, dtype=object)

    def put(kind: str, column: str, new, logged: bool = True) -> None:
        pick = kinds == kind
        out.loc[rows[pick], column] = new
        if logged:
            values[pick] = new

    def where(kind: str) -> np.ndarray:
        return rows[kinds == kind]

    k = len(where("bad_timestamp"))
    naive = out["called_at"].to_numpy(object)[where("bad_timestamp")]
    stamps = _cycle((*BAD_TIMESTAMPS, "naive"), k)
    stamps[stamps == "naive"] = [s[:19] for s in naive[stamps == "naive"]]
    put("bad_timestamp", "called_at", stamps)
    put("bad_outcome", "outcome", _cycle(BAD_OUTCOMES, len(where("bad_outcome"))))
    mixed = out["outcome"].to_numpy(object)[where("mixed_case_outcome")]
    put("mixed_case_outcome", "outcome",
        [o.upper() if i % 2 else o.title() for i, o in enumerate(mixed)])
    put("missing_tz_country", "country", None)
    put("missing_tz_country", "timezone", None)
    put("invalid_phone", "country", None, logged=False)
    put("invalid_phone", "timezone", None, logged=False)
    put("invalid_phone", "phone", _cycle(INVALID_PHONES, len(where("invalid_phone"))))
    put("unknown_timezone", "timezone", _cycle(UNKNOWN_TIMEZONES, len(where("unknown_timezone"))))
    put("empty_contact_id", "contact_id", "")
    industry = out["industry"].to_numpy(object)[where("messy_industry")]
    put("messy_industry", "industry",
        [MESSY_INDUSTRY[x][i % len(MESSY_INDUSTRY[x])] for i, x in enumerate(industry)])

    dup = np.zeros(n, dtype=np.int64)
    dup[where("duplicate")] = 1
    out = out.iloc[np.repeat(np.arange(n), 1 + dup)].reset_index(drop=True)
    new_pos = np.cumsum(1 + dup) - 1 - dup  # position of each original row
    log_rows = new_pos[rows] + (kinds == "duplicate")
    values[kinds == "duplicate"] = None
    log = pd.DataFrame(
        {"row": log_rows, "call_id": frame["call_id"].to_numpy(object)[rows], "kind": kinds,
         "value": values}
    )
    return out, log
