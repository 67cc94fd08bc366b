"""Load a call history: read, map columns, validate, clean, de-duplicate, report rejects.

Every input row ends up in exactly one place: the clean ``calls`` frame, the count of exact
duplicates, or the rejects (row number, column, reason). Nothing is dropped silently and bad
data never raises; only a file that cannot be used at all (unreadable, missing a required
column) raises :class:`~callback_timing.schema.SchemaError`. The clear phone number is used to
derive country and time zone and is then replaced by a keyed pseudonym; it never appears in
the output, the rejects or the log. Empty cells and the texts in :data:`NULL_TOKENS`
(``NULL``, ``None``, ``N/A`` ...) are missing values.

Row numbers
-----------
``rejects.row`` is the line number in the CSV file: the header is line 1, the first data row
line 2; blank lines and line breaks inside quoted fields are accounted for. Parquet files and
in-memory frames use the same numbering (record ``i``, counted from 0, is row ``i + 2``), so a
CSV and a Parquet export of the same data report the same rows.

Examples
--------
>>> import pandas as pd
>>> raw = pd.DataFrame({"contact_id": ["c1", "c1", "c2"],
...                     "called_at": ["2026-06-01T10:00:00+02:00", "2026-06-01T08:00Z", "noon"],
...                     "outcome": ["Answered", "answered", "busy"]})
>>> result = clean_history(raw)
>>> len(result.calls), result.rejects[["row", "column"]].values.tolist()
(1, [[3, 'called_at'], [4, 'called_at']])
>>> result.rejects["reason"].tolist()[0]
'duplicate (contact_id, called_at)'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from callback_timing import schema
from callback_timing.contacts import (
    canonical_zone,
    load_key,
    normalise_country,
    normalise_industry,
    normalise_subdivisions,
    parse_phones,
    per_place,
    pseudonymise,
    region_zones,
)
from callback_timing.reading import apply_mapping, check_required, parse_mapping, read_table
from callback_timing.schema import ConfigError

__all__ = [
    "LoadResult",
    "apply_mapping",
    "check_required",
    "clean_history",
    "load_history",
    "parse_mapping",
    "read_table",
]

logger = logging.getLogger(__name__)

REJECT_COLUMNS: tuple[str, ...] = ("row", "column", "reason")

REASON_MISSING = "missing timestamp"
REASON_UNPARSEABLE = "unparseable timestamp (expected ISO-8601 with offset, e.g. 2026-06-01T10:00Z)"
REASON_NAIVE = "timestamp without UTC offset; use --assume-tz ZONE to read it as local time"
REASON_GAP = "local time does not exist in the --assume-tz zone (daylight-saving gap)"
REASON_DAY_ONLY = "a date without the time of day"
#: The longest ``contact_id`` (the HTTP API's limit)
MAX_ID_LENGTH = 256
WARN_PHONE = "invalid phone number (country/timezone used instead)"
WARN_COUNTRY = "unknown country code (ignored)"
WARN_MISMATCH = "country differs from the phone's country (given country kept)"
#: How far after the clock a call may be dated (clocks and zones of exports disagree a little;
#: a call dated later is a typo, such as 2099, that would pass the test slice's end)
FUTURE_TOLERANCE = pd.Timedelta(days=1)
WARN_SUBDIVISION = "subdivision its country does not have (ignored)"
WARN_DEFAULT_TZ = "no timezone, country or valid phone ({zone} used; see --default-tz)"

# a time of day followed by "Z" or a +hh[:mm] offset, at the end of the text
# (no \d or \s: with those pandas leaves pyarrow's fast RE2 for Python's re)
_OFFSET = r"[Tt ][0-9]{2}(?::?[0-9]{2}){0,2}(?:[.,][0-9]+)? *(?:[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)$"


@dataclass
class LoadResult:
    """The outcome of loading a call history.

    Attributes
    ----------
    calls : clean frame, columns :data:`~callback_timing.schema.CLEAN_COLUMNS`, sorted by
        ``contact_id`` then ``called_at``.
    rejects : one line per problem: ``row`` (see module docstring), ``column`` (``"*"`` for a
        malformed line) and ``reason``; a row with two problems has two lines.
    n_input_rows : data rows in the input.
    n_duplicates : exact duplicate rows removed (the first copy is kept or rejected).
    warnings : rows kept despite a problem, counted by kind (e.g. an invalid phone number when
        the country or time zone is known).
    """

    calls: pd.DataFrame
    rejects: pd.DataFrame
    n_input_rows: int
    n_duplicates: int
    warnings: dict[str, int] = field(default_factory=dict)

    @property
    def n_clean(self) -> int:
        """Rows in :attr:`calls`."""
        return len(self.calls)

    @property
    def n_rejected_rows(self) -> int:
        """Distinct input rows with at least one reject line."""
        return int(self.rejects["row"].nunique())

    def rejects_by_reason(self) -> dict[str, int]:
        """Rejected rows per reason, most frequent first."""
        counts = self.rejects.drop_duplicates(["row", "reason"])["reason"].value_counts()
        return {str(k): int(v) for k, v in counts.items()}

    def summary(self) -> dict[str, int]:
        """Row counts: ``input``, ``clean``, ``rejected``, ``duplicates``."""
        return {"input": self.n_input_rows, "clean": self.n_clean,
                "rejected": self.n_rejected_rows, "duplicates": self.n_duplicates}

    def write_rejects(self, path: str | Path) -> Path:
        """Write :attr:`rejects` as CSV (``row,column,reason``) and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.rejects.to_csv(path, index=False)
        return path


