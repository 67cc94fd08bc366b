"""The service's state without HTTP: outcomes, control arm, decision log, reload, check."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import uuid

import numpy as np
import pandas as pd
import pytest

from callback_timing.online import CONTROL_REASON, OnlineRanker, ServeSettings, in_control
from callback_timing.policy import Policy
from callback_timing.policy_config import load_policy_config
from callback_timing.schema import ConfigError
from callback_timing.store import OutcomeStore
from tests.conftest import make_clean_calls, ranker_at, tiny_bundle

NOW = "2026-05-04T07:00:00Z"  # a Monday; the tiny bundle's history ends before it


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    _, folder, _ = tiny_bundle(tmp_path_factory.mktemp("online") / "model", n_calls=2000,
                               version="v1")
    return folder


def _ranker(tmp_path, bundle_dir, **kw) -> OnlineRanker:
    return ranker_at(tmp_path, bundle_dir, **kw)


def _req(cid: str, rid: str | None = None, **kw) -> dict:
    return {"request_id": rid or f"r-{cid}", "contact": {"contact_id": cid}, "now": NOW, **kw}


def test_outcome_is_seen_by_the_next_rank_and_survives_a_restart(tmp_path, bundle_dir):
    ranker = _ranker(tmp_path, bundle_dir)
    before = ranker.rank([_req("c-0001")])[0]
    assert before["source"] == "model"
    first = pd.Timestamp(before["windows"][0]["start"])
    called = first + pd.Timedelta(minutes=5)
    out = ranker.outcomes([{"call_id": "new-1", "request_id": "r-c-0001",
                            "contact_id": "c-0001", "called_at": called.isoformat(),
                            "outcome": "no_answer", "attempt": 1}])
    assert out == {"accepted": 1, "duplicates": 0, "rejected": []}
    later = {**_req("c-0001"), "now": (called + pd.Timedelta(minutes=1)).isoformat()}
    gap = load_policy_config().min_gap_hours
    after = ranker.rank([later])[0]
    assert pd.Timestamp(after["windows"][0]["start"]) >= called + pd.Timedelta(hours=gap)
    ranker.close()
    # a new instance on the same database starts from the stored outcome
    again = _ranker(tmp_path, bundle_dir)
    assert again.rank([later])[0]["windows"] == after["windows"]
    assert again.outcomes([{"call_id": "new-1", "contact_id": "c-0001",
                            "called_at": called.isoformat(), "outcome": "no_answer"}]
                          ) == {"accepted": 0, "duplicates": 1, "rejected": []}
    again.close()


def test_outcomes_equal_a_history_that_had_them(tmp_path, bundle_dir):
    """Adding calls online ranks exactly as a history that already held them."""
    ranker = _ranker(tmp_path, bundle_dir)
    calls = make_clean_calls(n_calls=40, n_contacts=5, seed=9, days=3)
    calls["called_at"] = pd.Timestamp("2026-05-01", tz="UTC") + (
        calls["called_at"] - pd.Timestamp("2026-03-02", tz="UTC"))
    rows = [{"call_id": f"o-{i}", "contact_id": r.contact_id, "called_at":
             r.called_at.isoformat(), "outcome": r.outcome, "timezone": r.timezone,
             "country": r.country, "industry": r.industry}
            for i, r in enumerate(calls.itertuples())]
    assert ranker.outcomes(rows)["accepted"] == len(rows)
    requests = [_req(c) for c in sorted(set(calls["contact_id"]))]
    online = ranker.rank(requests)
    ranker.close()
    base = ranker.policy.bundle.history
    fresh = calls.assign(call_id=[f"o-{i}" for i in range(len(calls))])
    merged = pd.concat([base, fresh[[c for c in fresh if c in base or c == "call_id"]]],
                       ignore_index=True)
    whole = Policy(ranker.policy.bundle, config=ranker.config, history=merged)
    whole.config = dataclasses.replace(whole.config, exploration_share=ranker.config.
                                       exploration_share)
    assert whole.rank(requests) == online


def test_rejected_outcomes_are_reported_by_index_and_the_rest_is_stored(tmp_path, bundle_dir):
    ranker = _ranker(tmp_path, bundle_dir)
    out = ranker.outcomes([
        {"call_id": "a", "contact_id": "c-0002", "called_at": "2026-05-04T06:00:00Z",
         "outcome": "answered"},
        {"call_id": "b", "contact_id": "c-0002", "called_at": "2026-05-04T06:00:00",
         "outcome": "answered"},
        {"call_id": "c", "contact_id": "c-0002", "called_at": "2026-05-04T06:10:00Z",
         "outcome": "hung up"},
        {"call_id": "d", "called_at": "2026-05-04T06:20:00Z", "outcome": "busy"},
    ])
    assert out["accepted"] == 1
    by_index = {r["index"]: r for r in out["rejected"]}
    assert set(by_index) == {1, 2, 3}
    assert by_index[1]["field"] == "called_at" and "offset" in by_index[1]["reason"]
    assert by_index[2]["field"] == "outcome" and by_index[2]["call_id"] == "c"
    assert by_index[3]["field"] == "contact_id"
    ranker.close()
    assert OutcomeStore(tmp_path / "o.db").outcomes_after(0)["call_id"].tolist() == ["a"]


def test_outcome_without_zone_takes_the_contacts_known_zone(tmp_path, bundle_dir):
    ranker = _ranker(tmp_path, bundle_dir)
    known = ranker.policy.history.query("contact_id == 'c-0003'")["timezone"].iloc[-1]
    ranker.outcomes([{"call_id": "z", "contact_id": "c-0003",
                      "called_at": "2026-05-04T06:00:00Z", "outcome": "busy"}])
    ranker.close()
    assert OutcomeStore(tmp_path / "o.db").outcomes_after(0)["timezone"].tolist() == [known]


def test_outcome_without_zone_takes_the_zone_rank_was_given(tmp_path, bundle_dir):
    """A contact the history does not know, ranked with its zone: its outcomes (sent as in
    the contract's example, without a zone) are stored in that zone, not the default UTC."""
    ranker = _ranker(tmp_path, bundle_dir)
    ranker.rank([{**_req("new-1"), "contact": {"contact_id": "new-1", "industry": "it",
                                                "timezone": "Europe/Warsaw"}},
                 {**_req("new-2"), "contact": {"contact_id": "new-2", "country": "US",
                                                "subdivision": "NY"}}])
    ranker.outcomes([{"call_id": f"z-{cid}", "contact_id": cid, "outcome": "busy",
                      "called_at": "2026-05-04T08:00:00Z"} for cid in ("new-1", "new-2",
                                                                     "never-ranked")])
    stored = ranker.store.outcomes_after(0).set_index("call_id")
    assert stored.loc["z-new-1", ["timezone", "industry"]].tolist() == ["Europe/Warsaw", "it"]
    assert stored.loc["z-new-2", ["timezone", "country", "subdivision"]].tolist() == [
        "America/New_York", "US", "NY"]
    assert stored.at["z-never-ranked", "timezone"] == "UTC"  # the documented default
    ranker.erase("new-1")  # an erased or opted-out contact's attributes are not kept
    ranker.opt_out("new-2")
    assert "new-1" not in ranker._given and "new-2" not in ranker._given
    ranker.close()


def test_control_arm_is_a_stable_share_of_auto_requests(tmp_path, bundle_dir):
    ranker = _ranker(tmp_path, bundle_dir, control_share=0.3)
    reqs = [_req(f"c-{i % 50:04d}", rid=f"req-{i}") for i in range(300)]
    answers = ranker.rank(reqs)
    control = [a["arm"] == "control" for a in answers]
    assert 0.2 < np.mean(control) < 0.4
    assert control == [in_control(f"request:req-{i}", 0.3) for i in range(300)]
    assert [a["arm"] == "control" for a in ranker.rank(reqs)] == control  # stable
    for a in answers:
        if a["arm"] == "control":
            assert (a["source"], a["fallback_reason"], a["model_version"]) == (
                "rules", CONTROL_REASON, None)
            local = pd.Timestamp(a["windows"][0]["local_start"])
            assert local.weekday() < 5 and 8 <= local.hour < 18  # the desk's hours
        else:
            assert a["arm"] == a["source"] == "model"
    explicit = ranker.rank([{**r, "policy": p} for r in reqs[:100] for p in ("model", "rules")])
    assert not any(a["arm"] == "control" for a in explicit)
    ranker.close()


def test_no_control_arm_when_its_share_is_zero(tmp_path, bundle_dir):
    ranker = _ranker(tmp_path, bundle_dir, control_share=0.0)
    assert {a["arm"] for a in ranker.rank([_req("c-0001", rid=f"x{i}") for i in range(100)])
            } == {"model"}
    ranker.close()
    with pytest.raises(ConfigError, match="control-share"):
        ServeSettings(model_dir=None, db="sqlite://", control_share=1.0)


def test_every_answer_is_in_the_decision_log(tmp_path, bundle_dir):
    ranker = _ranker(tmp_path, bundle_dir, control_share=0.5)
    reqs = [_req(f"c-{i:04d}", rid=f"d-{i}") for i in range(20)]
    reqs.append({"request_id": "bad", "contact": {"contact_id": "c-1", "timezone": "Mars/X"},
                 "now": NOW})
    answers = ranker.rank(reqs)
    ranker.flush()
    log = ranker.store.decisions_frame()
    assert len(log) == 20 and "bad" not in set(log["request_id"])  # errors are not decisions
    for a, row in zip(answers, log.itertuples(), strict=False):
        version = None if pd.isna(row.model_version) else row.model_version
        assert (row.request_id, row.arm, row.source, version) == (
            a["request_id"], a["arm"], a["source"], a["model_version"])
        assert row.window_start == pd.Timestamp(a["windows"][0]["start"])
        assert row.now == pd.Timestamp(NOW)
    ranker.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_instances_share_outcomes_through_the_database(tmp_path, bundle_dir, backend,
                                                           request):
    db = str(tmp_path / "o.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    a, b = (OnlineRanker(ServeSettings(model_dir=bundle_dir, db=db, control_share=0,
                                       watch_seconds=0, sync_seconds=0.0)) for _ in range(2))
    cid = f"c-{uuid.uuid4().hex[:10]}"  # new in every run (a PostgreSQL database persists)
    contact = {"contact_id": cid, "timezone": "Europe/Berlin", "country": "DE"}
    req = {"request_id": "r", "contact": contact, "now": "2026-05-04T08:01:00Z"}
    before = b.rank([req])[0]["windows"]
    a.outcomes([{"call_id": f"s-{cid}", "contact_id": cid, "called_at": "2026-05-04T08:00:00Z",
                 "outcome": "no_answer", "timezone": "Europe/Berlin", "country": "DE"}])
    after = b.rank([req])[0]["windows"]
    assert after != before
    assert pd.Timestamp(after[0]["start"]) >= pd.Timestamp("2026-05-04T08:00:00Z") + \
        pd.Timedelta(hours=load_policy_config().min_gap_hours)
    a.close()
    b.close()


