"""UTC offsets of IANA zones as transition tables read from :mod:`zoneinfo`, for numpy.

pandas converts time zones one value at a time through ``zoneinfo`` (``tz.utcoffset``); this
module asks ``zoneinfo`` once per zone and year for the instants where the offset changes and
then answers whole arrays with one ``np.searchsorted``: the same offsets, vectorised. Tables
grow lazily to the years asked for and are shared process-wide.

Examples
--------
>>> import numpy as np
>>> at = np.array([1774746000, 1774746000 + 3600 * 24 * 30]) * 10**9  # 2026-03-29 01:00Z
>>> (utc_offset_ns(at, "Europe/Warsaw") // 3_600_000_000_000).tolist()
[2, 2]
>>> (utc_offset_ns(at - 1, "Europe/Warsaw") // 3_600_000_000_000).tolist()
[1, 2]
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

_NS = 10**9
#: Sampling step (seconds) when looking for transitions: no zone changes offset twice in it.
_STEP_S = 6 * 3600
_LOCK = threading.Lock()


def _year_start(year: int) -> int:
    """Seconds since the epoch of 1 January ``year``, 00:00 UTC."""
    return int((np.datetime64(f"{year:04d}-01-01", "s") - np.datetime64(0, "s")).astype(np.int64))


class ZoneTable:
    """The offset of one zone from UTC, as sorted change instants (ns) and offsets (ns)."""

    def __init__(self, zone: str) -> None:
        self.tz = ZoneInfo(zone)
        self.first_year = self.last_year = None
        #: change instants and offsets (ns), and the instants covered ``[lo, hi)``: one tuple,
        #: replaced whole, so a reader never sees parts of two versions
        self.table = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), 0, 0)

    @property
    def starts(self) -> np.ndarray:
        """Instants (ns since the epoch) from which each offset holds."""
        return self.table[0]

    def _offset_s(self, sec: int) -> int:
        """The zone's offset (seconds) at ``sec`` seconds since the epoch."""
        return int(datetime.fromtimestamp(sec, UTC).astimezone(self.tz).utcoffset()
                   .total_seconds())

    def _year(self, year: int) -> tuple[list[int], list[int]]:
        """Change instants (s) and the offsets from them (s) in ``year`` (its start first)."""
        lo, hi = _year_start(year), _year_start(year + 1)
        samples = list(range(lo, hi, _STEP_S)) + [hi]
        offs = [self._offset_s(s) for s in samples]
        starts, values = [lo], [offs[0]]
        for k in range(len(samples) - 1):
            if offs[k + 1] == offs[k]:
                continue
            a, b = samples[k], samples[k + 1]  # offset(a) is the old one, offset(b) the new one
            while b - a > 1:
                mid = (a + b) // 2
                if self._offset_s(mid) == offs[k]:
                    a = mid
                else:
                    b = mid
            if b < hi:
                starts.append(b)
                values.append(offs[k + 1])
        return starts, values

    def cover(self, first_year: int, last_year: int) -> None:
        """Extend the table to every instant of ``first_year`` .. ``last_year`` (UTC years)."""
        if self.first_year is not None:
            first_year = min(first_year, self.first_year)
            last_year = max(last_year, self.last_year)
            if first_year == self.first_year and last_year == self.last_year:
                return
        starts: list[int] = []
        values: list[int] = []
        for year in range(first_year, last_year + 1):
            if self.first_year is not None and self.first_year <= year <= self.last_year:
                old_starts, old_offsets = self.table[:2]
                inside = (old_starts >= _year_start(year) * _NS) & (
                    old_starts < _year_start(year + 1) * _NS)
                starts += (old_starts[inside] // _NS).tolist()
                values += (old_offsets[inside] // _NS).tolist()
            else:
                s, v = self._year(year)
                starts += s
                values += v
        self.table = (np.array(starts, dtype=np.int64) * _NS,
                      np.array(values, dtype=np.int64) * _NS,
                      _year_start(first_year) * _NS, _year_start(last_year + 1) * _NS)
        self.first_year, self.last_year = first_year, last_year

    def offset_ns(self, utc_ns: np.ndarray) -> np.ndarray:
        """Offsets (ns) at instants ``utc_ns`` (ns since the epoch, UTC)."""
        utc_ns = np.asarray(utc_ns, dtype=np.int64)
        if len(utc_ns) == 0:
            return np.zeros(0, dtype=np.int64)
        lo, hi = int(utc_ns.min()), int(utc_ns.max())
        table = self.table
        if not table[2] <= lo or not hi < table[3] or not len(table[0]):
            years = np.array([lo, hi]).astype("datetime64[ns]").astype("datetime64[Y]")
            first, last = (years.astype(np.int64) + 1970).tolist()
            with _LOCK:
                self.cover(first, last)
            table = self.table
        starts, offsets = table[:2]
        return offsets[starts.searchsorted(utc_ns, side="right") - 1]


_TABLES: dict[str, ZoneTable] = {}


def zone_table(zone: str) -> ZoneTable:
    """The shared :class:`ZoneTable` of an IANA zone name."""
    table = _TABLES.get(zone)
    if table is None:
        table = _TABLES.setdefault(zone, ZoneTable(zone))
    return table


def utc_offset_ns(utc_ns: np.ndarray, zone: str) -> np.ndarray:
    """UTC offsets (ns) of ``zone`` at instants ``utc_ns`` (int64 ns since the epoch)."""
    return zone_table(zone).offset_ns(utc_ns)


def _offsets(utc_ns: np.ndarray, zone) -> np.ndarray:
    """:func:`utc_offset_ns`; ``None`` is UTC and a name zoneinfo lacks goes through pandas."""
    if zone is None:
        return np.zeros(len(utc_ns), dtype=np.int64)
    try:
        return utc_offset_ns(utc_ns, zone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        conv = pd.DatetimeIndex(utc_ns.view("datetime64[ns]")).tz_localize("UTC").tz_convert(zone)
        return conv.tz_localize(None).as_unit("ns").asi8 - utc_ns


def local_ns(utc_ns: np.ndarray, zones: np.ndarray) -> np.ndarray:
    """Naive local wall time (int64 ns) of instants ``utc_ns`` in each row's zone name."""
    utc_ns = np.asarray(utc_ns, dtype=np.int64)
    zones = np.asarray(zones, dtype=object)
    if len(zones) and (zones[0] == zones).all():  # one zone: no grouping needed
        return utc_ns + _offsets(utc_ns, zones[0])
    out = np.empty(len(utc_ns), dtype=np.int64)
    codes, uniques = pd.factorize(zones)
    for code, zone in [*enumerate(uniques), (-1, None)]:
        mask = codes == code
        if code >= 0 or mask.any():
            out[mask] = utc_ns[mask] + _offsets(utc_ns[mask], zone)
    return out
