"""Benchmark: simulate about 1,000,000 calls; target <= 60 s.

Run ``.venv/bin/python benchmarks/bench_simulate.py [--calls N] [--target-s S]``. Prints one
JSON line of figures (time per stage, peak RSS, calls/s) and exits 1 if the target is missed.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from common import DAYS, contacts_for

from callback_timing.simulation import simulate, write_history


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1_000_000, help="calls to aim for")
    parser.add_argument("--target-s", type=float, default=60.0, help="time budget of simulate")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    contacts = contacts_for(args.calls)
    stages: list[float] = []
    t0 = time.perf_counter()
    result = simulate(
        contacts=contacts, days=DAYS, seed=args.seed,
        progress=lambda done, total: stages.append(round(time.perf_counter() - t0, 2)),
    )
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        write_history(result.history, Path(tmp) / "history.parquet")
        parquet_s = time.perf_counter() - t1

    truth = result.truth
    desk = truth[truth["arm"] == "desk"]
    figures = {
        "benchmark": "simulate",
        "contacts": contacts,
        "days": DAYS,
        "calls": len(truth),
        "history_rows": len(result.history),
        "seconds": round(seconds, 2),
        "calls_per_s": round(len(truth) / seconds),
        "stage_end_s": stages,
        "peak_rss_mb": round(peak_mb),
        "write_parquet_s": round(parquet_s, 2),
        "desk_first_attempt_answered": round(float(desk.loc[desk["attempt"] == 1,
                                                            "answered"].mean()), 4),
        "desk_reached_within_3": round(float(desk.groupby("request_id")["answered"]
                                             .any().mean()), 4),
        "target_s": args.target_s,
        "ok": seconds <= args.target_s,
    }
    print(json.dumps(figures))
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
