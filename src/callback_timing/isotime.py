"""Timestamps as the contract gives them: ISO 8601 only, never a guess.

``pd.Timestamp("04.05.2026 10:00")`` reads 5 April (month first); a call centre in Europe
meant 4 May. Requests, command-line instants and dashboard filters therefore accept ISO 8601
text alone (``2026-05-04``, ``2026-05-04T10:00``, with ``Z`` or an offset such as ``+02:00``),
and anything else is refused, not read some way.

>>> parse_iso("2026-05-04T10:00:00+02:00")
Timestamp('2026-05-04 10:00:00+0200', tz='UTC+02:00')
>>> parse_iso("04.05.2026 10:00")
Traceback (most recent call last):
...
ValueError: not an ISO 8601 timestamp: '04.05.2026 10:00'
"""

from __future__ import annotations

import re

import pandas as pd

_ISO = re.compile(r"\d{4}-\d{2}-\d{2}"
                  r"(?:[Tt ]\d{2}(?::\d{2}(?::\d{2}(?:[.,]\d+)?)?)?)?"
                  r" ?(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?")


def parse_iso(text: str) -> pd.Timestamp:
    """The instant (or date) of ISO 8601 ``text``; ``ValueError`` for any other text or an
    impossible date (``2026-02-30``). Naive text gives a naive timestamp."""
    value = str(text).strip()
    if not _ISO.fullmatch(value):
        raise ValueError(f"not an ISO 8601 timestamp: {value[:40]!r}")
    return pd.Timestamp(value)
