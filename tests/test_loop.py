"""The learning loop (issue 11): exploration of a server without a model, the decision log
replayed off-policy, ``retrain`` (skip, promote, keep), ``/metrics``, and the whole loop end
to end on a real server fed by the simulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from callback_timing import config, tracking
from callback_timing.bundle import ModelBundle
from callback_timing.data import clean_history
from callback_timing.offpolicy import logged_choices
from callback_timing.policy import Policy
from callback_timing.retrain import retrain
from callback_timing.simulation import simulate
from callback_timing.store import OutcomeStore
from tests.conftest import private_mlflow, ranker_at
from tests.test_service import CLI, Server

T0 = pd.Timestamp("2026-05-04T08:00:00Z")


@pytest.fixture
def mlruns(tmp_path, monkeypatch):
    """A private MLflow store and BentoML home."""
    private_mlflow(monkeypatch, tmp_path)
    yield
    mlflow.set_tracking_uri(None)


# --- exploration of a server without a model ------------------------------------------------

def _request(i: int, **extra) -> dict:
    return {"request_id": f"r-{i}", "contact": {"contact_id": f"c-{i}",
                                                "timezone": "Europe/Berlin", "industry": "it"},
            "now": "2026-05-05T07:00:00Z", **extra}


def test_a_server_without_a_model_explores_and_logs_the_propensity():
    policy = Policy(None)
    answers = policy.rank([_request(i) for i in range(600)])
    explored = [a for a in answers if a["explored"]]
    # about 5 % (exploration.share), each with the probability of its first window
    assert 10 <= len(explored) <= 60
    assert all(a["source"] == "rules" and a["fallback_reason"] == "no model loaded"
               for a in answers)
    assert all(a["propensity"] is not None and 0 < a["propensity"] <= 1 for a in answers)
    # a random pick is rarely the best slot (then its propensity is 0.95 + a little)
    assert sum(a["propensity"] < 0.5 for a in explored) >= 0.8 * len(explored)
    assert all(a["propensity"] > 0.9 for a in answers if not a["explored"])
    # a choice of the caller's or the contact's is never explored
    chosen = policy.rank([_request(i, policy="rules") for i in range(300)]
                         + [_request(i, contact={"contact_id": f"c-{i}", "opt_out": True})
                            for i in range(300)])
    assert not any(a["explored"] or a["propensity"] is not None for a in chosen)


def test_the_decision_log_keeps_the_horizon(tmp_path):

    ranker = ranker_at(tmp_path, None, purge=False)
    try:
        ranker.rank([_request(1, horizon_hours=12.5), _request(2)])
        ranker.flush()
        log = ranker.store.rows_after("decisions", ("request_id", "horizon_hours"))
    finally:
        ranker.close()
    assert dict(zip(log["request_id"], log["horizon_hours"], strict=True)) == pytest.approx(
        {"r-1": 12.5, "r-2": float("nan")}, nan_ok=True)


# --- the log's choices and their rewards ----------------------------------------------------

def _decision(rid, at, propensity=0.95, arm="model", urgency="standard"):
    start = pd.Timestamp(at) + pd.Timedelta(hours=1)
    return {"request_id": rid, "contact_id": f"c-{rid}", "arm": arm, "source": "model",
            "fallback_reason": None, "model_version": "m1", "policy": "auto",
            "urgency": urgency, "now": at, "requested_at": at, "window_start": start,
            "window_end": start + pd.Timedelta(minutes=15), "p_answer": 0.3, "score": 0.3,
            "windows": 1, "explored": propensity < 0.5, "propensity": propensity,
            "decided_at": at, "horizon_hours": 48.0}


def _call(rid, at, answered):
    return {"call_id": f"{rid}@{at}", "contact_id": f"c-{rid}", "request_id": rid,
            "called_at": pd.Timestamp(at), "outcome": "answered" if answered else "no_answer",
            "answered": answered, "timezone": "Europe/Berlin", "country": "DE"}


def test_each_logged_choice_is_paid_by_the_call_made_from_it():
    store = OutcomeStore("sqlite://")
    h = pd.Timedelta(hours=1)
    store.log_decisions([
        _decision("a", T0), _decision("a", T0 + 3 * h, propensity=0.02),  # two rankings
        _decision("b", T0),                      # no call after it: left out
        _decision("c", T0, arm="control"),       # the desk's: not the policy's choice
        _decision("d", T0, urgency="urgent"),    # no choice made
        _decision("e", T0 - 50 * h),             # before `since`
        {**_decision("f", T0), "propensity": None},  # rules after a failure: no propensity
    ])
    calls = pd.DataFrame([_call("a", T0 + h, False), _call("a", T0 + 4 * h, True),
                          _call("b", T0 - h, True), _call("c", T0 + h, True),
                          _call("d", T0 + h, True), _call("e", T0 - 49 * h, True),
                          _call("f", T0 + h, True)])
    choices = logged_choices(store, calls, since=T0 - 10 * h)
    assert choices["request_id"].tolist() == ["a", "a"]
    assert choices["reward"].tolist() == [0.0, 1.0]  # each ranking's own call
    assert choices["propensity"].tolist() == [0.95, 0.02]
    assert len(logged_choices(store, calls)) == 3  # with e


def test_the_replay_reproduces_the_logged_propensities(tmp_path):
    """Rankings of a rules-only service (5 % explored), each followed by its call, asked
    again of the same policy: the replay gives each logged window the propensity the
    service logged, and says which ones were its best (the unexplored ones)."""
    from callback_timing.offpolicy import replay_choices

    ranker = ranker_at(tmp_path, None, purge=False)
    rng = np.random.default_rng(4)
    try:
        for batch in range(12):
            now = T0 + pd.Timedelta(hours=5 * batch)
            reqs = [{"request_id": f"r-{batch}-{i}", "now": now.isoformat(),
                     "contact": {"contact_id": f"c-{i % 25}", "timezone": "Europe/Berlin",
                                 "country": "DE", "industry": "it"}} for i in range(40)]
            answers = ranker.rank(reqs)
            ranker.outcomes([{"call_id": f"{a['request_id']}#1", "request_id": a["request_id"],
                              "contact_id": a["contact_id"], "timezone": "Europe/Berlin",
                              "country": "DE", "industry": "it",
                              "called_at": a["windows"][0]["start"],
                              "outcome": "answered" if rng.random() < 0.3 else "no_answer"}
                             for a in answers if a["windows"]])
        ranker.flush()
        calls = ranker.store.outcomes_after(0)
        choices = logged_choices(ranker.store, calls)
    finally:
        ranker.close()
    assert len(choices) >= 200 and choices["propensity"].lt(0.5).sum() >= 3
    again = replay_choices(Policy(None, history=calls.drop(columns=["seq", "received_at"])),
                           choices)
    close = np.isclose(again["p1"], choices["propensity"], atol=1e-5)
    assert close.mean() >= 0.98, choices[~close].head()
    explored = (choices["propensity"] < 0.5).to_numpy()
    assert again["best"].to_numpy()[~explored].mean() >= 0.98
    assert not again["best"].to_numpy()[explored].any()
    assert ((again["q1"] > 0) & (again["q1"] < 1)).all()


def test_rows_since_an_instant_are_read_in_the_database():
    store = OutcomeStore("sqlite://")
    h = pd.Timedelta(hours=1)
    store.log_decisions([_decision(f"x{i}", T0 + i * h) for i in range(5)])
    since = store.rows_after("decisions", ("request_id",), since=("decided_at", T0 + 2 * h))
    assert since["request_id"].tolist() == ["x2", "x3", "x4"]
    with pytest.raises(ValueError, match="not a time column"):
        store.rows_after("decisions", ("request_id",), since=("arm", T0))


# --- retrain: promote, skip, keep ------------------------------------------------------------

def _store_with(path: Path, calls: pd.DataFrame) -> None:
    store = OutcomeStore(str(path))
    try:
        store.add_outcomes(calls)
    finally:
        store.close()


@pytest.mark.slow
def test_retrain_promotes_skips_and_keeps_a_worse_challenger(tmp_path, mlruns, monkeypatch):
    sim = simulate(contacts=400, days=70, seed=5, dirt_rate=0.0)
    calls = clean_history(sim.history).calls
    cut = calls["called_at"].min() + pd.Timedelta(days=45)
    db, served = tmp_path / "o.db", tmp_path / "models" / "current"
    _store_with(db, calls[calls["called_at"] < cut])

    first = retrain(str(db), model_dir=served, bentoml=False)
    assert first.decision == "promoted" and first.reason.startswith("no champion yet")
    assert ModelBundle.load(served).version == first.challenger_version
    assert first.off_policy["n"] == 0  # no logged ranking: reported, nothing to veto
    assert "error" not in first.off_policy
    client = MlflowClient(tracking.tracking_uri())
    name = config.REGISTERED_MODEL_NAME
    assert client.get_registered_model(name).aliases["champion"] == int(first.registered_version)
    run = client.get_run(first.run_id)
    assert run.data.tags["retrain.decision"] == "promoted"
    assert run.data.tags["retrain.line"] == first.line()
    assert run.data.metrics["retrain.new_calls"] == first.new_calls == first.store_calls

    again = retrain(str(db), model_dir=served, bentoml=False)
    assert again.decision == "skipped" and again.new_calls == 0
    assert "200 needed" in again.reason and again.line().startswith("retrain ")
    assert client.get_run(again.run_id).data.tags["retrain.decision"] == "skipped"

    _store_with(db, calls[calls["called_at"] >= cut])
    # a crippled challenger (one stump, learning nothing): worse than the champion
    worse = retrain(str(db), model_dir=served, bentoml=False,
                    params={"n_estimators": 1, "max_depth": 1, "learning_rate": 1e-4})
    assert worse.decision == "kept", worse.reason
    assert worse.reason.startswith("kept champion: log loss")
    assert worse.new_calls == int((calls["called_at"] >= cut).sum())
    assert ModelBundle.load(served).version == first.challenger_version  # still served
    challenger = served.with_name("current.challenger")
    assert ModelBundle.load(challenger).version == worse.challenger_version
    aliases = client.get_registered_model(name).aliases
    assert aliases["champion"] == int(first.registered_version)
    assert aliases["challenger"] == int(worse.registered_version)
    tags = client.get_run(worse.run_id).data
    assert tags.tags["decision"] == "challenger"
    assert tags.metrics["champion.log_loss"] < tags.metrics["test_log_loss"]

    # a new tracking store knows no champion: the served model is the one to beat
    monkeypatch.setenv("CALLBACK_TIMING_MLRUNS", str(tmp_path / "mlruns-new"))
    fresh = retrain(str(db), model_dir=served, bentoml=False,
                    params={"n_estimators": 1, "max_depth": 1, "learning_rate": 1e-4})
    assert fresh.decision == "kept", fresh.reason
    assert fresh.reason.startswith("no registered champion, compared with the served model: "
                                   "kept champion: log loss")
    assert ModelBundle.load(served).version == first.challenger_version


def test_retrain_without_a_store_is_one_line(tmp_path):
    done = subprocess.run([CLI, "retrain", "--db", str(tmp_path / "none.db")],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CALLBACK_TIMING_HOME": str(tmp_path)})
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: --db: no outcome store at {tmp_path / 'none.db'}"


# --- the whole loop, on a real server ---------------------------------------------------------

def _rotated(industries: pd.Series) -> pd.Series:
    from callback_timing.schema import INDUSTRIES

    order = list(INDUSTRIES)
    return industries.map({a: order[(i + 1) % len(order)] for i, a in enumerate(order)})


def _metric(text: str, name: str, **labels) -> float | None:
    """The value of the sample ``name{labels}`` of a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


