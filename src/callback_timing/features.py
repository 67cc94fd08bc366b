"""Feature builders: one code path for (contact, time) pairs, used by training and serving.

A *target* is a pair (contact, instant) whose answer probability we want: a past call for a
training row, a candidate slot for a ranking. :func:`build_features` computes, for each target,

- calendar features in the contact's local time (:mod:`callback_timing.calendar`);
- contact context: industry, country, UTC offset (unknown values allowed);
- priors: smoothed answer rates of the contact's industry by weekday and hour band, and the
  rule-based fallback's chance of the slot (``prior_rules``, from the table frozen in the
  :class:`~callback_timing.priors.Priors`), which the trees learn to correct;
- point-in-time history features from the contact's calls **strictly before** the target's
  instant (counts and smoothed answer rates overall, by weekday, by hour band and by weekday x
  hour band; hours since the last call and last answer; consecutive no-answers; calls in the
  last 3 h / 24 h / 7 days; last outcome).

Everything is vectorised: each history feature is a few ``np.searchsorted`` calls over calls
sorted by a composite key ``(contact, group, second)``, so a target sees exactly the calls of
its own contact and group that happened before it. The functions take frames of whole
contacts, so they can run unchanged per contact partition (e.g. on Dask).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from callback_timing import calendar, config
from callback_timing.priors import N_BANDS, Priors, hour_band
from callback_timing.schema import INDUSTRIES, OUTCOMES

#: Columns a targets frame must have (``at`` is tz-aware UTC). An optional ``asof`` column
#: (UTC) moves the history cut-off earlier: ranking at ``now`` for a slot at ``at`` uses only
#: calls before ``now``.
TARGET_COLUMNS = ("contact_id", "at", "timezone", "country", "subdivision", "industry")

CALENDAR_FEATURES = [
    "weekday",
    "hour",
    "minute_of_day",
    "tod_sin",
    "tod_cos",
    "month",
    "week_of_year",
    "weekend",
    "holiday",
    "bridge_day",
    "days_to_holiday",
    "days_from_holiday",
    "summer",
    "end_of_year",
    "utc_offset_h",
]
CONTEXT_FEATURES = ["industry", "country"]
PRIOR_FEATURES = ["prior_industry", "prior_wd", "prior_band", "prior_wdband"]
#: The rule-based fallback's chance of the slot (expert knowledge the trees can correct).
RULES_FEATURES = ["prior_rules"]
HISTORY_FEATURES = [
    "hist_n",
    "hist_rate",
    "hist_wd_n",
    "hist_wd_rate",
    "hist_band_n",
    "hist_band_rate",
    "hist_wdband_n",
    "hist_wdband_rate",
    "hist_hour_n",
    "hist_hour_rate",
    "hist_wdhour_n",
    "hist_wdhour_rate",
    "hours_since_last_call",
    "hours_since_last_answer",
    "consecutive_no_answers",
    *[f"calls_last_{h}h" for h in config.RECENT_WINDOWS_H],
    "answers_last_168h",
    "last_outcome",
]
#: Every model input column, in order.
FEATURE_COLUMNS = (CALENDAR_FEATURES + CONTEXT_FEATURES + PRIOR_FEATURES + RULES_FEATURES
                   + HISTORY_FEATURES)
CATEGORICAL_FEATURES = ["industry", "country", "last_outcome"]
LAST_OUTCOME_CATEGORIES = ["none", *OUTCOMES]

_EPOCH = np.datetime64("2000-01-01T00:00:00", "s")
_SHIFT = np.int64(2**32)  # seconds since 2000 fit in 32 bits until 2136


def _seconds(utc: pd.Series) -> np.ndarray:
    """Whole seconds since 2000-01-01 UTC (clipped at 0)."""
    values = utc.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[s]")
    return np.clip((values - _EPOCH).astype(np.int64), 0, None)


class _Sorted:
    """Calls sorted by ``group * 2**32 + second`` with cumulative answer counts."""

    def __init__(self, group: np.ndarray, sec: np.ndarray, answered: np.ndarray):
        key = group.astype(np.int64) * _SHIFT + sec
        order = np.argsort(key, kind="stable")
        self.key = key[order]
        self.order = order
        self.cum = np.concatenate([[0], np.cumsum(answered[order], dtype=np.int64)])

    def window(self, group: np.ndarray, sec: np.ndarray, since: np.ndarray | None = None):
        """Positions ``lo, hi`` of the calls of ``group`` with ``since <= second < sec``."""
        base = group.astype(np.int64) * _SHIFT
        hi = np.searchsorted(self.key, base + sec, side="left")
        lo = np.searchsorted(self.key, base, side="left")
        if since is not None:
            lo = np.maximum(lo, np.searchsorted(self.key, base + np.maximum(since, 0), "left"))
        return lo, hi

    def previous(self, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Key and original row of the call just before position ``hi`` (0 where none)."""
        if len(self.key) == 0:
            zeros = np.zeros(len(hi), dtype=np.int64)
            return zeros, zeros
        pos = np.maximum(hi - 1, 0)
        return self.key[pos], self.order[pos]

    def count_answered(self, group: np.ndarray, sec: np.ndarray):
        lo, hi = self.window(group, sec)
        return hi - lo, self.cum[hi] - self.cum[lo]


