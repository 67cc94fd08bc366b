"""Data protection: retention purge (store, service memory, CLI), erasure, opt-out and the
right of access, in process and over the HTTP API of a real server behind an API key."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from callback_timing.dashboard import KpiSource
from callback_timing.online import OnlineRanker
from callback_timing.policy_config import PolicyConfig, load_policy_config
from callback_timing.schema import ConfigError
from callback_timing.simulation import recent_start
from callback_timing.store import OutcomeStore
from tests.conftest import ranker_at, tiny_bundle

#: The service tests below run with the retention purge on, so their model's calls (60 days
#: from START, a Monday about 10 weeks ago) and their rankings (at NOW, a Tuesday after them)
#: are dated from today: fixed dates would pass out of the 12 months and be purged.
START = pd.Timestamp(recent_start(70), tz="UTC")
NOW = START + pd.Timedelta(days=64, hours=6)


def _iso(at: pd.Timestamp) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")

CLI = str(Path(sys.executable).with_name("callback-timing"))


def _call(call_id, at, contact="c-1", answered=False, zone="Europe/Warsaw", request=None):
    return {"call_id": call_id, "contact_id": contact, "called_at": pd.Timestamp(at),
            "outcome": "answered" if answered else "no_answer", "timezone": zone,
            "country": zone and {"Europe/Warsaw": "PL", "Pacific/Kiritimati": "KI",
                                 "Etc/GMT+12": None}.get(zone), "industry": "it",
            "request_id": request}


def _ranking(request_id, now, contact="c-1"):
    return {"request_id": request_id, "contact_id": contact, "arm": "model", "source": "model",
            "now": now, "windows": 1, "explored": False, "decided_at": now}


# --- retention: the store ---------------------------------------------------------------------

def test_purge_deletes_exactly_what_is_past_retention_and_keeps_aggregates(tmp_path):
    store = OutcomeStore(tmp_path / "o.db")
    cutoff = PolicyConfig().retention_cutoff(pd.Timestamp("2027-06-15T12:00:00Z"))
    assert cutoff == pd.Timestamp("2026-06-15T12:00:00Z")
    store.add_outcomes(pd.DataFrame([
        _call("at-limit", "2026-06-15T12:00:00Z"),  # exactly 12 months old: kept
        _call("just-past", "2026-06-15T11:59:59.999999Z", answered=True),  # purged
        # the same instant written in other offsets: the instant counts, not the wall clock
        _call("kiritimati", "2026-06-16T01:59:59+14:00", zone="Pacific/Kiritimati"),  # purged
        _call("gmt-12", "2026-06-15T00:00:00-12:00", zone="Etc/GMT+12"),  # = cutoff: kept
        _call("recent", "2027-06-01T09:00:00Z", contact="c-2"),
    ]))
    store.log_decisions([_ranking("r-old", "2026-06-15T11:00:00Z"),
                         _ranking("r-new", "2026-06-15T12:00:00Z")])
    before = store.generation()
    store.purge_batch = 1  # one row per transaction: batches add up to the same
    done = store.purge(cutoff)
    assert (done["outcomes"], done["decisions"]) == (2, 1)
    left = store.outcomes_after(0)
    assert sorted(left["call_id"]) == ["at-limit", "gmt-12", "recent"]
    assert store.decisions_frame()["request_id"].tolist() == ["r-new"]
    assert store.generation() != before  # readers that keep rows look again
    patterns = store.patterns()  # anonymised: no contact, call or request id
    assert set(patterns.columns) == {"month", "industry", "country", "weekday", "hour",
                                     "calls", "answered"}
    assert patterns["calls"].sum() == 2 and patterns["answered"].sum() == 1
    # 11:59 UTC is 13:59 in Warsaw, a Monday; 01:59 in Kiritimati, a Tuesday
    cells = {(r.country, r.weekday, r.hour) for r in patterns.itertuples()}
    assert cells == {("PL", 0, 13), ("KI", 1, 1)}
    # a second purge finds nothing and changes nothing
    again = store.purge(cutoff)
    assert (again["outcomes"], again["decisions"]) == (0, 0)
    assert store.patterns()["calls"].sum() == 2
    # a later purge adds to the same aggregates
    store.add_outcomes(pd.DataFrame([_call("old-2", "2026-06-08T11:30:00Z", contact="c-9",
                                           answered=True)]))
    store.purge(cutoff)
    same_cell = store.patterns().set_index(["country", "weekday", "hour"]).loc[("PL", 0, 13)]
    assert (int(same_cell["calls"]), int(same_cell["answered"])) == (2, 2)
    store.close()


def test_the_dashboard_drops_purged_and_erased_rows_while_it_runs(tmp_path):
    store = OutcomeStore(tmp_path / "o.db")
    store.log_decisions([_ranking("r-old", "2026-01-05T09:00:00Z"),
                         _ranking("r-new", "2026-09-07T09:00:00Z", contact="c-2")])
    store.add_outcomes(pd.DataFrame([
        _call("a", "2026-01-05T10:00:00Z", request="r-old", answered=True),
        _call("b", "2026-09-07T10:00:00Z", contact="c-2", request="r-new")]))
    source = KpiSource(store)
    assert source.payload()["requests"] == 2
    source.wait_snapshot()
    store.purge(pd.Timestamp("2026-06-01T00:00:00Z"))
    assert source.payload()["requests"] == 1  # the same source, without a restart
    assert list(source._data.requests.values) == ["r-new"]  # the purged id is gone too
    source.wait_snapshot()
    with np.load(source.snapshot_path) as z:  # saved again: no purged request id in it
        assert b"r-old" not in z["requests.data"].tobytes()
    store.erase_contact("c-2", "h")
    assert source.payload()["empty"]
    store.close()


def test_purge_command(tmp_path):
    db = tmp_path / "o.db"
    store = OutcomeStore(db)
    store.add_outcomes(pd.DataFrame([_call("a", "2025-01-10T10:00:00Z"),
                                     _call("b", "2026-05-10T10:00:00Z")]))
    store.close()
    from callback_timing.online import Beacon, beacon_path

    server = Beacon(beacon_path(OutcomeStore(db), "privacy"))  # what a server watches
    run = subprocess.run([CLI, "purge", "--db", str(db), "--now", "2026-03-01"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("purged 1 calls and 0 rankings older than "
                                 "2025-03-01 00:00:00 UTC (12 months)")
    assert OutcomeStore(db).outcomes_after(0)["call_id"].tolist() == ["b"]
    assert server.changed()  # a running server forgets the purged calls at its next answer
    again = subprocess.run([CLI, "purge", "--db", str(db), "--now", "2026-03-01"],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and not server.changed()  # nothing purged: nothing to say
    register = subprocess.run([CLI, "register", "--out", str(db)], capture_output=True,
                              text=True, timeout=60)
    assert register.returncode == 1 and register.stderr.startswith(f"error: --out: {db} is a "
                                                                   "database")
    assert OutcomeStore(db).count_outcomes() == 1
    naive = subprocess.run([CLI, "purge", "--db", str(db), "--now", "2026-03-01T10:00"],
                           capture_output=True, text=True, timeout=60)
    assert naive.returncode == 1 and naive.stderr.strip() == (
        "error: --now: give the offset too (e.g. 2026-03-01T10:00Z)")
    day_first = subprocess.run([CLI, "purge", "--db", str(db), "--now", "01.03.2026"],
                               capture_output=True, text=True, timeout=60)
    assert day_first.returncode == 1 and day_first.stderr.strip() == (
        "error: --now: not a timestamp: '01.03.2026'")  # not read as 3 January
    rules = tmp_path / "keep.yaml"
    rules.write_text("retention: {call_times_months: 0}\n")
    zero = subprocess.run([CLI, "purge", "--db", str(db), "--rules", str(rules)],
                          capture_output=True, text=True, timeout=60)
    assert zero.returncode == 1 and "retention" in zero.stderr and "Traceback" not in zero.stderr


# --- the service: opt-out, erasure, purge of its memory --------------------------------------

@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    _, folder, _ = tiny_bundle(tmp_path_factory.mktemp("privacy") / "model", n_calls=2000,
                               version="v1", start=START)
    return folder


def _ranker(tmp_path, bundle_dir, purge=True) -> OnlineRanker:
    return ranker_at(tmp_path, bundle_dir, purge=purge)


def _rank(ranker, cid):
    return ranker.rank([{"contact": {"contact_id": cid}, "now": _iso(NOW),
                         "policy": "auto"}])[0]


def test_an_opted_out_contact_gets_a_traditional_callback_until_it_opts_back_in(
        tmp_path, bundle_dir, monkeypatch):
    monkeypatch.setenv("CALLBACK_TIMING_HOME", str(tmp_path / "home"))
    ranker = _ranker(tmp_path, bundle_dir)
    cid = str(ranker.policy.history["contact_id"].iloc[0])
    assert _rank(ranker, cid)["source"] == "model"
    assert ranker.opt_out(cid) is True and ranker.opt_out(cid) is False  # once
    answer = _rank(ranker, cid)
    assert answer["source"] == "rules" and "opted out" in answer["fallback_reason"]
    ranker.close()
    again = _ranker(tmp_path, bundle_dir)  # kept in the store: a restart remembers it
    assert "opted out" in _rank(again, cid)["fallback_reason"]
    assert again.contact_record(cid)["opted_out"]
    again.opt_out(cid, False)
    assert _rank(again, cid)["source"] == "model"
    again.close()


def test_erasure_removes_the_contact_from_store_memory_and_future_profiling(
        tmp_path, bundle_dir, monkeypatch):
    monkeypatch.setenv("CALLBACK_TIMING_HOME", str(tmp_path / "home"))
    ranker = _ranker(tmp_path, bundle_dir)
    history = ranker.policy.history
    cid = str(history["contact_id"].iloc[0])
    own = int((history["contact_id"] == cid).sum())
    assert ranker.outcomes([{"call_id": "e-1", "contact_id": cid, "request_id": "r-e",
                             "called_at": _iso(NOW - pd.Timedelta(hours=20)),
                             "outcome": "answered"}]
                           )["accepted"] == 1
    _rank(ranker, cid)
    ranker.flush()
    record = ranker.contact_record(cid)
    assert record["calls_in_model_history"] >= own > 0
    # the ranking above is logged; the one that explains the record is not
    assert len(record["stored"]["outcomes"]) == 1 and len(record["stored"]["decisions"]) == 1
    assert any("legal calling hours" in line for line in record["explanation"])
    deleted = ranker.erase(cid)
    assert (deleted["outcomes"], deleted["decisions"]) == (1, 1)
    deadline = time.monotonic() + 30  # the memory is rebuilt in the background
    while ranker.contact_record(cid)["calls_in_model_history"] and time.monotonic() < deadline:
        time.sleep(0.2)
    record = ranker.contact_record(cid)
    assert record["erased"] and record["calls_in_model_history"] == 0
    assert all(not rows for rows in record["stored"].values())
    assert "opted out" in _rank(ranker, cid)["fallback_reason"]  # never profiled again
    # the forget list holds a keyed pseudonym, not the id
    hashes = ranker.store.forgotten_hashes()
    assert len(hashes) == 1 and cid not in next(iter(hashes))
    ranker.close()
    restarted = _ranker(tmp_path, bundle_dir)  # the bundle still has its calls: left out
    assert not (restarted.policy.history["contact_id"] == cid).any()
    restarted.close()


def test_purge_takes_old_calls_out_of_the_service_memory(tmp_path, bundle_dir, monkeypatch):
    monkeypatch.setenv("CALLBACK_TIMING_HOME", str(tmp_path / "home"))
    ranker = _ranker(tmp_path, bundle_dir)
    h = pd.to_datetime(ranker.policy.history["called_at"], utc=True)
    middle = h.min() + (h.max() - h.min()) / 2
    now = middle + pd.DateOffset(months=12)
    ranker.purge(now)
    left = pd.to_datetime(ranker.policy.history["called_at"], utc=True)
    assert len(left) and left.min() >= middle and len(left) < len(h)
    ranker.close()
    off = _ranker(tmp_path, bundle_dir, purge=False)  # replaying old data: all kept
    assert len(off.policy.history) == len(h)
    off.close()


def test_outcomes_past_the_retention_are_not_kept(tmp_path, bundle_dir, monkeypatch):
    monkeypatch.setenv("CALLBACK_TIMING_HOME", str(tmp_path / "home"))
    ranker = _ranker(tmp_path, bundle_dir)  # purging, as a server does by default
    now = pd.Timestamp.now(tz="UTC").floor("s")
    done = ranker.outcomes([
        {"call_id": "old", "contact_id": "c-0001", "outcome": "busy",
         "called_at": _iso(now - pd.DateOffset(months=13))},
        {"call_id": "new", "contact_id": "c-0001", "outcome": "busy",
         "called_at": _iso(now - pd.Timedelta(days=1))}])
    assert done == {"accepted": 1, "duplicates": 0, "rejected": [
        {"index": 0, "call_id": "old", "field": "called_at",
         "reason": "older than the retention (12 months): not kept"}]}
    assert ranker.store.outcomes_after(0)["call_id"].tolist() == ["new"]
    ranker.close()


def test_an_outcome_with_a_phone_keeps_the_rest_of_the_profile(tmp_path, bundle_dir,
                                                              monkeypatch):
    """A phone number says where a contact is, not its industry: the history's industry is
    kept (it was stored as "other", changing the contact's rankings and reasons)."""
    monkeypatch.setenv("CALLBACK_TIMING_HOME", str(tmp_path / "home"))
    ranker = _ranker(tmp_path, bundle_dir, purge=False)
    known = ranker.policy.profile("c-0001")
    assert known["industry"] not in (None, "other")
    done = ranker.outcomes([{"call_id": "ph-1", "contact_id": "c-0001", "outcome": "busy",
                             "phone": "+48512345678", "called_at": _iso(NOW)}])
    assert done["accepted"] == 1
    stored = ranker.store.outcomes_after(0).set_index("call_id").loc["ph-1"]
    assert stored["industry"] == known["industry"] and stored["country"] == "PL"
    ranker.close()


# --- over HTTP, behind the API key -----------------------------------------------------------

def test_the_contact_endpoints_of_a_real_server(tmp_path, bundle_dir):
    from tests.test_service import Server

    key = {"X-API-Key": "s3cret"}
    with Server(tmp_path, bundle_dir, tmp_path / "o.db", CALLBACK_TIMING_API_KEY="s3cret",
                CALLBACK_TIMING_PURGE="1") as server:
        base = f"{server.url}/contacts"
        assert httpx.get(f"{base}/c-0001").status_code == 401
        assert httpx.delete(f"{base}/c-0001").status_code == 401
        assert httpx.post(f"{base}/c-0001/opt_out").status_code == 401
        bad = httpx.get(f"{base}/c%000001", headers=key)
        assert bad.status_code == 400 and bad.json() == {
            "error": "contact_id: 1 to 256 characters, no NUL"}
        phone = "+48512345678"  # a phone number and a contact id must never reach the log
        assert server.post("/rank", {"contact": {"contact_id": "c-0001", "phone": phone},
                                     "now": _iso(NOW)}, headers=key
                           ).status_code == 200
        called = _iso(NOW + pd.Timedelta(hours=2))
        assert server.post("/outcomes", {"outcomes": [
            {"call_id": "p-1", "contact_id": "c-0001", "phone": phone, "outcome": "answered",
             "called_at": called}]}, headers=key).json()["accepted"] == 1
        assert server.post("/rank", {"contact": {"contact_id": "c-0001", "phone": "+4851"},
                                     "now": _iso(NOW)}, headers=key
                           ).status_code == 200  # an invalid number: ignored, not logged
        record = httpx.get(f"{base}/c-0001", headers=key).json()
        assert record["contact_id"] == "c-0001" and not record["erased"]
        assert record["explanation"] and record["calls_in_model_history"] > 0
        opted = httpx.post(f"{base}/c-0001/opt_out", headers=key).json()
        assert opted == {"contact_id": "c-0001", "opted_out": True, "changed": True}
        ranked = server.post("/rank", {"contact": {"contact_id": "c-0001"},
                                       "now": _iso(NOW)}, headers=key).json()
        assert "opted out" in ranked["fallback_reason"]
        deadline = time.monotonic() + 10  # the decision log is written within 0.5 s
        while len(httpx.get(f"{base}/c-0001", headers=key).json()["stored"]["decisions"]) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        back = httpx.delete(f"{base}/c-0001/opt_out", headers=key).json()
        assert back["opted_out"] is False and back["changed"] is True
        gone = httpx.delete(f"{base}/c-0001", headers=key).json()
        assert gone["erased"] and set(gone["deleted"]) == {"outcomes", "decisions", "opt_outs"}
        assert gone["deleted"]["decisions"] == 3 and gone["deleted"]["outcomes"] == 1
        after = httpx.get(f"{base}/c-0001", headers=key).json()
        assert after["erased"] and "erased at your request" in after["explanation"][1]
        assert not any("objected" in line or "ask us to erase" in line
                       for line in after["explanation"])
        # ids are read as /outcomes reads them (spaces around dropped), and an id that ends
        # in /opt_out (sent as %2F) is erased, not mistaken for the opt-out of another
        assert server.post("/outcomes", {"outcomes": [
            {"call_id": f"odd-{i}", "contact_id": cid, "outcome": "busy", "called_at": called}
            for i, cid in enumerate((" lead ", "x/opt_out"))]}, headers=key
                           ).json()["accepted"] == 2
        lead = httpx.delete(f"{base}/%20lead%20", headers=key).json()
        assert (lead["contact_id"], lead["deleted"]["outcomes"]) == ("lead", 1)
        odd = httpx.delete(f"{base}/x%2Fopt_out", headers=key).json()
        assert (odd["contact_id"], odd["erased"], odd["deleted"]["outcomes"]) == (
            "x/opt_out", True, 1)
        assert httpx.post(f"{base}/x%2Fopt_out", headers=key).status_code == 405
        log = server.log.read_text()
    assert "s3cret" not in log and "Traceback" not in log
    assert "/contacts/<contact>" in log  # the access log, without the id
    # "+4851", not "4851": four digits turn up in about one run in a hundred in the access
    # log's trace and span ids, or as a client port
    leaks = [line for line in log.splitlines()
             if any(s in line for s in ("c-0001", "512345678", "+4851"))]
    assert leaks == []  # the lines themselves, should one ever leak
    # the rules of the default policy file apply: keep them as the contract expects
    assert load_policy_config().retention_call_months == 12


# --- train honours the forget list ---------------------------------------------------------

def test_train_leaves_out_erased_contacts_and_calls_past_retention(tmp_path):
    import callback_timing as ct
    from callback_timing.bundle import ModelBundle
    from callback_timing.privacy import contact_hash

    env = {"PATH": "/usr/bin:/bin", "CALLBACK_TIMING_PSEUDONYM_KEY": "test-key",
           "CALLBACK_TIMING_HOME": str(tmp_path / "home"), "HOME": str(tmp_path),
           "CALLBACK_TIMING_MLRUNS": str(tmp_path / "ml"), "COLUMNS": "160"}  # retention on
    history = tmp_path / "h.csv"
    # 40 days around the retention's cutoff (12 months ago): about half of them past it
    start = pd.Timestamp.now(tz="UTC").normalize() - pd.DateOffset(months=12) - pd.Timedelta(
        days=20)
    ct.simulate(contacts=500, days=40, seed=3, dirt_rate=0.0,
                start=f"{start:%Y-%m-%d}").history.to_csv(history, index=False)
    calls = pd.read_csv(history)
    at = pd.to_datetime(calls["called_at"], utc=True, format="ISO8601")
    erased = calls["contact_id"].value_counts().index[:2].astype(str).tolist()
    mine = calls["contact_id"].astype(str).isin(erased)
    store = OutcomeStore(tmp_path / "o.db")
    for cid in erased:  # what DELETE /contacts/{id} does, with the same key
        store.erase_contact(cid, contact_hash(cid, b"test-key"))
    store.close()

    def expired() -> int:  # calls of the others past the retention as of now
        cutoff = load_policy_config().retention_cutoff()
        return int(((at < cutoff) & ~mine).sum())

    low = expired()
    run = subprocess.run([CLI, "train", "--history", str(history), "--out", "m",
                          "--forget-db", str(tmp_path / "o.db"), "--no-track", "--no-bentoml"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    high = expired()
    assert run.returncode == 0, run.stderr
    out = " ".join(run.stdout.split())
    assert f"left out {int(mine.sum()):,} calls of erased contacts" in out
    told = int(out.split(" calls older than the retention of 12 months")[0].split()[-1]
               .replace(",", ""))
    assert 0 < low <= told <= high < len(calls)
    kept = ModelBundle.load(tmp_path / "m").history
    assert len(kept) and not kept["contact_id"].astype(str).isin(erased).any()
    assert pd.to_datetime(kept["called_at"], utc=True).min() >= (
        load_policy_config().retention_cutoff() - pd.Timedelta(minutes=10))
    missing = subprocess.run([CLI, "train", "--history", str(history), "--forget-db",
                              "none.db"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
    assert missing.returncode == 1 and missing.stderr.strip() == (
        "error: --forget-db: no outcome store at none.db")
    # a history wholly past the retention: nothing to train on, said in one line
    calls[at < start + pd.Timedelta(days=10)].to_csv(tmp_path / "old.csv", index=False)
    old = subprocess.run([CLI, "train", "--history", "old.csv", "--out", "m2", "--no-track",
                          "--no-bentoml"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert old.returncode == 1 and old.stderr.startswith(
        "error: every call of the history is older than the retention")


def test_the_processing_register_is_current():
    """docs/processing-register.md is what `callback-timing register` writes for the
    packaged policy: a new column, or a changed retention, shows here first."""
    from callback_timing.privacy import processing_register

    committed = Path(__file__).resolve().parent.parent / "docs" / "processing-register.md"
    assert committed.read_text(encoding="utf-8") == processing_register(load_policy_config()), \
        "run: .venv/bin/callback-timing register --out docs/processing-register.md"
    short = processing_register(PolicyConfig(retention_call_months=6))
    assert "kept 6 months after the call" in short


def test_a_rotated_key_still_honours_the_erasures_made_with_the_old_one(
        tmp_path, bundle_dir, monkeypatch):
    secret = tmp_path / "secret" / "pseudonym.key"  # a mounted secret file
    secret.parent.mkdir()
    secret.write_text("old-key\n")
    monkeypatch.delenv("CALLBACK_TIMING_PSEUDONYM_KEY", raising=False)
    monkeypatch.setenv("CALLBACK_TIMING_PSEUDONYM_KEY_FILE", str(secret))
    ranker = _ranker(tmp_path, bundle_dir)
    first, second = (str(c) for c in ranker.policy.history["contact_id"].unique()[:2])
    ranker.erase(first)
    ranker.close()
    secret.write_text("new-key\nold-key\n")  # rotation: the new key first, the old below
    rotated = _ranker(tmp_path, bundle_dir)
    assert "opted out" in _rank(rotated, first)["fallback_reason"]
    assert not (rotated.policy.history["contact_id"].astype(str) == first).any()
    rotated.erase(second)
    from callback_timing.privacy import contact_hash

    assert rotated.store.forgotten_hashes() == {contact_hash(first, b"old-key"),
                                                contact_hash(second, b"new-key")}
    rotated.close()
    secret.write_text("")
    with pytest.raises(ConfigError, match="pseudonymisation key file .* is empty"):
        _ranker(tmp_path, bundle_dir)
    # matching a forget list needs the server's key: never a new one made on the spot
    from callback_timing.contacts import load_keys

    monkeypatch.delenv("CALLBACK_TIMING_PSEUDONYM_KEY_FILE")
    monkeypatch.setenv("CALLBACK_TIMING_HOME", str(tmp_path / "elsewhere"))
    with pytest.raises(ConfigError, match="no pseudonymisation key"):
        load_keys(create=False)
    assert not (tmp_path / "elsewhere").exists()


def test_another_worker_follows_an_opt_out_and_an_erasure_at_once(tmp_path, bundle_dir,
                                                                   monkeypatch):
    """Two workers (instances) on one SQLite file: the beacon, not the periodic sync."""
    monkeypatch.setenv("CALLBACK_TIMING_HOME", str(tmp_path / "home"))
    a, b = (ranker_at(tmp_path, bundle_dir, sync_seconds=3600) for _ in range(2))
    first, *gone = (str(c) for c in a.policy.history["contact_id"].unique()[:4])
    assert _rank(b, first)["source"] == "model"
    a.opt_out(first)
    assert "opted out" in _rank(b, first)["fallback_reason"]
    for cid in gone:  # erasures in a row (one rebuild queued behind the running one)
        a.erase(cid)
    assert "opted out" in _rank(b, gone[0])["fallback_reason"]
    deadline = time.monotonic() + 30  # both rebuild their memory in the background
    while any(r.policy.history["contact_id"].astype(str).isin(gone).any() for r in (a, b)):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    a.close()
    b.close()


def test_an_instance_on_another_machine_follows_through_the_store(tmp_path, bundle_dir,
                                                                  monkeypatch):
    """No beacon between them (other machines share a database server): the privacy tokens
    of the store, compared at each sync."""
    from callback_timing.online import Beacon

    monkeypatch.setenv("CALLBACK_TIMING_HOME", str(tmp_path / "home"))
    a, b = (ranker_at(tmp_path, bundle_dir, sync_seconds=0) for _ in range(2))
    b._privacy_beacon = Beacon(None)  # deaf to this machine's beacon
    first, second = (str(c) for c in a.policy.history["contact_id"].unique()[:2])
    a.opt_out(first)
    assert "opted out" in _rank(b, first)["fallback_reason"]
    a.erase(second)
    assert "opted out" in _rank(b, second)["fallback_reason"]
    deadline = time.monotonic() + 30
    while (b.policy.history["contact_id"].astype(str) == second).any():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    a.close()
    b.close()


# --- export: the store as a call history, within retention and erasures ---------------------

def test_export_writes_the_store_as_a_clean_call_history(tmp_path, bundle_dir, monkeypatch):
    from callback_timing.data import load_history

    monkeypatch.setenv("CALLBACK_TIMING_PSEUDONYM_KEY", "test-key")
    db = tmp_path / "o.db"
    ranker = _ranker(tmp_path, bundle_dir, purge=False)
    now = pd.Timestamp.now(tz="UTC").floor("s")
    asked = [{"request_id": f"r-{i}", "contact": {"contact_id": f"c-{i:04d}",
                                                   "timezone": "Europe/Warsaw"},
              "now": (now - pd.Timedelta(days=3)).isoformat()} for i in range(4)]
    answers = ranker.rank(asked)
    old = (now - pd.DateOffset(months=13)).isoformat()
    ranker.outcomes([
        {"call_id": "k-0", "request_id": "r-0", "contact_id": "c-0000", "attempt": 1,
         "called_at": answers[0]["windows"][0]["start"], "outcome": "answered"},
        {"call_id": "k-1", "request_id": "r-1", "contact_id": "c-0001", "attempt": 1,
         "called_at": answers[1]["windows"][0]["start"], "outcome": "no_answer",
         "requested_at": (now - pd.Timedelta(days=4)).isoformat()},
        {"call_id": "k-2", "request_id": "r-2", "contact_id": "c-0002",
         "called_at": answers[2]["windows"][0]["start"], "outcome": "busy"},
        {"call_id": "k-old", "contact_id": "c-0003", "called_at": old, "outcome": "answered"},
    ])
    ranker.flush()
    ranker.erase("c-0002")
    ranker.outcomes([{"call_id": "k-3", "contact_id": "c-0002", "outcome": "no_answer",
                      "called_at": (now - pd.Timedelta(days=1)).isoformat()}])  # after it
    ranker.close()
    env = {"PATH": "/usr/bin:/bin", "CALLBACK_TIMING_PSEUDONYM_KEY": "test-key",
           "CALLBACK_TIMING_HOME": str(tmp_path / "home"), "HOME": str(tmp_path),
           "COLUMNS": "200"}  # the retention on
    out = tmp_path / "export" / "calls.csv"
    run = subprocess.run([CLI, "export", "--db", str(db), "--out", str(out)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert " ".join(run.stdout.split()).startswith(
        f"exported 2 calls of 2 contacts to {out} (left out: 1 past the retention of 12 "
        "months, 1 of erased contacts)")  # c-0002: its calls since; the rest went with it
    calls = pd.read_csv(out).set_index("call_id")
    assert sorted(calls.index) == ["k-0", "k-1"]
    assert set(calls.columns) >= {"contact_id", "called_at", "outcome", "arm", "propensity"}
    assert calls.loc["k-0", "arm"] == answers[0]["arm"]
    # requested_at: the call's own, else the request's first ranking
    assert pd.Timestamp(calls.loc["k-1", "requested_at"]) == now - pd.Timedelta(days=4)
    assert pd.Timestamp(calls.loc["k-0", "requested_at"]) == now - pd.Timedelta(days=3)
    loaded = load_history(out, key=b"test-key")  # the contract's schema: nothing rejected
    assert len(loaded.calls) == 2 and not len(loaded.rejects)
    longer = tmp_path / "longer.yaml"  # a server's own policy file: its retention applies
    longer.write_text("retention: {call_times_months: 24}\n")
    kept = subprocess.run([CLI, "export", "--db", str(db), "--out", str(out), "--rules",
                           str(longer)], env=env, capture_output=True, text=True, timeout=120)
    assert kept.returncode == 0, kept.stderr
    assert "left out: 0 past the retention of 24 months, 1 of erased" in " ".join(
        kept.stdout.split())
    assert sorted(pd.read_csv(out)["call_id"]) == ["k-0", "k-1", "k-old"]
    missing = subprocess.run([CLI, "export", "--db", str(tmp_path / "none.db"), "--out", "x.csv"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "no outcome store" in missing.stderr
