"""Scheduled training job: ``python training/train.py [--config training/configs/default.toml]``.

A thin entry point for schedulers (cron, systemd timers, Airflow): it reads a TOML config and
calls :func:`callback_timing.workflow.train`, the same function as ``callback-timing train``.
Exit code 0 on success, 1 on a data or configuration problem (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

from callback_timing.exits import leave
from callback_timing.schema import CallbackTimingError
from callback_timing.workflow import resolve_params, train

DEFAULT_CONFIG = Path(__file__).with_name("configs") / "default.toml"


def load_config(path: Path) -> dict:
    """The TOML configuration as a dict (see ``configs/default.toml``)."""
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CallbackTimingError(f"cannot read config {path}: {exc}") from None


def run_job(job: Callable[[dict], str], description: str, argv: list[str] | None) -> int:
    """Parse ``--config``, run ``job(config)``, print its summary; user mistakes -> one line."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="TOML config file")
    args = parser.parse_args(argv)
    try:
        summary = job(load_config(args.config))
    except CallbackTimingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyError as exc:
        print(f"error: config {args.config} lacks {exc}", file=sys.stderr)
        return 1
    print(summary)
    return 0


def params_of(model: dict) -> dict | None:
    """The XGBoost parameters of the ``[model]`` section (``params``: "default", "best" or a
    JSON file)."""
    spec = model.get("params", "default")
    return resolve_params(None if spec == "default" else spec)


def reading_of(data: dict) -> dict:
    """How to read the ``[data]`` section's history: column mapping, time zones and the
    layout of timestamps that are not ISO-8601."""
    return {"mapping": data.get("map") or None, "assume_tz": data.get("assume_tz") or None,
            "default_tz": data.get("default_tz", "UTC"),
            "time_format": data.get("time_format") or None}


def train_job(cfg: dict) -> str:
    """Train as configured; return a one-line summary."""
    data, model, tracking = cfg["data"], cfg["model"], cfg["tracking"]
    engine = cfg.get("engine", {})
    report = train(
        data["history"],
        model["out"],
        **reading_of(data),
        params=params_of(model),
        track=tracking.get("mlflow", True),
        bentoml=tracking.get("bentoml", True),
        engine=engine.get("name", "pandas"),
        scheduler=engine.get("scheduler") or None,
        workers=int(engine.get("workers", 2)),
    )
    metrics = report.evaluation.metrics["model"]
    state = {True: "champion", False: "challenger", None: "not registered"}[report.promoted]
    return (f"trained {report.evaluation.bundle.version}: test log loss "
            f"{metrics['log_loss']:.4f}, AUC {metrics['roc_auc']:.4f}, ECE {metrics['ece']:.4f}; "
            f"{state}: {report.decision}")


def main(argv: list[str] | None = None) -> int:
    return run_job(train_job, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    leave(main())