def targets_from_calls(calls: pd.DataFrame) -> pd.DataFrame:
    """One target per call: the call's contact columns at its own instant."""
    targets = calls[["contact_id", "timezone", "country", "subdivision", "industry"]].copy()
    targets.insert(1, "at", calls["called_at"])
    return targets


def history_features(
    calls: pd.DataFrame,
    targets: pd.DataFrame,
    priors: Priors,
    calls_clock: pd.DataFrame | None = None,
    targets_clock: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Point-in-time history features of ``targets`` from ``calls`` strictly before them.

    Parameters
    ----------
    calls : clean call frame (``contact_id``, ``called_at``, ``answered``, ``outcome``,
        ``timezone``).
    targets : frame with :data:`TARGET_COLUMNS`.
    priors : fitted :class:`~callback_timing.priors.Priors` the rates are smoothed toward.
    calls_clock, targets_clock : precomputed :func:`calendar.local_clock` frames (optional).

    Returns
    -------
    DataFrame aligned with ``targets`` holding :data:`PRIOR_FEATURES` and
    :data:`HISTORY_FEATURES`.
    """
    if calls_clock is None:
        calls_clock = calendar.local_clock(calls["called_at"], calls["timezone"])
    if targets_clock is None:
        targets_clock = calendar.local_clock(targets["at"], targets["timezone"])
    codes, _ = pd.factorize(
        pd.concat([calls["contact_id"], targets["contact_id"]], ignore_index=True)
    )
    c_code, t_code = codes[: len(calls)].astype(np.int64), codes[len(calls) :].astype(np.int64)
    c_sec, t_sec = _seconds(calls["called_at"]), _seconds(targets["at"])
    asof = targets["asof"].fillna(targets["at"]) if "asof" in targets else targets["at"]
    cut = np.minimum(t_sec, _seconds(asof))
    c_ans = calls["answered"].to_numpy(np.int64)
    c_wd = calls_clock["weekday"].to_numpy(np.int64)
    t_wd = targets_clock["weekday"].to_numpy(np.int64)
    c_hour = calls_clock["hour"].to_numpy(np.int64)
    t_hour = targets_clock["hour"].to_numpy(np.int64)
    c_band = hour_band(calls_clock["hour"]).astype(np.int64)
    t_band = hour_band(targets_clock["hour"]).astype(np.int64)

    prior = priors.lookup(targets["industry"].to_numpy(), t_wd, t_band)
    m = config.PRIOR_STRENGTH
    out = {name: prior[name].to_numpy() for name in PRIOR_FEATURES}

    by_contact = _Sorted(c_code, c_sec, c_ans)
    lo, hi = by_contact.window(t_code, cut)
    out["hist_n"] = (hi - lo).astype(np.float32)
    out["hist_rate"] = (by_contact.cum[hi] - by_contact.cum[lo] + m * out["prior_industry"]) / (
        hi - lo + m
    )
    groups = {
        "hist_wd": (c_code * 7 + c_wd, t_code * 7 + t_wd, "prior_wd"),
        "hist_band": (c_code * N_BANDS + c_band, t_code * N_BANDS + t_band, "prior_band"),
        "hist_wdband": (
            (c_code * 7 + c_wd) * N_BANDS + c_band,
            (t_code * 7 + t_wd) * N_BANDS + t_band,
            "prior_wdband",
        ),
        "hist_hour": (c_code * 24 + c_hour, t_code * 24 + t_hour, "prior_band"),
        "hist_wdhour": (
            (c_code * 7 + c_wd) * 24 + c_hour, (t_code * 7 + t_wd) * 24 + t_hour, "prior_wdband"
        ),
    }
    for name, (c_group, t_group, prior_name) in groups.items():
        counts, answers = _Sorted(c_group, c_sec, c_ans).count_answered(t_group, cut)
        out[f"{name}_n"] = counts.astype(np.float32)
        out[f"{name}_rate"] = (answers + m * out[prior_name]) / (counts + m)

    has_prev = hi > lo
    last_key, last_row = by_contact.previous(hi)
    last_sec = last_key - t_code * _SHIFT
    out["hours_since_last_call"] = np.where(has_prev, (t_sec - last_sec) / 3600.0, np.nan)
    outcome_codes = np.append(pd.Categorical(calls["outcome"], categories=OUTCOMES).codes, -1)
    out["last_outcome"] = pd.Categorical.from_codes(
        np.where(has_prev, outcome_codes[last_row] + 1, 0), categories=LAST_OUTCOME_CATEGORIES
    )
    windows = {}
    for hours in {*config.RECENT_WINDOWS_H, 168}:
        lo_w, hi_w = by_contact.window(t_code, cut, since=t_sec - hours * 3600)
        windows[hours] = lo_w, np.maximum(hi_w, lo_w)  # a window ending before it starts: empty
    for hours in config.RECENT_WINDOWS_H:
        lo_w, hi_w = windows[hours]
        out[f"calls_last_{hours}h"] = (hi_w - lo_w).astype(np.float32)
    lo_w, hi_w = windows[168]
    out["answers_last_168h"] = (by_contact.cum[hi_w] - by_contact.cum[lo_w]).astype(np.float32)

    answered = c_ans.astype(bool)
    only_answers = _Sorted(c_code[answered], c_sec[answered], c_ans[answered])
    lo_a, hi_a = only_answers.window(t_code, cut)
    has_answer = hi_a > lo_a
    last_answer_sec = only_answers.previous(hi_a)[0] - t_code * _SHIFT
    out["hours_since_last_answer"] = np.where(
        has_answer, (t_sec - last_answer_sec) / 3600.0, np.nan
    )
    after_answer = np.searchsorted(by_contact.key, t_code * _SHIFT + last_answer_sec, "right")
    out["consecutive_no_answers"] = np.where(has_answer, hi - after_answer, hi - lo).astype(
        np.float32
    )
    return pd.DataFrame(out, index=targets.index)


def build_features(
    calls: pd.DataFrame, targets: pd.DataFrame | None, priors: Priors
) -> pd.DataFrame:
    """The model's feature matrix (:data:`FEATURE_COLUMNS`) for ``targets``.

    Parameters
    ----------
    calls : clean call history (the contacts' earlier calls; may include later ones, which
        are ignored for each target).
    targets : frame with :data:`TARGET_COLUMNS`; ``None`` means one target per call (training
        rows, labelled by ``calls["answered"]``).
    priors : fitted :class:`~callback_timing.priors.Priors`.
    """
    calls_clock = calendar.local_clock(calls["called_at"], calls["timezone"])
    if targets is None:
        targets = targets_from_calls(calls)
        targets_clock = calls_clock
    else:
        missing = [c for c in TARGET_COLUMNS if c not in targets]
        if missing:
            raise KeyError(f"targets frame lacks column(s): {', '.join(missing)}")
        targets_clock = calendar.local_clock(targets["at"], targets["timezone"])
    cal = calendar.calendar_frame(
        targets["at"], targets["timezone"], targets["country"], targets["subdivision"],
        clock=targets_clock,
    )
    hist = history_features(calls, targets, priors, calls_clock, targets_clock)
    frame = cal[CALENDAR_FEATURES].copy()
    for col in ("weekend", "holiday", "bridge_day", "summer", "end_of_year"):
        frame[col] = frame[col].astype(np.int8)
    industry = targets["industry"].astype(object)
    industry = industry.where(industry.isin(INDUSTRIES), "other")
    frame["industry"] = pd.Categorical(industry, categories=list(INDUSTRIES))
    countries = [*priors.countries_, "other"] if priors.countries_ else ["other"]
    country = targets["country"].astype(object)
    country = country.where(country.isin(countries), "other")
    frame["country"] = pd.Categorical(country, categories=countries)
    frame["prior_rules"] = priors.rule_model().table_p(frame)
    for name in PRIOR_FEATURES + HISTORY_FEATURES:
        frame[name] = hist[name]
    return frame[FEATURE_COLUMNS]


def fit_priors(calls: pd.DataFrame, strength: float | None = None) -> Priors:
    """Fit :class:`Priors` on a clean call frame (use the training period only)."""
    clock = calendar.local_clock(calls["called_at"], calls["timezone"])
    frame = pd.DataFrame(
        {
            "industry": calls["industry"].to_numpy(),
            "weekday": clock["weekday"].to_numpy(),
            "band": hour_band(clock["hour"]),
            "answered": calls["answered"].to_numpy(),
            "country": calls["country"].to_numpy(),
        }
    )
    priors = Priors() if strength is None else Priors(strength=strength)
    return priors.fit(frame)


def training_frame(calls: pd.DataFrame, priors: Priors) -> tuple[pd.DataFrame, pd.Series]:
    """Features and labels with one row per call (``X``, ``y``), point-in-time correct."""
    X = build_features(calls, None, priors)
    return X, calls["answered"].astype(np.int8).rename("answered")
