"""Benchmark: `train --engine dask` on 10,000,000 calls, with the pandas path beside it.

Phase 1 writes a dirty simulated call history (3% CRM dirt) as partitioned Parquet, one file
per world of about 1,000,000 calls (each world with its own contact, call and request ids),
so generating it never holds more than one world in memory.

Phase 2 (a fresh interpreter) runs the engine's training path on a ``LocalCluster`` of
``--workers`` processes: read, shuffle by contact, clean, split, priors, features, XGBoost
(``xgboost.dask``) with early stopping, calibration, test metrics, the bundle (MLflow and
BentoML logging left out, as in ``bench_train.py``). It reports the seconds of each stage, the
peak RSS of every worker process and of the driver (which gathers the clean calls: the
bundle's history).

Phase 3 (``--pandas-calls N``, a fresh interpreter each) runs the single-machine path on the
first N calls' files: ``clean_history`` + ``fit_and_evaluate``, seconds and peak RSS.

    .venv/bin/python benchmarks/bench_dask.py [--calls 10000000] [--workers 2]
        [--pandas-calls 2000000 --pandas-calls 4000000] [--keep DIR]

Prints one JSON line per phase and a summary; the issue sets no target, so it exits 0 unless
a phase fails.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import contacts_for

CALLS_PER_FILE = 1_000_000
KEY = b"benchmark"


def write_history(folder: Path, calls: int) -> dict:
    """Simulated raw histories as ``part-NNN.parquet`` files of ~1M calls each."""
    from callback_timing.simulation import simulate

    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    files, total, done = 0, 0, 0
    while done < calls:
        size = min(CALLS_PER_FILE, calls - done)
        raw = simulate(contacts=contacts_for(size, 1.0), days=120, seed=100 + files).history
        for col, prefix in (("contact_id", "c-"), ("call_id", "x-"), ("request_id", "r-")):
            raw[col] = raw[col].str.replace(prefix, f"{prefix}{files:03d}-", n=1, regex=False)
        raw.to_parquet(folder / f"part-{files:03d}.parquet", index=False)
        files, total, done = files + 1, total + len(raw), done + size
        print(json.dumps({"phase": "write", "file": files, "rows": len(raw)}), flush=True)
    return {"files": files, "rows": total, "write_s": round(time.perf_counter() - t0, 1)}


def _peak_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)


def dask_child(folder: str, workers: int) -> dict:
    from callback_timing.dask_engine import dask_client, fit_and_evaluate_dask, read_history

    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    with dask_client(workers=workers) as client:
        stages["cluster_s"] = round(time.perf_counter() - t0, 1)
        t1 = time.perf_counter()
        spread = read_history(folder, client, key=KEY)
        stages["read_shuffle_clean_s"] = round(time.perf_counter() - t1, 1)
        marks: dict[int, float] = {}
        t1 = time.perf_counter()
        trained = fit_and_evaluate_dask(
            spread, progress=lambda done, total: marks.setdefault(done, time.perf_counter()))
        names = ["split", "priors", "features_and_xgboost", "calibrate_evaluate",
                 "gather_history", "bundle"]
        last = t1
        for i, name in enumerate(names, start=1):
            stages[f"{name}_s"] = round(marks[i] - last, 1)
            last = marks[i]
        seconds = round(time.perf_counter() - t0, 1)
        workers_peak = client.run(_peak_gb)
    ev = trained.evaluation
    return {"engine": "dask", "workers": workers, "input_rows": spread.n_input_rows,
            "clean_rows": len(trained.calls), "partitions": len(spread.parts),
            "seconds": seconds, **stages,
            "worker_peak_rss_gb": sorted(workers_peak.values()),
            "driver_peak_rss_gb": _peak_gb(),
            "best_iteration": ev.bundle.model.best_iteration_,
            "test_auc": round(ev.metrics["model"]["roc_auc"], 4),
            "test_log_loss": round(ev.metrics["model"]["log_loss"], 4)}


def pandas_child(folder: str, files: int) -> dict:
    import pandas as pd

    from callback_timing.data import clean_history
    from callback_timing.training import fit_and_evaluate

    t0 = time.perf_counter()
    paths = sorted(Path(folder).glob("part-*.parquet"))[:files]
    raw = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    loaded = clean_history(raw, key=KEY)
    del raw
    load_s = time.perf_counter() - t0
    ev = fit_and_evaluate(loaded.calls, baselines=False)
    return {"engine": "pandas", "input_rows": loaded.n_input_rows, "clean_rows": loaded.n_clean,
            "seconds": round(time.perf_counter() - t0, 1), "load_clean_s": round(load_s, 1),
            "peak_rss_gb": _peak_gb(), "best_iteration": ev.bundle.model.best_iteration_,
            "test_auc": round(ev.metrics["model"]["roc_auc"], 4),
            "test_log_loss": round(ev.metrics["model"]["log_loss"], 4)}


def _child(argv: list[str]) -> dict:
    import subprocess

    out = subprocess.run([sys.executable, __file__, *argv], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000_000, help="calls simulated")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    parser.add_argument("--pandas-calls", type=int, action="append", default=[],
                        help="also run the pandas path on this many calls (repeatable)")
    parser.add_argument("--keep", help="folder for the Parquet files (kept; reused if there)")
    parser.add_argument("--dask-child", help=argparse.SUPPRESS)
    parser.add_argument("--pandas-child", help=argparse.SUPPRESS)
    parser.add_argument("--files", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dask_child:
        print(json.dumps(dask_child(args.dask_child, args.workers)))
        return 0
    if args.pandas_child:
        print(json.dumps(pandas_child(args.pandas_child, args.files)))
        return 0

    tmp = None if args.keep else tempfile.mkdtemp(prefix="bench-dask-")
    folder = Path(args.keep or tmp) / "calls"
    try:
        if any(folder.glob("part-*.parquet")):
            written = {"files": len(list(folder.glob("part-*.parquet"))), "reused": str(folder)}
        else:
            written = write_history(folder, args.calls)
        print(json.dumps({"benchmark": "dask", "phase": "history", **written}), flush=True)
        dask_fig = _child(["--dask-child", str(folder), "--workers", str(args.workers)])
        print(json.dumps({"benchmark": "dask", "phase": "dask", **dask_fig}), flush=True)
        pandas_figs = []
        for n in args.pandas_calls:
            files = max(1, round(n / CALLS_PER_FILE))
            fig = _child(["--pandas-child", str(folder), "--files", str(files)])
            pandas_figs.append(fig)
            print(json.dumps({"benchmark": "dask", "phase": "pandas", **fig}), flush=True)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"benchmark": "dask", "rows": dask_fig["input_rows"],
                      "dask_seconds": dask_fig["seconds"],
                      "worker_peak_rss_gb": dask_fig["worker_peak_rss_gb"],
                      "driver_peak_rss_gb": dask_fig["driver_peak_rss_gb"],
                      "pandas": [{k: f[k] for k in ("input_rows", "seconds", "peak_rss_gb")}
                                 for f in pandas_figs], "ok": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