def test_missing_or_corrupt_model_serves_the_rules(tmp_path, bundle_dir):
    ranker = _ranker(tmp_path, tmp_path / "nothing-here")
    info = ranker.info()
    assert (info["source"], info["degraded"], info["model_version"]) == ("rules", True, None)
    assert ranker.rank([_req("c-0001")])[0]["fallback_reason"] == "no model loaded"
    ranker.close()
    broken = tmp_path / "broken"
    shutil.copytree(bundle_dir, broken)
    for f in (broken / "model").iterdir():
        f.write_text("{ not json")
    ranker = _ranker(tmp_path, broken)
    assert ranker.info()["degraded"] and "could not be loaded" in ranker.info()["detail"]
    assert ranker.rank([_req("c-0001")])[0]["source"] == "rules"
    ranker.close()
    cut = tmp_path / "cut"  # only the booster damaged (a copy cut short)
    shutil.copytree(bundle_dir, cut)
    booster = cut / "model" / "booster.json"
    booster.write_bytes(booster.read_bytes()[:500])
    ranker = _ranker(tmp_path, cut)
    detail = ranker.info()["detail"]
    assert "model/booster.json is not a readable XGBoost model" in detail
    assert "\n" not in detail and "[bt]" not in detail  # not XGBoost's C++ stack trace
    ranker.close()


