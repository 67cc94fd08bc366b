"""`train --engine dask`: the pipeline on a real Dask LocalCluster of two worker processes,
checked against the pandas path on the same partitioned Parquet history."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import callback_timing as ct
from callback_timing.bundle import HISTORY_COLUMNS, ModelBundle
from callback_timing.dask_engine import (
    _features,
    dask_client,
    fit_and_evaluate_dask,
    read_history,
)
from callback_timing.evaluate import classification_metrics
from callback_timing.features import training_frame
from callback_timing.policy import Policy
from callback_timing.rules import RuleModel
from callback_timing.training import answer_model, fit_and_evaluate

KEY = b"dask-test-key"
EXE = Path(sys.executable).with_name("callback-timing")


@pytest.fixture(scope="module")
def history_dir(tmp_path_factory) -> Path:
    """A dirty simulated history as three Parquet files cut by row: every contact's calls
    are spread over the files, so the engine has to bring them together."""
    folder = tmp_path_factory.mktemp("dask") / "calls"
    folder.mkdir()
    raw = ct.simulate(contacts=800, days=60, seed=11).history
    for i, rows in enumerate(np.array_split(np.arange(len(raw)), 3)):
        raw.iloc[rows].to_parquet(folder / f"part-{i}.parquet", index=False)
    return folder


@pytest.fixture(scope="module")
def pandas_path(history_dir):
    loaded = ct.clean_history(pd.read_parquet(history_dir), key=KEY)
    return loaded, fit_and_evaluate(loaded.calls, baselines=False)


@pytest.fixture(scope="module")
def cluster():
    with dask_client(workers=2) as client:
        yield client


@pytest.fixture(scope="module")
def dask_path(history_dir, cluster):
    spread = read_history(str(history_dir), cluster, key=KEY)
    return spread, fit_and_evaluate_dask(spread)


def test_cleaning_on_the_cluster_keeps_and_rejects_the_same_rows(pandas_path, dask_path):
    loaded, _ = pandas_path
    spread, trained = dask_path
    assert spread.n_input_rows == loaded.n_input_rows
    assert spread.n_duplicates == loaded.n_duplicates > 0
    key = ["row", "column", "reason"]
    pd.testing.assert_frame_equal(spread.rejects.sort_values(key, ignore_index=True),
                                  loaded.rejects.sort_values(key, ignore_index=True))
    assert len(spread.rejects) > 0
    pd.testing.assert_frame_equal(trained.calls, loaded.calls)


def test_a_folder_url_with_the_simulators_truth_beside_reads_only_the_calls(
        tmp_path, history_dir, pandas_path, cluster):
    loaded, _ = pandas_path
    for part in sorted(history_dir.glob("*.parquet")):
        (tmp_path / part.name).write_bytes(part.read_bytes())
    pd.DataFrame({"call_id": ["x"], "p_true": [0.5]}).to_parquet(tmp_path / "h.truth.parquet")
    spread = read_history(f"file://{tmp_path}", cluster, key=KEY)
    assert spread.n_input_rows == loaded.n_input_rows
    assert len(spread.gather()) == loaded.n_clean


def test_time_format_reads_another_layout_on_the_cluster(tmp_path, history_dir, pandas_path,
                                                        cluster):
    """The same history with its timestamps written 04.05.2026 10:00:00 +0200: with
    ``time_format`` the cluster keeps the rows the ISO history keeps, at the same instants."""
    loaded, _ = pandas_path
    iso = r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}:\d{2}:\d{2})([+-]\d{2}):(\d{2})$"
    for part in sorted(history_dir.glob("*.parquet")):
        frame = pd.read_parquet(part)
        frame["called_at"] = frame["called_at"].str.replace(iso, r"\3.\2.\1 \4 \5\6",
                                                            regex=True)
        frame.to_parquet(tmp_path / part.name, index=False)
    assert frame["called_at"].str.contains("T", na=False).mean() < 0.05  # dirt aside
    spread = read_history(str(tmp_path), cluster, key=KEY, time_format="%d.%m.%Y %H:%M:%S %z")
    pd.testing.assert_frame_equal(spread.gather(), loaded.calls)
    assert len(read_history(str(tmp_path), cluster, key=KEY).gather()) < loaded.n_clean / 10


def test_split_and_priors_are_the_pandas_paths(pandas_path, dask_path):
    _, ev = pandas_path
    _, trained = dask_path
    assert trained.evaluation.split.bounds == ev.split.bounds
    assert trained.evaluation.bundle.metadata["rows"] == ev.bundle.metadata["rows"]
    assert trained.evaluation.bundle.priors.to_dict() == ev.bundle.priors.to_dict()


def test_features_on_the_workers_are_the_pandas_features(pandas_path, dask_path):
    # the pandas model scored on the workers' features gives the pandas test metrics exactly
    _, ev = pandas_path
    _, trained = dask_path
    on_workers = trained.champion_metrics(ev.bundle)
    for name, value in ev.metrics["model"].items():
        assert on_workers[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


def test_training_rows_built_per_partition_are_the_pandas_training_frame(pandas_path,
                                                                          dask_path, cluster):
    loaded, ev = pandas_path
    spread, trained = dask_path
    bounds = trained.bounds
    parts = cluster.gather([cluster.submit(_features, p, ev.bundle.priors, bounds,
                                           answer_model()) for p in spread.parts])
    calls = pd.concat(cluster.gather(spread.parts), ignore_index=True)
    X = pd.concat(parts, ignore_index=True)
    # the pandas order: contacts, then time, ties in the dataset's order
    order = calls.sort_values(["contact_id", "called_at"], kind="stable").index
    X = X.loc[order].reset_index(drop=True)
    want, y = training_frame(loaded.calls, ev.bundle.priors)
    pd.testing.assert_frame_equal(X[list(want.columns)], want)
    np.testing.assert_array_equal(X["_y"], y)
    slices = np.select([ev.split.train, ev.split.valid, ev.split.test], [0, 1, 2])
    np.testing.assert_array_equal(X["_slice"], slices)


def test_the_rules_baseline_is_the_pandas_paths_scorer(pandas_path, dask_path):
    _, ev = pandas_path
    _, trained = dask_path
    want = RuleModel.from_file().p_answer(ev.X_test)
    np.testing.assert_allclose(np.sort(trained.evaluation.p_test["rules"]), np.sort(want))
    np.testing.assert_array_equal(np.sort(trained.evaluation.y_test), np.sort(ev.y_test))
    # each score with its own label: the rules' metrics are the pandas path's
    got, expected = trained.evaluation.metrics["rules"], classification_metrics(ev.y_test, want)
    assert got == pytest.approx(expected, rel=1e-9)


def test_model_quality_matches_the_pandas_path(pandas_path, dask_path):
    _, ev = pandas_path
    _, trained = dask_path
    got, want = trained.evaluation.metrics["model"], ev.metrics["model"]
    assert abs(got["roc_auc"] - want["roc_auc"]) <= 0.005
    assert got["log_loss"] < trained.evaluation.metrics["rules"]["log_loss"]
    assert got["ece"] < 0.05
    assert trained.evaluation.bundle.model.best_iteration_ > 5


def test_the_bundle_has_the_same_form_and_serves(tmp_path, pandas_path, dask_path):
    _, ev = pandas_path
    _, trained = dask_path
    bundle = trained.evaluation.bundle
    folder = bundle.save(tmp_path / "bundle")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        p.name for p in ev.bundle.save(tmp_path / "pandas").iterdir())
    loaded = ModelBundle.load(folder)
    pd.testing.assert_frame_equal(loaded.history, ev.bundle.history[list(HISTORY_COLUMNS)])
    assert loaded.model.feature_names_ == ev.bundle.model.feature_names_
    contact = loaded.history["contact_id"].iloc[0]
    now = loaded.history["called_at"].max()
    out = Policy(loaded).rank([{"request_id": "r1", "contact": {"contact_id": contact},
                                "now": now.isoformat(), "requested_at": now.isoformat()}])
    assert out[0]["source"] == "model" and out[0]["windows"]


def _run(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "CALLBACK_TIMING_PSEUDONYM_KEY": "test-key",
           "CALLBACK_TIMING_PURGE": "0",  # fixed-date synthetic data
           "CALLBACK_TIMING_HOME": str(tmp / "home"), "CALLBACK_TIMING_MLRUNS": str(tmp / "ml"),
           "BENTOML_HOME": str(tmp / "bentoml"), "HOME": str(tmp), "COLUMNS": "160"}
    return subprocess.run([str(EXE), *args], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=600)


def _scheduled(client) -> int:
    """Task transitions the cluster's scheduler has made so far (grows when it runs work)."""
    return client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)