# --- parsing helpers -------------------------------------------------------------------------


#: Cell texts read as missing (besides the empty text); "NA" is not one of them: it is Namibia.
NULL_TOKENS: tuple[str, ...] = ("NULL", "null", "None", "NaN", "nan", "N/A", "n/a", "#N/A")


def _strip(values: pd.Series) -> pd.Series:
    if values.dtype.kind == "f":  # integers with a gap (Parquet from outside pandas): 7.0 -> 7
        whole = values.notna() & (values == values.round()) & (values.abs() < 2**53)
        if whole.sum() == values.notna().sum():
            values = values.astype("Int64")
    text = values.astype("str").str.strip()
    return text.where((text != "") & ~text.isin(NULL_TOKENS))


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    """Stripped text of a column; empty, a :data:`NULL_TOKENS` text or absent -> missing."""
    if column not in frame.columns:
        return pd.Series(np.nan, index=frame.index, dtype="str")
    return _strip(frame[column])


def _as_ns(utc: pd.Series) -> pd.Series:
    bounds = (pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC"))
    return utc.where(utc.between(*bounds)).dt.as_unit("ns")


def _read_times(text: pd.Series, utc: bool, time_format: str | None) -> pd.Series:
    """ISO-8601 timestamps of text, else (where that fails) ``time_format``'s; NaT if neither."""
    parsed = pd.to_datetime(text, format="ISO8601", utc=utc, errors="coerce")
    rest = parsed.isna().to_numpy()
    if time_format and rest.any():
        other = pd.to_datetime(text[rest], format=time_format, utc=utc, errors="coerce")
        if isinstance(other.dtype, pd.DatetimeTZDtype) == utc:  # naive text stays naive
            parsed = parsed.where(~rest, other)
    return parsed


def _parse_times(
    values: pd.Series, assume_tz: str | None, required: bool, time_format: str | None = None
) -> tuple[pd.Series, pd.Series]:
    """UTC instants of a timestamp column and a reason (missing when fine) per row.

    Text is read as ISO-8601, and where that fails with ``time_format`` (a ``strftime``
    layout such as ``%d.%m.%Y %H:%M``); text without a UTC offset needs ``assume_tz``."""
    reason = pd.Series(np.nan, index=values.index, dtype="str")
    if required:
        reason[values.isna().to_numpy()] = REASON_MISSING
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return _as_ns(values.dt.tz_convert("UTC")), reason
    utc = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    if pd.api.types.is_datetime64_dtype(values.dtype):  # typed Parquet column without zone
        present, has_offset = values.notna().to_numpy(), np.zeros(len(values), dtype=bool)
    else:
        text = _strip(values)
        present = text.notna().to_numpy()
        if required:
            reason[~present] = REASON_MISSING
        has_offset = text.str.contains(_OFFSET, regex=True, na=False).to_numpy()
        if has_offset.any():
            utc[has_offset] = _as_ns(_read_times(text[has_offset], True, time_format))
    naive = present & ~has_offset
    if naive.any():
        if pd.api.types.is_datetime64_dtype(values.dtype):
            local = values[naive]
        else:
            local = _read_times(text[naive], False, time_format)
        if assume_tz is None:
            reason[local.index[local.notna()]] = REASON_NAIVE
        else:
            dst = np.ones(len(local), dtype=bool)  # autumn fold: the first (summer-time) instant
            aware = local.dt.tz_localize(assume_tz, ambiguous=dst, nonexistent="NaT")
            reason[local.index[local.notna() & aware.isna()]] = REASON_GAP
            utc[naive] = _as_ns(aware.dt.tz_convert("UTC"))
    reason[present & utc.isna().to_numpy() & reason.isna().to_numpy()] = _unparseable(time_format)
    if not pd.api.types.is_datetime64_any_dtype(values.dtype):
        day_only = text.str.fullmatch(r"\d{4}-\d{2}-\d{2}", na=False).to_numpy()
        reason[day_only] = REASON_DAY_ONLY  # read as midnight, a call nobody made
        utc[day_only] = pd.NaT
    return utc, reason


# --- cleaning --------------------------------------------------------------------------------


class _Rejects:
    """Collects (row mask, column, reason) problems of the rows being cleaned."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows
        self.parts: list[pd.DataFrame] = []
        self.any = np.zeros(len(rows), dtype=bool)

    def add(self, mask, column: str, reason) -> None:
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            reasons = reason[mask] if isinstance(reason, np.ndarray) else reason
            self.parts.append(pd.DataFrame(
                {"row": self.rows[mask], "column": column, "reason": reasons}))
            self.any |= mask

    def frame(self, bad_lines: list[tuple[int, str]]) -> pd.DataFrame:
        lines = pd.DataFrame(bad_lines, columns=["row", "reason"]).assign(column="*")
        parts = [p for p in [lines[list(REJECT_COLUMNS)], *self.parts] if len(p)]
        if not parts:
            return pd.DataFrame({"row": pd.Series(dtype="int64"),
                                 "column": pd.Series(dtype="str"),
                                 "reason": pd.Series(dtype="str")})
        out = pd.concat(parts, ignore_index=True).astype(
            {"row": "int64", "column": "str", "reason": "str"})
        return out.sort_values("row", kind="stable", ignore_index=True)


def _resolve_contacts(
    raw: pd.DataFrame, rejects: _Rejects, key: bytes | None, default_tz: str | None
):
    """Country, zone, zone source/flag and phone pseudonym per row; warnings by kind."""
    given_tz_text = _text(raw, "timezone")
    given_tz = canonical_zone(given_tz_text)
    rejects.add(given_tz_text.notna() & given_tz.isna(), "timezone",
                "unknown time zone (expected an IANA name such as Europe/Warsaw)")
    country_text = _text(raw, "country")
    given_country = normalise_country(country_text)
    phone_text = _text(raw, "phone")
    phones = parse_phones(phone_text, given_country)
    bad_phone = (phone_text.notna() & ~phones["valid"]).to_numpy()
    fallback = (given_country.notna() | given_tz.notna()).to_numpy()
    rejects.add(bad_phone & ~fallback, "phone",
                "invalid phone number and no country or timezone to fall back on")
    country = given_country.fillna(phones["country"])
    mismatch = given_country.notna() & phones["country"].notna() & (
        given_country != phones["country"])
    use_phone = phones["timezone"].notna() & ~mismatch
    subdivision_text = _text(raw, "subdivision")
    subdivision = normalise_subdivisions(country, subdivision_text)
    main = per_place(country, subdivision,
                     lambda c, s: (region_zones(c, s) or (None,))[0]).rename(None)
    source = np.select([given_tz.notna(), use_phone, main.notna()],
                       ["given", "phone", "country"], "default")
    no_zone = (source == "default") & ~rejects.any
    zone = given_tz.fillna(phones["timezone"].where(use_phone)).fillna(main).fillna(default_tz)
    if key is None and phones["e164"].notna().any():
        key = load_key()
    out = pd.DataFrame({
        "phone_hash": pseudonymise(phones["e164"], key or b""),
        "country": country.astype("str"),
        "subdivision": subdivision,
        "timezone": zone.astype("str"),
        "tz_source": pd.Series(source, index=raw.index, dtype="str"),
        "tz_flag": (phones["tz_ambiguous"] & (source == "phone")).astype(bool),
    })
    warnings = {
        WARN_PHONE: int((bad_phone & fallback).sum()),
        WARN_COUNTRY: int((country_text.notna() & given_country.isna()).sum()),
        WARN_MISMATCH: int(mismatch.sum()),
        WARN_SUBDIVISION: int((subdivision_text.notna() & subdivision.isna()).sum()),
        WARN_DEFAULT_TZ.format(zone=default_tz): int(no_zone.sum()),
    }
    return out, warnings


def _check_numbers(raw: pd.DataFrame, rejects: _Rejects) -> tuple[pd.Series, pd.Series]:
    attempt_text, duration_text = _text(raw, "attempt"), _text(raw, "duration_s")
    attempt = pd.to_numeric(attempt_text, errors="coerce")
    whole = (attempt >= 1) & (attempt % 1 == 0) & (attempt < 2**53)
    rejects.add(attempt_text.notna() & ~whole, "attempt", "attempt is not a whole number >= 1")
    duration = pd.to_numeric(duration_text, errors="coerce").astype("float64")
    bad = duration_text.notna() & ~((duration >= 0) & np.isfinite(duration))
    rejects.add(bad, "duration_s", "duration_s is not a number >= 0")
    return attempt.where(whole).astype("Int64"), duration


def _duplicate_keys(calls: pd.DataFrame, ok: np.ndarray, rejects: _Rejects) -> None:
    """Reject later rows repeating a call_id (or, without one, a (contact_id, called_at))."""
    has_id = calls["call_id"].notna().to_numpy()
    by_id = calls.loc[ok & has_id, "call_id"].duplicated()
    rejects.add(calls.index.isin(by_id[by_id].index), "call_id", "duplicate call_id")
    by_key = calls.loc[ok & ~has_id, ["contact_id", "called_at"]].duplicated()
    rejects.add(calls.index.isin(by_key[by_key].index), "called_at",
                "duplicate (contact_id, called_at)")


def _row_numbers(frame: pd.DataFrame) -> np.ndarray:
    if frame.index.name == "row" and pd.api.types.is_integer_dtype(frame.index.dtype):
        return frame.index.to_numpy("int64")
    return np.arange(2, len(frame) + 2, dtype="int64")


def zone_option(value: str | None, option: str) -> str | None:
    """The canonical IANA zone of a time-zone option (``None`` stays ``None``); raises
    :class:`ConfigError` naming ``option`` for an unknown zone."""
    if value is None:
        return None
    zone = canonical_zone(pd.Series([value], dtype="str")).iloc[0]
    if not isinstance(zone, str):
        raise ConfigError(f"unknown time zone for {option}: {value!r}")
    return zone


def time_format_option(value: str | None, assume_tz: str | None) -> str | None:
    """``--time-format`` as given, or a :class:`ConfigError` naming the option when it is
    not a ``strftime`` layout (no ``%`` directive, e.g. ``dd.mm.yyyy``, or one Python does
    not know), or reads times without an offset while ``assume_tz`` gives no zone."""
    if value is None or not str(value).strip():
        return None
    if "%" not in value:
        raise ConfigError(f"--time-format: a strftime layout such as '%d.%m.%Y %H:%M' is "
                          f"needed, not {value!r}")
    try:  # a directive Python does not know (%Q, %i, a stray %) fails on any text
        pd.to_datetime(pd.Series(["2000"]), format=value, errors="coerce")
    except ValueError as exc:
        raise ConfigError(f"--time-format: {str(exc).splitlines()[0]}") from None
    if assume_tz is None and "%z" not in value and "%Z" not in value:
        raise ConfigError(f"--time-format {value!r} reads times without a UTC offset: give "
                          "--assume-tz ZONE too (or a layout with %z)")
    return value


def _unparseable(time_format: str | None) -> str:
    """The reject reason of a timestamp that neither ISO-8601 nor ``time_format`` reads."""
    if time_format is None:
        return REASON_UNPARSEABLE
    return f"unparseable timestamp (neither ISO-8601 nor --time-format {time_format!r})"


def clean_history(
    frame: pd.DataFrame,
    assume_tz: str | None = None,
    key: bytes | None = None,
    default_tz: str = "UTC",
    time_format: str | None = None,
    now: pd.Timestamp | None = None,
) -> LoadResult:
    """Validate and clean a raw call-history frame (contract section 1).

    Parameters
    ----------
    frame : raw rows, e.g. from :func:`read_table`; text or typed columns. Row numbers for
        the rejects come from the index when it is named ``row`` (as :func:`read_table`
        returns it), otherwise record ``i`` is row ``i + 2``.
    assume_tz : IANA zone in which timestamps without an offset are read; without it such
        timestamps are rejected.
    key : pseudonymisation key; default :func:`~callback_timing.contacts.load_key`.
    default_tz : IANA zone for rows with no timezone, country or valid phone; such rows are
        kept with ``tz_source="default"`` and counted in :attr:`LoadResult.warnings`.
    time_format : ``strftime`` layout of timestamps that are not ISO-8601, e.g.
        ``%d.%m.%Y %H:%M`` (read in ``assume_tz``) or ``%d/%m/%Y %H:%M %z``; ISO-8601 text
        is read as before.
    now : the time of reading (default: the clock); a call dated more than
        :data:`FUTURE_TOLERANCE` after it is rejected.

    Returns
    -------
    LoadResult
    """
    check_required(frame)
    assume_tz = zone_option(assume_tz, "--assume-tz")
    default_tz = zone_option(default_tz, "--default-tz") or "UTC"
    time_format = time_format_option(time_format, assume_tz)
    bad_lines = list(frame.attrs.get("bad_lines", []))
    # the contract's columns only: others (notes, Excel's unnamed ones, lists) are not read
    frame = frame[[c for c in frame.columns if c in schema.ALL_COLUMNS]]
    exact = frame.duplicated(keep="first").to_numpy()
    raw = frame.loc[~exact].reset_index(drop=True)
    rejects = _Rejects(_row_numbers(frame)[~exact])
    contact_id = _text(raw, "contact_id")
    rejects.add(contact_id.isna(), "contact_id", "empty contact_id")
    rejects.add((contact_id.str.len() > MAX_ID_LENGTH).to_numpy(), "contact_id",
                f"contact_id longer than {MAX_ID_LENGTH} characters (/rank could not name it)")
    called_at, reason = _parse_times(raw["called_at"], assume_tz, True, time_format)
    rejects.add(reason.notna(), "called_at", reason.to_numpy())
    latest = (now if now is not None else pd.Timestamp.now(tz="UTC")) + FUTURE_TOLERANCE
    rejects.add((called_at > latest).to_numpy(), "called_at",
                "in the future (more than a day after the time of reading)")
    # case, spaces and hyphens do not matter: "No Answer" and "no-answer" are no_answer
    outcome = _text(raw, "outcome").str.lower().str.replace(r"[\s\-]+", "_", regex=True)
    rejects.add(outcome.isna(), "outcome", "missing outcome")
    rejects.add(outcome.notna() & ~outcome.isin(schema.OUTCOMES), "outcome",
                "unknown outcome (expected one of " + ", ".join(schema.OUTCOMES) + ")")
    if "requested_at" in raw.columns:
        requested_at, reason = _parse_times(raw["requested_at"], assume_tz, False, time_format)
        rejects.add(reason.notna(), "requested_at", reason.to_numpy())
    else:
        requested_at = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]")
    attempt, duration = _check_numbers(raw, rejects)
    contacts, warnings = _resolve_contacts(raw, rejects, key, default_tz)
    calls = pd.DataFrame({
        "contact_id": contact_id,
        "called_at": called_at,
        "outcome": outcome,
        "answered": (outcome == schema.POSITIVE_OUTCOME).astype("int8"),
        "call_id": _text(raw, "call_id"),
        **{c: contacts[c] for c in ("phone_hash", "country", "subdivision")},
        **{c: contacts[c] for c in ("timezone", "tz_source", "tz_flag")},
        "industry": normalise_industry(_text(raw, "industry")),
        "requested_at": requested_at,
        "request_id": _text(raw, "request_id"),
        "attempt": attempt,
        "duration_s": duration,
    })
    _duplicate_keys(calls, ~rejects.any, rejects)
    calls = calls.loc[~rejects.any].sort_values(["contact_id", "called_at"], kind="stable")
    result = LoadResult(
        calls=calls.reset_index(drop=True)[list(schema.CLEAN_COLUMNS)],
        rejects=rejects.frame(bad_lines),
        n_input_rows=len(frame) + len(bad_lines),
        n_duplicates=int(exact.sum()),
        warnings={k: v for k, v in warnings.items() if v},
    )
    logger.info("call history: %d rows in, %d clean, %d rejected, %d exact duplicates",
                result.n_input_rows, result.n_clean, result.n_rejected_rows, result.n_duplicates)
    for kind, count in result.warnings.items():
        logger.warning("call history: %d rows kept with %s", count, kind)
    return result


def load_history(
    path: str | Path,
    mapping: dict[str, str] | None = None,
    assume_tz: str | None = None,
    key: bytes | None = None,
    default_tz: str = "UTC",
    time_format: str | None = None,
) -> LoadResult:
    """Read, map and clean a call-history file: :func:`read_table`, :func:`apply_mapping`,
    :func:`clean_history` (see there for the options)."""
    frame = apply_mapping(read_table(path), mapping)
    return clean_history(frame, assume_tz=assume_tz, key=key, default_tz=default_tz,
                         time_format=time_format)