def test_reload_swaps_a_good_model_and_refuses_a_bad_one(tmp_path, bundle_dir):
    serving = tmp_path / "serving"
    shutil.copytree(bundle_dir, serving)
    ranker = _ranker(tmp_path, serving)
    assert ranker.model_version == "v1"
    # a bundle whose model predicts NaN: refused, v1 keeps answering
    bad = tmp_path / "bad"
    shutil.copytree(bundle_dir, bad)
    meta = json.loads((bad / "metadata.json").read_text())
    meta["version"] = "v-bad"
    (bad / "metadata.json").write_text(json.dumps(meta))
    booster = bad / "model" / "booster.json"
    text = booster.read_text()
    booster.write_text(text.replace('"base_weights":[', '"base_weights":[NaN,', 1)
                       if '"base_weights":[' in text else "{}")
    refused = ranker.reload(bad)
    assert refused["reloaded"] is False and refused["model_version"] == "v1"
    nothing = ranker.reload(tmp_path)  # a folder without a bundle
    assert nothing == {"reloaded": False, "model_version": "v1", "detail":
                       f"not reloaded: no model bundle at {tmp_path}; model v1 still answers"}
    assert ranker.rank([_req("c-0001")])[0]["model_version"] == "v1"
    # a good new champion: swapped without a restart
    _, good, _ = tiny_bundle(tmp_path / "good", n_calls=1800, seed=4, version="v2")
    done = ranker.reload(good)
    assert done == {"reloaded": True, "model_version": "v2", "detail": done["detail"]}
    assert ranker.rank([_req("c-0001")])[0]["model_version"] == "v2"
    assert ranker.info()["model_version"] == "v2"
    ranker.close()


