"""Campaign KPIs of the four policies on the demo world (the issue's targets).

Simulates the demo world (2,000 contacts x 120 days, seed 0 unless --seed), trains the model on
the first 80% of the period (train + calibrate) and replays every callback request of the last
20% (about 2,300; ``--requests N`` samples N) for the traditional desk, the rule-based
fallback, the model and the oracle. ``--contacts``, ``--days``, ``--rate`` and ``--explore``
change the world (e.g. a dense one: ``--contacts 200 --days 240 --rate 1.0 --first 2000``):

    .venv/bin/python benchmarks/bench_campaign.py [--seed 0] [--requests N]

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
    parser.add_argument("--requests", type=int, default=0,
                        help="replay a sample of this many requests (default 0: all of them)")
    parser.add_argument("--first", type=int, default=0,
                        help="replay only the first N requests in time (default 0: all)")
    parser.add_argument("--contacts", type=int, default=2000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--rate", type=float, default=None,
                        help="callback requests per contact per day (default: the simulator's)")
    parser.add_argument("--explore", type=float, default=None,
                        help="share of the history's requests called at random allowed times "
                             "(default: the simulator's)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    density = {} if args.rate is None else {"requests_per_contact_day": args.rate}
    if args.explore is not None:
        density["explore_share"] = args.explore
    sim = ct.simulate(contacts=args.contacts, days=args.days, seed=args.seed, dirt_rate=0.0,
                      **density)
    calls = ct.clean_history(sim.history, key=b"bench").calls
    ev = ct.fit_and_evaluate(calls, baselines=False)
    start = pd.Timestamp(ev.split.bounds["test_from"])
    asked = first_requests(calls[calls["requested_at"] >= start])
    if args.first:
        asked = asked.sort_values("now", kind="stable").head(args.first)
    if args.requests:  # a sample leaves gaps in the contacts' histories the replay cannot fill
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