@pytest.mark.slow
def test_the_learning_loop_end_to_end(tmp_path):
    """A call centre whose customers do not keep the generic industry hours of the rule
    table (the CRM's industry labels are rotated against the simulator's behaviour): a
    server starts on the rules alone, a month of simulated dialer traffic goes through its
    API, ``retrain`` trains a model on the original history and that month, promotes it
    and the server switches to it; the next two weeks of traffic are ranked by the model,
    which earns more of the campaign's value than the rules on the same requests."""
    from callback_timing.campaign import replay
    from callback_timing.evaluate import first_requests
    from callback_timing.traffic import http_poster, seed_traffic

    sim = simulate(contacts=800, days=90, seed=0, dirt_rate=0.0)
    history = sim.history.assign(industry=_rotated(sim.history["industry"]))
    history_csv = tmp_path / "history.csv"
    history.to_csv(history_csv, index=False)
    crm = sim.world.contacts.assign(industry=_rotated(sim.world.contacts["industry"]))
    model, db = tmp_path / "models" / "current", tmp_path / "outcomes.db"
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "CALLBACK_TIMING_MONITOR_SECONDS": "2"}
    start = pd.Timestamp(history["called_at"].max()).tz_convert("UTC").normalize() \
        + pd.Timedelta(days=1)
    with Server(tmp_path, model, db, **env) as server:
        assert httpx.get(f"{server.url}/info").json()["source"] == "rules"
        post = http_poster(server.url)
        month = seed_traffic(post, sim.world, None, start, days=30, per_day=60, seed=1,
                             profiles=crm)
        assert month["calls"] > 3000

        done = subprocess.run(
            [CLI, "retrain", "--db", str(db), "--history", str(history_csv), "--model",
             str(model), "--server", server.url, "--json"],
            capture_output=True, text=True, timeout=600, env=server.env)
        assert done.returncode == 0, done.stderr[-3000:]
        said = json.loads(done.stdout)
        print(said["line"])  # the figures of the README's loop section (pytest -s)
        assert said["decision"] == "promoted", said["line"]
        assert said["reload"]["reloaded"] and said["store_calls"] == month["calls"]
        # off-policy, from the rules' exploration: the replay reproduces the logged
        # choices, and the model's first attempts are estimated to be answered more often
        ope = said["off_policy"]
        assert ope["replayed"] > 0.95 and ope["n"] > 1000 and ope["ess"] > 100
        assert ope["dr"] - 2 * ope["dr_se"] > ope["logged"]

        info = httpx.get(f"{server.url}/info").json()
        assert (info["source"], info["model_version"]) == ("model",
                                                           said["challenger_version"])
        client = MlflowClient(env["MLFLOW_TRACKING_URI"])
        registered = client.get_registered_model(config.REGISTERED_MODEL_NAME)
        assert registered.aliases["champion"] == int(said["registered_version"])
        assert client.get_run(said["run_id"]).data.tags["retrain.decision"] == "promoted"

        later = start + pd.Timedelta(days=30)
        weeks = seed_traffic(post, sim.world, None, later, days=14, per_day=60, seed=2,
                             profiles=crm)
        metrics = httpx.get(f"{server.url}/metrics").text
        assert _metric(metrics, "callback_timing_model_loaded",
                       model_version=said["challenger_version"]) == 1.0
        assert _metric(metrics, "callback_timing_rankings_total", arm="model",
                       source="model") >= weeks["rankings"] - 50
        assert _metric(metrics, "callback_timing_fallbacks_total",
                       reason="no model loaded") >= month["rankings"] - 50
        # the supervisor's dashboard tells the two periods apart: rules, then the model
        totals = {row["arm"]: row for row in httpx.get(f"{server.url}/kpis").json()["totals"]}
        assert totals["rules"]["requests"] >= 1500 and totals["model"]["requests"] >= 800

    # the campaign value: the same requests of those two weeks replayed in the world with
    # the rules the server started with and with the champion the loop promoted
    store = OutcomeStore(str(db))
    try:
        stored = store.outcomes_after(0)
    finally:
        store.close()
    calls = clean_history(pd.concat([history, stored.drop(columns=["seq", "received_at",
                                                                    "answered"])
                                     .astype(object)], ignore_index=True)).calls
    asked = first_requests(calls[calls["requested_at"] >= later]).rename(
        columns={"now": "requested_at"})
    assert len(asked) >= 800
    result = replay(sim.world, calls[calls["called_at"] < later], asked,
                    bundle=ModelBundle.load(model), policies=("rules", "model"), seed=0)
    value = result.kpis["value"]
    print(result.kpis.round(4).to_string())
    assert value["model"] > value["rules"] + 0.02, result.kpis


