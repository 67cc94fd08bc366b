"""Benchmark: a supervisor dashboard page load (GET /kpis) on 1,000,000 outcomes (<= 2 s).

Builds a SQLite :class:`~callback_timing.store.OutcomeStore` of ``--outcomes`` calls of
synthetic dialer traffic (about one callback request per 2.3 calls, 1-3 attempts each, over
50,000 contacts and 180 days, contacts in PL, DE, US-NY and GB, answered about 30 % of the
time, inside 08:00-20:00 local time but for a few) and its decision log (one ranking per
call plus 4 % of requests ranked and never called; arms model 85 %, rules 5 %, control 10 %),
inserted in bulk through the store's own tables. Then, in a fresh child interpreter, it
times :meth:`callback_timing.dashboard.KpiSource.payload` (what ``/kpis`` calls):

- ``cold``: the first read of a new ``KpiSource`` without a snapshot (the whole store:
  what the service does in the background the first time it starts on a store; not a
  page-load target);
- ``warm``: a page load with the store unchanged (answered from the page cache);
- ``after_append``: 100 outcomes and 40 decisions added (``add_outcomes``,
  ``log_decisions``), then a page load (reads the new rows, derives the requests again);
- ``filtered``: ``payload(Filters(industry=...))``, a filter not asked for before;
- ``restart``: the first page load of a new ``KpiSource`` after those, as after a server
  restart: it starts from the snapshot the first one saved (its size and write time are
  shown) and reads the rows stored since;
- ``breakdown``: the cold read's parts called directly (``rows_after`` of each table,
  ``KpiData.add``, ``KpiData.fates``, ``payload_of``);
- peak RSS of the child and the payload's JSON size.

Each page load figure is the median of ``--repeat`` runs.

    .venv/bin/python benchmarks/bench_dashboard.py [--outcomes 1000000] [--repeat 3]
        [--db /tmp/bench_dash/store.db] [--rebuild] [--seed 11]

``--db PATH`` keeps the store there and reuses it on the next run when it holds the same
number of outcomes (the rows a previous run appended are deleted first); without it the store
is built in a temporary folder and removed. Prints one JSON line per figure, then a summary
line; exits 1 when a page load (warm, after_append, filtered, restart) misses its target.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

TARGET_S = 2.0
END = np.datetime64("2026-06-01T00:00:00", "s")
CHUNK = 50_000
APPEND_PREFIX = "append-"
#: (time zone, country, subdivision, share of contacts)
PLACES = [("Europe/Warsaw", "PL", None, 0.40), ("Europe/Berlin", "DE", None, 0.25),
          ("America/New_York", "US", "NY", 0.20), ("Europe/London", "GB", None, 0.15)]
INDUSTRIES = ("it", "retail", "manufacturing", "consumer", "finance", "healthcare")
ARMS = ("model", "rules", "control")
ARM_SHARE = (0.85, 0.05, 0.10)
#: attempts 1, 2, 3 per arm (the control desk calls more often)
ATTEMPT_SHARE = {"model": (0.25, 0.30, 0.45), "rules": (0.20, 0.30, 0.50),
                 "control": (0.10, 0.30, 0.60)}
#: chance the last call of a request is answered (earlier ones are not: the desk stops)
REACH = {"model": 0.72, "rules": 0.66, "control": 0.55}
RULE_REASONS = ("no model loaded", "model exceeded its latency budget (50 ms)",
                "no model bundle at /srv/models/current: the rules answer")
CONTROL_REASON = "control arm: answered as a traditional callback desk"
MODEL_VERSION = "2026-05-18T09:12:44Z-3f2a9c1d"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- synthetic traffic ---------------------------------------------------------------------


def _local_hours(utc: np.ndarray, zones: np.ndarray, rng: np.random.Generator,
                 keep_outside: float) -> np.ndarray:
    """Move calls outside 08:00-20:00 local time into it (08:00-19:00 of the same or the next
    day), but for a share ``keep_outside`` of them."""
    out = utc.copy()
    for zone in np.unique(zones):
        at = np.flatnonzero(zones == zone)
        local = pd.DatetimeIndex(utc[at]).tz_localize("UTC").tz_convert(zone).tz_localize(None)
        hour = local.hour.to_numpy()
        move = ((hour < 8) | (hour >= 20)) & (rng.random(len(at)) >= keep_outside)
        day = local.normalize() + pd.to_timedelta(np.where(hour >= 20, 1, 0), unit="D")
        jitter = pd.to_timedelta(rng.integers(0, 11 * 3600, len(at)), unit="s")
        moved = (day + pd.Timedelta(hours=8) + jitter).tz_localize(
            zone, ambiguous="NaT", nonexistent="shift_forward").tz_convert("UTC")
        moved = moved.tz_localize(None).to_numpy("datetime64[s]")
        out[at[move]] = moved[move]
    return out


def synthetic(n_outcomes: int, contacts: int, days: int, seed: int) -> tuple[dict, dict]:
    """(outcome columns, decision columns) as numpy arrays of ``n_outcomes`` calls."""
    rng = np.random.default_rng(seed)
    guess = int(n_outcomes / 2.1) + 100
    arm = np.asarray(ARMS)[rng.choice(3, guess, p=ARM_SHARE)]
    attempts = np.empty(guess, dtype=np.int64)
    for name, share in ATTEMPT_SHARE.items():
        mine = arm == name
        attempts[mine] = rng.choice([1, 2, 3], mine.sum(), p=share)
    total = np.cumsum(attempts)
    n_req = int(np.searchsorted(total, n_outcomes)) + 1
    arm, attempts = arm[:n_req], attempts[:n_req]
    attempts[-1] -= total[n_req - 1] - n_outcomes

    # contacts: a fixed place and industry each
    place_of = rng.choice(len(PLACES), contacts, p=[p[3] for p in PLACES])
    industry_of = rng.choice(len(INDUSTRIES), contacts)
    contact = rng.integers(0, contacts, n_req)
    contact_ids = np.char.add("c-", np.char.zfill(np.arange(contacts).astype(str), 6))
    requested = END - rng.integers(0, days * 86400, n_req).astype("timedelta64[s]")

    # calls: request index, gaps (first after ~3 h, then 2 h + ~10 h), local hours
    req = np.repeat(np.arange(n_req), attempts)
    starts = np.cumsum(attempts) - attempts
    first = np.zeros(n_outcomes, dtype=bool)
    first[starts] = True
    gap = np.where(first, 300 + rng.exponential(3 * 3600, n_outcomes),
                   7200 + rng.exponential(10 * 3600, n_outcomes)).astype(np.int64)
    run = np.cumsum(gap)
    offset = run - np.repeat(run[starts] - gap[starts], attempts)
    zone = np.asarray([p[0] for p in PLACES], dtype=object)[place_of[contact[req]]]
    called = _local_hours(requested[req] + offset.astype("timedelta64[s]"), zone, rng,
                          keep_outside=0.003)
    order = np.lexsort((called, req))  # attempts in call order after the moves
    called = called[order]
    attempt = np.arange(n_outcomes) - np.repeat(starts, attempts) + 1
    last = np.zeros(n_outcomes, dtype=bool)
    last[starts + attempts - 1] = True

    reach = np.vectorize(REACH.get)(arm)
    answered = last & (rng.random(n_outcomes) < reach[req])
    outcome = np.where(answered, "answered", rng.choice(["no_answer", "busy", "voicemail"],
                                                        n_outcomes, p=[0.6, 0.15, 0.25]))
    duration = np.where(answered, rng.lognormal(np.log(150), 0.8, n_outcomes),
                        np.where(outcome == "voicemail", rng.uniform(15, 40, n_outcomes),
                                 np.nan)).round(1)
    received = called + (np.nan_to_num(duration, nan=30.0) + 2).astype("timedelta64[s]")
    place = place_of[contact[req]]
    calls = {
        "call_id": np.char.add("call-", np.char.zfill(np.arange(n_outcomes).astype(str), 7)),
        "contact_id": contact_ids[contact[req]],
        "request_id": np.char.add("req-", np.char.zfill(req.astype(str), 7)),
        "attempt": attempt, "called_at": called, "outcome": outcome,
        "answered": answered.astype(np.int64), "duration_s": duration,
        "requested_at": requested[req], "timezone": zone,
        "country": np.asarray([p[1] for p in PLACES])[place],
        "subdivision": np.asarray([p[2] for p in PLACES], dtype=object)[place],
        "industry": np.asarray(INDUSTRIES)[industry_of[contact[req]]],
        "received_at": received,
    }

    # decisions: one ranking before each call, plus requests ranked and never called
    prev = np.roll(called, 1)
    now = np.where(first, requested[req] + rng.integers(1, 60, n_outcomes).astype(
        "timedelta64[s]"), prev + rng.integers(60, 600, n_outcomes).astype("timedelta64[s]"))
    now = np.minimum(now, called - np.timedelta64(1, "s"))
    n_extra = max(1, round(0.04 * n_req))
    extra_arm = np.asarray(ARMS)[rng.choice(3, n_extra, p=ARM_SHARE)]
    extra_contact = rng.integers(0, contacts, n_extra)
    extra_requested = END - rng.integers(0, days * 86400, n_extra).astype("timedelta64[s]")
    extra_now = extra_requested + rng.integers(1, 60, n_extra).astype("timedelta64[s]")
    d_arm = np.concatenate([arm[req], extra_arm])
    n_dec = len(d_arm)
    source = np.where(d_arm == "model", "model", "rules").astype(object)
    late = (d_arm == "model") & (rng.random(n_dec) < 0.02)  # the model fell back
    source[late] = "rules"
    reason = np.full(n_dec, None, dtype=object)
    reason[late] = RULE_REASONS[1]
    rules = d_arm == "rules"
    reason[rules] = np.asarray(RULE_REASONS, dtype=object)[rng.integers(0, 3, rules.sum())]
    reason[d_arm == "control"] = CONTROL_REASON
    start = np.concatenate([called, extra_now + np.timedelta64(3600, "s")])
    start = start.astype("datetime64[m]").astype("datetime64[s]")  # whole minutes
    d_now = np.concatenate([now, extra_now])
    explored = (source == "model") & (rng.random(n_dec) < 0.05)
    decisions = {
        "request_id": np.concatenate([calls["request_id"], np.char.add(
            "req-x", np.char.zfill(np.arange(n_extra).astype(str), 6))]),
        "contact_id": np.concatenate([calls["contact_id"], contact_ids[extra_contact]]),
        "arm": d_arm, "source": source, "fallback_reason": reason,
        "model_version": np.where(source == "model", MODEL_VERSION, None),
        "policy": np.full(n_dec, "auto"),
        "urgency": np.asarray(["standard", "standard", "standard", "urgent", "flexible"])[
            rng.integers(0, 5, n_dec)],
        "now": d_now, "requested_at": np.concatenate([requested[req], extra_requested]),
        "window_start": start,
        "window_end": start + rng.choice([30, 60, 90, 120], n_dec).astype("timedelta64[m]"),
        "p_answer": rng.uniform(0.1, 0.6, n_dec).round(4),
        "score": rng.uniform(0.05, 0.6, n_dec).round(4),
        "windows": np.full(n_dec, 3), "explored": explored,
        "propensity": np.where(explored, rng.uniform(0.01, 0.3, n_dec).round(6),
                               np.where(source == "model", 0.95, np.nan)),
        "decided_at": d_now + rng.integers(0, 3, n_dec).astype("timedelta64[s]"),
    }
    order = np.argsort(d_now, kind="stable")  # the log is written in time order
    decisions = {k: v[order] for k, v in decisions.items()}
    return calls, decisions


def _python(values: np.ndarray) -> list:
    """Values as Python objects of the stored types (naive UTC datetimes; NaN as None)."""
    if values.dtype.kind == "M":
        return values.astype("datetime64[us]").astype(object).tolist()
    if values.dtype.kind == "f":
        return [None if v != v else v for v in values.tolist()]
    return values.tolist()


def insert(store, table, columns: dict, label: str) -> None:
    """Insert ``columns`` into ``table`` in transactions of :data:`CHUNK` rows."""
    n = len(next(iter(columns.values())))
    keys = list(columns)
    t0 = time.perf_counter()
    for lo in range(0, n, CHUNK):
        part = [_python(columns[k][lo:lo + CHUNK]) for k in keys]
        rows = [dict(zip(keys, values, strict=True)) for values in zip(*part, strict=True)]
        with store.engine.begin() as conn:
            conn.execute(table.insert(), rows)
        done = min(lo + CHUNK, n)
        log(f"  {label}: {done:,}/{n:,} rows ({time.perf_counter() - t0:.0f} s)")


def drop_appended(store) -> int:
    """Delete the rows an earlier run appended; returns how many outcomes went."""
    import sqlalchemy as sa

    from callback_timing.store import decisions, outcomes

    with store.engine.begin() as conn:
        gone = conn.execute(sa.delete(outcomes).where(
            outcomes.c.call_id.like(APPEND_PREFIX + "%"))).rowcount
        conn.execute(sa.delete(decisions).where(
            decisions.c.request_id.like(APPEND_PREFIX + "%")))
    return gone


def build(path: Path, n_outcomes: int, seed: int, rebuild: bool) -> dict:
    """The store at ``path`` with ``n_outcomes`` synthetic outcomes (reused when there)."""
    from callback_timing import store as st

    if rebuild:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    existed = path.exists()
    store = st.OutcomeStore(path)
    try:
        if existed:
            dropped = drop_appended(store)
            count = store.count_outcomes()
            if count != n_outcomes:
                raise SystemExit(f"{path} holds {count:,} outcomes, not {n_outcomes:,}: "
                                 "pass --rebuild or another --db")
            return {"reused": True, "outcomes": count, "decisions": store.decision_count(),
                    "dropped_appended": dropped}
        t0 = time.perf_counter()
        log(f"building {n_outcomes:,} outcomes in {path}")
        calls, decs = synthetic(n_outcomes, contacts=50_000, days=180, seed=seed)
        gen_s = time.perf_counter() - t0
        log(f"  generated in {gen_s:.1f} s")
        insert(store, st.outcomes, calls, "outcomes")
        insert(store, st.decisions, decs, "decisions")
        with store.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return {"reused": False, "outcomes": store.count_outcomes(),
                "decisions": store.decision_count(),
                "requests": len(np.unique(calls["request_id"])),
                "answered_share": round(float(calls["answered"].mean()), 3),
                "generate_s": round(gen_s, 1),
                "seconds": round(time.perf_counter() - t0, 1)}
    finally:
        store.close()


# --- the timed child -------------------------------------------------------------------------


def appended_rows(run: int, now: pd.Timestamp) -> tuple[pd.DataFrame, list[dict]]:
    """100 outcomes of 40 new requests (20 with 3 calls, 20 with 2) and their 40 rankings."""
    rng = np.random.default_rng(run)
    attempts = [3, 2] * 20
    calls, rankings = [], []
    for i, k in enumerate(attempts):
        rid = f"{APPEND_PREFIX}{run}-{i:02d}"
        cid = f"c-{rng.integers(0, 50_000):06d}"
        requested = now - pd.Timedelta(hours=6)
        rankings.append({"request_id": rid, "contact_id": cid, "arm": "model",
                         "source": "model", "fallback_reason": None,
                         "model_version": MODEL_VERSION, "policy": "auto",
                         "urgency": "standard", "now": requested, "requested_at": requested,
                         "window_start": requested + pd.Timedelta(hours=1),
                         "window_end": requested + pd.Timedelta(hours=2), "p_answer": 0.3,
                         "score": 0.3, "windows": 3, "explored": False, "propensity": 0.95,
                         "decided_at": requested})
        for a in range(1, int(k) + 1):
            calls.append({"call_id": f"{APPEND_PREFIX}{run}-{i:02d}-{a}", "contact_id": cid,
                          "request_id": rid, "attempt": a,
                          "called_at": requested + pd.Timedelta(hours=a),
                          "outcome": "answered" if a == k else "no_answer",
                          "duration_s": 120.0 if a == k else None,
                          "requested_at": requested, "timezone": "Europe/Warsaw",
                          "country": "PL", "subdivision": None, "industry": "it"})
    return pd.DataFrame(calls), rankings


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def _figure(name: str, runs: list[float], **extra) -> dict:
    fig = {"benchmark": "dashboard", "figure": name,
           "median_s": round(statistics.median(runs), 3),
           "runs_s": [round(r, 3) for r in runs], **extra, "target_s": TARGET_S}
    print(json.dumps(fig), flush=True)
    return fig


def child(db: str, repeat: int) -> int:
    """Time the page loads on the store ``db``; prints figures, then a result line."""
    from callback_timing import kpis
    from callback_timing.dashboard import KpiSource
    from callback_timing.kpis import Filters
    from callback_timing.store import OutcomeStore

    store = OutcomeStore(db)
    runs, size = [], 0
    for _ in range(repeat):
        source = KpiSource(store, snapshot=None)
        payload, seconds = _timed(source.payload)
        runs.append(seconds)
        size = len(json.dumps(payload).encode())
        del payload, source
    cold = _figure("cold", runs, json_bytes=size)

    source = KpiSource(store)  # reads the whole store (or a snapshot) and saves a snapshot
    payload = source.payload()
    _, write_s = _timed(source.wait_snapshot)
    snapshot_mb = source.snapshot_path.stat().st_size / 1e6
    warm = _figure("warm", [_timed(source.payload)[1] for _ in range(repeat)])

    runs, append_s = [], []
    for run in range(repeat):
        calls, rankings = appended_rows(run, pd.Timestamp("2026-06-01T12:00:00Z"))
        t0 = time.perf_counter()
        store.add_outcomes(calls)
        store.log_decisions(rankings)
        append_s.append(time.perf_counter() - t0)
        runs.append(_timed(source.payload)[1])
    after = _figure("after_append", runs, appended_outcomes=100, appended_decisions=40,
                    append_s=round(statistics.median(append_s), 3))

    # a filter not asked for before (not from the page cache): each run another industry
    runs, kept = [], []
    for industry in INDUSTRIES[:repeat]:
        page, seconds = _timed(source.payload, Filters(industry=industry))
        runs.append(seconds)
        kept.append(page["requests"])
    filtered = _figure("filtered", runs, requests=kept)

    # a server restart: the snapshot, then the rows stored since (those appended above)
    runs, restored = [], []
    for _ in range(repeat):
        again = KpiSource(store)
        runs.append(_timed(again.payload)[1])
        restored.append(again.restored)
        again.wait_snapshot()
        del again
    restart = _figure("restart", runs, restored=restored, snapshot_mb=round(snapshot_mb, 1),
                      snapshot_write_s=round(write_s, 3))

    # the cold page load's parts, called directly
    version, version_s = _timed(store.version)
    d, dec_s = _timed(store.rows_after, "decisions", kpis.DECISION_COLUMNS)
    o, out_s = _timed(store.rows_after, "outcomes", kpis.OUTCOME_COLUMNS)
    data = kpis.KpiData()
    _, add_s = _timed(data.add, d, o)
    fates, fates_s = _timed(data.fates)
    _, payload_s = _timed(kpis.payload_of, data, fates, None, "week")
    breakdown = {"benchmark": "dashboard", "figure": "breakdown",
                 "decisions": len(d), "outcomes": len(o), "requests": len(fates),
                 "version_s": round(version_s, 4),
                 "read_decisions_s": round(dec_s, 3), "read_outcomes_s": round(out_s, 3),
                 "arrays_s (local time, calling hours, codes)": round(add_s, 3),
                 "fates_s": round(fates_s, 3), "payload_s": round(payload_s, 3)}
    print(json.dumps(breakdown), flush=True)
    del d, o, fates, data, payload

    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(json.dumps({"benchmark": "dashboard", "figure": "memory",
                      "peak_rss_gb": round(peak_gb, 2), "json_bytes": size}), flush=True)
    store.close()
    result = {"cold_s": cold["median_s"], "warm_s": warm["median_s"],
              "after_append_s": after["median_s"], "filtered_s": filtered["median_s"],
              "restart_s": restart["median_s"], "restored": all(restored),
              "peak_rss_gb": round(peak_gb, 2), "json_bytes": size,
              "store_version": list(version)}
    print(json.dumps(result), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outcomes", type=int, default=1_000_000, help="outcomes stored")
    parser.add_argument("--repeat", type=int, default=3, help="runs per timed figure")
    parser.add_argument("--db", help="SQLite file to keep (and reuse) the store in")
    parser.add_argument("--rebuild", action="store_true", help="build --db afresh")
    parser.add_argument("--seed", type=int, default=11, help="seed of the synthetic traffic")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.repeat)

    temp = None if args.db else tempfile.mkdtemp(prefix="bench_dash_")
    path = Path(args.db or Path(temp) / "store.db").expanduser().resolve()
    try:
        built = build(path, args.outcomes, args.seed, args.rebuild)
        size_mb = sum(Path(f"{path}{s}").stat().st_size for s in ("", "-wal")
                      if Path(f"{path}{s}").exists()) / 1e6
        print(json.dumps({"benchmark": "dashboard", "figure": "build", **built,
                          "db": str(path), "db_mb": round(size_mb, 1)}), flush=True)
        out = subprocess.run([sys.executable, __file__, "--child", str(path),
                              "--repeat", str(args.repeat)],
                             check=True, stdout=subprocess.PIPE, text=True)
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
    lines = out.stdout.strip().splitlines()
    for line in lines[:-1]:
        print(line)
    result = json.loads(lines[-1])
    # a first read without a snapshot (a store never read by this version) is the
    # server's start-up, in the background; every page load after it, and the first one
    # after a restart (from the snapshot), must stay within the target
    loads = ("warm_s", "after_append_s", "filtered_s", "restart_s")
    ok = all(result[k] <= TARGET_S for k in loads) and result["restored"]
    print(json.dumps({"benchmark": "dashboard", "outcomes": built["outcomes"],
                      "cold_start_s": result["cold_s"],
                      **{k: result[k] for k in loads}, "target_s": TARGET_S,
                      "build_s": built.get("seconds"), "peak_rss_gb": result["peak_rss_gb"],
                      "json_bytes": result["json_bytes"], "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
