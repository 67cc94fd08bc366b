"""MLflow tracking and registry against a real SQLite store in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
import xgboost as xgb
from mlflow.tracking import MlflowClient

from callback_timing import config, tracking
from callback_timing.bundle import ModelBundle
from tests.conftest import private_mlflow, tiny_bundle

NAME = "test-answer"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A private MLflow store: ``$CALLBACK_TIMING_MLRUNS`` in a temporary folder."""
    mp = pytest.MonkeyPatch()
    mlruns = private_mlflow(mp, tmp_path_factory.mktemp("tracking"))
    yield mlruns
    mp.undo()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny fitted model, its bundle folder and a held-out feature frame."""
    folder = tmp_path_factory.mktemp("bundle") / "bundle"
    return tiny_bundle(folder, n_calls=1500, seed=3, version="test")


def _log(trained, tmp_path: Path, metrics: dict, run_name: str = "train") -> tuple[str, str]:
    model, folder, X_test = trained
    figure = tmp_path / "whatever.png"
    figure.write_bytes(b"\x89PNG\r\n\x1a\n")
    rejects = tmp_path / "history.rejects.csv"
    rejects.write_text("row,reason\n3,bad phone\n")
    with tracking.start_run(run_name) as run:
        uri = tracking.log_training(
            params={"xgb": model.params, "features": list(X_test.columns), "long": "x" * 7000},
            metrics=metrics,
            figures={"calibration": figure},
            tables={
                "importance": model.feature_importance().to_frame("gain"),
                "window": {"train_until": "2026-04-12", "rows": 1050},
            },
            bundle_dir=folder,
            booster=model.booster_,
            input_example=X_test,
            extra_artifacts=[rejects],
        )
    return run.info.run_id, uri


@pytest.fixture(scope="module")
def logged(store, trained, tmp_path_factory):
    """One logged training run: (run id, model URI)."""
    metrics = {"log_loss": 0.61, "ece": 0.02, "auc": float("nan"), "brier": None}
    return _log(trained, tmp_path_factory.mktemp("run"), metrics)


def test_tracking_uri_defaults_to_sqlite_under_mlruns(store, monkeypatch):
    assert tracking.tracking_uri() == f"sqlite:///{store.resolve()}/mlflow.db"
    assert store.is_dir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/x.db")
    assert tracking.tracking_uri() == "sqlite:////elsewhere/x.db"


def test_experiment_artifacts_are_absolute_under_mlruns(store):
    experiment_id = tracking.ensure_experiment()
    assert tracking.ensure_experiment() == experiment_id  # found, not created twice
    experiment = MlflowClient(tracking.tracking_uri()).get_experiment(experiment_id)
    assert experiment.name == config.EXPERIMENT_NAME
    assert experiment.artifact_location == (store.resolve() / "artifacts").as_uri()
    assert experiment.artifact_location.startswith("file:///")


def test_explicit_tracking_uri_gets_mlflow_default_artifact_location(store, monkeypatch):
    elsewhere = f"sqlite:///{store.parent / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere)
    experiment_id = tracking.ensure_experiment()
    assert mlflow.get_tracking_uri() == elsewhere
    location = MlflowClient(elsewhere).get_experiment(experiment_id).artifact_location
    assert "/artifacts" not in location
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.tracking_uri() == f"sqlite:///{store.resolve()}/mlflow.db"


def test_logged_run_has_params_metrics_and_artifacts(store, trained, logged):
    run_id, _ = logged
    client = MlflowClient(tracking.tracking_uri())
    run = client.get_run(run_id)
    assert run.data.params["xgb.max_depth"] == str(trained[0].params["max_depth"])
    assert run.data.params["features"].startswith('["weekday", "hour"')
    assert len(run.data.params["long"]) == 6000
    assert run.data.metrics == {"log_loss": 0.61, "ece": 0.02}  # NaN and None skipped
    root = {a.path for a in client.list_artifacts(run_id)}
    assert {"figures", "tables", "bundle", "history.rejects.csv"} <= root
    assert [a.path for a in client.list_artifacts(run_id, "figures")] == ["figures/calibration.png"]
    assert {a.path for a in client.list_artifacts(run_id, "tables")} == {
        "tables/importance.csv",
        "tables/window.json",
    }
    bundle = {a.path for a in client.list_artifacts(run_id, "bundle")}
    assert {"bundle/metadata.json", "bundle/model", "bundle/history.parquet"} <= bundle
    assert run.info.artifact_uri.startswith((store.resolve() / "artifacts").as_uri())


def test_logged_model_predicts_like_the_booster(logged, trained):
    model, _, X_test = trained
    _, uri = logged
    loaded = mlflow.xgboost.load_model(uri)
    matrix = xgb.DMatrix(X_test, enable_categorical=True)
    np.testing.assert_allclose(loaded.predict(matrix), model.booster_.predict(matrix))
    info = mlflow.models.get_model_info(uri)
    inputs = {c.name: c.type.name for c in info.signature.inputs.inputs}
    assert inputs["industry"] == "string" and inputs["hist_rate"] == "double"
    requirements = Path(mlflow.artifacts.download_artifacts(uri)) / "requirements.txt"
    pinned = requirements.read_text().splitlines()
    assert any(  # xgboost or xgboost-cpu: whichever distribution provides `import xgboost`
        line.split("==")[0] in ("xgboost", "xgboost-cpu") and line.endswith(xgb.__version__)
        for line in pinned
    ), pinned


def test_nested_runs_and_best_trial_tags(store):
    with tracking.start_run("tune") as parent, tracking.start_run("trial-0", nested=True) as child:
        pass
    tracking.tag_best_trial(parent.info.run_id, 7, 0.5812, {"max_depth": 4, "eta": 0.1})
    client = MlflowClient(tracking.tracking_uri())
    assert client.get_run(child.info.run_id).data.tags["mlflow.parentRunId"] == (parent.info.run_id)
    tags = client.get_run(parent.info.run_id).data.tags
    assert tags["best_trial"] == "7"
    assert float(tags["best_value"]) == 0.5812
    assert tags["best_param.max_depth"] == "4"


def test_decide_promotion_without_champion():
    decision = tracking.decide_promotion({"log_loss": 0.6, "ece": 0.01}, None)
    assert decision.promote
    assert "no champion" in decision.reason and "0.6000" in decision.reason


@pytest.mark.parametrize(
    ("candidate", "promote", "named"),
    [
        ({"log_loss": 0.6011, "ece": 0.0249}, True, "0.6011 <= 0.6012"),  # within tolerance
        ({"log_loss": 0.6013, "ece": 0.0100}, False, "0.6013 > 0.6012"),
        ({"log_loss": 0.5000, "ece": 0.0251}, False, "ECE 0.0251 > 0.0250"),
    ],
)
def test_decide_promotion_tolerances(candidate, promote, named):
    decision = tracking.decide_promotion(candidate, {"log_loss": 0.6, "ece": 0.02})
    assert decision.promote is promote
    assert named in decision.reason
    assert decision.reason.startswith("promoted" if promote else "kept champion")


def test_decide_promotion_needs_both_metrics():
    with pytest.raises(ValueError, match="candidate metrics lack 'ece'"):
        tracking.decide_promotion({"log_loss": 0.5}, {"log_loss": 0.6, "ece": 0.02})


def test_registry_champion_and_challenger(logged, trained, tmp_path):
    assert tracking.champion(NAME) is None
    first = tracking.register_model(logged[0], NAME)
    assert tracking.champion(NAME) is None  # registered, not yet promoted
    tracking.apply_decision(NAME, first, tracking.decide_promotion({"log_loss": 0.61}, None))
    client = MlflowClient(tracking.tracking_uri())
    assert client.get_model_version_by_alias(NAME, "champion").version == int(first)
    assert client.get_model_version(NAME, first).tags["log_loss"] == "0.61"

    worse_run, _ = _log(trained, tmp_path, {"log_loss": 0.65, "ece": 0.02}, "worse")
    worse = tracking.register_model(worse_run, NAME)
    decision = tracking.decide_promotion(
        {"log_loss": 0.65, "ece": 0.02}, {"log_loss": 0.61, "ece": 0.02}
    )
    tracking.apply_decision(NAME, worse, decision)
    assert client.get_model_version_by_alias(NAME, "champion").version == int(first)
    assert client.get_model_version_by_alias(NAME, "challenger").version == int(worse)
    reason = client.get_model_version(NAME, worse).tags["decision_reason"]
    assert "0.6500 > 0.6112" in reason and "champion 0.6100" in reason

    better_run, _ = _log(trained, tmp_path, {"log_loss": 0.58, "ece": 0.01}, "better")
    better = tracking.register_model(better_run, NAME)
    decision = tracking.decide_promotion(
        {"log_loss": 0.58, "ece": 0.01}, {"log_loss": 0.61, "ece": 0.02}
    )
    tracking.apply_decision(NAME, better, decision)
    assert client.get_model_version_by_alias(NAME, "champion").version == int(better)

    info = tracking.champion(NAME, dest=tmp_path / "champion")
    assert (info.version, info.run_id) == (better, better_run)
    assert info.metrics == {"log_loss": 0.58, "ece": 0.01}
    assert info.bundle_dir == tmp_path / "champion" / "bundle"
    model, _, X_test = trained
    bundle = ModelBundle.load(info.bundle_dir)
    np.testing.assert_allclose(bundle.model.p_answer(X_test), model.p_answer(X_test))


def test_a_users_tracking_uri_is_kept_across_calls(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracking.ensure_experiment("kept-uri")
    tracking.ensure_experiment("kept-uri")
    assert tracking.tracking_uri() == uri
    with tracking.start_run("r") as run:
        pass
    client = MlflowClient(uri)
    assert client.get_run(run.info.run_id).info.run_name == "r"
