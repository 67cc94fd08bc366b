"""Model quality against the simulator's truth, by how much history each contact has.

For worlds of growing density (calls per contact), trains with the default parameters and
prints the test-slice AUC, the truth's AUC (the ceiling), their ratio, log loss against the
logistic-regression baseline, and ECE. It shows how much of the gap to the oracle is personal
habit that sparse histories cannot reveal.

    .venv/bin/python benchmarks/bench_quality.py

Prints one JSON line per world and a summary line; exits 1 if the model ever loses to the
logistic regression on log loss, or its ECE exceeds 0.02 on a test slice of >= 20,000 calls
(below that, sampling noise alone puts ten-bin ECE near 0.01-0.015).
"""

from __future__ import annotations

import json
import sys
import time

import callback_timing as ct

#: (contacts, days, callback requests per contact per day)
WORLDS = ((2000, 120, 0.05), (1000, 120, 0.2), (600, 120, 0.5), (300, 120, 1.5))


def main() -> int:
    ok = True
    for contacts, days, rate in WORLDS:
        t0 = time.perf_counter()
        sim = ct.simulate(contacts=contacts, days=days, seed=7, dirt_rate=0.0,
                          requests_per_contact_day=rate)
        calls = ct.clean_history(sim.history, key=b"bench").calls
        ev = ct.fit_and_evaluate(calls, truth=sim.truth)
        model, lr = ev.metrics["model"], ev.metrics["logistic_regression"]
        row = {
            "contacts": contacts, "calls": len(calls),
            "calls_per_contact": round(len(calls) / contacts, 1),
            "auc": round(model["roc_auc"], 4), "ceiling_auc": round(ev.truth["ceiling_auc"], 4),
            "auc_vs_ceiling": round(ev.truth["auc_vs_ceiling"], 4),
            "log_loss": round(model["log_loss"], 4), "logistic_log_loss": round(lr["log_loss"], 4),
            "ece": round(model["ece"], 4), "seconds": round(time.perf_counter() - t0, 1),
        }
        ok &= model["log_loss"] < lr["log_loss"] and (model["ece"] <= 0.02 or model["n"] < 20_000)
        print(json.dumps({"benchmark": "quality", **row}), flush=True)
    print(json.dumps({"benchmark": "quality", "ok": bool(ok)}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
