"""Benchmark: HTTP /rank of the BentoML service against the framework's floor for the job.

The floor is ``benchmarks/bare_service.py``: a BentoML service whose ``/rank`` takes the same
body and makes ONE 192-row XGBoost prediction, nothing else. Both servers run as real
subprocesses on free localhost ports (ready when ``GET /readyz`` answers 200); the load comes
from a separate process (``--child``): an async httpx client keeping ``--concurrency`` (8)
requests in flight, ``--warmup`` requests first (not counted), then ``--seconds`` (or
``--requests``) measured. Rounds alternate bare, real, bare, real, ... so the machine's drift
hits both; the medians over ``--rounds`` give the targets

- throughput real / bare >= 0.8 and p99 latency real / bare <= 1.2;
- in-process ranking (no HTTP) of one contact, ``policy.rank([request])``: median <= 2 ms;
- ``POST /rank_batch`` of 1,000 contacts over the real server: median wall time <= 2 s.

Requests are for the bundle's contacts (cycling through them), ``now`` the first whole hour
after its last call, a 48 h horizon. Without ``--bundle`` the script simulates (2,000 contacts,
120 days) and trains one with ``callback-timing`` in a temporary folder, where every other
write goes too (MLflow, BentoML home, outcomes database, server logs).

    .venv/bin/python benchmarks/bench_serve.py [--bundle DIR] [--seconds 20] [--rounds 3]
        [--only-bare] [--json PATH] [--keep]

``--only-bare`` serves the bare service in the real one's place (a smoke test of the
harness: the ratios should be about 1) and skips ``/rank_batch``. Prints one JSON line per
figure, a table, then a summary line; exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path

from common import run_child

ROOT = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).parent / "callback-timing"
BARE_TARGET = "benchmarks.bare_service:BareService"
HORIZON_HOURS = 48
THROUGHPUT_RATIO_TARGET = 0.8
P99_RATIO_TARGET = 1.2
RANK_TARGET_MS = 2.0
BATCH_TARGET_S = 2.0


def emit(figure: str, **values) -> None:
    print(json.dumps({"benchmark": "serve", "figure": figure, **values}), flush=True)


# --- a bundle and its requests ------------------------------------------------------------


def isolated_env(tmp: Path) -> dict[str, str]:
    """This environment with every state folder of callback-timing, MLflow and BentoML in tmp."""
    (tmp / "mlruns").mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "CALLBACK_TIMING_HOME": str(tmp / "home"),
        "CALLBACK_TIMING_DATA": str(tmp / "data"),
        "CALLBACK_TIMING_MODEL_DIR": str(tmp / "model"),
        "CALLBACK_TIMING_MLRUNS": str(tmp / "mlruns"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}",
        "BENTOML_HOME": str(tmp / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
        "PYTHONUNBUFFERED": "1",
        # a synthetic world of fixed dates (2026): no retention purge as it ages
        "CALLBACK_TIMING_PURGE": "0",
    }


def run_logged(command: list[str], log: Path, env: dict, cwd: Path) -> float:
    """Run ``command`` with its output in ``log``; seconds taken (the log's tail on failure)."""
    t0 = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL).returncode
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({code}):\n{tail(log)}")
    return time.perf_counter() - t0


def make_bundle(tmp: Path, cli: Path, env: dict) -> tuple[Path, dict]:
    """Simulate a history and train a bundle on it with the CLI, everything inside ``tmp``."""
    history, model = tmp / "history.csv", tmp / "model"
    sim_s = run_logged([str(cli), "simulate", "--contacts", "2000", "--days", "120", "--seed",
                        "0", "--start", "2026-03-02", "--out", str(history)],
                       tmp / "simulate.log", env, tmp)
    train_s = run_logged([str(cli), "train", "--history", str(history), "--out", str(model)],
                         tmp / "train.log", env, tmp)
    return model, {"simulate_s": round(sim_s, 1), "train_s": round(train_s, 1)}