def test_watcher_reloads_a_new_bundle_in_the_served_folder(tmp_path, bundle_dir):
    serving = tmp_path / "serving"
    shutil.copytree(bundle_dir, serving)
    ranker = ranker_at(tmp_path, serving, watch_seconds=0.05)
    _, new, _ = tiny_bundle(tmp_path / "new", n_calls=1800, seed=4, version="v3")
    meta = json.loads((new / "metadata.json").read_text())
    (new / "metadata.json").write_text(json.dumps({**meta, "decision": "champion"}))
    shutil.rmtree(serving)
    shutil.copytree(new, serving)
    os.utime(serving / "metadata.json", (1e9, 2e9))
    for _ in range(200):
        if ranker.model_version == "v3":
            break
        ranker._stop.wait(0.05)
    assert ranker.model_version == "v3"
    ranker.close()


def test_watcher_leaves_a_challenger_to_an_explicit_reload(tmp_path, bundle_dir, caplog):
    serving = tmp_path / "serving"
    shutil.copytree(bundle_dir, serving)
    ranker = ranker_at(tmp_path, serving, watch_seconds=0.05)
    _, new, _ = tiny_bundle(tmp_path / "new", n_calls=1800, seed=4, version="v4")
    meta = json.loads((new / "metadata.json").read_text())
    (new / "metadata.json").write_text(json.dumps({**meta, "decision": "challenger"}))
    with caplog.at_level(logging.WARNING, logger="callback_timing.online"):
        shutil.rmtree(serving)
        shutil.copytree(new, serving)  # what `train --out` writes when it did not promote
        os.utime(serving / "metadata.json", (1e9, 2e9))
        for _ in range(200):
            if "now holds a challenger" in caplog.text:
                break
            ranker._stop.wait(0.05)
    assert f"{serving} now holds a challenger (not promoted): model v1 still answers" in (
        caplog.text)
    assert ranker.model_version == "v1"
    # a bundle trained with --no-track has no decision: never compared, not served either
    _, untracked, _ = tiny_bundle(tmp_path / "untracked", n_calls=1800, seed=5, version="v5")
    with caplog.at_level(logging.WARNING, logger="callback_timing.online"):
        shutil.rmtree(serving)
        shutil.copytree(untracked, serving)
        os.utime(serving / "metadata.json", (2e9, 3e9))
        for _ in range(200):
            if "never compared with the champion" in caplog.text:
                break
            ranker._stop.wait(0.05)
    assert f"{serving} now holds a bundle never compared with the champion" in caplog.text
    assert ranker.model_version == "v1"
    shutil.rmtree(serving)
    shutil.copytree(new, serving)
    assert ranker.reload()["model_version"] == "v4"  # asked for: served
    ranker.close()
    with caplog.at_level(logging.WARNING, logger="callback_timing.online"):
        OnlineRanker(ServeSettings(model_dir=serving, db=str(tmp_path / "o.db"),
                                   watch_seconds=0)).close()  # a restart serves the folder
    assert f"model v4 was not promoted (a challenger in {serving})" in caplog.text


