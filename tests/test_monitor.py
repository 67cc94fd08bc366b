"""Monitoring (monitor.py): calibration, drift, fallbacks and PSI from a real store."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from callback_timing.monitor import monitor_report, psi
from callback_timing.store import OutcomeStore

NOW = pd.Timestamp("2026-06-29T00:00:00Z")


def _ranking(rid, at, p=None, source="model", arm="model", reason=None, policy="auto"):
    return {"request_id": rid, "contact_id": f"c-{rid}", "arm": arm, "source": source,
            "fallback_reason": reason, "policy": policy, "now": at, "windows": 1,
            "explored": False, "decided_at": at, "p_answer": p}


def _call(rid, at, answered, industry="it", country="PL", asked=None):
    return {"call_id": f"{rid}@{at}", "contact_id": f"c-{rid}", "request_id": rid,
            "called_at": pd.Timestamp(at), "outcome": "answered" if answered else "no_answer",
            "timezone": "Europe/Warsaw", "country": country, "industry": industry,
            "requested_at": pd.Timestamp(asked or at)}


@pytest.fixture
def store():
    s = OutcomeStore("sqlite://")
    rankings, calls = [], []
    day = NOW - pd.Timedelta(days=7)
    # 40 model rankings predicted 0.2, first calls answered 4 of 10 per 10 (observed 0.4)
    for i in range(40):
        rid = f"m{i}"
        rankings.append(_ranking(rid, day, p=0.2))
        calls.append(_call(rid, day + pd.Timedelta(hours=1), i % 10 < 4))
        calls.append(_call(rid, day + pd.Timedelta(hours=5), True))  # a later call: ignored
    # 10 rankings the rules answered instead of the model, 5 control, 5 policy=rules
    rankings += [_ranking(f"f{i}", day, source="rules", reason="no model loaded")
                 for i in range(10)]
    rankings += [_ranking(f"k{i}", day, source="rules", arm="control") for i in range(5)]
    rankings += [_ranking(f"r{i}", day, source="rules", arm="rules", policy="rules")
                 for i in range(5)]
    # the previous fortnight: retail answered 50 %; now retail answers 10 %
    before = NOW - pd.Timedelta(days=21)
    calls += [_call(f"p{i}", before, i % 2 == 0, industry="retail") for i in range(20)]
    calls += [_call(f"q{i}", day, i % 10 == 0, industry="retail") for i in range(20)]
    s.log_decisions(rankings)
    s.add_outcomes(pd.DataFrame(calls))
    return s


def test_the_report_measures_calibration_drift_and_fallbacks(store, caplog):
    reference = pd.DataFrame([_call(f"h{i}", NOW - pd.Timedelta(days=90, hours=i % 9), True)
                              for i in range(50)])  # all "it", requested at other hours
    with caplog.at_level(logging.WARNING, logger="callback_timing.monitor"):
        report = monitor_report(store, reference, days=14, now=NOW, min_sample=10)
    cal = report["calibration"]
    assert cal["n"] == 40 and cal["bins"] == [{"predicted": pytest.approx(0.2),
                                               "observed": pytest.approx(0.4), "n": 40}]
    assert cal["ece"] == pytest.approx(0.2)
    retail = {r["industry"]: r for r in report["drift"]["industry"]}["retail"]
    assert (retail["answer_rate"], retail["previous_answer_rate"]) == (
        pytest.approx(0.1), pytest.approx(0.5))
    assert (retail["calls"], retail["previous_calls"]) == (20, 20)
    # meant for the model: 40 + 10 (control and policy=rules are not fallbacks)
    assert report["fallbacks"] == {"share": pytest.approx(10 / 50),
                                   "reasons": {"no model loaded": 10}}
    assert report["psi"]["industry"] > 0.25  # retail appeared
    # requested at 02:00-03:00 in Warsaw now, at 02:00 only in the fortnight before
    assert report["psi"]["request_hour"] > 0.25
    assert any(a.startswith("calibration: expected calibration error 0.200") for a in
               report["alerts"])
    assert any("population stability index of industry" in a for a in report["alerts"])
    assert [r.getMessage() for r in caplog.records if r.name == "callback_timing.monitor"] == [
        f"monitor: {a}" for a in report["alerts"]]
    stored = store.outcomes_after(0)
    recent = stored[stored["called_at"] >= NOW - pd.Timedelta(days=14)]
    same = monitor_report(store, recent, days=14, now=NOW, min_sample=10)  # against itself
    assert (same["psi"]["industry"], same["psi"]["country"]) == (0.0, 0.0)
    bundle_like = monitor_report(store, reference.drop(columns="requested_at"), days=14,
                                 now=NOW, min_sample=10)  # a bundle's history: no requested_at
    assert set(bundle_like["psi"]) == {"industry", "country", "request_hour"}
    quiet = monitor_report(store, None, days=14, now=NOW, thresholds={"ece": 0.5})
    assert quiet["alerts"] == [] and quiet["psi"] == {}  # samples under 200: no PSI


def test_psi_is_zero_for_the_same_shares_and_grows_with_the_shift():
    a = pd.Series(["x"] * 50 + ["y"] * 50)
    assert psi(a, a.sample(frac=1.0, random_state=1)) == pytest.approx(0.0)
    small = psi(a, pd.Series(["x"] * 55 + ["y"] * 45))
    large = psi(a, pd.Series(["x"] * 90 + ["y"] * 10))
    assert 0 < small < 0.1 and large > 0.25  # below and above the usual thresholds
    assert np.isfinite(psi(a, pd.Series(["z"] * 10)))  # a new category: floored, finite


def test_an_empty_store_reports_nothing_to_measure():
    report = monitor_report(OutcomeStore("sqlite://"), None, now=NOW)
    assert report["calls"] == 0 and report["calibration"] == {"n": 0, "ece": None, "bins": []}
    assert report["fallbacks"]["share"] is None and report["alerts"] == []


def test_the_monitoring_section_of_the_policy_file(tmp_path):
    from starlette.testclient import TestClient

    from callback_timing.monitor import monitor_app
    from callback_timing.online import OnlineRanker, ServeSettings
    from callback_timing.policy_config import load_policy_config
    from callback_timing.schema import ConfigError

    rules = tmp_path / "policy.yaml"
    rules.write_text("monitoring: {days: 7, ece_alert: 0.01, psi_alert: 0.1, min_sample: 50}\n")
    cfg = load_policy_config(rules)
    assert (cfg.monitor_days, cfg.monitor_ece_alert, cfg.monitor_psi_alert,
            cfg.monitor_min_sample) == (7, 0.01, 0.1, 50)
    bad = tmp_path / "bad.yaml"
    bad.write_text("monitoring: {days: 0}\n")
    with pytest.raises(ConfigError, match="monitoring.days"):
        load_policy_config(bad)
    ranker = OnlineRanker(ServeSettings(model_dir=None, db=str(tmp_path / "o.db"),
                                        rules_path=rules, watch_seconds=0, purge=False))
    client = TestClient(monitor_app(lambda: ranker))
    assert client.get("/").json()["days"] == 7  # the policy file's default period
    assert client.get("/", params={"days": "30"}).json()["days"] == 30
    assert client.get("/", params={"days": "x"}).status_code == 400
    ranker.close()