def bundle_contacts(bundle: Path, seed: int = 0) -> tuple[list[str], str]:
    """The bundle's contact ids (shuffled) and ``now``: the first whole hour after its last
    call, as ``YYYY-MM-DDTHH:MM:SSZ``."""
    import numpy as np
    import pandas as pd

    history = pd.read_parquet(bundle / "history.parquet", columns=["contact_id", "called_at"])
    ids = history["contact_id"].drop_duplicates().to_numpy()
    ids = ids[np.random.default_rng(seed).permutation(len(ids))].tolist()
    now = (history["called_at"].max() + pd.Timedelta(minutes=1)).ceil("h")
    return ids, now.strftime("%Y-%m-%dT%H:%M:%SZ")


def rank_body(contact_ids: list[str], now: str, k: int, prefix: str) -> dict:
    """The ``k``-th ``/rank`` request of a run: contacts in turn, distinct request ids."""
    return {"request_id": f"{prefix}-{k:07d}",
            "contact": {"contact_id": contact_ids[k % len(contact_ids)]},
            "now": now, "horizon_hours": HORIZON_HOURS}


# --- servers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def descendants(pid: int) -> list:
    """The processes ``pid`` started, recursively (psutil objects; none if it is gone)."""
    import psutil

    with suppress(psutil.Error):
        return psutil.Process(pid).children(recursive=True)
    return []


def stop(proc: subprocess.Popen, known: list) -> None:
    """SIGTERM the server's process group, SIGKILL it after 15 s; then end every process it
    was seen to start (BentoML runs each worker in a session of its own) by its id."""
    import psutil

    gone = (ProcessLookupError, psutil.NoSuchProcess)
    if proc.poll() is None:
        known = known + descendants(proc.pid)
        with suppress(*gone):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with suppress(*gone):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    _, alive = psutil.wait_procs(known, timeout=10)
    for leftover in alive:
        with suppress(*gone):
            leftover.kill()


@contextmanager
def serving(name: str, command: list[str], env: dict, cwd: Path, port: int, log: Path,
            timeout: float):
    """Start ``command`` (a server on ``port``), wait for ``GET /readyz`` == 200, yield
    ``(base_url, startup_seconds)``; stop the server however the block ends."""
    import httpx

    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    children: list = []
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} server exited ({proc.returncode}):\n{tail(log)}")
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"{name} server not ready after {timeout:.0f} s:\n{tail(log)}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        startup_s = time.perf_counter() - t0
        children = descendants(proc.pid)
        yield url, startup_s
    finally:
        stop(proc, children)


def bare_command(port: int) -> list[str]:
    return [sys.executable, "-m", "bentoml", "serve", BARE_TARGET, "--working-dir", str(ROOT),
            "--host", "127.0.0.1", "--port", str(port)]


def real_command(cli: Path, bundle: Path, port: int, db: Path, extra: list[str]) -> list[str]:
    return [str(cli), "serve", "--model", str(bundle), "--port", str(port), "--db", str(db),
            *extra]


def check_answer(url: str, body: dict) -> list[str]:
    """One ``/rank`` call that must answer 200; the keys of its JSON answer."""
    import httpx

    response = httpx.post(f"{url}/rank", json=body, timeout=60.0)
    if response.status_code != 200:
        raise RuntimeError(f"POST {url}/rank -> {response.status_code}: {response.text[:500]}")
    return sorted(response.json())


# --- load generator (a separate process) ----------------------------------------------------


def child(spec_path: str) -> None:
    """Load generator: ``--child SPEC.json``; prints one JSON line of figures."""
    spec = json.loads(Path(spec_path).read_text())
    print(json.dumps(asyncio.run(generate_load(spec))))


