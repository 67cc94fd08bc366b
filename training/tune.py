"""Scheduled tuning job: ``python training/tune.py [--config training/configs/default.toml]``.

Reads the same TOML config as ``training/train.py`` (sections ``[data]`` and ``[tune]``), runs
:func:`callback_timing.tuning.tune` (each trial a nested MLflow run) and saves the best
parameters where ``train --params best`` (or ``params = "best"`` in the config) finds them.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from train import reading_of, run_job  # noqa: E402

from callback_timing.data import load_history  # noqa: E402
from callback_timing.exits import leave  # noqa: E402
from callback_timing.tuning import tune  # noqa: E402


def tune_job(cfg: dict) -> str:
    """Tune as configured; return a one-line summary."""
    data, job = cfg["data"], cfg.get("tune", {})
    calls = load_history(data["history"], **reading_of(data)).calls
    result = tune(calls, int(job.get("trials", 30)), timeout=job.get("timeout_s"),
                  seed=int(job.get("seed", 0)), track=cfg.get("tracking", {}).get("mlflow", True))
    return (f"best of {result.n_trials} trials ({result.n_pruned} pruned): validation log loss "
            f"{result.best_value:.5f} vs {result.default_value:.5f} for the defaults; "
            f"parameters saved to {result.params_path}")


def main(argv: list[str] | None = None) -> int:
    return run_job(tune_job, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    leave(main())