def test_cli_trains_on_an_existing_scheduler_and_on_its_own_cluster(tmp_path, history_dir,
                                                                     cluster):
    address = cluster.scheduler_info()["address"]
    before = _scheduled(cluster)
    out = _run(tmp_path, "train", "--engine", "dask", "--scheduler", address, "--history",
               str(history_dir), "--out", "models/a", "--no-track", "--no-bentoml")
    assert out.returncode == 0, out.stderr
    used = _scheduled(cluster)
    assert used > before + 100  # the work ran on this scheduler's cluster
    assert "model" in out.stdout and "rules" in out.stdout
    meta = ModelBundle.load(tmp_path / "models/a").metadata
    assert meta["engine"]["name"] == "dask" and meta["engine"]["workers"] == 2
    glob = str(history_dir / "part-*.parquet")
    own = _run(tmp_path, "train", "--engine", "dask", "--workers", "2", "--history", glob,
               "--out", "models/b", "--no-track", "--no-bentoml")
    assert own.returncode == 0, own.stderr
    assert _scheduled(cluster) == used  # a cluster of its own this time
    assert "distributed.scheduler" not in own.stderr  # Dask's INFO lines stay quiet
    assert ModelBundle.load(tmp_path / "models/b").metadata["split"] == meta["split"]