def test_dial_check_names_the_rule(tmp_path, bundle_dir):
    ranker = _ranker(tmp_path, bundle_dir)
    warsaw = {"contact_id": "c-new", "timezone": "Europe/Warsaw", "country": "PL"}
    night = ranker.check(warsaw, "2026-05-05T22:00:00Z")
    assert night == {"allowed": False,
                     "reasons": ["outside calling hours 08:00-21:00 Europe/Warsaw"]}
    assert ranker.check(warsaw, "2026-05-05T10:00:00Z") == {"allowed": True, "reasons": []}
    # the last minute of the calling hours is still allowed; the first after is not
    assert ranker.check(warsaw, "2026-05-05T18:59:00Z")["allowed"]
    assert not ranker.check(warsaw, "2026-05-05T19:00:00Z")["allowed"]
    holiday = ranker.check(warsaw, "2026-05-01T10:00:00Z")  # Labour Day in Poland
    assert holiday["reasons"] == ["public holiday"]
    ranker.outcomes([{"call_id": "k1", "request_id": "rq", "contact_id": "c-new",
                      "called_at": "2026-05-05T10:00:00Z", "outcome": "no_answer",
                      "timezone": "Europe/Warsaw", "country": "PL"}])
    soon = ranker.check(warsaw, "2026-05-05T10:30:00Z")
    assert not soon["allowed"] and "after the last call" in soon["reasons"][0]
    dnc = ranker.check({**warsaw, "do_not_call": True}, "2026-05-05T10:00:00Z")
    assert dnc["reasons"] == ["the contact objected to being called (do_not_call)"]
    assert ranker.rank([{**_req("c-new"), "contact": {**warsaw, "do_not_call": True}}]
                       )[0]["windows"] == []
    ranker.close()


def test_workers_on_one_machine_see_outcomes_and_reloads_at_once(tmp_path, bundle_dir):
    """Two workers (instances) on one SQLite file: no waiting for the periodic sync."""
    a, b = (OnlineRanker(ServeSettings(model_dir=bundle_dir, db=str(tmp_path / "o.db"),
                                       control_share=0, watch_seconds=0, sync_seconds=3600))
            for _ in range(2))
    req = {**_req("c-0004"), "now": "2026-05-04T08:01:00Z"}
    before = b.rank([req])[0]["windows"]
    a.outcomes([{"call_id": "w1", "contact_id": "c-0004", "called_at": "2026-05-04T08:00:00Z",
                 "outcome": "no_answer"}])
    after = b.rank([req])[0]["windows"]
    assert after != before and pd.Timestamp(after[0]["start"]) >= pd.Timestamp(
        "2026-05-04T10:00:00Z")
    _, new, _ = tiny_bundle(tmp_path / "new", n_calls=1800, seed=4, version="v9")
    assert a.reload(new)["reloaded"]
    b.rank([req])  # sees a's beacon: loads the new model in the background, answers meanwhile
    for _ in range(200):
        if b.info()["model_version"] == "v9":
            break
        b._stop.wait(0.05)
    assert b.rank([req])[0]["model_version"] == "v9"  # b followed a's reload
    a.close()
    b.close()


