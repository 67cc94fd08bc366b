"""Campaign KPIs of the four policies on the demo world (the issue's targets).

Simulates the demo world (2,000 contacts x 120 days, seed 0 unless --seed), trains the model on
the first 80% of the period (train + calibrate) and replays 1,500 callback requests of the last
20% for the traditional desk, the rule-based fallback, the model and the oracle:

    .venv/bin/python benchmarks/bench_campaign.py [--seed 0] [--requests 1500]

Prints one JSON line per policy and a summary line with the share of the oracle's value lift
over the desk that the model (target >= 0.85) and the rules (target >= 0.40) capture, and the
calls made outside legal hours (target 0). Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import pandas as pd

import callback_timing as ct
from callback_timing.campaign import replay, value_lift_captured
from callback_timing.evaluate import first_requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--requests", type=int, default=1500)
    args = parser.parse_args()
    t0 = time.perf_counter()
    sim = ct.simulate(contacts=2000, days=120, seed=args.seed, dirt_rate=0.0)
    calls = ct.clean_history(sim.history, key=b"bench").calls
    ev = ct.fit_and_evaluate(calls, baselines=False)
    start = pd.Timestamp(ev.split.bounds["test_from"])
    asked = first_requests(calls[calls["requested_at"] >= start])
    asked = asked.sample(min(args.requests, len(asked)), random_state=args.seed)
    asked = asked.rename(columns={"now": "requested_at"})
    t1 = time.perf_counter()
    result = replay(sim.world, calls[calls["called_at"] < start], asked, bundle=ev.bundle,
                    seed=args.seed)
    seconds = time.perf_counter() - t1
    kpis = result.kpis
    for name, row in kpis.iterrows():
        print(json.dumps({"benchmark": "campaign", "policy": name,
                          **{k: round(float(v), 4) for k, v in row.items()}}), flush=True)
    model, rules = value_lift_captured(kpis, "model"), value_lift_captured(kpis, "rules")
    illegal = int(kpis.loc[["desk", "rules", "model", "oracle"], "illegal_calls"].sum())
    ok = model >= 0.85 and rules >= 0.40 and illegal == 0
    print(json.dumps({"benchmark": "campaign", "requests": len(asked), "seed": args.seed,
                      "model_lift_captured": round(model, 3),
                      "rules_lift_captured": round(rules, 3), "illegal_calls": illegal,
                      "replay_s": round(seconds, 1),
                      "total_s": round(time.perf_counter() - t0, 1), "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
