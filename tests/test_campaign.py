"""The offline campaign evaluator: replays obey the rules, and better timing pays."""

from __future__ import annotations

import dataclasses
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

import callback_timing as ct
from callback_timing.campaign import _illegal_calls, campaign_kpis, replay, value_lift_captured
from callback_timing.evaluate import first_requests
from callback_timing.policy_config import load_policy_config
from callback_timing.training import fit_and_evaluate


@pytest.fixture(scope="module")
def campaign():
    sim = ct.simulate(contacts=1200, days=90, seed=11, dirt_rate=0.0)
    calls = ct.clean_history(sim.history, key=b"campaign").calls
    ev = fit_and_evaluate(calls, baselines=False)
    start = pd.Timestamp(ev.split.bounds["test_from"])
    asked = first_requests(calls[calls["requested_at"] >= start])
    asked = asked.sort_values("now", kind="stable").head(300)
    asked = asked.rename(columns={"now": "requested_at"})
    before = calls[calls["called_at"] < start]
    return replay(sim.world, before, asked, bundle=ev.bundle, seed=3), asked


def test_every_call_obeys_the_calling_rules(campaign):
    result, asked = campaign
    calls = result.calls
    assert set(calls["policy"]) == {"desk", "rules", "model", "oracle"}
    assert result.kpis["illegal_calls"].sum() == 0
    # checked here afresh, call by call, in the contact's own zone (zoneinfo, not the code's)
    config = load_policy_config()
    for call in calls.itertuples():
        local = call.called_at.to_pydatetime().astimezone(ZoneInfo(call.timezone))
        minute = local.hour * 60 + local.minute
        sub = call.subdivision if isinstance(call.subdivision, str) else None
        hours = config.hours_for(call.country, sub)[local.weekday()]
        assert hours is not None and hours[0] <= minute and minute + 15 <= hours[1], call
    requested = asked.set_index("request_id")["requested_at"]
    delay = calls["called_at"] - calls["request_id"].map(requested)
    assert (delay >= pd.Timedelta(0)).all() and (delay <= pd.Timedelta(hours=48)).all()
    for _, group in calls.groupby(["policy", "request_id"]):
        assert len(group) <= 3 and group["answered"].iloc[:-1].sum() == 0  # stop once reached
        gaps = group["called_at"].sort_values().diff().dropna()
        assert (gaps >= pd.Timedelta(hours=2)).all()


def test_the_illegal_call_count_counts_calls_outside_hours(campaign):
    """What the KPI ``illegal_calls`` would show if a policy broke the calling hours."""
    calls = campaign[0].calls.head(3).reset_index(drop=True)
    assert not _illegal_calls(calls, load_policy_config()).any()
    local = [t.tz_convert(z) for t, z in zip(calls["called_at"], calls["timezone"], strict=True)]
    moved = calls.assign(called_at=[  # 03:00 that day; 20:50 (the slot would end after 21:00)
        local[0].replace(hour=3, minute=0).tz_convert("UTC"),
        local[1].replace(hour=20, minute=50).tz_convert("UTC"), calls["called_at"][2]])
    assert _illegal_calls(moved, load_policy_config()).tolist() == [True, True, False]


def test_kpis_follow_from_the_calls(campaign):
    result, asked = campaign
    calls, kpis = result.calls, result.kpis
    for name in ("desk", "model"):
        mine = calls[calls["policy"] == name]
        reached = mine.loc[mine["answered"] == 1, "request_id"].nunique()
        assert kpis.at[name, "reached_rate"] == pytest.approx(reached / len(asked))
        assert kpis.at[name, "attempts"] == pytest.approx(len(mine) / len(asked))
        assert kpis.at[name, "cost_per_reached"] == pytest.approx(len(mine) / reached)
        first = mine[mine["attempt"] == 1]
        assert kpis.at[name, "first_attempt_rate"] == pytest.approx(
            first["answered"].sum() / len(asked))
    priced = campaign_kpis(result.requests, cost_per_attempt=2.5)
    assert priced.at["desk", "cost_per_reached"] == pytest.approx(
        2.5 * kpis.at["desk", "cost_per_reached"])