async def generate_load(spec: dict) -> dict:
    import httpx
    import numpy as np

    counter = itertools.count()
    ids, now, tag = spec["contact_ids"], spec["now"], spec["tag"]
    latencies: list[float] = []
    errors: list[str] = []

    async def one(client: httpx.AsyncClient, measured: bool) -> None:
        body = rank_body(ids, now, next(counter), tag)
        t0 = time.perf_counter()
        try:
            response = await client.post("/rank", json=body)
            error = None if response.status_code == 200 else (
                f"{response.status_code}: {response.text[:200]}")
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        if measured:
            if error is None:
                latencies.append(time.perf_counter() - t0)
            else:
                errors.append(error)

    async def worker(client: httpx.AsyncClient, more, measured: bool) -> None:
        while more():
            await one(client, measured)

    def budget(n: int):
        left = iter(range(n))
        return lambda: next(left, None) is not None

    concurrency = spec["concurrency"]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=spec["url"], limits=limits,
                                 timeout=spec["timeout"]) as client:
        more = budget(spec["warmup"])
        await asyncio.gather(*(worker(client, more, False) for _ in range(concurrency)))
        t0 = time.perf_counter()
        deadline = t0 + spec["seconds"]

        def before_deadline() -> bool:
            return time.perf_counter() < deadline

        more = budget(spec["requests"]) if spec["requests"] else before_deadline
        await asyncio.gather(*(worker(client, more, True) for _ in range(concurrency)))
        seconds = time.perf_counter() - t0
    ms = np.array(latencies) * 1e3 if latencies else np.array([np.nan])
    return {"requests": len(latencies), "errors": len(errors), "seconds": round(seconds, 2),
            "rps": round(len(latencies) / seconds, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "mean_ms": round(float(np.mean(ms)), 2), "max_ms": round(float(np.max(ms)), 2),
            "first_error": errors[0] if errors else None}


def load(url: str, ids: list[str], now: str, tag: str, args, tmp: Path) -> dict:
    """Run the load generator against ``url`` in a fresh interpreter; its figures."""
    spec = {"url": url, "contact_ids": ids, "now": now, "tag": tag,
            "concurrency": args.concurrency, "warmup": args.warmup, "seconds": args.seconds,
            "requests": args.requests, "timeout": 60.0}
    path = tmp / f"load-{tag}.json"
    path.write_text(json.dumps(spec))
    try:
        return run_child(__file__, str(path))
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"load generator failed:\n{exc.stderr}") from None


# --- the other figures ----------------------------------------------------------------------


def rank_in_process(bundle: Path, ids: list[str], now: str, n: int, warmup: int) -> dict:
    """Median and p99 ms of ``policy.rank([one request])`` (no HTTP), as bench_rank.py times it."""
    import numpy as np

    from callback_timing.policy import load_policy

    policy, note = load_policy(bundle)
    requests = [rank_body(ids, now, k, "inproc") for k in range(warmup + n)]
    for request in requests[:warmup]:
        policy.rank([request])
    lat = []
    for request in requests[warmup:]:
        t0 = time.perf_counter()
        policy.rank([request])
        lat.append((time.perf_counter() - t0) * 1e3)
    return {"calls": n, "median_ms": round(float(np.median(lat)), 3),
            "p99_ms": round(float(np.percentile(lat, 99)), 3), "target_ms": RANK_TARGET_MS,
            "answers": note}


def rank_batch(url: str, ids: list[str], now: str, size: int, calls: int) -> dict:
    """Median wall seconds of ``POST /rank_batch`` with ``size`` requests (one call untimed
    first); each call ranks the next ``size`` contacts."""
    import httpx

    seconds, bad = [], 0
    with httpx.Client(base_url=url, timeout=600.0) as client:
        for call in range(calls + 1):
            body = {"requests": [rank_body(ids, now, call * size + k, f"batch{call}")
                                 for k in range(size)]}
            t0 = time.perf_counter()
            response = client.post("/rank_batch", json=body)
            wall = time.perf_counter() - t0
            if response.status_code != 200:
                raise RuntimeError(f"POST /rank_batch -> {response.status_code}: "
                                   f"{response.text[:500]}")
            results = response.json()["results"]
            if len(results) != size:
                raise RuntimeError(f"/rank_batch answered {len(results)} results for {size}")
            if call:
                seconds.append(wall)
                bad += sum(1 for r in results if "error" in r)
    return {"requests": size, "calls": calls, "median_s": round(statistics.median(seconds), 3),
            "seconds": [round(s, 3) for s in seconds], "error_results": bad,
            "target_s": BATCH_TARGET_S}


# --- report ---------------------------------------------------------------------------------


def verdict(ok: bool | None) -> str:
    return "skipped" if ok is None else ("PASS" if ok else "MISS")


