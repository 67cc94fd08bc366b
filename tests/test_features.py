"""Feature builders: point-in-time correctness, no leakage, DST, serving == training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from callback_timing import calendar
from callback_timing.features import (
    FEATURE_COLUMNS,
    HISTORY_FEATURES,
    MODEL_FEATURES,
    build_features,
    fit_priors,
    targets_from_calls,
    training_frame,
)
from tests.conftest import make_clean_calls

NUMERIC_HISTORY = [c for c in HISTORY_FEATURES if c != "last_outcome"]


def _brute_force(calls: pd.DataFrame, contact: str, at: pd.Timestamp) -> dict:
    """Reference implementation: one contact, one instant, plain Python."""
    mine = calls[(calls.contact_id == contact) & (calls.called_at.dt.floor("s") < at.floor("s"))]
    mine = mine.sort_values("called_at")
    out = {"hist_n": len(mine), "answers": int(mine.answered.sum())}
    out["calls_last_24h"] = int(
        (mine.called_at.dt.floor("s") >= at.floor("s") - pd.Timedelta("24h")).sum()
    )
    week = mine.called_at.dt.floor("s") >= at.floor("s") - pd.Timedelta("168h")
    out["answers_last_168h"] = int(mine.answered[week].sum())
    if len(mine):
        out["hours_since_last_call"] = (
            at.floor("s") - mine.called_at.iloc[-1].floor("s")
        ).total_seconds() / 3600
        out["last_outcome"] = mine.outcome.iloc[-1]
        run = 0
        for a in mine.answered.to_numpy()[::-1]:
            if a:
                break
            run += 1
        out["consecutive_no_answers"] = run
    else:
        out["hours_since_last_call"] = np.nan
        out["last_outcome"] = "none"
        out["consecutive_no_answers"] = 0
    return out


def test_training_frame_shape_and_columns(clean_calls):
    priors = fit_priors(clean_calls)
    X, y = training_frame(clean_calls, priors)
    assert list(X.columns) == FEATURE_COLUMNS
    assert len(X) == len(clean_calls) == len(y)
    assert y.sum() == clean_calls.answered.sum()
    assert (
        not X[NUMERIC_HISTORY]
        .drop(columns=["hours_since_last_call", "hours_since_last_answer"])
        .isna()
        .any()
        .any()
    )


def test_history_features_match_brute_force(clean_calls):
    priors = fit_priors(clean_calls)
    X, _ = training_frame(clean_calls, priors)
    rng = np.random.default_rng(1)
    for i in rng.choice(len(clean_calls), 40, replace=False):
        row = clean_calls.iloc[i]
        ref = _brute_force(clean_calls, row.contact_id, row.called_at)
        assert X.hist_n.iloc[i] == ref["hist_n"]
        assert X.calls_last_24h.iloc[i] == ref["calls_last_24h"]
        assert X.answers_last_168h.iloc[i] == ref["answers_last_168h"]
        assert X.consecutive_no_answers.iloc[i] == ref["consecutive_no_answers"]
        assert X.last_outcome.iloc[i] == ref["last_outcome"]
        np.testing.assert_allclose(X.hours_since_last_call.iloc[i], ref["hours_since_last_call"])


def test_smoothed_rate_moves_from_prior_toward_contact_rate():
    calls = make_clean_calls(n_calls=400, n_contacts=4, seed=3)
    calls["answered"] = (calls.contact_id == "c-0000").astype(np.int8)
    calls["outcome"] = np.where(calls.answered == 1, "answered", "no_answer")
    priors = fit_priors(calls)
    X, _ = training_frame(calls, priors)
    late = calls.groupby("contact_id").tail(1).index
    always = X.loc[late[calls.loc[late, "contact_id"] == "c-0000"], "hist_rate"].iloc[0]
    never = X.loc[late[calls.loc[late, "contact_id"] == "c-0001"], "hist_rate"].iloc[0]
    assert always > 0.9 and never < 0.1


def test_excess_is_the_groups_answers_above_its_prior_and_zero_without_calls(clean_calls):
    X, _ = training_frame(clean_calls, fit_priors(clean_calls))
    for group, prior in (("wd", "prior_wd"), ("band", "prior_band"), ("wdband", "prior_wdband"),
                         ("hour", "prior_band"), ("wdhour", "prior_wdband")):
        excess, n = X[f"hist_{group}_excess"], X[f"hist_{group}_n"]
        np.testing.assert_allclose(excess, X[f"hist_{group}_rate"] - X[prior], atol=1e-9)
        assert (excess[n == 0] == 0).all() and (excess[n > 0] != 0).any(), group


def test_the_model_reads_no_logged_rate_prior_and_no_minute_clock():
    assert set(MODEL_FEATURES) < set(FEATURE_COLUMNS)
    left_out = set(FEATURE_COLUMNS) - set(MODEL_FEATURES)
    assert {"prior_wd", "prior_band", "prior_wdband", "hist_wdhour_rate", "minute_of_day",
            "month"} <= left_out
    assert {"prior_rules", "weekday", "hour", "holiday", "hist_rate", "hist_wdhour_excess",
            "calls_last_24h"} <= set(MODEL_FEATURES)


def test_no_leakage_changing_later_calls_keeps_earlier_rows():
    calls = make_clean_calls(n_calls=3000, n_contacts=40, seed=5)
    priors = fit_priors(calls)
    cutoff = pd.Timestamp("2026-04-01", tz="UTC")
    X_before, _ = training_frame(calls, priors)

    changed = calls.copy()
    later = changed.called_at >= cutoff
    changed.loc[later, "answered"] = 1 - changed.loc[later, "answered"]
    changed.loc[later, "outcome"] = np.where(
        changed.loc[later, "answered"] == 1, "answered", "busy"
    )
    extra = changed[later].copy()
    extra["called_at"] = extra["called_at"] + pd.Timedelta("1h")
    extra["call_id"] = extra["call_id"] + "-dup"
    changed = pd.concat([changed, extra], ignore_index=True)
    X_changed, _ = training_frame(changed, priors)
    early = np.flatnonzero((calls.called_at < cutoff).to_numpy())
    pd.testing.assert_frame_equal(X_before.iloc[early], X_changed.iloc[early])

    removed = calls[~later]
    X_removed, _ = training_frame(removed.reset_index(drop=True), priors)
    pd.testing.assert_frame_equal(
        X_before.iloc[early].reset_index(drop=True), X_removed.reset_index(drop=True)
    )


def test_call_at_same_instant_is_not_its_own_history():
    calls = make_clean_calls(n_calls=50, n_contacts=1, seed=2)
    twin = calls.iloc[[10]].copy()
    twin["call_id"] = "twin"
    both = pd.concat([calls, twin]).sort_values("called_at", kind="stable").reset_index(drop=True)
    priors = fit_priors(both)
    X, _ = training_frame(both, priors)
    rows = X[both.called_at == calls.called_at.iloc[10]]
    assert (rows.hist_n == 10).all()


def test_serving_targets_equal_training_rows(clean_calls):
    priors = fit_priors(clean_calls)
    X, _ = training_frame(clean_calls, priors)
    idx = clean_calls.sample(25, random_state=0).index
    targets = targets_from_calls(clean_calls.loc[idx])
    served = build_features(clean_calls, targets, priors)
    pd.testing.assert_frame_equal(served, X.loc[idx])


def test_unknown_contact_and_values_are_allowed(clean_calls):
    priors = fit_priors(clean_calls)
    targets = pd.DataFrame(
        {
            "contact_id": ["never-called"],
            "at": [pd.Timestamp("2026-05-05T10:00Z")],
            "timezone": ["Asia/Tokyo"],
            "country": ["JP"],
            "subdivision": [None],
            "industry": ["astrology"],
        }
    )
    X = build_features(clean_calls, targets, priors)
    assert X.hist_n.iloc[0] == 0
    assert X.industry.iloc[0] == "other" and X.country.iloc[0] == "other"
    assert X.last_outcome.iloc[0] == "none"
    assert X.hour.iloc[0] == 19  # 10:00Z is 19:00 in Tokyo
    assert X.prior_wdband.iloc[0] == pytest.approx(priors.population_, abs=0.2)


@pytest.mark.parametrize(
    ("zone", "days"),
    [
        ("Europe/Warsaw", ("2026-03-24", "2026-03-31")),
        ("America/New_York", ("2026-03-03", "2026-03-10")),
        ("Europe/London", ("2026-10-20", "2026-10-27")),
    ],
)
def test_dst_local_nine_stays_nine(clean_calls, zone, days):
    local = pd.Series(pd.to_datetime([f"{d} 09:00" for d in days]))
    utc = calendar.local_to_utc(local, pd.Series([zone] * 2))
    assert utc.iloc[0].hour != utc.iloc[1].hour  # the UTC hour moves across the change...
    targets = pd.DataFrame(
        {
            "contact_id": "c-0000",
            "at": utc,
            "timezone": zone,
            "country": None,
            "subdivision": None,
            "industry": "it",
        }
    )
    X = build_features(clean_calls, targets, fit_priors(clean_calls))
    assert X.hour.tolist() == [9, 9] and X.minute_of_day.tolist() == [540, 540]  # ...local does not
    assert X.weekday.iloc[0] == X.weekday.iloc[1]
    assert X.utc_offset_h.iloc[0] != X.utc_offset_h.iloc[1]


def test_holiday_and_bridge_features_in_contact_calendar(clean_calls):
    targets = pd.DataFrame(
        {
            "contact_id": ["a", "b", "c", "d"],
            "at": pd.to_datetime(
                ["2026-05-01T10:00Z", "2026-05-01T10:00Z", "2026-11-27T15:00Z", "2026-05-04T10:00Z"]
            ),
            "timezone": ["Europe/Warsaw", "America/New_York", "America/New_York", "Europe/Warsaw"],
            "country": ["PL", "US", "US", "PL"],
            "subdivision": [None, "NY", "NY", None],
            "industry": ["it"] * 4,
        }
    )
    X = build_features(clean_calls, targets, fit_priors(clean_calls))
    assert X.holiday.tolist() == [1, 0, 0, 0]  # May Day in Poland, not in New York
    assert X.bridge_day.tolist() == [0, 0, 1, 0]  # Friday after Thanksgiving
    assert X.days_from_holiday.iloc[3] == 1  # 3 May, Constitution Day, was the day before


def test_public_api_names_resolve():
    import callback_timing as ct

    assert set(ct.__all__) - {"__version__"} == set(ct._EXPORTS)
    for name in ct.__all__:
        assert getattr(ct, name) is not None


def test_targets_with_an_empty_history(clean_calls):
    priors = fit_priors(clean_calls)
    empty = clean_calls.iloc[:0]
    targets = pd.DataFrame(
        {"contact_id": ["new"], "at": [pd.Timestamp("2026-06-02T08:00Z")],
         "timezone": ["Europe/Berlin"], "country": ["DE"], "subdivision": ["BY"],
         "industry": ["it"]}
    )
    X = build_features(empty, targets, priors)
    assert X.hist_n.iloc[0] == 0 and X.calls_last_24h.iloc[0] == 0
    assert np.isnan(X.hours_since_last_call.iloc[0])
    assert X.hist_rate.iloc[0] == pytest.approx(X.prior_industry.iloc[0])
    assert X.hour.iloc[0] == 10  # CEST
    assert len(build_features(clean_calls, targets.iloc[:0], priors)) == 0


def test_asof_cuts_history_for_future_slots(clean_calls):
    """Ranking at `now` for a later slot sees only calls before `now`."""
    priors = fit_priors(clean_calls)
    contact = clean_calls[clean_calls.contact_id == "c-0003"].reset_index(drop=True)
    now = contact.called_at.iloc[10]
    slot = now + pd.Timedelta("2h")
    base = {"contact_id": "c-0003", "timezone": contact.timezone.iloc[0],
            "country": contact.country.iloc[0], "subdivision": contact.subdivision.iloc[0],
            "industry": contact.industry.iloc[0]}
    targets = pd.DataFrame([{**base, "at": slot, "asof": now}, {**base, "at": now}])
    later_call = contact.iloc[[10]].assign(called_at=now + pd.Timedelta("1h"), call_id="late")
    with_late = pd.concat([clean_calls, later_call], ignore_index=True)
    X = build_features(with_late, targets, priors)
    X_plain = build_features(clean_calls, targets, priors)
    assert X.hist_n.iloc[0] == X.hist_n.iloc[1] == 10  # neither the call at now nor after it
    pd.testing.assert_frame_equal(X, X_plain)  # a call between now and the slot changes nothing
    assert X.hours_since_last_call.iloc[0] == pytest.approx(X.hours_since_last_call.iloc[1] + 2)
    assert (X[[f"calls_last_{h}h" for h in (3, 24, 168)]].to_numpy() >= 0).all()
