"""Data-quality report of a loaded call history (``callback-timing validate``).

:func:`quality_report` turns a :class:`~callback_timing.data.LoadResult` into plain,
JSON-serialisable numbers; :func:`render_report` lays them out as rich tables for a terminal.
Only counts and rates leave here: no contact ids, no phone pseudonyms.

Examples
--------
>>> import json
>>> import pandas as pd
>>> from callback_timing.data import clean_history
>>> raw = pd.DataFrame({"contact_id": ["c1", "c1", "c2"], "outcome": ["answered", "busy", "?"],
...                     "called_at": ["2026-06-01T10:00Z", "2026-06-02T10:00Z", "2026-06-01Z"],
...                     "country": ["PL", "PL", "DE"]})
>>> report = quality_report(clean_history(raw))
>>> report["rows"], report["answer_rate"], report["by_local_hour"][12]
({'input': 3, 'clean': 2, 'rejected': 1, 'duplicates': 0}, 0.5, {'hour': 12, 'calls': 2, \
'answer_rate': 0.5})
>>> _ = json.dumps(report)
"""

from __future__ import annotations

import pandas as pd
from rich.console import Group
from rich.table import Table

from callback_timing import config
from callback_timing.calendar import local_clock
from callback_timing.data import LoadResult

TZ_SOURCES: tuple[str, ...] = ("given", "phone", "country", "default")
_BAR_WIDTH = 30


def _rate(answered: pd.Series) -> float | None:
    return round(float(answered.mean()), 4) if len(answered) else None


def _coverage(calls: pd.DataFrame, column: str) -> dict[str, dict]:
    """Calls, contacts and answer rate per value of ``column`` (missing -> "unknown")."""
    key = calls[column].astype("str").fillna("unknown")
    grouped = calls.groupby(key, sort=False)
    table = pd.DataFrame({
        "calls": grouped.size(),
        "contacts": grouped["contact_id"].nunique(),
        "answer_rate": grouped["answered"].mean().round(4),
    }).sort_values("calls", ascending=False, kind="stable")
    return {
        str(value): {"calls": int(row.calls), "contacts": int(row.contacts),
                     "answer_rate": float(row.answer_rate)}
        for value, row in table.iterrows()
    }


def _by_local_hour(calls: pd.DataFrame) -> list[dict]:
    hours = local_clock(calls["called_at"], calls["timezone"])["hour"].astype(int)
    grouped = calls["answered"].groupby(hours)
    counts, rates = grouped.size(), grouped.mean()
    return [
        {"hour": h, "calls": int(counts.get(h, 0)),
         "answer_rate": round(float(rates[h]), 4) if h in rates.index else None}
        for h in range(24)
    ]


