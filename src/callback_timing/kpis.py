"""Supervisor KPIs and ROI from what the service did: the decision log and the outcome store.

A *callback request* is a ``request_id`` the service ranked (``/rank``); its arm is the arm
of its first ranking: ``model`` or ``rules`` (who answered) or ``control`` (the traditional
desk's answer, :mod:`callback_timing.online`). Its calls are the outcomes posted with its
``request_id``. Per request (:func:`request_fates`):

- ``attempts``: calls made; ``first_answered``: the first call was answered;
- ``reached``: a call was answered within the deadline (default 48 h after ``requested_at``,
  or after the first ranking when the request did not say when it was made);
- ``hours_to_contact``: from the request to the first answered call; ``reached_4h``;
- ``illegal_calls``: calls outside the calling hours of the contact's zone and region, checked
  afresh with the policy config (must be 0);
- ``fallback``: the rules answered a ranking that was not in the control arm or asked for
  ``policy: rules`` (the model failed, was missing or too slow, or the contact opted out).

The experiment (:func:`roi`) compares the requests ranked with ``policy: auto`` outside the
control arm (the AI arm: model, with the rules as its fallback) against the control arm, per
request, with a 95 % confidence interval, exactly as the seed defines it::

    ROI = (saved costs + additional revenue - investment) / investment x 100
    saved costs = requests x (control attempts - AI attempts per request) x cost per attempt
    additional revenue = requests x (AI reach - control reach) x value of a reached callback

>>> import pandas as pd
>>> stats = {"ai": {"n": 400, "reached": 0.72, "attempts": 1.8, "var_reached": 0.2,
...                 "var_attempts": 0.6, "cov": -0.2},
...          "control": {"n": 400, "reached": 0.45, "attempts": 3.2, "var_reached": 0.25,
...                      "var_attempts": 0.5, "cov": -0.1}}
>>> out = roi(stats, cost_per_attempt=2.0, value_per_reached=50.0, investment=2000.0)
>>> round(out["roi_pct"], 1), out["conclusive"]
(226.0, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from callback_timing import calendar
from callback_timing import fastpath as fp
from callback_timing.policy_config import PolicyConfig, load_policy_config

ARMS = ("model", "rules", "control")
DEADLINE_HOURS = 48.0
FAST_HOURS = 4.0
#: The seed's before/after reference table (a traditional desk against AI timing).
REFERENCE = [
    {"kpi": "first-attempt answer rate", "before": "23%", "after": "38%"},
    {"kpi": "success rate", "before": "45%", "after": "72%"},
    {"kpi": "attempts per callback", "before": "3.2", "after": "1.8"},
    {"kpi": "time to contact", "before": "18 h", "after": "6 h"},
]
#: Default ROI inputs (the supervisor edits them in the page).
ROI_DEFAULTS = {"cost_per_attempt": 2.5, "conversion_rate": 0.2, "deal_value": 250.0,
                "investment": 1000.0}
_Z95 = 1.959963984540054


@dataclass
class Filters:
    """Which requests count: requested in ``[start, end)`` (UTC dates), of an industry and
    a country (``None``: all)."""

    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    industry: str | None = None
    country: str | None = None


def request_fates(decisions: pd.DataFrame, outcomes: pd.DataFrame,
                  config: PolicyConfig | None = None,
                  deadline_hours: float = DEADLINE_HOURS) -> pd.DataFrame:
    """One row per ranked callback request: arm, when, where, and what became of it."""
    config = config or load_policy_config()
    columns = ["request_id", "contact_id", "arm", "experiment", "requested_at", "industry",
               "country", "attempts", "first_answered", "reached", "hours_to_contact",
               "reached_4h", "illegal_calls", "fallback", "fallback_reason"]
    if not len(decisions):
        return pd.DataFrame(columns=columns)
    d = decisions.sort_values("seq", kind="stable")
    first = d.drop_duplicates("request_id", keep="first").set_index("request_id")
    out = pd.DataFrame({"request_id": first.index,
                        "contact_id": first["contact_id"].to_numpy(object),
                        "arm": first["arm"].to_numpy(object)})
    out["experiment"] = (first["policy"].fillna("auto").to_numpy(object) == "auto")
    start = first["requested_at"].fillna(first["now"])
    out["requested_at"] = start.to_numpy()
    fell = d[(d["arm"] != "control") & (d["source"] == "rules")
             & (d["policy"].fillna("auto") != "rules")]
    reason = fell.drop_duplicates("request_id").set_index("request_id")["fallback_reason"]
    out["fallback"] = out["request_id"].isin(reason.index).to_numpy()
    out["fallback_reason"] = out["request_id"].map(reason).to_numpy(object)

    calls = outcomes[outcomes["request_id"].isin(first.index)] if len(outcomes) else outcomes
    calls = calls.sort_values("called_at", kind="stable") if len(calls) else calls
    if len(calls):
        by = calls.groupby("request_id", sort=False)
        attempts = by.size()
        first_call = calls.drop_duplicates("request_id").set_index("request_id")["answered"]
        start_of = pd.to_datetime(start.reindex(calls["request_id"]), utc=True)
        late = (pd.to_datetime(calls["called_at"], utc=True).to_numpy()
                > (start_of + pd.Timedelta(hours=deadline_hours)).to_numpy())
        hits = calls[(calls["answered"].to_numpy() == 1) & ~late]
        reached_at = hits.drop_duplicates("request_id").set_index("request_id")["called_at"]
        illegal = pd.Series(illegal_calls(calls, config), index=calls.index)
        bad = illegal.groupby(calls["request_id"]).sum()
        place = calls.drop_duplicates("request_id", keep="last").set_index("request_id")
    else:
        attempts = first_call = reached_at = bad = pd.Series(dtype=float)
        place = pd.DataFrame(columns=["industry", "country"])
    rid = out["request_id"]
    out["industry"] = rid.map(place["industry"]).fillna("unknown").to_numpy(object)
    out["country"] = rid.map(place["country"]).fillna("unknown").to_numpy(object)
    out["attempts"] = rid.map(attempts).fillna(0).astype(int).to_numpy()
    out["first_answered"] = rid.map(first_call).fillna(0).astype(bool).to_numpy()
    contact_at = pd.to_datetime(rid.map(reached_at), utc=True)
    out["reached"] = contact_at.notna().to_numpy()
    hours = (contact_at - pd.to_datetime(out["requested_at"], utc=True)).dt.total_seconds()
    out["hours_to_contact"] = (hours / 3600.0).to_numpy()
    out["reached_4h"] = out["reached"] & (out["hours_to_contact"] <= FAST_HOURS)
    out["illegal_calls"] = rid.map(bad).fillna(0).astype(int).to_numpy()
    return out[columns]


def illegal_calls(calls: pd.DataFrame, config: PolicyConfig) -> np.ndarray:
    """Calls that started outside the calling hours of the contact's zone and region."""
    if not len(calls):
        return np.zeros(0, dtype=bool)
    ns = calendar.utc_ns_of(pd.to_datetime(calls["called_at"], utc=True))
    zones = calls["timezone"].fillna("UTC").to_numpy(object)
    minute, weekday = fp.local_parts(ns, zones)
    places = pd.MultiIndex.from_arrays([calls["country"].fillna(""),
                                        calls["subdivision"].fillna("")])
    codes, uniques = pd.factorize(places)
    weeks = np.stack([fp.week_table(config.hours_for(c or None, s or None))
                      for c, s in uniques])
    return fp.outside_hours(minute, weekday, weeks, codes, 1)


