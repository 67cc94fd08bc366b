"""Model quality against the simulator's truth, by how much history each contact has.

For worlds of growing density (calls per contact), trains with the default parameters and
prints the test-slice AUC, the truth's AUC (the ceiling), their ratio, the information bound
(the best AUC any model could reach on that history, see
:func:`callback_timing.evaluate.information_bound`), log loss against the logistic-regression
baseline, and ECE. It shows how much of the gap to the oracle is personal habit that sparse
histories cannot reveal. The densest world is repeated over several seeds to show the spread.

    .venv/bin/python benchmarks/bench_quality.py

Prints one JSON line per world and a summary line; exits 1 if the model ever loses to the
logistic regression on log loss, or its ECE exceeds 0.02 on a test slice of >= 20,000 calls
(below that, sampling noise alone puts ten-bin ECE near 0.01-0.015).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import callback_timing as ct

#: (contacts, days, callback requests per contact per day, seeds)
WORLDS = (
    (2000, 120, 0.05, (7,)), (1000, 120, 0.2, (7,)), (600, 120, 0.5, (7,)),
    (200, 240, 1.0, (1, 2, 3, 4, 5, 6)),
)


def measure(contacts: int, days: int, rate: float, seed: int) -> tuple[dict, bool]:
    """Train on one world; its figures and whether log loss and ECE pass."""
    t0 = time.perf_counter()
    sim = ct.simulate(contacts=contacts, days=days, seed=seed, dirt_rate=0.0,
                      requests_per_contact_day=rate)
    calls = ct.clean_history(sim.history, key=b"bench").calls
    ev = ct.fit_and_evaluate(calls, truth=sim.truth, world=sim.world)
    model, lr, t = ev.metrics["model"], ev.metrics["logistic_regression"], ev.truth
    row = {
        "contacts": contacts, "days": days, "seed": seed, "calls": len(calls),
        "calls_per_contact": round(len(calls) / contacts, 1),
        "auc": round(model["roc_auc"], 4), "ceiling_auc": round(t["ceiling_auc"], 4),
        "auc_vs_ceiling": round(t["auc_vs_ceiling"], 4), "bound_auc": round(t["bound_auc"], 4),
        "bound_vs_ceiling": round(t["bound_vs_ceiling"], 4),
        "log_loss": round(model["log_loss"], 4), "logistic_log_loss": round(lr["log_loss"], 4),
        "ece": round(model["ece"], 4), "seconds": round(time.perf_counter() - t0, 1),
    }
    ok = model["log_loss"] < lr["log_loss"] and (model["ece"] <= 0.02 or model["n"] < 20_000)
    return row, ok


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)  # --help
    ok = True
    for contacts, days, rate, seeds in WORLDS:
        for seed in seeds:
            row, passed = measure(contacts, days, rate, seed)
            ok &= passed
            print(json.dumps({"benchmark": "quality", **row}), flush=True)
    print(json.dumps({"benchmark": "quality", "ok": bool(ok)}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
