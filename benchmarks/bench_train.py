"""Benchmark: train on 1,000,000 calls in <= 3 minutes and <= 6 GB peak (without tuning).

Phase 1 simulates about a million calls and cleans them with the real loader into a temporary
Parquet file. Phase 2 runs in a fresh subprocess: it reads the clean calls and runs the
training path of ``callback-timing train`` (priors, features, XGBoost with early stopping,
calibration, evaluation against the baselines and the truth), so its peak RSS is training's.
MLflow and BentoML logging are left out: they copy files and cost seconds, not minutes.

    .venv/bin/python benchmarks/bench_train.py [--calls 1000000]

Prints one JSON line; exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from common import run_child, simulated_clean_calls

TIME_TARGET_S = 180.0
MEMORY_TARGET_GB = 6.0


def child(folder: str) -> None:
    import pandas as pd

    from callback_timing.training import fit_and_evaluate

    calls = pd.read_parquet(Path(folder) / "clean.parquet")
    truth = pd.read_parquet(Path(folder) / "truth.parquet")
    t0 = time.perf_counter()
    ev = fit_and_evaluate(calls, truth=truth)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(json.dumps({
        "rows": len(calls), "seconds": round(seconds, 1), "peak_rss_gb": round(peak, 2),
        "best_iteration": ev.bundle.model.best_iteration_,
        "test_log_loss": round(ev.metrics["model"]["log_loss"], 4),
        "test_auc": round(ev.metrics["model"]["roc_auc"], 4),
        "auc_vs_ceiling": round(ev.truth.get("auc_vs_ceiling", float("nan")), 4),
        "logistic_log_loss": round(ev.metrics["logistic_regression"]["log_loss"], 4),
    }))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        clean, sim, _ = simulated_clean_calls(args.calls, seed=2)
        clean.to_parquet(Path(tmp) / "clean.parquet", index=False)
        sim.truth.to_parquet(Path(tmp) / "truth.parquet", index=False)
        del sim, clean
        figures = run_child(__file__, tmp)
    ok = figures["seconds"] <= TIME_TARGET_S and figures["peak_rss_gb"] <= MEMORY_TARGET_GB
    print(json.dumps({"benchmark": "train", **figures,
                      "targets": {"seconds": TIME_TARGET_S, "peak_rss_gb": MEMORY_TARGET_GB},
                      "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