def apply_filters(fates: pd.DataFrame, filters: Filters | None) -> pd.DataFrame:
    """The requests ``filters`` keep."""
    if filters is None or not len(fates):
        return fates
    keep = np.ones(len(fates), dtype=bool)
    at = pd.to_datetime(fates["requested_at"], utc=True)
    if filters.start is not None:
        keep &= (at >= filters.start).to_numpy()
    if filters.end is not None:
        keep &= (at < filters.end).to_numpy()
    if filters.industry:
        keep &= (fates["industry"] == filters.industry).to_numpy()
    if filters.country:
        keep &= (fates["country"] == filters.country).to_numpy()
    return fates[keep]


def kpi_table(fates: pd.DataFrame, period: str | None = "week") -> pd.DataFrame:
    """KPIs per (period, arm) (``period``: ``day``, ``week`` or ``None`` for all time).

    ``time_to_contact_h`` and ``median_time_to_contact_h`` are over reached requests;
    ``fallback_share`` is over the requests the model was meant to answer (not control).
    """
    frame = fates.assign(period="all")
    if period and len(frame):
        at = pd.to_datetime(frame["requested_at"], utc=True).dt.tz_localize(None)
        frame["period"] = (at.dt.strftime("%Y-%m-%d") if period == "day" else
                           at.dt.to_period("W-SUN").dt.start_time.dt.strftime("%Y-%m-%d"))
    rows = []
    for (when, arm), g in frame.groupby(["period", "arm"], sort=True):
        hit = g.loc[g["reached"], "hours_to_contact"]
        rows.append({
            "period": when, "arm": arm, "requests": len(g),
            "first_attempt_rate": float(g["first_answered"].mean()),
            "success_rate": float(g["reached"].mean()),
            "attempts": float(g["attempts"].mean()),
            "time_to_contact_h": float(hit.mean()) if len(hit) else None,
            "median_time_to_contact_h": float(hit.median()) if len(hit) else None,
            "reached_4h_rate": float(g["reached_4h"].mean()),
            "illegal_calls": int(g["illegal_calls"].sum()),
            "fallback_share": (float(g["fallback"].mean()) if arm != "control" else None),
        })
    table = pd.DataFrame(rows, columns=[
        "period", "arm", "requests", "first_attempt_rate", "success_rate", "attempts",
        "time_to_contact_h", "median_time_to_contact_h", "reached_4h_rate", "illegal_calls",
        "fallback_share"])
    order = {a: i for i, a in enumerate(ARMS)}
    return table.sort_values(["period", "arm"], key=lambda s: s.map(order) if s.name == "arm"
                             else s, kind="stable").reset_index(drop=True)