def test_the_metrics_count_what_the_service_answered():
    from prometheus_client import REGISTRY

    from callback_timing.service_metrics import ServiceMetrics

    def value(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    m, again = ServiceMetrics(), ServiceMetrics()  # a second service in one process
    before = value("callback_timing_rankings_total", arm="model", source="model")
    fell = value("callback_timing_fallbacks_total", reason="model exceeded its latency budget")
    m.observe_rankings([
        {"arm": "model", "source": "model", "explored": True},
        {"arm": "model", "source": "rules",  # the budget's figure is not a label
         "fallback_reason": "model exceeded its latency budget (57 ms)"},
        {"arm": "control", "source": "rules", "fallback_reason": "control arm"},
        {"request_id": "x", "error": "now: bad"}])
    again.observe_rankings([{"arm": "model", "source": "model"}])
    assert value("callback_timing_rankings_total", arm="model", source="model") == before + 2
    assert value("callback_timing_fallbacks_total",
                 reason="model exceeded its latency budget") == fell + 1
    assert value("callback_timing_fallbacks_total", reason="control arm") == 0
    m.observe_model("v1")
    m.observe_model("v2")
    assert value("callback_timing_model_loaded", model_version="v1") == 0
    assert value("callback_timing_model_loaded", model_version="v2") == 1
    m.observe_monitor({"calibration": {"ece": 0.031, "n": 250},
                       "fallbacks": {"share": 0.1}, "psi": {"industry": 0.4},
                       "alerts": ["drift: ..."]})
    assert value("callback_timing_calibration_ece") == pytest.approx(0.031)
    assert value("callback_timing_psi", feature="industry") == pytest.approx(0.4)
    assert value("callback_timing_monitor_alerts") == 1
    m.observe_monitor({"calibration": {"ece": None, "n": 0}, "fallbacks": {"share": None}})
    assert np.isnan(value("callback_timing_calibration_ece"))


def test_the_scheduled_job_skips_a_store_with_too_few_new_calls(tmp_path, mlruns):
    db = tmp_path / "o.db"
    calls = clean_history(simulate(contacts=60, days=10, seed=1, dirt_rate=0.0).history).calls
    assert len(calls) > 30
    _store_with(db, calls.head(30))
    cfg = tmp_path / "job.toml"
    cfg.write_text(f'[data]\nhistory = ""\n[model]\nout = "{tmp_path / "models"}"\n'
                   f'[retrain]\ndb = "{db}"\n')
    job = Path(__file__).resolve().parent.parent / "training" / "retrain.py"
    done = subprocess.run([sys.executable, str(job), "--config", str(cfg)],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-2000:]
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("retrain ") and "skipped (30 calls after the served model's " \
        "data, 200 needed" in line
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(config.EXPERIMENT_NAME)
                               .experiment_id])
    assert [r.data.tags["retrain.decision"] for r in runs] == ["skipped"]


