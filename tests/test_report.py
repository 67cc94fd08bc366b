import json

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from callback_timing import config
from callback_timing.data import clean_history
from callback_timing.report import quality_report, render_report

KEY = b"test-key"


@pytest.fixture(scope="module")
def report() -> dict:
    n_pl = config.MIN_HISTORY_CALLS
    rows = [  # contact p: enough history, Warsaw (UTC+2 in June), IT, answers every other call
        {"contact_id": "p", "called_at": f"2026-06-0{d}T10:00:00Z", "phone": "+48 512 345 678",
         "industry": "IT", "outcome": "answered" if d % 2 else "busy"}
        for d in range(1, n_pl + 1)
    ] + [
        {"contact_id": "u", "called_at": "2026-06-01T13:00:00Z", "phone": "+1 800 555 0100",
         "industry": "Banking", "outcome": "no_answer"},  # New York (flagged): 09:00 local
        {"contact_id": "x", "called_at": "2026-06-01T13:00:00Z", "outcome": "answered"},
        {"contact_id": "x", "called_at": "bad", "outcome": "answered"},
        {"contact_id": "x", "called_at": "2026-06-02T13:00:00Z", "outcome": "bogus"},
        {"contact_id": "x", "called_at": "2026-06-01T13:00:00Z", "outcome": "answered"},
    ]
    return quality_report(clean_history(pd.DataFrame(rows), key=KEY))


def test_row_counts_and_rejects(report):
    assert report["rows"] == {"input": config.MIN_HISTORY_CALLS + 5,
                              "clean": config.MIN_HISTORY_CALLS + 2, "rejected": 2,
                              "duplicates": 1}
    assert sorted(report["rejects_by_reason"].values()) == [1, 1]
    assert report["rejects_by_column"] == {"called_at": 1, "outcome": 1}


def test_zone_sources_and_flagged_numbers(report):
    assert report["timezone_sources"] == {"given": 0, "phone": config.MIN_HISTORY_CALLS + 1,
                                          "country": 0, "default": 1}
    assert (report["flagged_rows"], report["flagged_numbers"]) == (1, 1)


def test_coverage_and_answer_rates(report):
    n = config.MIN_HISTORY_CALLS
    answered_p = sum(d % 2 for d in range(1, n + 1))
    assert report["answer_rate"] == round((answered_p + 1) / (n + 2), 4)
    assert report["by_country"]["PL"] == {"calls": n, "contacts": 1,
                                          "answer_rate": round(answered_p / n, 4)}
    assert report["by_country"]["unknown"]["calls"] == 1
    assert report["by_industry"]["finance"] == {"calls": 1, "contacts": 1, "answer_rate": 0.0}
    assert report["by_industry"]["other"]["answer_rate"] == 1.0
    assert list(report["by_country"])[0] == "PL"  # most calls first


def test_hours_are_contact_local(report):
    hours = {h["hour"]: h for h in report["by_local_hour"]}
    assert len(hours) == 24
    assert hours[12]["calls"] == config.MIN_HISTORY_CALLS  # 10:00Z in Warsaw summer time
    assert hours[9] == {"hour": 9, "calls": 1, "answer_rate": 0.0}  # 13:00Z in New York
    assert hours[13] == {"hour": 13, "calls": 1, "answer_rate": 1.0}  # 13:00Z, UTC default
    assert hours[3] == {"hour": 3, "calls": 0, "answer_rate": None}


def test_contacts_and_date_range(report):
    assert report["contacts"] == {"total": 3, "too_little_history": 2,
                                  "min_history_calls": config.MIN_HISTORY_CALLS}
    assert report["date_range"]["first"] == "2026-06-01T10:00:00+00:00"


def test_report_is_json_and_free_of_identifiers(report):
    text = json.dumps(report)
    for secret in ("512345678", "8005550100", '"p"', '"u"'):
        assert secret not in text


def test_render_report(report):
    console = Console(record=True, width=120)
    console.print(render_report(report))
    text = console.export_text()
    for heading in ("Rejects by reason", "Coverage by country", "Coverage by industry",
                    "Calls by contact-local hour", "Time zone source"):
        assert heading in text

    def row(first: str) -> list[str]:  # the cells of the table row that starts with ``first``
        line = next(ln for ln in text.splitlines() if ln.strip("│ ").startswith(first + " "))
        return [cell.strip() for cell in line.strip().strip("│").split("│")]

    n = config.MIN_HISTORY_CALLS
    pl_rate = report["by_country"]["PL"]["answer_rate"]
    assert row("PL") == ["PL", str(n), "1", f"{100 * pl_rate:.1f}%"]
    assert row("finance") == ["finance", "1", "1", "0.0%"]
    assert row("rejected rows") == ["rejected rows", "2"]
    assert row("answer rate") == ["answer rate", f"{100 * report['answer_rate']:.1f}%"]
    hour = row(f"{12:02d}")  # the busiest local hour has the full bar
    assert hour[:3] == ["12", str(n), f"{100 * pl_rate:.1f}%"] and set(hour[3]) == {"█"}


def test_report_of_an_all_rejected_file():
    result = clean_history(pd.DataFrame({"contact_id": ["a"], "called_at": ["x"],
                                         "outcome": ["busy"]}), key=KEY)
    empty = quality_report(result)
    assert empty["rows"]["clean"] == 0
    assert empty["answer_rate"] is None
    assert empty["date_range"] == {"first": None, "last": None}
    assert empty["by_country"] == {}
    console = Console(record=True, width=120)
    console.print(render_report(empty))
    text = console.export_text()
    assert "unparseable timestamp" in text  # why the file is empty is shown
    assert "PL" not in text and "█" not in text  # and no coverage is made up


def test_weekday_hour_table_is_contact_local():
    from callback_timing.plots import weekday_hour_table

    calls = pd.DataFrame(
        {
            # the same instant: Tuesday 14:00 in Warsaw, Tuesday 08:00 in New York
            "called_at": pd.to_datetime(["2026-06-02T12:00Z"] * 3, utc=True),
            "timezone": ["Europe/Warsaw", "Europe/Warsaw", "America/New_York"],
            "answered": [1, 1, 0],
        }
    )
    counts, rates = weekday_hour_table(calls)
    assert counts.sum() == 3 and counts[1, 14] == 2 and counts[1, 8] == 1
    assert rates[1, 14] == 1.0 and rates[1, 8] == 0.0
    assert np.isnan(rates[0, 0])
