"""Plain-language reasons for a call window, derived from the features behind its score.

Dialers show them to agents, and a customer who asks how their best time is found gets them
(GDPR transparency). Each reason names the evidence: the contact's own calls, its industry's
pattern, the calendar, recent calls, urgency, and the calling rules that shaped the choice.

Examples
--------
>>> import pandas as pd
>>> row = pd.Series({"weekday": 1, "hour": 14, "hist_n": 9.0, "hist_rate": 0.4,
...                  "prior_industry": 0.2, "hist_wdband_n": 5.0,
...                  "hist_wdband_rate": (4 + 3 * 0.25) / (5 + 3), "prior_wdband": 0.25,
...                  "calls_last_24h": 0.0, "holiday": 0, "bridge_day": 0, "industry": "it"})
>>> window_reasons(row, source="model")[0]
'answered 4 of 5 calls on Tuesdays 14:00-16:00'
"""

from __future__ import annotations

from collections.abc import Mapping

from callback_timing import config

_DAY_NAMES = ("Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays",
              "Sundays")
_INDUSTRY_WORDS = {"it": "IT", "public_sector": "public-sector", "consumer": "private"}


def _answers(rate: float, n: float, prior: float) -> int:
    """Answered calls behind a smoothed rate ``(answers + m * prior) / (n + m)``."""
    m = config.PRIOR_STRENGTH
    return max(0, min(int(n), round(rate * (n + m) - m * prior)))


def _band(hour: int) -> str:
    width = config.HOUR_BAND_HOURS
    start = hour // width * width
    return f"{start:02d}:00-{min(start + width, 24):02d}:00"


def window_reasons(
    row: Mapping,
    source: str,
    rule_note: str | None = None,
    urgency: str = "standard",
    worth: float = 1.0,
    hours_since: float = 0.0,
    contact_notes: list[str] | None = None,
    explored: bool = False,
    opt_out: bool = False,
) -> list[str]:
    """Reasons for the window starting at the slot whose features are ``row`` (a mapping of
    feature name to value, e.g. a row of the feature frame)."""
    out: list[str] = []
    day, band = _DAY_NAMES[int(row["weekday"])], _band(int(row["hour"]))
    n_band, n_all = float(row.get("hist_wdband_n", 0) or 0), float(row.get("hist_n", 0) or 0)
    if opt_out:
        out.append("traditional callback: the contact opted out of AI timing, so no personal "
                   "history is used")
    elif n_band >= 2:
        a = _answers(float(row["hist_wdband_rate"]), n_band, float(row["prior_wdband"]))
        out.append(f"answered {a} of {int(n_band)} calls on {day} {band}")
    elif n_all >= 1:
        a = _answers(float(row["hist_rate"]), n_all, float(row["prior_industry"]))
        out.append(f"answered {a} of {int(n_all)} earlier calls")
    else:
        out.append("no call history yet: based on similar contacts")
    industry = str(row.get("industry", "other"))
    if source == "model" and n_band < 2 and "prior_wdband" in row:
        who = _INDUSTRY_WORDS.get(industry, industry.replace("_", " "))
        out.append(f"{who} contacts answer {float(row['prior_wdband']):.0%} of calls on "
                   f"{day} {band}")
    if rule_note:
        out.append(rule_note)
    if int(row.get("bridge_day", 0) or 0):
        out.append("bridge day: fewer people at work")
    if int(row.get("holiday", 0) or 0):
        out.append("public holiday (calls allowed by configuration)")
    recent = int(row.get("calls_last_24h", 0) or 0)
    if recent:
        out.append(f"called {recent} time{'s' if recent > 1 else ''} in the last 24 h")
    if urgency == "urgent":
        out.append("urgent: the earliest allowed time")
    elif urgency == "standard" and worth < 0.9:
        out.append(f"{hours_since:.0f} h after the request: a callback is then worth "
                   f"{worth:.0%} of an immediate one")
    out.extend(contact_notes or [])
    if explored:
        out.append("exploration: chosen at random in proportion to score, to keep learning")
    return out
