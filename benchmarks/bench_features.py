"""Benchmark: feature building for 1,000,000 calls (target <= 60 s and <= 4 GB peak memory).

Phase 1 simulates a history of about a million calls and cleans it with the real loader, and
writes the clean frame to a temporary Parquet file. Phase 2 runs in a fresh subprocess that
only reads that file and builds the features, so its peak RSS is the feature step's own.

    .venv/bin/python benchmarks/bench_features.py [--calls 1000000]

Prints one JSON line; exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIME_TARGET_S = 60.0
MEMORY_TARGET_GB = 4.0


def build(clean_path: str) -> None:
    """Phase 2 (child process): read the clean frame, fit priors, build training features."""
    import pandas as pd

    from callback_timing.features import fit_priors, training_frame

    calls = pd.read_parquet(clean_path)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    t0 = time.perf_counter()
    priors = fit_priors(calls)
    X, y = training_frame(calls, priors)
    seconds = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(json.dumps({"rows": len(X), "features": X.shape[1], "seconds": round(seconds, 2),
                      "peak_rss_gb": round(peak_gb, 2), "rss_after_load_gb": round(rss_before, 2)}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000, help="approximate call count")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        build(args.child)
        return 0

    from callback_timing.data import clean_history
    from callback_timing.simulation import simulate

    with tempfile.TemporaryDirectory() as tmp:
        # about 14 calls per contact in 120 days: simulate a little more, keep the first N rows
        contacts = max(1, round(args.calls / 14.2 * 1.06))
        t0 = time.perf_counter()
        sim = simulate(contacts=contacts, days=120, seed=1, dirt_rate=0.0)
        sim_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        clean = clean_history(sim.history, key=b"benchmark").calls.iloc[: args.calls]
        load_s = time.perf_counter() - t0
        path = Path(tmp) / "clean.parquet"
        clean.to_parquet(path, index=False)
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(path)],
            check=True, capture_output=True, text=True,
        )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    figures.update({"contacts": contacts, "simulate_s": round(sim_s, 2),
                    "load_clean_s": round(load_s, 2),
                    "targets": {"seconds": TIME_TARGET_S, "peak_rss_gb": MEMORY_TARGET_GB}})
    ok = figures["seconds"] <= TIME_TARGET_S and figures["peak_rss_gb"] <= MEMORY_TARGET_GB
    figures["ok"] = ok
    print(json.dumps({"benchmark": "features", **figures}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