@pytest.mark.parametrize(("args", "needle"), [
    (["--history", "no/such/folder"], "no/such/folder: no such file or folder"),
    (["--history", "{data}/../h.csv"], "not Parquet"),
    (["--history", "{data}", "--map", "called_at=start"], "start"),
    (["--history", "{data}/../no-called-at"], "'called_at'"),
    (["--history", "{data}/../mixed"], "lacks column"),
    (["--history", "{data}", "--default-tz", "Mars/Base"], "--default-tz"),
])
def test_cli_bad_input_is_one_line(tmp_path, history_dir, cluster, args, needle):
    (history_dir.parent / "h.csv").write_text("contact_id,called_at,outcome\n")
    lacking, mixed = history_dir.parent / "no-called-at", history_dir.parent / "mixed"
    if not lacking.exists():
        lacking.mkdir()
        pd.read_parquet(history_dir / "part-0.parquet").drop(columns="called_at").to_parquet(
            lacking / "part-0.parquet")
        mixed.mkdir()  # a history file and, beside it, a file of other columns
        (mixed / "a.parquet").write_bytes((history_dir / "part-0.parquet").read_bytes())
        pd.DataFrame({"contact_id": ["c"], "x": [1]}).to_parquet(mixed / "b.parquet")
    args = [a.replace("{data}", str(history_dir)) for a in args]
    address = cluster.scheduler_info()["address"]
    out = _run(tmp_path, "train", "--engine", "dask", "--scheduler", address, "--no-track",
               "--no-bentoml", *args)
    assert out.returncode == 1, (out.stdout, out.stderr)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in out.stderr


def test_scheduler_without_the_dask_engine_is_refused(tmp_path):
    out = _run(tmp_path, "train", "--history", "h.csv", "--scheduler", "tcp://127.0.0.1:1")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == ["error: --scheduler needs --engine dask"]


def test_scheduled_job_trains_on_the_cluster_its_config_names(tmp_path, history_dir, cluster):
    root = Path(__file__).resolve().parents[1]
    config = (root / "training" / "configs" / "default.toml").read_text()
    config = (config.replace('"data/history.csv"', f'"{history_dir}"')
              .replace('name = "pandas"', 'name = "dask"')
              .replace('scheduler = ""', f'scheduler = "{cluster.scheduler_info()["address"]}"')
              .replace("mlflow = true", "mlflow = false")
              .replace("bentoml = true", "bentoml = false"))
    (tmp_path / "job.toml").write_text(config)
    env = {"PATH": "/usr/bin:/bin", "CALLBACK_TIMING_PSEUDONYM_KEY": "test-key",
           "CALLBACK_TIMING_PURGE": "0",  # fixed-date synthetic data
           "CALLBACK_TIMING_HOME": str(tmp_path / "home"), "HOME": str(tmp_path)}
    before = _scheduled(cluster)
    out = subprocess.run([sys.executable, str(root / "training" / "train.py"), "--config",
                          "job.toml"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert _scheduled(cluster) > before + 100  # on the configured scheduler, not a new one
    assert ModelBundle.load(tmp_path / "models" / "current").metadata["engine"]["name"] == "dask"


def test_an_unusable_scheduler_address_is_one_line(tmp_path, history_dir):
    out = _run(tmp_path, "train", "--engine", "dask", "--scheduler", "no-port-here",
               "--history", str(history_dir), "--no-track", "--no-bentoml")
    assert out.returncode == 1, (out.stdout, out.stderr)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Dask scheduler 'no-port-here'" in lines[0]
    assert not (tmp_path / "models").exists()


def test_the_cluster_leaves_out_erased_contacts_and_calls_past_retention(history_dir,
                                                                          pandas_path, cluster):
    from callback_timing.privacy import contact_hash

    calls = pandas_path[0].calls
    erased = calls["contact_id"].astype(str).value_counts().index[:3].tolist()
    at = pd.to_datetime(calls["called_at"], utc=True)
    cutoff = at.min() + (at.max() - at.min()) / 2
    spread = read_history(str(history_dir), cluster, key=KEY)
    gone, old, left = spread.leave_out(cutoff, {contact_hash(c, b"old") for c in erased},
                                       [b"new", b"old"])  # a rotated key still matches
    kept = spread.gather()
    mine = calls["contact_id"].astype(str).isin(erased)
    assert gone == int(mine.sum()) and old == int(((at < cutoff) & ~mine).sum())
    assert left == len(kept) == len(calls) - gone - old
    assert not kept["contact_id"].astype(str).isin(erased).any()
    assert pd.to_datetime(kept["called_at"], utc=True).min() >= cutoff