def test_a_failing_model_is_logged_once_a_minute_without_personal_data(tmp_path, bundle_dir,
                                                                        caplog):
    ranker = _ranker(tmp_path, bundle_dir)

    class Broken:
        def p_answer(self, X):
            raise RuntimeError("boom")

    ranker.policy.bundle = dataclasses.replace(ranker.policy.bundle, model=Broken())
    with caplog.at_level("WARNING", logger="callback_timing.online"):
        answers = ranker.rank([_req(f"c-{i:04d}", rid=f"f-{i}",
                                    contact={"contact_id": f"c-{i:04d}", "phone": "+48512345678"})
                               for i in range(5)])
    assert {a["fallback_reason"] for a in answers} == {"model failed (RuntimeError)"}
    lines = [r.getMessage() for r in caplog.records
             if r.name == "callback_timing.online" and r.levelno >= logging.WARNING]
    assert lines == ["the rules answered 1 ranking(s): model failed (RuntimeError)"]
    assert not any("c-0" in line or "512345678" in line for line in caplog.messages)
    ranker.close()


def test_folding_added_calls_in_keeps_what_the_contact_is_known_by(tmp_path):
    """A compaction must not forget a contact's subdivision because its last call lacks it
    (Florida's calling hours end at 20:00, the default's at 21:00)."""
    history = make_clean_calls(n_calls=50, n_contacts=5, seed=1)
    policy = Policy(history=history)
    policy.compact_rows, policy.compact_share = 1, 0.0
    florida = {"contact_id": "fl-1", "timezone": "America/New_York", "country": "US",
               "subdivision": "FL", "industry": "retail"}
    calls = pd.DataFrame([{**florida, "call_id": "f1", "outcome": "busy", "answered": 0,
                           "called_at": pd.Timestamp("2026-05-04T14:00:00Z"),
                           "request_id": None},
                          {**florida, "subdivision": None, "industry": None, "call_id": "f2",
                           "outcome": "busy", "answered": 0, "request_id": None,
                           "called_at": pd.Timestamp("2026-05-04T18:00:00Z")}])
    policy.add_calls(calls.iloc[:1])
    policy.add_calls(calls.iloc[1:])  # folds everything into the history
    assert not policy._recent
    late = policy.dial_check({"contact_id": "fl-1"}, "2026-05-05T00:30:00Z")  # 20:30 in Miami
    assert late == {"allowed": False,
                    "reasons": ["outside calling hours 08:00-20:00 America/New_York"]}


def test_outcomes_with_a_nul_character_or_odd_types_are_rejected_alone(tmp_path, bundle_dir):
    ranker = _ranker(tmp_path, bundle_dir)
    out = ranker.outcomes([
        {"call_id": "n\x00l", "contact_id": "c-0001", "called_at": "2026-05-04T06:00:00Z",
         "outcome": "busy"},
        {"call_id": "num", "contact_id": 42, "called_at": "2026-05-04T06:00:00Z",
         "outcome": "busy"},
        {"call_id": "half", "contact_id": "c-0001", "called_at": "2026-05-04T06:05:00Z",
         "outcome": "busy", "attempt": 1.5},
    ])
    assert out["accepted"] == 1
    assert [(r["index"], r["field"]) for r in out["rejected"]] == [(0, "call_id"),
                                                                   (2, "attempt")]
    assert ranker.outcomes([{"contact_id": "x\x00"}])["rejected"][0]["reason"] == \
        "contains a NUL character"
    ranker.close()


