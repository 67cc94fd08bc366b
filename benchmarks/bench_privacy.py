"""Benchmark: the data-protection operations on a store of 1,000,000 outcomes.

Works on a copy (in a temporary folder) of the store of ``bench_dashboard.py`` (built there
first when ``--db`` does not exist: 1,000,000 outcomes over 180 days up to 2026-06-01), and
times, in this process:

- ``purge_half``: ``OutcomeStore.purge`` as of 2027-03-01 (cutoff 2026-03-01, about half of
  the store past it: the first purge of a store that never had one; in transactions of
  20,000 rows), and its peak RSS;
- ``purge_day``: the next day's purge (one day of calls: what the server does daily);
- ``start``: an ``OnlineRanker`` on what is left (no model, no purge at start);
- ``erase``: ``OnlineRanker.erase`` of one contact (the store's part, what the HTTP answer
  waits for) and the rebuild of the service's memory behind it (in the background);
- ``objected_us``: the check of a ranked request against the opt-out and forget lists, per
  request, once the forget list is not empty (what ``/rank`` pays for it);
- ``access``: ``contact_record`` of one contact (warm).

    .venv/bin/python benchmarks/bench_privacy.py [--db /tmp/bench_dash/store.db]

Prints one JSON line per figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def figure(name: str, **values) -> None:
    print(json.dumps({"benchmark": "privacy", "figure": name, **values}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="/tmp/bench_dash/store.db",
                        help="the store of bench_dashboard.py (built when missing)")
    args = parser.parse_args(argv)
    source = Path(args.db)
    if not source.exists():
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_dashboard import build

        build(source, 1_000_000, 11, False)
    temp = Path(tempfile.mkdtemp(prefix="bench_privacy_"))
    os.environ["CALLBACK_TIMING_HOME"] = str(temp / "home")
    try:
        db = temp / "store.db"
        shutil.copy(source, db)
        from callback_timing.online import OnlineRanker, ServeSettings
        from callback_timing.policy_config import load_policy_config
        from callback_timing.store import OutcomeStore

        config = load_policy_config()
        store = OutcomeStore(db)
        before = store.count_outcomes()
        t0 = time.perf_counter()
        done = store.purge(config.retention_cutoff(pd.Timestamp("2027-03-01T00:00:00Z")))
        figure("purge_half", seconds=round(time.perf_counter() - t0, 2), outcomes=before,
               purged_calls=done["outcomes"], purged_rankings=done["decisions"],
               aggregate_upserts=done["patterns"],
               peak_rss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2))
        t0 = time.perf_counter()
        done = store.purge(config.retention_cutoff(pd.Timestamp("2027-03-02T00:00:00Z")))
        figure("purge_day", seconds=round(time.perf_counter() - t0, 2),
               purged_calls=done["outcomes"], purged_rankings=done["decisions"])
        store.close()

        t0 = time.perf_counter()
        ranker = OnlineRanker(ServeSettings(model_dir=None, db=str(db), watch_seconds=0,
                                            purge=False))
        figure("start", seconds=round(time.perf_counter() - t0, 1),
               outcomes=ranker.store.count_outcomes())
        contact = str(ranker.store.outcomes_after(0, limit=1)["contact_id"].iloc[0])
        t0 = time.perf_counter()
        deleted = ranker.erase(contact)
        erase_s = time.perf_counter() - t0
        while ranker._rebuild_queued or ranker._reload_lock.locked():
            time.sleep(0.02)
        figure("erase", store_s=round(erase_s, 3),
               rebuild_s=round(time.perf_counter() - t0, 1), deleted=deleted)
        requests = [{"contact": {"contact_id": f"c-{i:06d}"}, "now": "2026-05-05T06:00:00Z"}
                    for i in range(10_000)]
        t0 = time.perf_counter()
        for request in requests:
            ranker._objected(request)
        figure("objected_us", per_request_us=round((time.perf_counter() - t0) / len(requests)
                                                   * 1e6, 2), forgotten=1)
        ranker.contact_record(contact)  # warm
        t0 = time.perf_counter()
        record = ranker.contact_record(f"c-{1:06d}")
        figure("access", seconds=round(time.perf_counter() - t0, 3),
               outcomes=len(record["stored"]["outcomes"]))
        ranker.close()
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
