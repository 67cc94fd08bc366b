"""Seeded synthetic fixtures shared by the tests."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from callback_timing.schema import CLEAN_COLUMNS

_ZONES = [
    ("Europe/Warsaw", "PL", None),
    ("Europe/Berlin", "DE", "BY"),
    ("America/New_York", "US", "NY"),
    ("America/Phoenix", "US", "AZ"),
    ("Europe/London", "GB", "ENG"),
]


def make_clean_calls(
    n_calls: int = 2000, n_contacts: int = 60, seed: int = 0, days: int = 60,
    start: str | pd.Timestamp = "2026-03-02",
) -> pd.DataFrame:
    """A random clean call frame (schema.CLEAN_COLUMNS) over ``days`` days from ``start``
    (UTC), sorted by contact and time."""
    rng = np.random.default_rng(seed)
    contact = rng.integers(0, n_contacts, n_calls)
    zone = contact % len(_ZONES)
    start = pd.Timestamp(start)
    start = start.tz_localize("UTC") if start.tz is None else start.tz_convert("UTC")
    at = start + pd.to_timedelta(rng.integers(0, days * 86400, n_calls), unit="s")
    outcome = rng.choice(
        ["answered", "no_answer", "busy", "voicemail"], n_calls, p=[0.3, 0.4, 0.2, 0.1]
    )
    frame = pd.DataFrame(
        {
            "contact_id": [f"c-{i:04d}" for i in contact],
            "called_at": at,
            "outcome": outcome,
            "answered": (outcome == "answered").astype(np.int8),
            "call_id": [f"x-{i:06d}" for i in range(n_calls)],
            "phone_hash": None,
            "country": [_ZONES[z][1] for z in zone],
            "subdivision": [_ZONES[z][2] for z in zone],
            "timezone": [_ZONES[z][0] for z in zone],
            "tz_source": "given",
            "tz_flag": False,
            "industry": np.array(["it", "retail", "consumer", "manufacturing"])[contact % 4],
            "requested_at": pd.NaT,
            "request_id": None,
            "attempt": pd.array([pd.NA] * n_calls, dtype="Int64"),
            "duration_s": np.nan,
        }
    )
    frame["requested_at"] = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
    frame = frame.sort_values(["contact_id", "called_at"], kind="stable").reset_index(drop=True)
    return frame[list(CLEAN_COLUMNS)]


@pytest.fixture
def clean_calls() -> pd.DataFrame:
    return make_clean_calls()


def tiny_bundle(folder, n_calls: int = 1500, seed: int = 3, version: str = "test",
                start: str | pd.Timestamp = "2026-03-02"):
    """A tiny fitted model, its saved bundle folder and a held-out feature frame (calls of
    60 days from ``start``)."""
    from callback_timing.bundle import ModelBundle
    from callback_timing.features import fit_priors, training_frame
    from callback_timing.model import AnswerModel

    calls = make_clean_calls(n_calls=n_calls, seed=seed, start=start)
    train = (calls["called_at"] < calls["called_at"].quantile(0.7)).to_numpy()
    priors = fit_priors(calls[train])
    X, y = training_frame(calls, priors)
    model = AnswerModel(n_estimators=30).fit(X[train], y[train], X[~train], y[~train])
    saved = ModelBundle(model, priors, calls, {"version": version}).save(folder)
    return model, saved, X[~train]


def ranker_at(tmp_path: Path, model_dir: Path | None, **settings):
    """An :class:`~callback_timing.online.OnlineRanker` on ``model_dir`` (``None``: rules
    only) with its store in ``tmp_path``; no control arm and no folder watching unless
    ``settings`` (fields of ``ServeSettings``) say otherwise."""
    from callback_timing.online import OnlineRanker, ServeSettings

    settings = {"db": str(tmp_path / "o.db"), "control_share": 0.0, "watch_seconds": 0,
                **settings}
    return OnlineRanker(ServeSettings(model_dir=model_dir, **settings))


def private_mlflow(mp: pytest.MonkeyPatch, root: Path) -> Path:
    """Point MLflow, BentoML and the package's home at folders under ``root`` (through
    ``mp``, undone with it); returns the MLflow folder, ``root/mlruns``.

    The store is tracking.py's default, a SQLite file under ``$CALLBACK_TIMING_MLRUNS``: with
    ``$MLFLOW_TRACKING_URI`` set, ``tracking.tracking_uri()`` falls back to that default from
    its second call on (it takes the value it exported for its own), so nested runs would
    miss the parent. ``mlflow.set_tracking_uri`` exports the URI: setenv before delenv lets
    ``undo()`` remove it."""
    mp.setenv("CALLBACK_TIMING_MLRUNS", str(root / "mlruns"))
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'unused.db'}")
    mp.delenv("MLFLOW_TRACKING_URI")
    mp.setenv("BENTOML_HOME", str(root / "bentoml"))
    mp.setenv("CALLBACK_TIMING_HOME", str(root / "home"))
    return root / "mlruns"


@pytest.fixture(autouse=True)
def _no_model_budget(request, monkeypatch):
    """Outside the latency-budget tests the model is awaited however long it takes: on a
    busy CI machine a 50 ms budget can hand an answer to the rules, and tests comparing the
    model's answers would then compare a model answer with a rules answer."""
    if request.module.__name__.endswith("test_policy_budget"):
        return
    from callback_timing.policy_config import PolicyConfig

    monkeypatch.setattr(PolicyConfig, "model_budget_s", lambda self, requests: None)


# The tests replay synthetic worlds of fixed dates (2026): a server must not purge them as
# they age past the retention. The data-protection tests turn the purge on where they test it.
os.environ.setdefault("CALLBACK_TIMING_PURGE", "0")


# --- PostgreSQL -------------------------------------------------------------------------------

def free_port() -> int:
    """A loopback TCP port free at the moment of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_bin(name: str) -> str | None:
    """A PostgreSQL server program: on the PATH, else the newest in Debian's versioned
    folders (``/usr/lib/postgresql/VERSION/bin``)."""
    debian = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                    key=lambda path: int(Path(path).parent.parent.name))
    return shutil.which(name) or (debian[-1] if debian else None)


@pytest.fixture(scope="session")
def pg_url():
    """A PostgreSQL database URL: ``$CALLBACK_TIMING_TEST_PG``, else a throwaway server this
    test process starts (``make test`` installs Debian's postgresql when it is missing) on a
    free loopback port and stops at the end; skipped when neither is to be had."""
    given = os.environ.get("CALLBACK_TIMING_TEST_PG")
    if given:
        yield given
        return
    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("no PostgreSQL server here: `make test` installs one, or set "
                    "CALLBACK_TIMING_TEST_PG to a PostgreSQL URL")
    # not under pytest's own temporary folder: that one is private to root, the server's
    # user could not reach its files
    folder = Path(tempfile.mkdtemp(prefix="callback-timing-pg-"))
    data = folder / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: as Debian's postgres user
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()

    def run(*command: str) -> None:
        done = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{command[0]} failed: {done.stdout}{done.stderr}"

    run(initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    run(pg_ctl, "-D", str(data), "-l", str(folder / "server.log"), "-w", "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)
