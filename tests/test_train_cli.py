"""`callback-timing train` and training/train.py as a user and a scheduler run them."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).with_name("callback-timing")


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CALLBACK_"))}
    env.update(
        CALLBACK_TIMING_PSEUDONYM_KEY="test-key",
        CALLBACK_TIMING_HOME=str(tmp / "home"),
        CALLBACK_TIMING_MLRUNS=str(tmp / "mlruns"),
        BENTOML_HOME=str(tmp / "bentoml"),
        CALLBACK_TIMING_PURGE="0",  # fixed-date synthetic data
        COLUMNS="200",
    )
    return env


def run(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), *args], cwd=tmp, env=_env(tmp), capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    sim = run(tmp, "simulate", "--contacts", "700", "--days", "90", "--seed", "4",
              "--start", "2026-03-02", "--out", "data/h.csv")
    assert sim.returncode == 0, sim.stderr
    out = run(tmp, "train", "--history", "data/h.csv")
    assert out.returncode == 0, out.stderr
    return tmp, out


def test_train_writes_bundle_run_registry_and_bentoml(trained):
    tmp, out = trained
    meta = json.loads((tmp / "models" / "current" / "metadata.json").read_text())
    assert meta["bundle_format"] == 1 and len(meta["mlflow_run_id"]) == 32
    # better than always saying the answer rate (the log loss of a constant prediction)
    rate = meta["metrics"]["answer_rate"]
    constant = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
    assert meta["metrics"]["log_loss"] < 0.97 * constant
    assert "-> champion: no champion yet" in out.stdout
    assert "no erased contacts to leave out (a server on another store: --forget-db" in (
        " ".join(out.stdout.split()))  # said, not silently assumed
    # the history's account, as `validate` gives it, and its rejected rows beside it
    line = next(x for x in out.stdout.splitlines() if x.startswith("history: "))
    rows, clean, rejected, dups = (int(n.replace(",", "")) for n in
                                   re.findall(r"([\d,]+) (?:rows|clean|rejected|exact)", line))
    assert rows == clean + rejected + dups and rejected > 0
    assert line.endswith("(rejected rows with reasons: data/h.rejects.csv)")
    assert pd.read_csv(tmp / "data" / "h.rejects.csv")["row"].nunique() == rejected
    assert "truth ceiling AUC" in out.stdout and "logistic_regression" in out.stdout
    assert "information bound AUC" in out.stdout
    truth = meta["truth"]
    assert 0.9 * truth["bound_auc"] < meta["metrics"]["roc_auc"] < truth["bound_auc"]
    assert truth["bound_auc"] < truth["ceiling_auc"]
    assert (tmp / "mlruns" / "mlflow.db").is_file()
    artifacts = list((tmp / "mlruns" / "artifacts").rglob("reliability.png"))
    assert artifacts, "the reliability plot is logged under mlruns/"
    models = list((tmp / "bentoml" / "models" / "callback-timing-answer").glob("*/metadata.json"))
    assert len(models) == 1


def test_worse_model_stays_challenger(trained):
    tmp, _ = trained
    (tmp / "weak.json").write_text(json.dumps({"max_depth": 1, "n_estimators": 2}))
    out = run(tmp, "train", "--history", "data/h.csv", "--params", "weak.json",
              "--out", "models/weak")
    assert out.returncode == 0, out.stderr
    assert "-> challenger: kept champion: log loss" in " ".join(out.stdout.split())
    # the decision is in the bundles too: a server watching a folder serves only a champion
    def decision(folder):
        return json.loads((tmp / "models" / folder / "metadata.json").read_text())["decision"]
    assert (decision("weak"), decision("current")) == ("challenger", "champion")


def test_scheduler_entry_point_reads_its_config(trained):
    tmp, _ = trained
    config = (ROOT / "training" / "configs" / "default.toml").read_text()
    config = config.replace('"data/history.csv"', '"data/h.csv"').replace(
        '"models/current"', '"models/scheduled"').replace("bentoml = true", "bentoml = false")
    (tmp / "job.toml").write_text(config)
    out = subprocess.run([sys.executable, str(ROOT / "training" / "train.py"), "--config",
                          "job.toml"], cwd=tmp, env=_env(tmp), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert "trained " in out.stdout and (tmp / "models" / "scheduled" / "metadata.json").is_file()


def test_unusable_history_is_one_line_and_registers_nothing(tmp_path):
    (tmp_path / "h.csv").write_text(
        "contact_id,called_at,outcome,timezone\n"
        "c1,2026-06-01T10:00Z,answered,Europe/Warsaw\n"
        "c1,2026-06-02T10:00Z,busy,Europe/Warsaw\n"
    )
    out = run(tmp_path, "train", "--history", "h.csv")
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and "too few clean calls" in out.stderr
    assert not (tmp_path / "models").exists()
    assert not (tmp_path / "bentoml").exists()
    (tmp_path / "bad.csv").write_text(
        "contact_id,called_at,outcome,timezone\n"
        "c1,2026-06-01 10:00,answered,Europe/Warsaw\n"
        "c1,2026-06-02T10:00Z,picked up,Europe/Warsaw\n"
    )
    for command in ("train", "tune"):
        out = run(tmp_path, command, "--history", "bad.csv", "--no-track")
        assert out.returncode == 1 and "too few clean calls" in out.stderr
        assert ("history: 2 rows, 0 clean, 2 rejected, 0 exact duplicates (rejected rows with "
                "reasons: bad.rejects.csv)") in out.stdout, command
        assert pd.read_csv(tmp_path / "bad.rejects.csv")["column"].tolist() == [
            "called_at", "outcome"]
    folder = run(tmp_path, "train", "--history", "bad.csv", "--rejects", ".")
    assert folder.returncode == 1 and folder.stderr.startswith("error: --rejects: . is a folder")


def test_train_never_replaces_a_history_or_a_folder_of_other_files(trained):
    tmp, _ = trained
    before = (tmp / "data" / "h.csv").read_bytes()
    for out, message in (("data/h.csv", "data/h.csv is a file, not a model folder"),
                         ("data", "data holds other files, not a model bundle")):
        refused = run(tmp, "train", "--history", "data/h.csv", "--out", out)
        assert refused.returncode == 1, refused.stderr
        assert refused.stderr.startswith(f"error: {message}") and refused.stderr.count("\n") == 1
    assert (tmp / "data" / "h.csv").read_bytes() == before
    assert sorted(p.name for p in (tmp / "data").iterdir()) == [  # + the training's rejects
        "h.csv", "h.rejects.csv", "h.truth.parquet", "h.world.parquet"]


def test_a_model_folder_is_new_empty_or_a_bundle(tmp_path, trained):
    from callback_timing.schema import ConfigError
    from callback_timing.workflow import check_model_folder

    (tmp_path / "empty").mkdir()
    bundle = trained[0] / "models" / "current"
    for ok in (tmp_path / "new" / "model", tmp_path / "empty", bundle):
        assert check_model_folder(ok) == ok
    (tmp_path / "link").symlink_to(tmp_path / "gone")  # a dangling link is not a new folder
    for bad in (tmp_path / "link", bundle / "metadata.json", bundle / "model"):
        with pytest.raises(ConfigError, match="not a model"):
            check_model_folder(bad)


def test_params_best_without_tuning_is_one_line(tmp_path):
    (tmp_path / "h.csv").write_text("contact_id,called_at,outcome\n")
    out = run(tmp_path, "train", "--history", "h.csv", "--params", "best")
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [
        f"error: no parameter file {tmp_path / 'home' / 'best_params.json'} "
        "(run `callback-timing tune` first)"]


@pytest.mark.parametrize("params,problem", [
    ('{"max_depth": "deep"}', "max_depth"), ('{"max_depth": -3}', "max_depth"),
    ('{"n_estimators": 0}', "n_estimators"), ('{"max_dept": 4}', 'does not know "max_dept"'),
    ('{"calibration": "platt"}', "calibration"),
])
def test_bad_parameters_are_one_line_before_reading_the_history(tmp_path, params, problem):
    (tmp_path / "p.json").write_text(params)
    out = run(tmp_path, "train", "--history", "missing.csv", "--params", "p.json")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and "Traceback" not in out.stderr
    assert lines[0].startswith("error: parameter file p.json: ") and problem in lines[0]


def test_scheduler_tune_then_train_with_best(trained):
    tmp, _ = trained
    config = (ROOT / "training" / "configs" / "default.toml").read_text()
    config = (config.replace('"data/history.csv"', '"data/h.csv"')
              .replace("trials = 30", "trials = 3")
              .replace('params = "default"', 'params = "best"')
              .replace('"models/current"', '"models/tuned"')
              .replace("bentoml = true", "bentoml = false"))
    (tmp / "tune.toml").write_text(config)
    tuned = subprocess.run([sys.executable, str(ROOT / "training" / "tune.py"), "--config",
                            "tune.toml"], cwd=tmp, env=_env(tmp), capture_output=True, text=True,
                           timeout=600)
    assert tuned.returncode == 0, tuned.stderr
    assert "best of 3 trials" in tuned.stdout
    best = json.loads((tmp / "home" / "best_params.json").read_text())["params"]
    out = subprocess.run([sys.executable, str(ROOT / "training" / "train.py"), "--config",
                          "tune.toml"], cwd=tmp, env=_env(tmp), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    meta = json.loads((tmp / "models" / "tuned" / "metadata.json").read_text())
    assert meta["params"]["max_depth"] == best["max_depth"]
    assert meta["params"]["learning_rate"] == pytest.approx(best["learning_rate"])


def test_evaluate_replays_the_campaign_and_logs_it(trained):
    tmp, _ = trained
    out = run(tmp, "evaluate", "--history", "data/h.csv", "--requests", "80",
              "--plot", "campaign.png")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "share of the oracle's value lift over the desk: model" in text
    for policy in ("desk", "rules", "model", "oracle"):
        assert f"│ {policy} " in out.stdout
    assert (tmp / "campaign.png").stat().st_size > 10_000
    logged = list((tmp / "mlruns" / "artifacts").rglob("campaign_kpis.csv"))
    assert len(logged) == 1
    kpis = logged[0].read_text().splitlines()
    assert kpis[0].startswith(",requests,first_attempt_rate") and len(kpis) >= 5


def test_evaluate_needs_the_synthetic_world(tmp_path):
    (tmp_path / "h.csv").write_text("contact_id,called_at,outcome\n")
    out = run(tmp_path, "evaluate", "--history", "h.csv")
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and "no synthetic world" in out.stderr