def table(fig: dict) -> str:
    floor, other = fig["kinds"]
    rows = [f"{'run':<18}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}"]
    for r in fig["runs"]:
        rows.append(f"{'round ' + str(r['round']) + ' ' + r['kind']:<18}{r['rps']:>10.1f}"
                    f"{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['errors']:>8}")
    for kind in (floor, other):
        m = fig["medians"][kind]
        rows.append(f"{'median ' + kind:<18}{m['rps']:>10.1f}{m['p50_ms']:>10.2f}"
                    f"{m['p99_ms']:>10.2f}{m['errors']:>8}")
    t = fig["targets"]
    rows.append(f"throughput {other}/{floor} {t['throughput_ratio']['value']:.3f} "
                f"(target >= {THROUGHPUT_RATIO_TARGET}): {verdict(t['throughput_ratio']['ok'])}")
    rows.append(f"p99 {other}/{floor} {t['p99_ratio']['value']:.3f} "
                f"(target <= {P99_RATIO_TARGET}): {verdict(t['p99_ratio']['ok'])}")
    rows.append(f"rank in-process median {t['rank_ms']['value']:.3f} ms "
                f"(target <= {RANK_TARGET_MS} ms): {verdict(t['rank_ms']['ok'])}")
    batch = t["batch_s"]["value"]
    rows.append(f"/rank_batch of {fig['args']['batch']:,} median "
                f"{'-' if batch is None else f'{batch:.3f}'} s "
                f"(target <= {BATCH_TARGET_S} s): {verdict(t['batch_s']['ok'])}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path,
                        help="model bundle folder (default: simulate and train one)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per run")
    parser.add_argument("--requests", type=int,
                        help="measured requests per run instead of --seconds")
    parser.add_argument("--warmup", type=int, default=200, help="uncounted requests per run")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--rounds", type=int, default=3, help="bare + real runs")
    parser.add_argument("--only-bare", action="store_true",
                        help="serve the bare service in the real one's place (harness smoke "
                             "test); no /rank_batch")
    parser.add_argument("--single", type=int, default=1000,
                        help="in-process single-contact rankings timed")
    parser.add_argument("--single-warmup", type=int, default=50, help="untimed ones first")
    parser.add_argument("--batch", type=int, default=1000, help="requests per /rank_batch")
    parser.add_argument("--batch-calls", type=int, default=3,
                        help="timed /rank_batch calls (after one untimed)")
    parser.add_argument("--cli", type=Path, default=CLI, help="the callback-timing command")
    parser.add_argument("--real-arg", action="append", default=[], metavar="ARG",
                        help="extra argument of `callback-timing serve` (repeatable), "
                             "e.g. --real-arg=--host=127.0.0.1")
    parser.add_argument("--bare-async", action="store_true",
                        help="bare /rank as `async def` (default: plain def, thread pool)")
    parser.add_argument("--bare-no-access-log", action="store_true",
                        help="bare service without BentoML's access log (default: on)")
    parser.add_argument("--start-timeout", type=float, default=180.0,
                        help="seconds a server may take to be ready")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (bundle, server logs)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    try:
        return bench(args)
    except RuntimeError as exc:
        print(f"bench_serve: {exc}", file=sys.stderr)
        return 2


