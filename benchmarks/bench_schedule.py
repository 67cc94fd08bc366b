"""Benchmark: schedule 2,000 callback requests under a per-slot capacity (target: assign <= 5 s).

Simulated contacts (time zone, country, subdivision, industry) each ask for a callback during
the 24 h before one planning moment; the rule-based policy scores every 15-minute slot of the
next 48 h; a contact centre makes ``--capacity`` calls per slot. Times the exact
:func:`~callback_timing.schedule.assign` against the greedy per-contact ranking (both orders)
and reports expected answers and total value of each.

    .venv/bin/python benchmarks/bench_schedule.py [--requests 2000] [--capacity 20]

Prints one JSON line per method, then a summary line; exits 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import pandas as pd

from callback_timing.policy import Policy
from callback_timing.schedule import assign, greedy
from callback_timing.simulation import simulate

NOW = pd.Timestamp("2026-06-02T05:00:00Z")


def requests_for(n: int, seed: int, horizon_hours: float) -> list[dict]:
    """``n`` rank requests over simulated contacts, requested in the 24 h before ``NOW``."""
    contacts = simulate(contacts=n, days=30, seed=seed, dirt_rate=0.0).world.contacts
    rng = np.random.default_rng(seed)
    asked = NOW - pd.to_timedelta(rng.integers(0, 24 * 60, len(contacts)), unit="min")
    return [{"request_id": f"r-{i:05d}",
             "contact": {"contact_id": c.contact_id, "timezone": c.timezone, "country": c.country,
                         "subdivision": c.subdivision, "industry": c.industry},
             "requested_at": ts.isoformat(), "now": NOW.isoformat(),
             "horizon_hours": horizon_hours}
            for i, (c, ts) in enumerate(zip(contacts.itertuples(), asked, strict=True))]


def timed(run, repeat: int) -> tuple[pd.DataFrame, float]:
    """The result of ``run()`` and its fastest wall time over ``repeat`` runs."""
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - t0)
    return out, best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--capacity", type=int, default=20, help="calls per 15-minute slot")
    parser.add_argument("--horizon-hours", type=float, default=48.0)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (fastest counts)")
    parser.add_argument("--target-s", type=float, default=5.0, help="time budget of assign")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    reqs = requests_for(args.requests, args.seed, args.horizon_hours)
    t0 = time.perf_counter()
    slots = Policy().slot_table(reqs)
    table_s = time.perf_counter() - t0
    allowed = slots[slots["allowed"]]
    runs = {"optimal": lambda: assign(slots, args.capacity),
            "greedy_score": lambda: greedy(slots, args.capacity, order="score"),
            "greedy_request": lambda: greedy(slots, args.capacity, order="request")}
    figures = {}
    for method, run in runs.items():
        out, seconds = timed(run, args.repeat)
        chosen = out[out["assigned"]]
        figures[method] = {"seconds": round(seconds, 3), "assigned": int(len(chosen)),
                           "expected_answers": round(float(chosen["p_answer"].sum()), 3),
                           "value": round(float(chosen["score"].sum()), 3),
                           "max_calls_in_a_slot": int(chosen.groupby("at").size().max())}
        print(json.dumps({"benchmark": "schedule", "method": method, **figures[method]}))
    best, base = figures["optimal"], figures["greedy_score"]
    ok = (best["seconds"] <= args.target_s
          and max(f["max_calls_in_a_slot"] for f in figures.values()) <= args.capacity)
    print(json.dumps({
        "benchmark": "schedule", "requests": len(reqs), "capacity_per_slot": args.capacity,
        "slot_rows": len(slots), "allowed_rows": len(allowed),
        "slots": int(allowed["at"].nunique()), "slot_table_s": round(table_s, 2),
        "assign_s": best["seconds"], "greedy_s": base["seconds"],
        "expected_answers": {m: f["expected_answers"] for m, f in figures.items()},
        "value": {m: f["value"] for m, f in figures.items()},
        "value_uplift_pct": {m: round(100 * (best["value"] / f["value"] - 1), 2)
                             for m, f in figures.items() if m != "optimal" and f["value"]},
        "target_s": args.target_s, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