def test_ranking_goes_on_when_the_store_does_not_answer(tmp_path, bundle_dir, caplog,
                                                       monkeypatch):
    import sqlalchemy as sa

    ranker = _ranker(tmp_path, bundle_dir, sync_seconds=0.0)

    def down(*args, **kwargs):
        raise sa.exc.OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(ranker.store, "outcomes_after", down)
    with caplog.at_level("WARNING", logger="callback_timing.online"):
        first = ranker.rank([_req("c-0001")])[0]
        second = ranker.rank([_req("c-0002")])[0]
    assert first["source"] == second["source"] == "model" and first["windows"]
    assert [m for m in caplog.messages if "outcome store unreachable" in m] == [
        "outcome store unreachable (OperationalError): ranking with the state already held"]
    ranker.close()


def test_outcomes_of_mixed_types_without_zones_are_checked_one_by_one(tmp_path, bundle_dir):
    """Numbers and booleans where text is expected, and profile filling, never raise."""
    ranker = _ranker(tmp_path, bundle_dir)
    out = ranker.outcomes([
        {"call_id": 7, "contact_id": "c-0001", "called_at": "2026-05-04T06:00:00Z",
         "outcome": "busy", "industry": 3.5},
        {"call_id": True, "contact_id": "c-0002", "called_at": 1780000000, "outcome": False,
         "timezone": None},
    ])
    assert out["accepted"] == 1
    assert {r["index"] for r in out["rejected"]} == {1}
    ranker.close()


@pytest.mark.parametrize("fold", [False, True])
def test_added_calls_give_the_slot_table_of_a_history_that_had_them(bundle_dir, fold):
    """Contacts with added calls (some of them late, some at the same second as a history
    call, some for the request being ranked) are scored, allowed and forbidden exactly as
    with a history that held those calls; contacts without added calls in the same batch
    are untouched."""
    from callback_timing.bundle import ModelBundle

    bundle = ModelBundle.load(bundle_dir)
    base = bundle.history
    last = base["called_at"].max()
    fresh_ids = sorted(base["contact_id"].unique())[:6]
    known = base.drop_duplicates("contact_id", keep="last").set_index("contact_id")
    rows = []
    for i, cid in enumerate(fresh_ids):
        mine = base[base["contact_id"] == cid]
        for k, at in enumerate([mine["called_at"].iloc[-1],  # the same second as a history call
                                mine["called_at"].iloc[0] + pd.Timedelta(minutes=7),  # late
                                last + pd.Timedelta(hours=1 + i)]):
            rows.append({**known.loc[cid, ["timezone", "country", "subdivision", "industry"]]
                         .to_dict(), "contact_id": cid, "call_id": f"add-{i}-{k}",
                         "called_at": at, "outcome": ["answered", "busy", "no_answer"][k],
                         "answered": int(k == 0), "request_id": f"req-{cid}"})
    added = pd.DataFrame(rows)
    online = Policy(bundle)
    if fold:  # the second batch goes over the threshold: everything is folded in at once
        online.compact_rows, online.compact_share = 8, 0.0
    online.add_calls(added.iloc[:7])
    online.add_calls(added.iloc[7:])  # a contact's calls in two batches
    assert bool(online._recent) is not fold
    assert len(online.history) == len(base) + len(added)
    whole = Policy(bundle, history=pd.concat([base, added], ignore_index=True))
    others = sorted(base["contact_id"].unique())[-4:]
    now = (last + pd.Timedelta(hours=7)).isoformat()
    requests = [{"request_id": f"req-{c}", "contact": {"contact_id": c}, "now": now,
                 "policy": "model", "horizon_hours": 24} for c in [*fresh_ids, *others]]
    got = online.slot_table(requests, allowed_only=False)
    want = whole.slot_table(requests, allowed_only=False)
    pd.testing.assert_frame_equal(got, want)
    assert got["why_not"].str.contains("attempt", na=False).any()  # 3 attempts: capped
    assert got["allowed"].any()
