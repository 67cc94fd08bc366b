"""Scheduled tuning job: ``python training/tune.py [--config training/configs/default.toml]``.

Reads the same TOML config as ``training/train.py`` (sections ``[data]`` and ``[tune]``), runs
:func:`callback_timing.tuning.tune` (each trial a nested MLflow run) and saves the best
parameters where ``train --params best`` (or ``params = "best"`` in the config) finds them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from train import DEFAULT_CONFIG, load_config  # noqa: E402

from callback_timing.data import load_history  # noqa: E402
from callback_timing.schema import CallbackTimingError  # noqa: E402
from callback_timing.tuning import tune  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="TOML config file")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
        data, job = cfg["data"], cfg.get("tune", {})
        calls = load_history(
            data["history"], mapping=data.get("map") or None,
            assume_tz=data.get("assume_tz") or None, default_tz=data.get("default_tz", "UTC"),
        ).calls
        result = tune(calls, int(job.get("trials", 30)), timeout=job.get("timeout_s"),
                      seed=int(job.get("seed", 0)),
                      track=cfg.get("tracking", {}).get("mlflow", True))
    except (CallbackTimingError, KeyError) as exc:
        print(f"error: {exc if not isinstance(exc, KeyError) else f'config lacks {exc}'}",
              file=sys.stderr)
        return 1
    print(f"best of {result.n_trials} trials ({result.n_pruned} pruned): validation log loss "
          f"{result.best_value:.5f} vs {result.default_value:.5f} for the defaults; "
          f"parameters saved to {result.params_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
