"""Read a call-history table: CSV (plain or compressed, any common delimiter) or Parquet,
rename a foreign export's columns (``--map new=old``) and check the required columns.

Row numbers follow :mod:`callback_timing.data`: the CSV line number (header = line 1).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import lzma
from pathlib import Path

import pandas as pd
import pyarrow as pa

from callback_timing import schema
from callback_timing.schema import ConfigError, SchemaError

__all__ = ["apply_mapping", "check_required", "parse_mapping", "read_table"]

# --- reading ---------------------------------------------------------------------------------

_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_PARQUET_SUFFIXES = (".parquet", ".pq")
_DELIMITERS = (",", ";", "\t", "|")
# formats a CRM exports too, which would otherwise be read as CSV with nonsense columns
_OTHER_FORMATS = (".xlsx", ".xlsm", ".xls", ".ods", ".json", ".jsonl", ".ndjson", ".zip")


def _open(path: Path, mode: str = "rt", **kwargs):
    return _OPENERS.get(path.suffix.lower(), open)(path, mode, **kwargs)


def _sniff_header(path: Path) -> tuple[str, list[str]]:
    """The delimiter and the column names of a CSV file's header line."""
    with _open(path, encoding="utf-8-sig", errors="replace") as handle:
        header = handle.readline()
    sep = max(_DELIMITERS, key=header.count) if any(d in header for d in _DELIMITERS) else ","
    names = next(csv.reader([header], delimiter=sep), [])
    return sep, [name.strip() for name in names]


def _physical_lines(path: Path) -> int:
    lines, last = 0, b"\n"
    with _open(path, "rb") as handle:
        while chunk := handle.read(1 << 24):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n")