def arm_stats(fates: pd.DataFrame) -> dict[str, dict]:
    """Per experiment arm (``ai``: ``policy: auto`` outside the control arm; ``control``):
    requests, mean reach and attempts, their variances and covariance (what :func:`roi`
    and the page's ROI panel need)."""
    out = {}
    exp = fates[fates["experiment"].astype(bool)]
    control = exp["arm"] == "control"
    for name, g in (("ai", exp[~control]), ("control", exp[control])):
        r = g["reached"].to_numpy(float)
        a = g["attempts"].to_numpy(float)
        n = len(g)
        out[name] = {
            "n": n, "reached": float(r.mean()) if n else None,
            "attempts": float(a.mean()) if n else None,
            "var_reached": float(r.var(ddof=1)) if n > 1 else None,
            "var_attempts": float(a.var(ddof=1)) if n > 1 else None,
            "cov": float(np.cov(r, a, ddof=1)[0, 1]) if n > 1 else None,
        }
    return out


def roi(stats: dict[str, dict], cost_per_attempt: float, value_per_reached: float,
        investment: float) -> dict:
    """ROI of AI timing over the control arm for the AI arm's requests, with a 95 % CI.

    The gain per request is ``value x (reach_ai - reach_control) + cost x (attempts_control
    - attempts_ai)``; its standard error comes from each arm's variance of ``value x reached
    - cost x attempts``. ``conclusive`` is false when the interval of the ROI spans 0 % or
    either arm has fewer than two requests.
    """
    ai, ctl = stats["ai"], stats["control"]
    nothing = {"roi_pct": None, "low_pct": None, "high_pct": None, "saved_costs": None,
               "additional_revenue": None, "requests": ai["n"], "conclusive": False}
    if ai["n"] < 2 or ctl["n"] < 2 or investment <= 0:
        return nothing
    v, c, n = value_per_reached, cost_per_attempt, ai["n"]
    saved = n * (ctl["attempts"] - ai["attempts"]) * c
    revenue = n * (ai["reached"] - ctl["reached"]) * v

    def var_u(s: dict) -> float:
        return max(v * v * s["var_reached"] + c * c * s["var_attempts"] - 2 * v * c * s["cov"],
                   0.0)

    se = math.sqrt(var_u(ai) / ai["n"] + var_u(ctl) / ctl["n"]) * n
    gain = saved + revenue
    pct = (gain - investment) / investment * 100

    def to_pct(x: float) -> float:
        return (x - investment) / investment * 100

    low, high = to_pct(gain - _Z95 * se), to_pct(gain + _Z95 * se)
    return {"roi_pct": pct, "low_pct": low, "high_pct": high, "saved_costs": saved,
            "additional_revenue": revenue, "requests": n,
            "conclusive": bool(low > 0 or high < 0)}