@pytest.mark.slow
def test_a_veto_keeps_a_challenger_that_is_better_offline(tmp_path, mlruns):
    from callback_timing.workflow import train_loaded

    calls = clean_history(simulate(contacts=300, days=40, seed=2, dirt_rate=0.0).history)
    asked = []

    def veto(bundle):
        asked.append(bundle.version)
        return {"offpolicy.dr": 0.1}, "off-policy estimate 0.100 + 1.96 x 0.010 < logged 0.2"

    report = train_loaded(calls, "vetoed", tmp_path / "challenger", bentoml=False, veto=veto)
    assert asked == [report.evaluation.bundle.version]
    assert report.promoted is False
    assert report.decision.startswith("not promoted: off-policy estimate 0.100")
    assert "(the offline comparison passed: no champion yet" in report.decision
    client = MlflowClient(tracking.tracking_uri())
    assert "champion" not in client.get_registered_model(config.REGISTERED_MODEL_NAME).aliases
    run = client.get_run(report.run_id)
    assert run.data.metrics["offpolicy.dr"] == 0.1
    assert run.data.tags["decision"] == "challenger"


@pytest.mark.parametrize("server", ["notaurl", "localhost:3000", "ftp://host/x"])
def test_a_server_that_is_not_a_url_is_refused_before_training(tmp_path, server):
    from callback_timing.schema import ConfigError

    with pytest.raises(ConfigError, match="^--server: a URL such as http://localhost:3000"):
        retrain(str(tmp_path / "nothing.db"), model_dir=tmp_path / "m", server=server,
                bentoml=False)
    assert not (tmp_path / "m").exists()  # nothing trained or written


def test_a_server_that_does_not_answer_is_refused_before_training(tmp_path):
    """--server down: nothing is trained (a promotion it cannot be told of would change the
    served folder and the registry's champion behind its back)."""
    from callback_timing.schema import ConfigError
    from tests.conftest import free_port

    down = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError, match=f"^--server: {down} cannot be reached .*: nothing "
                                          "was trained$"):
        retrain(str(tmp_path / "nothing.db"), model_dir=tmp_path / "m", server=down,
                bentoml=False)
    assert not (tmp_path / "m").exists() and not (tmp_path / "nothing.db").exists()