def _read_csv_exact(path: Path, sep: str) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    """Slow, forgiving CSV reader: exact line numbers, short lines padded, long lines rejected."""
    header: list[str] | None = None
    records: list[list[str]] = []
    rows: list[int] = []
    bad: list[tuple[int, str]] = []
    with _open(path, newline="", encoding="utf-8-sig") as handle:  # strict: see read_table
        reader = csv.reader(handle, delimiter=sep)
        start = 1
        for record in reader:
            line, start = start, reader.line_num + 1
            if not record:
                continue
            if header is None:
                header = [name.strip() for name in record]
            elif len(record) > len(header):
                reason = f"malformed line: {len(record)} fields, header has {len(header)}"
                bad.append((line, reason))
            else:
                records.append(record + [""] * (len(header) - len(record)))
                rows.append(line)
    if header is None:
        raise SchemaError(f"cannot read call history {path}: the file is empty")
    frame = pd.DataFrame(records, columns=header, dtype="str")
    frame.index = pd.Index(rows, dtype="int64", name="row")
    return frame, bad


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a call history from CSV (all columns as text) or Parquet (by suffix).

    The index holds the row numbers used in rejects (see the module docstring) and is named
    ``row``; CSV lines with more fields than the header are listed in
    ``frame.attrs["bad_lines"]`` as ``(row, reason)``. Compressed CSV (``.gz``, ``.bz2``,
    ``.xz``) and ``;``, tab or ``|`` delimiters are recognised. A missing or unreadable file
    raises :class:`SchemaError`.
    """
    path = Path(path)
    if path.is_dir():
        raise SchemaError(f"cannot read call history {path}: a folder, not a file (a folder "
                          "of Parquet files is read by `train --engine dask`)")
    if not path.is_file():
        raise SchemaError(f"cannot read call history {path}: no such file")
    if path.suffix.lower() in _OTHER_FORMATS:
        raise SchemaError(f"cannot read call history {path}: {path.suffix} is not supported; "
                          "save it as CSV or Parquet")
    bad: list[tuple[int, str]] = []
    parquet = path.suffix.lower() in _PARQUET_SUFFIXES
    if not parquet:
        with path.open("rb") as head:
            if head.read(2) in (b"\xff\xfe", b"\xfe\xff"):
                raise SchemaError(f"cannot read call history {path}: UTF-16 text (Excel's "
                                  "'Unicode text'); save it as 'CSV UTF-8'")
    try:
        if parquet:
            import pyarrow.parquet as pq

            names = pq.read_schema(path).names
            twice = sorted({n for n in names if names.count(n) > 1 and n in schema.ALL_COLUMNS})
            if twice:
                raise SchemaError(
                    f"cannot read call history {path}: column {twice[0]!r} appears twice")
            frame = pd.read_parquet(path, columns=[n for n in names if names.count(n) == 1])
            frame.index = pd.RangeIndex(2, len(frame) + 2, name="row")
        else:
            sep, names = _sniff_header(path)
            twice = sorted({name for name in names if names.count(name) > 1
                            and name in schema.ALL_COLUMNS})  # others are not read
            if twice:
                raise SchemaError(
                    f"cannot read call history {path}: column {twice[0]!r} appears twice")
            try:
                frame = pd.read_csv(path, dtype=str, keep_default_na=False, sep=sep,
                                    engine="pyarrow", encoding="utf-8-sig")
                if _physical_lines(path) != len(frame) + 1:
                    raise ValueError("line numbers need the exact reader")
                frame.index = pd.RangeIndex(2, len(frame) + 2, name="row")
                frame.columns = [str(c).strip() for c in frame.columns]
            except (ValueError, UnicodeDecodeError):  # ParserError is a ValueError
                try:
                    frame, bad = _read_csv_exact(path, sep)
                except UnicodeDecodeError:  # a guess would merge "Müller" with "Mäller"
                    raise SchemaError(
                        f"cannot read call history {path}: not UTF-8 text (e.g. a Windows-1252 "
                        "or Latin-1 export); save it as 'CSV UTF-8'") from None
    except (OSError, ValueError, EOFError, lzma.LZMAError, pa.ArrowException) as exc:
        # the exception's text may quote file content (a phone number): its type, in words
        packed = path.suffix.lower() in (".gz", ".bz2", ".xz")
        what = ("not a Parquet file, or a damaged one" if parquet
                else "a damaged or truncated compressed file"
                if packed and isinstance(exc, EOFError | lzma.LZMAError | OSError)
                else (exc.strerror or "cannot be read") if isinstance(exc, OSError)
                else "unreadable text")
        raise SchemaError(f"cannot read call history {path}: {what} "
                          f"({type(exc).__name__})") from None
    frame.attrs["bad_lines"] = bad
    return frame


# --- column mapping --------------------------------------------------------------------------


def parse_mapping(items: list[str] | None) -> dict[str, str]:
    """Parse ``--map NEW=OLD`` options into ``{new: old}``.

    >>> parse_mapping(["called_at=start_time", " outcome = result "])
    {'called_at': 'start_time', 'outcome': 'result'}
    """
    mapping: dict[str, str] = {}
    for item in items or []:
        new, sep, old = item.partition("=")
        new, old = new.strip(), old.strip()
        if not sep or not new or not old:
            raise ConfigError(
                f"invalid --map {item!r}: expected NEW=OLD, e.g. called_at=start_time")
        if new not in schema.ALL_COLUMNS:
            raise ConfigError(f"invalid --map {item!r}: {new!r} is not a call-history column")
        if new in mapping:
            raise ConfigError(f"invalid --map {item!r}: {new!r} is mapped twice")
        if old in mapping.values():
            raise ConfigError(f"invalid --map {item!r}: {old!r} is already the source of "
                              "another column")
        mapping[new] = old
    return mapping


def apply_mapping(frame: pd.DataFrame, mapping: dict[str, str] | None) -> pd.DataFrame:
    """Rename column ``old`` to ``new`` for each ``new: old`` of ``mapping``.

    Raises :class:`SchemaError` naming a column that is not in the file, or a target that
    the file already has.
    """
    if not mapping:
        return frame
    columns = set(frame.columns)
    for new, old in mapping.items():
        if old not in columns:
            raise SchemaError(f"--map {new}={old}: the file has no column {old!r}")
        if new in columns and new != old and new not in mapping.values():
            raise SchemaError(f"--map {new}={old}: the file already has a column {new!r}")
    return frame.rename(columns={old: new for new, old in mapping.items()})


def check_required(frame: pd.DataFrame) -> None:
    """Raise :class:`SchemaError` naming required columns the frame lacks (or has twice)."""
    twice = [c for c in frame.columns[frame.columns.duplicated()].unique()
             if c in schema.ALL_COLUMNS]  # others are not read
    if twice:
        raise SchemaError(f"column {twice[0]!r} appears twice")
    missing = [c for c in schema.REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        names = ", ".join(repr(c) for c in missing)
        plural = "s" if len(missing) > 1 else ""
        raise SchemaError(
            f"missing required column{plural} {names} (rename a column with --map "
            f"{missing[0]}=YOUR_COLUMN)"
        )