def quality_report(result: LoadResult) -> dict:
    """Data-quality figures of a loaded call history, as plain JSON-serialisable values.

    Keys: ``rows`` (input/clean/rejected/duplicates), ``rejects_by_reason``,
    ``rejects_by_column``, ``warnings``, ``timezone_sources`` (rows per source),
    ``flagged_rows`` and ``flagged_numbers`` (zone guessed because the phone's region spans
    several zones), ``answer_rate``, ``contacts`` (total and with fewer than
    ``config.MIN_HISTORY_CALLS`` calls), ``date_range`` (first/last call, UTC ISO-8601),
    ``by_country`` and ``by_industry`` (calls, contacts, answer rate per value, most calls
    first) and ``by_local_hour`` (calls and answer rate per contact-local hour 0-23).
    """
    calls = result.calls
    per_contact = calls.groupby("contact_id").size()
    rejected = result.rejects.drop_duplicates(["row", "column"])["column"].value_counts()
    sources = calls["tz_source"].value_counts()
    flagged = calls["tz_flag"].to_numpy(dtype=bool)
    first, last = (calls["called_at"].min(), calls["called_at"].max()) if len(calls) else (
        None, None)
    return {
        "rows": result.summary(),
        "rejects_by_reason": result.rejects_by_reason(),
        "rejects_by_column": {str(k): int(v) for k, v in rejected.items()},
        "warnings": dict(result.warnings),
        "timezone_sources": {s: int(sources.get(s, 0)) for s in TZ_SOURCES},
        "flagged_rows": int(flagged.sum()),
        "flagged_numbers": int(calls.loc[flagged, "phone_hash"].nunique()),
        "answer_rate": _rate(calls["answered"]),
        "contacts": {
            "total": int(len(per_contact)),
            "too_little_history": int((per_contact < config.MIN_HISTORY_CALLS).sum()),
            "min_history_calls": config.MIN_HISTORY_CALLS,
        },
        "date_range": {
            "first": first.isoformat() if first is not None else None,
            "last": last.isoformat() if last is not None else None,
        },
        "by_country": _coverage(calls, "country"),
        "by_industry": _coverage(calls, "industry"),
        "by_local_hour": _by_local_hour(calls),
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _counts_table(title: str, counts: dict[str, int], label: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(label)
    table.add_column("rows", justify="right")
    for name, count in counts.items():
        table.add_row(name, f"{count:,}")
    return table


def _coverage_table(title: str, coverage: dict[str, dict], label: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name, justify in ((label, "left"), ("calls", "right"), ("contacts", "right"),
                          ("answer rate", "right")):
        table.add_column(name, justify=justify)
    for value, row in coverage.items():
        table.add_row(value, f"{row['calls']:,}", f"{row['contacts']:,}",
                      _pct(row["answer_rate"]))
    return table


def render_report(report: dict) -> Group:
    """Rich tables of a :func:`quality_report` for printing with ``rich.console.Console``."""
    rows = report["rows"]
    contacts = report["contacts"]
    summary = Table(title="Call history", title_justify="left", show_header=False)
    summary.add_column("what")
    summary.add_column("value", justify="right")
    for name, value in (
        ("rows in file", f"{rows['input']:,}"),
        ("clean rows", f"{rows['clean']:,}"),
        ("rejected rows", f"{rows['rejected']:,}"),
        ("exact duplicates removed", f"{rows['duplicates']:,}"),
        ("contacts", f"{contacts['total']:,}"),
        (f"contacts with < {contacts['min_history_calls']} calls",
         f"{contacts['too_little_history']:,}"),
        ("answer rate", _pct(report["answer_rate"])),
        ("first call (UTC)", report["date_range"]["first"] or "-"),
        ("last call (UTC)", report["date_range"]["last"] or "-"),
        ("zone guessed (multi-zone numbers)", f"{report['flagged_numbers']:,}"),
    ):
        summary.add_row(name, value)
    parts: list = [summary]
    if report["rejects_by_reason"]:
        parts.append(_counts_table("Rejects by reason", report["rejects_by_reason"], "reason"))
    if report["warnings"]:
        parts.append(_counts_table("Kept with a warning", report["warnings"], "warning"))
    parts.append(_counts_table("Time zone source", report["timezone_sources"], "source"))
    parts.append(_coverage_table("Coverage by country", report["by_country"], "country"))
    parts.append(_coverage_table("Coverage by industry", report["by_industry"], "industry"))
    hours = Table(title="Calls by contact-local hour", title_justify="left")
    for name, justify in (("hour", "right"), ("calls", "right"), ("answer rate", "right"),
                          ("", "left")):
        hours.add_column(name, justify=justify)
    peak = max((h["calls"] for h in report["by_local_hour"]), default=0) or 1
    for h in report["by_local_hour"]:
        bar = "█" * round(_BAR_WIDTH * h["calls"] / peak)
        hours.add_row(f"{h['hour']:02d}", f"{h['calls']:,}", _pct(h["answer_rate"]), bar)
    parts.append(hours)
    return Group(*parts)
