"""Shared steps of the benchmark scripts: size a simulated world, clean it, run a child phase."""

from __future__ import annotations

import json
import subprocess
import sys
import time

#: Calls per contact in a default 120-day run (measured: about 14.2 at 0.05 requests/day).
CALLS_PER_CONTACT = 14.2
DAYS = 120


def contacts_for(n_calls: int, margin: float = 1.0) -> int:
    """Contacts whose default 120-day simulation yields about ``n_calls * margin`` calls."""
    return max(1, round(n_calls / CALLS_PER_CONTACT * margin))


def simulated_clean_calls(n_calls: int, seed: int):
    """Exactly ``n_calls`` clean calls of a simulated world (simulated with 6% to spare).

    Returns ``(calls, simulation_result, {"simulate_s": ..., "load_clean_s": ...})``.
    """
    from callback_timing.data import clean_history
    from callback_timing.simulation import simulate

    t0 = time.perf_counter()
    sim = simulate(contacts=contacts_for(n_calls, 1.06), days=DAYS, seed=seed, dirt_rate=0.0)
    sim_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    calls = clean_history(sim.history, key=b"benchmark").calls.iloc[:n_calls]
    timings = {"simulate_s": round(sim_s, 2), "load_clean_s": round(time.perf_counter() - t0, 2)}
    return calls, sim, timings


def run_child(script: str, argument: str) -> dict:
    """Run ``script --child argument`` in a fresh interpreter; return its last JSON line."""
    out = subprocess.run([sys.executable, script, "--child", argument],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