def heatmap(outcomes: pd.DataFrame, request_ids: pd.Series | None = None) -> list[dict]:
    """Answer rate per contact-local weekday (Mon=0) and hour of the calls (of the requests
    ``request_ids`` when given)."""
    calls = outcomes if request_ids is None else outcomes[
        outcomes["request_id"].isin(request_ids)]
    if not len(calls):
        return []
    ns = calendar.utc_ns_of(pd.to_datetime(calls["called_at"], utc=True))
    minute, weekday = fp.local_parts(ns, calls["timezone"].fillna("UTC").to_numpy(object))
    cell = pd.DataFrame({"weekday": weekday, "hour": minute // 60,
                         "answered": calls["answered"].to_numpy(int)})
    agg = cell.groupby(["weekday", "hour"])["answered"].agg(["size", "sum"]).reset_index()
    return [{"weekday": int(w), "hour": int(h), "calls": int(n), "answered": int(a)}
            for w, h, n, a in agg.itertuples(index=False)]


def funnel(fates: pd.DataFrame, max_attempts: int = 3) -> list[dict]:
    """Per arm: requests, requests called at least once, and reached by attempt 1..N."""
    rows = []
    for arm in ARMS:
        g = fates[fates["arm"] == arm]
        if not len(g):
            continue
        row = {"arm": arm, "requests": len(g), "called": int((g["attempts"] > 0).sum())}
        for k in range(1, max_attempts + 1):
            row[f"reached_by_{k}"] = int((g["reached"] & (g["attempts"] <= k)).sum())
        rows.append(row)
    return rows


def kpi_payload(decisions: pd.DataFrame, outcomes: pd.DataFrame,
                filters: Filters | None = None, period: str = "week",
                config: PolicyConfig | None = None) -> dict:
    """What ``/kpis`` answers and the dashboard draws (JSON-ready)."""
    fates = request_fates(decisions, outcomes, config)
    every = fates
    fates = apply_filters(fates, filters)
    payload: dict = {
        "requests": len(fates),
        "empty": not len(every),
        "next_step": ("No ranked callback requests yet: send /rank requests and post their "
                      "calls to /outcomes (with the same request_id), or run "
                      "`callback-timing demo`, which seeds a store through the API."
                      if not len(every) else None),
        "period": period,
        "filters": {"start": _day(filters.start if filters else None),
                    "end": _day(filters.end if filters else None),
                    "industry": filters.industry if filters else None,
                    "country": filters.country if filters else None},
        "choices": {"industries": sorted(map(str, every["industry"].unique())),
                    "countries": sorted(map(str, every["country"].unique())),
                    "first_day": _day(pd.to_datetime(every["requested_at"], utc=True).min()
                                      if len(every) else None),
                    "last_day": _day(pd.to_datetime(every["requested_at"], utc=True).max()
                                     if len(every) else None)},
        "totals": _records(kpi_table(fates, None)),
        "periods": _records(kpi_table(fates, period)),
        "experiment": arm_stats(fates),
        "funnel": funnel(fates),
        "heatmap": heatmap(outcomes, fates["request_id"]) if len(fates) else [],
        "fallback_reasons": {str(k): int(v) for k, v in
                             fates["fallback_reason"].dropna().value_counts().items()},
        "roi_defaults": ROI_DEFAULTS,
        "reference": REFERENCE,
    }
    d = ROI_DEFAULTS
    payload["roi"] = roi(payload["experiment"], d["cost_per_attempt"],
                         d["conversion_rate"] * d["deal_value"], d["investment"])
    return payload


def _day(at) -> str | None:
    return None if at is None or pd.isna(at) else pd.Timestamp(at).strftime("%Y-%m-%d")


def _records(table: pd.DataFrame) -> list[dict]:
    """Rows as dicts with NaN as ``None`` (valid JSON)."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in table.astype(object).to_dict("records")]
