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
import sys
import tempfile
import time
from pathlib import Path

from common import run_child, simulated_clean_calls

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

    with tempfile.TemporaryDirectory() as tmp:
        clean, _, timings = simulated_clean_calls(args.calls, seed=1)
        path = Path(tmp) / "clean.parquet"
        clean.to_parquet(path, index=False)
        figures = run_child(__file__, str(path))
    figures.update({"contacts": int(clean["contact_id"].nunique()), **timings,
                    "targets": {"seconds": TIME_TARGET_S, "peak_rss_gb": MEMORY_TARGET_GB}})
    ok = figures["seconds"] <= TIME_TARGET_S and figures["peak_rss_gb"] <= MEMORY_TARGET_GB
    figures["ok"] = ok
    print(json.dumps({"benchmark": "features", **figures}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
