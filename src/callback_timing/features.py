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

The work is done by array kernels (:mod:`callback_timing.history_kernel`,
:func:`context_codes`, :func:`feature_block` and :func:`callback_timing.calendar.\
calendar_arrays`); :func:`build_features` is their pandas wrapper, and the ranking policy
(:mod:`callback_timing.slot_features`) calls the same kernels on its prepared history.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from callback_timing import calendar, config, tzclock
from callback_timing.feature_block import FeatureBlock
from callback_timing.history_kernel import (
    CallArrays,
    PreparedCalls,
    history_arrays,
    seconds_of_ns,
)
from callback_timing.priors import Priors, hour_band
from callback_timing.schema import INDUSTRIES, OUTCOMES

if TYPE_CHECKING:
    from callback_timing.model import AnswerModel

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
    *[f"hist_{g}_excess" for g in ("wd", "band", "wdband", "hour", "wdhour")],
    "hours_since_last_call",
    "hours_since_last_answer",
    "consecutive_no_answers",
    *[f"calls_last_{h}h" for h in config.RECENT_WINDOWS_H],
    "answers_last_168h",
    "last_outcome",
]
#: Every feature column built, in order (the answer model reads :data:`MODEL_FEATURES`).
FEATURE_COLUMNS = (CALENDAR_FEATURES + CONTEXT_FEATURES + PRIOR_FEATURES + RULES_FEATURES
                   + HISTORY_FEATURES)
#: The columns the answer model reads (a subset of :data:`FEATURE_COLUMNS`). Left out, as
#: measured on the campaign replay (``benchmarks/bench_campaign.py``, README):
#:
#: - the answer-rate priors by industry x weekday / hour band (``prior_wd``, ``prior_band``,
#:   ``prior_wdband``) and the per-slot history *rates* that shrink toward them: fitted on the
#:   logged calls, they mirror the logging policy (when the desk called whom, first attempt or
#:   retry) as much as when people answer; the rule table (``prior_rules``) carries the
#:   expert's pattern instead, and the per-slot history enters as ``hist_*_excess``: answers
#:   above the prior in the group, 0 without calls there;
#: - fine or one-off clock features (``minute_of_day``, ``tod_sin``/``tod_cos``, ``month``,
#:   ``week_of_year``, ``utc_offset_h``): slot-to-slot noise that the best of ~190 slots
#:   selects, and months a short history has never seen.
MODEL_FEATURES = [
    c for c in FEATURE_COLUMNS
    if c not in {"minute_of_day", "tod_sin", "tod_cos", "month", "week_of_year", "utc_offset_h",
                 "prior_wd", "prior_band", "prior_wdband"}
    and not (c.startswith(("hist_wd", "hist_band", "hist_hour")) and c.endswith("_rate"))
]
CATEGORICAL_FEATURES = ["industry", "country", "last_outcome"]
LAST_OUTCOME_CATEGORIES = ["none", *OUTCOMES]

def _seconds(utc: pd.Series) -> np.ndarray:
    """Whole seconds since 2000-01-01 UTC (clipped at 0)."""
    return seconds_of_ns(calendar.utc_ns_of(utc))


def targets_from_calls(calls: pd.DataFrame) -> pd.DataFrame:
    """One target per call: the call's contact columns at its own instant."""
    targets = calls[["contact_id", "timezone", "country", "subdivision", "industry"]].copy()
    targets.insert(1, "at", calls["called_at"])
    return targets


def country_categories(priors: Priors) -> list[str]:
    """Categories of the ``country`` feature: the priors' countries and ``other``."""
    return [*priors.countries_, "other"] if priors.countries_ else ["other"]


def context_codes(industry: np.ndarray, country: np.ndarray, priors: Priors
                  ) -> dict[str, np.ndarray]:
    """Codes of contact attributes: ``industry`` (in ``INDUSTRIES``, unknown: ``other``),
    ``country`` (in :func:`country_categories`, unknown: ``other``) and ``prior`` (the
    industry's row in :meth:`Priors.dense`)."""
    industry = pd.Series(industry, dtype=object)
    country = pd.Series(country, dtype=object)
    countries = country_categories(priors)
    known = pd.Index(list(INDUSTRIES))

    def codes(values: pd.Series, labels: pd.Index) -> np.ndarray:
        values = values.where(values.isin(labels), "other")
        return pd.Categorical(values, categories=labels).codes

    return {"industry": codes(industry, known), "country": codes(country, pd.Index(countries)),
            "prior": priors.dense().codes(industry.astype(str).to_numpy())}