def test_replayed_failures_have_the_histories_outcome_mix(campaign):
    """A missed call is logged busy, voicemail, ... in the simulator's shares, as in the
    history the model learnt from (not always ``no_answer``)."""
    from scipy.stats import chisquare

    from callback_timing.sim.outcomes import NON_ANSWER_SHARES

    calls = campaign[0].calls
    assert ((calls["outcome"] == "answered") == (calls["answered"] == 1)).all()
    failed = calls.loc[calls["answered"] == 0, "outcome"].value_counts()
    names = list(NON_ANSWER_SHARES)
    assert set(failed.index) <= set(names) and failed.sum() > 1000
    seen = failed.reindex(names, fill_value=0).to_numpy()
    share = np.array([NON_ANSWER_SHARES[n] for n in names])
    assert chisquare(seen, share / share.sum() * seen.sum()).pvalue > 1e-3
    # common random numbers: policies that make the same failed first call log the same label
    firsts = calls[(calls["attempt"] == 1) & (calls["answered"] == 0)]
    alike = firsts.groupby(["request_id", "called_at", "p_true"])["outcome"].agg(
        ["size", "nunique"])
    alike = alike[alike["size"] > 1]
    assert len(alike) > 20 and (alike["nunique"] == 1).all()


def test_better_timing_pays_and_the_oracle_bounds_it(campaign):
    kpis = campaign[0].kpis
    desk, rules, model, oracle = (kpis.at[p, "value"] for p in ("desk", "rules", "model",
                                                                 "oracle"))
    assert desk < rules <= oracle and desk < model <= oracle
    assert kpis.at["desk", "first_attempt_rate"] < kpis.at["model", "first_attempt_rate"]
    assert value_lift_captured(kpis, "model") > 0.5
    assert value_lift_captured(kpis, "rules") > 0.4
    assert np.isclose(value_lift_captured(kpis, "oracle"), 1.0)


def test_a_later_request_sees_the_calls_made_for_an_earlier_one():
    """Decisions see the calls the replay made the day before (not only the history), so the
    calling rules hold across requests of one contact."""
    sim = ct.simulate(contacts=30, days=20, seed=5, dirt_rate=0.0)
    contact = sim.world.contacts.iloc[0]
    monday = pd.Timestamp("2026-03-02 09:00", tz=contact["timezone"]).tz_convert("UTC")
    asked = pd.DataFrame({
        "request_id": ["first", "second"], "contact_id": contact["contact_id"],
        "requested_at": [monday, monday + pd.Timedelta(hours=24)],
        **{c: contact[c] for c in ("timezone", "country", "subdivision", "industry")}})
    config = dataclasses.replace(load_policy_config(), min_gap_hours=30.0)
    no_history = ct.clean_history(sim.history, key=b"x").calls.iloc[:0]
    calls = replay(sim.world, no_history, asked, config=config, policies=("desk",),
                   max_attempts=1, seed=0).calls.set_index("request_id")["called_at"]
    # the desk calls the first request at once; the second must wait 30 h after that call
    assert calls["first"] == monday
    assert calls["second"] >= calls["first"] + pd.Timedelta(hours=30)


def test_the_lift_line_says_n_a_when_the_oracle_does_not_beat_the_desk():
    from callback_timing.cli_policy import lift_line

    kpis = pd.DataFrame({"requests": 5, "value": [0.30, 0.45, 0.44, 0.48]},
                        index=["desk", "rules", "model", "oracle"])
    assert lift_line(kpis) == ("share of the oracle's value lift over the desk: model 78%, "
                               "rules 83%")
    kpis.loc["oracle", "value"] = 0.29  # five requests: the truth lost to the desk by chance
    assert "n/a (the oracle did not beat the desk on these 5 requests" in lift_line(kpis)
    assert lift_line(kpis.drop(index="oracle")) is None
