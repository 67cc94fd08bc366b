"""The learning loop on the simulator: does a month of live traffic and one ``retrain`` pay?

Per seed and world: a service (in process: the same :class:`OnlineRanker` the server runs)
starts on the rules alone with an empty outcome store; 30 days x 60 callback requests of
simulated dialer traffic go through it (ranked, called, answered as the world says, posted
back); :func:`callback_timing.retrain.retrain` trains on the original history (800 contacts,
90 days) and that month, checks the challenger off-policy, and promotes it; the service
reloads it; 14 more days of traffic are ranked by the model. The value of those 14 days'
requests (urgency-weighted reach) is then replayed in the world with the rules and with the
promoted model (same requests, same random draws).

Worlds: ``rotated``, a call centre whose customers do not keep the rule table's industry
hours (the CRM's industry labels are rotated against the simulator's behaviour); ``default``,
the simulator as it is (the rule table was written from the same facts, so there is little
for the loop to learn).

    .venv/bin/python benchmarks/bench_loop.py [--seeds 0 1 2] [--worlds rotated default]

One JSON line per run and a summary; exits 1 when the model's replayed value does not rise
over the rules' on every seed of the rotated world.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def run(seed: int, world_kind: str, tmp: Path) -> dict:
    import pandas as pd

    from callback_timing.bundle import ModelBundle
    from callback_timing.campaign import replay
    from callback_timing.data import clean_history
    from callback_timing.evaluate import first_requests
    from callback_timing.export import history_of
    from callback_timing.online import OnlineRanker, ServeSettings
    from callback_timing.retrain import retrain
    from callback_timing.schema import INDUSTRIES
    from callback_timing.simulation import simulate
    from callback_timing.traffic import ranker_poster, seed_traffic

    order = list(INDUSTRIES)
    rotate = {a: order[(i + 1) % len(order)] for i, a in enumerate(order)}
    sim = simulate(contacts=800, days=90, seed=seed, dirt_rate=0.0)
    history, crm = sim.history, sim.world.contacts
    if world_kind == "rotated":
        history = history.assign(industry=history["industry"].map(rotate))
        crm = crm.assign(industry=crm["industry"].map(rotate))
    history_csv = tmp / "history.csv"
    history.to_csv(history_csv, index=False)
    model = tmp / "models" / "current"
    ranker = OnlineRanker(ServeSettings(model_dir=model, db=str(tmp / "o.db"),
                                        control_share=0.0, watch_seconds=0, purge=False))
    post = ranker_poster(ranker)
    start = pd.Timestamp(history["called_at"].max()).tz_convert("UTC").normalize() \
        + pd.Timedelta(days=1)
    t0 = time.perf_counter()
    month = seed_traffic(post, sim.world, None, start, days=30, per_day=60, seed=seed + 1,
                         profiles=crm)
    ranker.flush()
    traffic_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = retrain(str(tmp / "o.db"), history=history_csv, model_dir=model, bentoml=False)
    retrain_s = time.perf_counter() - t0
    out = {"benchmark": "loop", "world": world_kind, "seed": seed,
           "month_calls": month["calls"], "traffic_s": round(traffic_s, 1),
           "retrain_s": round(retrain_s, 1), "decision": report.decision,
           "line": report.line()}
    ope = report.off_policy or {}
    for key in ("n", "ess", "logged", "dr", "dr_se", "snips", "replayed"):
        if ope.get(key) is not None:
            out[f"offpolicy_{key}"] = round(float(ope[key]), 4)
    if report.decision != "promoted":
        ranker.close()
        return out
    ranker.reload(model)
    later = start + pd.Timedelta(days=30)
    seed_traffic(post, sim.world, None, later, days=14, per_day=60, seed=seed + 2,
                 profiles=crm)
    ranker.flush()
    stored, _, _ = history_of(ranker.store, None, None)
    ranker.close()
    calls = clean_history(pd.concat([history, stored.drop(columns=["arm", "propensity"])],
                                    ignore_index=True).astype(object)).calls
    asked = first_requests(calls[calls["requested_at"] >= later]).rename(
        columns={"now": "requested_at"})
    result = replay(sim.world, calls[calls["called_at"] < later], asked,
                    bundle=ModelBundle.load(model), policies=("rules", "model"), seed=seed)
    value = result.kpis["value"]
    out.update(requests=len(asked), value_rules=round(float(value["rules"]), 4),
               value_model=round(float(value["model"]), 4),
               value_rise=round(float(value["model"] - value["rules"]), 4),
               first_attempt_rules=round(float(result.kpis.loc["rules", "first_attempt_rate"]),
                                         4),
               first_attempt_model=round(float(result.kpis.loc["model", "first_attempt_rate"]),
                                         4))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--worlds", nargs="+", default=["rotated", "default"],
                        choices=["rotated", "default"])
    args = parser.parse_args()
    rises: dict[str, list[float]] = {}
    for world_kind in args.worlds:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory(prefix="bench-loop-") as folder:
                tmp = Path(folder)
                os.environ["CALLBACK_TIMING_MLRUNS"] = str(tmp / "mlruns")
                os.environ["CALLBACK_TIMING_HOME"] = str(tmp / "home")
                os.environ.pop("MLFLOW_TRACKING_URI", None)
                result = run(seed, world_kind, tmp)
            print(json.dumps(result), flush=True)
            rises.setdefault(world_kind, []).append(result.get("value_rise", float("nan")))
    ok = all(r > 0 for r in rises.get("rotated", [1.0]))
    print(json.dumps({"benchmark": "loop", "value_rise": rises, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    # the simulator's worlds are dated 2026: no retention purge while replaying them
    os.environ.setdefault("CALLBACK_TIMING_PURGE", "0")
    sys.exit(main())
