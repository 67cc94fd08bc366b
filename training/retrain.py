"""Scheduled learning loop: ``python training/retrain.py [--config training/configs/default.toml]``.

Reads the same TOML config as ``training/train.py`` (sections ``[data]``, ``[model]`` and
``[retrain]``) and runs :func:`callback_timing.retrain.retrain`, the same function as
``callback-timing retrain``: export the outcome store, merge it with the history, train a
challenger, compare it with the champion (offline and off-policy), promote it only when it is
not worse and tell the server. Prints the decision's line; exit code 0 also when it skipped
or kept the champion, 1 on a configuration problem or when a promoted model did not reach
the server.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from train import params_of, reading_of, run_job  # noqa: E402

from callback_timing import config  # noqa: E402
from callback_timing.exits import leave  # noqa: E402
from callback_timing.retrain import retrain  # noqa: E402
from callback_timing.schema import CallbackTimingError  # noqa: E402


def retrain_job(cfg: dict) -> str:
    """One turn of the loop as configured; return the decision's line."""
    data, model, job = cfg["data"], cfg["model"], cfg.get("retrain", {})
    report = retrain(
        job.get("db") or str(config.db_path()),
        history=data.get("history") or None,
        model_dir=model["out"],
        server=job.get("server") or None,
        api_key=os.environ.get("CALLBACK_TIMING_API_KEY") or None,
        rules_path=job.get("rules") or None,
        rules_table_path=job.get("rules_table") or None,
        params=params_of(model),
        **reading_of(data),
        min_new_calls=job.get("min_new_calls"),
        bentoml=cfg.get("tracking", {}).get("bentoml", True),
    )
    if report.unreached:
        raise CallbackTimingError(report.line())
    return report.line()


def main(argv: list[str] | None = None) -> int:
    return run_job(retrain_job, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    leave(main())