def feature_block(calls: PreparedCalls, t_code: np.ndarray, t_sec: np.ndarray, cut: np.ndarray,
                  cal: dict[str, np.ndarray], context: dict[str, np.ndarray],
                  priors: Priors) -> FeatureBlock:
    """The model's features (:data:`FEATURE_COLUMNS`) of targets, as arrays.

    ``calls`` are the prepared calls (:class:`~callback_timing.history_kernel.PreparedCalls`),
    ``cal`` the targets' :func:`calendar.calendar_arrays`, ``context`` their
    :func:`context_codes`; see :func:`~callback_timing.history_kernel.history_arrays`.
    """
    t_wd = np.asarray(cal["weekday"], dtype=np.int64)
    t_hour = np.asarray(cal["hour"], dtype=np.int64)
    prior = priors.dense().lookup(context["prior"], t_wd, hour_band(t_hour).astype(np.int64))
    hist = history_arrays(calls, t_code, t_sec, cut, t_wd, t_hour, prior)
    cols = {name: cal[name] for name in CALENDAR_FEATURES}
    for col in ("weekend", "holiday", "bridge_day", "summer", "end_of_year"):
        cols[col] = cols[col].astype(np.int8)
    cols["industry"], cols["country"] = context["industry"], context["country"]
    cols.update(prior)
    cells = priors.rule_model().cells(context["industry"], cols["weekday"],
                                      cols["minute_of_day"], cols["holiday"], cols["bridge_day"])
    cols["prior_rules"] = priors.rule_model().cells_p(cells)
    cols.update(hist)
    categories = {"industry": list(INDUSTRIES), "country": country_categories(priors),
                  "last_outcome": LAST_OUTCOME_CATEGORIES}
    return FeatureBlock({name: cols[name] for name in FEATURE_COLUMNS}, categories)


def _target_arrays(calls: pd.DataFrame, targets: pd.DataFrame):
    """Contact codes of calls and targets, how many codes there are, and the targets' seconds
    and cut-offs."""
    codes, uniques = pd.factorize(
        pd.concat([calls["contact_id"], targets["contact_id"]], ignore_index=True)
    )
    c_code, t_code = codes[: len(calls)].astype(np.int64), codes[len(calls) :].astype(np.int64)
    t_sec = _seconds(targets["at"])
    asof = targets["asof"].fillna(targets["at"]) if "asof" in targets else targets["at"]
    return c_code, t_code, len(uniques), t_sec, np.minimum(t_sec, _seconds(asof))


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
    c_ns = calendar.utc_ns_of(calls["called_at"])
    c_local = tzclock.local_ns(c_ns, calls["timezone"].to_numpy(object))
    if targets is None:
        targets = targets_from_calls(calls)
        t_ns, t_local = c_ns, c_local
    else:
        missing = [c for c in TARGET_COLUMNS if c not in targets]
        if missing:
            raise KeyError(f"targets frame lacks column(s): {', '.join(missing)}")
        t_ns = calendar.utc_ns_of(targets["at"])
        t_local = tzclock.local_ns(t_ns, targets["timezone"].to_numpy(object))
    c_code, t_code, n_codes, t_sec, cut = _target_arrays(calls, targets)
    c = PreparedCalls(CallArrays.of(calls, c_code, calendar.clock_arrays(c_ns, c_local)),
                      n_codes)
    cal = calendar.calendar_arrays(t_ns, t_local, targets["country"].to_numpy(object),
                                   targets["subdivision"].to_numpy(object))
    context = context_codes(targets["industry"].to_numpy(object),
                            targets["country"].to_numpy(object), priors)
    block = feature_block(c, t_code, t_sec, cut, cal, context, priors)
    return block.to_frame(targets.index)


def prior_rows(calls: pd.DataFrame) -> pd.DataFrame:
    """What :meth:`Priors.fit` reads of clean calls: industry, contact-local weekday and hour
    band, answered, country."""
    clock = calendar.local_clock(calls["called_at"], calls["timezone"])
    return pd.DataFrame(
        {
            "industry": calls["industry"].to_numpy(),
            "weekday": clock["weekday"].to_numpy(),
            "band": hour_band(clock["hour"]),
            "answered": calls["answered"].to_numpy(),
            "country": calls["country"].to_numpy(),
        }
    )


def fit_priors(calls: pd.DataFrame, strength: float | None = None) -> Priors:
    """Fit :class:`Priors` on a clean call frame (use the training period only)."""
    priors = Priors() if strength is None else Priors(strength=strength)
    return priors.fit(prior_rows(calls))


def scored_calls(calls: pd.DataFrame, which: np.ndarray, model: AnswerModel, priors: Priors
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Labels and ``model.p_answer`` of the calls ``which`` selects, their features built
    from all of ``calls`` with ``priors`` (e.g. another bundle's on this run's test slice)."""
    chosen = calls[which]
    X = build_features(calls, targets_from_calls(chosen), priors)
    return chosen["answered"].to_numpy(), model.p_answer(X)


def training_frame(calls: pd.DataFrame, priors: Priors) -> tuple[pd.DataFrame, pd.Series]:
    """Features and labels with one row per call (``X``, ``y``), point-in-time correct."""
    X = build_features(calls, None, priors)
    return X, calls["answered"].astype(np.int8).rename("answered")
