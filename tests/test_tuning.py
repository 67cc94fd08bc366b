"""Hyper-parameter search: Optuna trials as nested MLflow runs, the best saved for ``train``."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import log_loss

import callback_timing as ct
from callback_timing import config, tuning
from callback_timing.model import DEFAULT_PARAMS
from callback_timing.training import answer_model, split_by_time
from callback_timing.tuning import tune
from callback_timing.workflow import resolve_params
from tests.conftest import private_mlflow

EXE = Path(sys.executable).with_name("callback-timing")
TRIALS = 5


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Private MLflow store and home folder for this module."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("tuning")
    private_mlflow(mp, root)
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def calls():
    sim = ct.simulate(contacts=400, days=60, seed=5, dirt_rate=0.0)
    return ct.clean_history(sim.history, key=b"t").calls


@pytest.fixture(scope="module")
def tuned(store, calls):
    return tune(calls, trials=TRIALS, seed=1, track=True)


def test_best_params_are_saved_for_train_params_best(store, tuned):
    path = config.best_params_path()
    assert tuned.params_path == path and path.is_relative_to(store)
    assert resolve_params("best") == tuned.best_params
    saved = json.loads(path.read_text())
    assert saved["value"] == tuned.best_value
    assert saved["trials"] == TRIALS and saved["parent_run_id"] == tuned.parent_run_id
    assert datetime.fromisoformat(saved["created"]).tzinfo is not None


def test_trial_0_is_the_defaults_and_never_beaten_by_the_result(calls, tuned):
    trials = tuned.study.trials
    assert len(trials) == tuned.n_trials == TRIALS
    assert trials[0].user_attrs["xgb_params"] == DEFAULT_PARAMS
    assert tuned.default_value == trials[0].value
    assert tuned.best_value <= tuned.default_value
    done = [t.value for t in trials if t.state.name == "COMPLETE"]  # pruned ones have a value
    assert tuned.best_value == min(done)
    assert tuned.best_params == trials[tuned.best_trial].user_attrs["xgb_params"]
    # the objective: the calibrated defaults' log loss on the validation period, recomputed
    calls = calls.sort_values(["contact_id", "called_at"], kind="stable").reset_index(drop=True)
    split = split_by_time(calls)
    X, y = ct.training_frame(calls, ct.fit_priors(calls[split.train]))
    y = y.to_numpy()
    model = answer_model(n_jobs=1).fit(
        X[split.train], y[split.train], X[split.valid], y[split.valid])
    expected = log_loss(y[split.valid], model.p_answer(X[split.valid]))
    assert tuned.default_value == pytest.approx(expected, rel=1e-9)


def test_each_trial_is_a_nested_run_and_the_parent_names_the_best(store, tuned):
    client = MlflowClient(f"sqlite:///{store / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(config.EXPERIMENT_NAME)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.run_id for p in parents] == [tuned.parent_run_id]
    parent = parents[0]
    assert parent.info.run_name == f"tune {TRIALS} trials"
    assert parent.data.tags["best_trial"] == str(tuned.best_trial)
    assert parent.data.metrics["best_valid_log_loss"] == pytest.approx(tuned.best_value)
    children = {
        r.info.run_name: r for r in runs
        if r.data.tags.get("mlflow.parentRunId") == tuned.parent_run_id
    }
    assert len(children) == len(runs) - 1 == TRIALS
    for trial in tuned.study.trials:
        run = children[f"trial {trial.number}"]
        state = "pruned" if trial.state.name == "PRUNED" else "complete"
        assert run.data.tags["state"] == state
        assert run.data.params["max_depth"] == str(trial.user_attrs["xgb_params"]["max_depth"])
        if state == "complete":
            assert run.data.metrics["valid_log_loss"] == pytest.approx(trial.value)
    best = children[f"trial {tuned.best_trial}"]
    assert best.data.metrics["valid_log_loss"] == pytest.approx(tuned.best_value)


def test_without_tracking_no_mlflow_store_is_created(store, calls, tmp_path, monkeypatch):
    monkeypatch.setenv("CALLBACK_TIMING_MLRUNS", str(tmp_path / "mlruns"))
    monkeypatch.setenv("CALLBACK_TIMING_HOME", str(tmp_path / "home"))
    result = tune(calls, trials=2, seed=1, track=False)
    assert result.parent_run_id is None and result.n_trials == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]
    assert json.loads(config.best_params_path().read_text())["parent_run_id"] is None


def test_the_test_period_is_never_looked_at(store, calls, tuned):
    """Flipping every outcome of the test period changes nothing the search sees."""
    calls = calls.sort_values(["contact_id", "called_at"], kind="stable").reset_index(drop=True)
    test = split_by_time(calls).test
    flipped = calls.copy()
    flipped.loc[test, "answered"] = 1 - flipped.loc[test, "answered"]
    flipped.loc[test, "outcome"] = flipped.loc[test, "answered"].map(
        {1: "answered", 0: "no_answer"}
    )
    result = tune(flipped, trials=3, seed=1, track=False, save=False)
    assert result.params_path is None
    for mine, theirs in zip(result.study.trials, tuned.study.trials[:3], strict=True):
        assert mine.params == theirs.params
        assert mine.value == pytest.approx(theirs.value, rel=1e-9)


def test_pruned_trials_are_tagged_and_never_win(calls, tmp_path, monkeypatch):
    monkeypatch.setenv("CALLBACK_TIMING_MLRUNS", str(tmp_path / "mlruns"))
    monkeypatch.setattr(tuning, "STARTUP_TRIALS", 1)  # prune from the second trial on,
    monkeypatch.setattr(tuning, "WARMUP_ROUNDS", 0)  # from the first boosting round
    result = tune(calls, trials=4, seed=1, save=False)
    pruned = [t for t in result.study.trials if t.state.name == "PRUNED"]
    assert result.n_pruned == len(pruned) >= 1
    assert result.study.trials[0].state.name == "COMPLETE"
    assert result.best_trial not in {t.number for t in pruned}
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    children = client.search_runs(
        [client.get_experiment_by_name(config.EXPERIMENT_NAME).experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'",
    )
    runs = {r.info.run_name: r for r in children}
    for trial in pruned:
        run = runs[f"trial {trial.number}"]
        assert run.data.tags["state"] == "pruned" and run.info.status == "FINISHED"
        assert run.data.metrics["pruned_at_round"] == max(trial.intermediate_values)
        assert "valid_log_loss" not in run.data.metrics


def test_timeout_still_runs_the_defaults(store, calls):
    result = tune(calls, trials=20, timeout=0, track=False, save=False)
    assert result.n_trials == 1 and result.best_trial == 0
    assert result.best_params == DEFAULT_PARAMS


# --- the command line ---------------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "callback_timing.cli"]
    env = {  # no MLFLOW_TRACKING_URI: the default store under CALLBACK_TIMING_MLRUNS
        "PATH": "/usr/bin:/bin", "COLUMNS": "120", "CALLBACK_TIMING_PSEUDONYM_KEY": "test-key",
        "CALLBACK_TIMING_PURGE": "0",  # fixed-date synthetic data
        "CALLBACK_TIMING_HOME": str(cwd / "state"), "CALLBACK_TIMING_MLRUNS": str(cwd / "runs"),
        "BENTOML_HOME": str(cwd / "bentoml"),
    }
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def test_cli_tune_prints_the_best_trial_and_saves_it(tmp_path):
    sim = ct.simulate(contacts=400, days=60, seed=5, dirt_rate=0.0)
    ct.write_history(sim.history, tmp_path / "h.csv")
    out = _cli("tune", "--history", "h.csv", "--trials", "2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "best of 2 trials (0 pruned)" in out.stdout
    assert "with the defaults (trial 0)" in out.stdout
    saved = json.loads((tmp_path / "state" / "best_params.json").read_text())
    assert saved["trials"] == 2 and saved["parent_run_id"] in out.stdout
    assert str(tmp_path / "state" / "best_params.json") in out.stdout
    assert (tmp_path / "runs" / "mlflow.db").is_file()
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / ".callback-timing").exists()


def test_cli_tune_on_a_tiny_history_is_one_line(tmp_path):
    (tmp_path / "h.csv").write_text(
        "contact_id,called_at,outcome,timezone\n"
        "c-1,2026-06-01T10:00:00Z,answered,Europe/Warsaw\n"
        "c-1,2026-06-02T10:00:00Z,no_answer,Europe/Warsaw\n"
        "c-2,2026-06-03T10:00:00Z,busy,Europe/Warsaw\n"
    )
    out = _cli("tune", "--history", "h.csv", "--trials", "2", cwd=tmp_path)
    assert out.returncode == 1, (out.stdout, out.stderr)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "too few clean calls" in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "state" / "best_params.json").exists()