def bench(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench_serve-"))
    env = isolated_env(tmp)
    os.environ.update(env)  # this process too (in-process ranking, the load generator)
    bare_env = {**env, "BARE_ASYNC": "1" if args.bare_async else "0",
                "BARE_ACCESS_LOG": "0" if args.bare_no_access_log else "1"}
    floor, other = ("bare", "bare-b") if args.only_bare else ("bare", "real")
    fig: dict = {"benchmark": "serve", "args": {k: (str(v) if isinstance(v, Path) else v)
                                                for k, v in vars(args).items() if k != "child"},
                 "kinds": [floor, other], "runs": [], "servers": []}
    try:
        if not args.only_bare:
            probe = subprocess.run([str(args.cli), "serve", "--help"], capture_output=True,
                                   text=True, env=env, cwd=tmp)
            if probe.returncode != 0:
                raise RuntimeError(f"`{args.cli} serve` is not available (use --only-bare):\n"
                                   f"{(probe.stderr or probe.stdout)[-1000:]}")
        if args.bundle:
            bundle, prep = args.bundle.resolve(), {"loaded_from": str(args.bundle)}
            if not (bundle / "metadata.json").is_file():
                raise RuntimeError(f"no model bundle at {bundle} (no metadata.json)")
        else:
            bundle, prep = make_bundle(tmp, args.cli, env)
        bare_env["BARE_MODEL_DIR"] = str(bundle)
        ids, now = bundle_contacts(bundle)
        fig["setup"] = {**prep, "bundle": str(bundle), "contacts": len(ids), "now": now,
                        "tmp": str(tmp)}
        emit("setup", **fig["setup"])

        fig["rank_in_process"] = rank_in_process(bundle, ids, now, args.single,
                                                 args.single_warmup)
        emit("rank_in_process", **fig["rank_in_process"])

        for rnd, kind in itertools.product(range(1, args.rounds + 1), (floor, other)):
            port = free_port()
            if kind == "real":
                command, server_env = real_command(args.cli, bundle, port, tmp / "outcomes.db",
                                                   args.real_arg), env
            else:
                command, server_env = bare_command(port), bare_env
            log = tmp / f"server-{rnd}-{kind}.log"
            with serving(kind, command, server_env, tmp, port, log, args.start_timeout) as (
                    url, startup_s):
                keys = check_answer(url, rank_body(ids, now, 0, f"check{rnd}"))
                fig["servers"].append({"round": rnd, "kind": kind,
                                       "startup_s": round(startup_s, 2), "answer_keys": keys})
                run = {"round": rnd, "kind": kind,
                       **load(url, ids, now, f"r{rnd}{kind}", args, tmp)}
                fig["runs"].append(run)
                emit("run", **run)
                if kind == "real" and rnd == args.rounds:
                    fig["rank_batch"] = rank_batch(url, ids, now, args.batch, args.batch_calls)
                    emit("rank_batch", **fig["rank_batch"])
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    med = {kind: {key: round(statistics.median(r[key] for r in fig["runs"]
                                               if r["kind"] == kind), 2)
                  for key in ("rps", "p50_ms", "p99_ms")} for kind in (floor, other)}
    for kind in med:
        med[kind]["errors"] = sum(r["errors"] for r in fig["runs"] if r["kind"] == kind)
    fig["medians"] = med
    throughput = med[other]["rps"] / med[floor]["rps"]
    p99 = med[other]["p99_ms"] / med[floor]["p99_ms"]
    batch = fig.get("rank_batch", {}).get("median_s")
    errors = sum(m["errors"] for m in med.values())
    fig["targets"] = {
        "throughput_ratio": {"value": round(throughput, 3), "target": THROUGHPUT_RATIO_TARGET,
                             "ok": throughput >= THROUGHPUT_RATIO_TARGET},
        "p99_ratio": {"value": round(p99, 3), "target": P99_RATIO_TARGET,
                      "ok": p99 <= P99_RATIO_TARGET},
        "rank_ms": {"value": fig["rank_in_process"]["median_ms"], "target": RANK_TARGET_MS,
                    "ok": fig["rank_in_process"]["median_ms"] <= RANK_TARGET_MS},
        "batch_s": {"value": batch, "target": BATCH_TARGET_S,
                    "ok": None if batch is None else batch <= BATCH_TARGET_S},
        "no_errors": {"value": errors, "target": 0, "ok": errors == 0},
    }
    ok = all(t["ok"] is not False for t in fig["targets"].values())
    fig["ok"] = ok
    print(table(fig))
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2))
    print(json.dumps({"benchmark": "serve", "kinds": fig["kinds"],
                      "rps": {k: m["rps"] for k, m in med.items()},
                      "p99_ms": {k: m["p99_ms"] for k, m in med.items()},
                      "throughput_ratio": round(throughput, 3), "p99_ratio": round(p99, 3),
                      "rank_median_ms": fig["rank_in_process"]["median_ms"],
                      "rank_batch_s": batch, "errors": errors, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
