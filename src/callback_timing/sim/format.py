"""Fast text formatting for the synthetic export: ISO-8601 local timestamps and ids.

A CRM export holds text, and a million ``strftime`` calls are slow, so the characters are
written as bytes into one array and handed to Arrow without a Python loop.

Examples
--------
>>> local = np.array(["2026-03-02T09:15:00"], dtype="datetime64[ns]")
>>> iso_local(local, np.array([60])).tolist()
['2026-03-02T09:15:00+01:00']
>>> iso_local(local, np.array([-210])).tolist()
['2026-03-02T09:15:00-03:30']
>>> numbered_ids("x-", np.array([1, 12345678]), 7).tolist()
['x-00000001', 'x-12345678']
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

_ZERO = ord("0")


def _digits(buf: np.ndarray, col: int, value: np.ndarray, width: int) -> None:
    """Write ``value`` as ``width`` decimal digits into rows ``col...`` of a (chars, n) buffer."""
    value = np.asarray(value, dtype=np.int64 if width > 9 else np.int32)
    for k in range(width):
        buf[col + width - 1 - k] = value % 10 + _ZERO
        value = value // 10


def _to_series(buf: np.ndarray) -> pd.Series:
    """A ``(chars, n)`` buffer of ASCII bytes (one text per column) as a text Series."""
    buf = np.ascontiguousarray(buf.T)
    n, width = buf.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
    if offsets[-1] < 2**31:
        arr = pa.StringArray.from_buffers(
            n, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(buf.ravel())
        )
    else:
        arr = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf.ravel()))
    return pd.Series(arr, dtype="str")


def iso_local(local: np.ndarray, offset_min: np.ndarray) -> pd.Series:
    """``YYYY-MM-DDTHH:MM:SS+HH:MM`` text of naive local times and their UTC offsets.

    Parameters
    ----------
    local : datetime64 array of wall-clock times (seconds and below are truncated).
    offset_min : int array, the UTC offset of each time in minutes.
    """
    sec = np.asarray(local).astype("datetime64[s]").astype(np.int64)
    day = sec // 86_400
    sod = sec - day * 86_400
    d = day.astype("datetime64[D]")
    month_start = d.astype("datetime64[M]")
    year = d.astype("datetime64[Y]").astype(np.int64) + 1970
    month = month_start.astype(np.int64) % 12 + 1
    mday = (d - month_start).astype(np.int64) + 1
    off = np.asarray(offset_min, dtype=np.int64)
    buf = np.empty((25, len(sec)), dtype=np.uint8)
    for col, char in ((4, "-"), (7, "-"), (10, "T"), (13, ":"), (16, ":"), (22, ":")):
        buf[col] = ord(char)
    _digits(buf, 0, year, 4)
    _digits(buf, 5, month, 2)
    _digits(buf, 8, mday, 2)
    _digits(buf, 11, sod // 3600, 2)
    _digits(buf, 14, sod // 60 % 60, 2)
    _digits(buf, 17, sod % 60, 2)
    buf[19] = np.where(off < 0, ord("-"), ord("+"))
    _digits(buf, 20, np.abs(off) // 60, 2)
    _digits(buf, 23, np.abs(off) % 60, 2)
    return _to_series(buf)


def numbered_ids(prefix: str, number: np.ndarray, width: int) -> pd.Series:
    """``prefix`` + numbers zero-padded to ``width`` digits, or to the widest number."""
    number = np.asarray(number, dtype=np.int64)
    digits = max(width, len(str(int(number.max()))) if len(number) else width)
    head = np.frombuffer(prefix.encode(), dtype=np.uint8)
    buf = np.empty((len(head) + digits, len(number)), dtype=np.uint8)
    buf[: len(head)] = head[:, None]
    _digits(buf, len(head), number, digits)
    return _to_series(buf)
