"""The supervisor's KPIs and ROI (kpis.py), the simulated dialer traffic (traffic.py), the
``roi`` report, and the dashboard in a real browser against a real ``serve`` process."""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

import callback_timing as ct
from callback_timing.dashboard import KpiSource
from callback_timing.kpis import (
    Filters,
    KpiData,
    apply_filters,
    arm_stats,
    kpi_payload,
    kpi_table,
    request_fates,
    roi,
)
from callback_timing.online import OnlineRanker, ServeSettings
from callback_timing.policy_config import PolicyConfig
from callback_timing.store import OutcomeStore
from callback_timing.traffic import CAMPAIGNS, TEAMS, ranker_poster, seed_traffic

CLI = str(Path(sys.executable).with_name("callback-timing"))
T0 = pd.Timestamp("2026-06-01T08:00:00Z")  # a Monday, 10:00 in Warsaw
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _decision(seq, rid, arm, now=T0, source=None, policy="auto", reason=None, campaign=None,
              team=None):
    return {"seq": seq, "request_id": rid, "contact_id": f"c-{rid}", "arm": arm,
            "source": source or ("rules" if arm == "control" else arm),
            "fallback_reason": reason, "model_version": "v1", "policy": policy,
            "urgency": "standard", "now": now, "requested_at": now, "window_start": None,
            "window_end": None, "p_answer": 0.3, "score": 0.3, "windows": 3,
            "explored": False, "propensity": None, "decided_at": now, "campaign": campaign,
            "team": team}


def _call(rid, hours, answered, zone="Europe/Warsaw", country="PL", industry="it"):
    return {"call_id": f"{rid}@{hours}", "request_id": rid, "contact_id": f"c-{rid}",
            "called_at": T0 + pd.Timedelta(hours=hours), "answered": int(answered),
            "outcome": "answered" if answered else "no_answer", "timezone": zone,
            "country": country, "subdivision": None, "industry": industry}


def _frames():
    decisions = pd.DataFrame([
        _decision(1, "r1", "model", campaign="fair", team="north"),
        _decision(2, "r2", "control", campaign="fair", team="south"),
        _decision(3, "r3", "model", campaign="web"),
        _decision(4, "r4", "rules", reason="model failed (ValueError)"),
        _decision(5, "r5", "model"),
        _decision(6, "r1", "model", now=T0 + pd.Timedelta(hours=2),  # a second ranking
                  campaign="web"),
        _decision(7, "r6", "rules", policy="rules", reason="policy=rules"),
    ])
    outcomes = pd.DataFrame([
        _call("r1", 1, False), _call("r1", 3, True),  # reached at attempt 2, in 3 h
        _call("r2", 5, True, industry="retail"),  # control: first attempt, in 5 h
        _call("r3", 50, True),  # answered after the 48 h deadline: not a success
        _call("r5", 13.5, False),  # 23:30 in Warsaw: outside calling hours
        _call("zz", 1, True),  # a call of a request the service never ranked
    ])
    return decisions, outcomes


def test_filters_take_iso_dates_only():
    from callback_timing.dashboard import parse_query

    filters, period = parse_query({"start": "2026-05-04", "end": "2026-06-01T00:00Z"})
    assert (filters.start, filters.end) == (pd.Timestamp("2026-05-04", tz="UTC"),
                                            pd.Timestamp("2026-06-01", tz="UTC"))
    for bad in ("04.05.2026", "2026/05/04", "2026-02-30"):
        with pytest.raises(ValueError, match="^start: not a date"):
            parse_query({"start": bad})
    with pytest.raises(ValueError, match="^end: must be after start"):
        parse_query({"start": "2026-11-01", "end": "2026-10-01"})


def test_request_fates_follow_each_request():
    fates = request_fates(*_frames()).set_index("request_id")
    assert list(fates.index) == ["r1", "r2", "r3", "r4", "r5", "r6"]
    assert fates.loc["r1", ["arm", "attempts", "first_answered", "reached"]].tolist() == [
        "model", 2, False, True]
    assert fates.loc["r1", "hours_to_contact"] == pytest.approx(3.0)
    assert fates.loc["r1", "reached_4h"] and not fates.loc["r2", "reached_4h"]
    assert fates.loc["r2", ["arm", "first_answered", "industry"]].tolist() == [
        "control", True, "retail"]
    assert not fates.loc["r3", "reached"] and fates.loc["r3", "attempts"] == 1
    assert fates.loc["r4", ["attempts", "fallback", "fallback_reason", "industry"]].tolist() \
        == [0, True, "model failed (ValueError)", "unknown"]
    assert fates.loc["r5", "illegal_calls"] == 1 and fates["illegal_calls"].sum() == 1
    # an explicit policy=rules request is neither a fallback nor in the experiment
    assert not fates.loc["r6", "fallback"] and not fates.loc["r6", "experiment"]


def test_kpi_table_and_filters():
    fates = request_fates(*_frames())
    total = kpi_table(fates, None).set_index("arm")
    assert list(total.index) == ["model", "rules", "control"]
    model = total.loc["model"]
    assert model["requests"] == 3
    assert model["success_rate"] == pytest.approx(1 / 3)
    assert model["attempts"] == pytest.approx(4 / 3)
    assert model["illegal_calls"] == 1 and model["fallback_share"] == 0.0
    assert total.loc["rules", "fallback_share"] == pytest.approx(0.5)  # r4 of r4, r6
    assert math.isnan(total.loc["control", "fallback_share"]) \
        or total.loc["control", "fallback_share"] is None
    assert len(apply_filters(fates, Filters(industry="retail"))) == 1
    assert len(apply_filters(fates, Filters(start=T0 + pd.Timedelta(hours=1)))) == 0
    # the dialer's labels: a request's are those of its first ranking
    assert sorted(apply_filters(fates, Filters(campaign="fair"))["request_id"]) == ["r1", "r2"]
    assert apply_filters(fates, Filters(campaign="web"))["request_id"].tolist() == ["r3"]
    assert apply_filters(fates, Filters(campaign="fair", team="south"))[
        "request_id"].tolist() == ["r2"]
    payload = kpi_payload(*_frames(), filters=Filters(team="north"))
    assert payload["requests"] == 1 and payload["filters"]["team"] == "north"
    assert (payload["choices"]["campaigns"], payload["choices"]["teams"]) == (
        ["fair", "web"], ["north", "south"])
    unlabelled = kpi_payload(*(f.drop(columns=["campaign", "team"], errors="ignore")
                               for f in _frames()))
    assert unlabelled["choices"]["campaigns"] == [] == unlabelled["choices"]["teams"]
    days = kpi_table(fates, "day")
    assert set(days["period"]) == {"2026-06-01"}
    assert kpi_table(fates, "week")["period"].iloc[0] == "2026-06-01"  # the week's Monday


def test_roi_matches_a_per_request_computation():
    rng = np.random.default_rng(3)
    n_ai, n_ctl = 500, 120
    fates = pd.DataFrame({
        "arm": ["model"] * n_ai + ["control"] * n_ctl, "experiment": True,
        "reached": np.r_[rng.random(n_ai) < 0.6, rng.random(n_ctl) < 0.4],
        "attempts": np.r_[rng.integers(1, 4, n_ai), rng.integers(1, 4, n_ctl)]})
    cost, value, invest = 3.0, 40.0, 2500.0
    out = roi(arm_stats(fates), cost, value, invest)
    # the same from each request's gain, value x reached - cost x attempts
    u = value * fates["reached"].to_numpy(float) - cost * fates["attempts"].to_numpy(float)
    ai, ctl = u[:n_ai], u[n_ai:]
    gain = n_ai * (ai.mean() - ctl.mean())
    se = n_ai * math.sqrt(ai.var(ddof=1) / n_ai + ctl.var(ddof=1) / n_ctl)
    assert out["roi_pct"] == pytest.approx((gain - invest) / invest * 100)
    assert out["low_pct"] == pytest.approx((gain - 1.959964 * se - invest) / invest * 100)
    assert out["high_pct"] == pytest.approx((gain + 1.959964 * se - invest) / invest * 100)
    assert out["saved_costs"] + out["additional_revenue"] == pytest.approx(gain)
    assert out["conclusive"] == (out["low_pct"] > 0 or out["high_pct"] < 0)
    # one request in the control arm: nothing can be concluded
    few = roi(arm_stats(fates.iloc[: n_ai + 1]), cost, value, invest)
    assert few["roi_pct"] is None and not few["conclusive"]


def test_an_empty_store_says_what_to_do_next(tmp_path):
    store = OutcomeStore(tmp_path / "empty.db")
    payload = kpi_payload(store.decisions_frame(), store.outcomes_after(0))
    store.close()
    assert payload["empty"] and "/rank" in payload["next_step"]
    assert payload["totals"] == [] and payload["roi"]["roi_pct"] is None
    json.dumps(payload, allow_nan=False)


@pytest.fixture(scope="module")
def seeded_db(tmp_path_factory):
    """A store filled by two weeks of simulated dialer traffic through the service's
    ranking state (rules only, control share 20 %)."""
    folder = tmp_path_factory.mktemp("seeded")
    world = ct.simulate(contacts=120, days=5, seed=4).world
    db = folder / "o.db"
    ranker = OnlineRanker(ServeSettings(model_dir=None, db=str(db), control_share=0.2,
                                        watch_seconds=0))
    counts = seed_traffic(ranker_poster(ranker), world, None,
                          pd.Timestamp("2026-04-06", tz="UTC"), days=14, per_day=30, seed=2)
    ranker.close()
    return db, counts


def test_seeded_traffic_gives_consistent_kpis(seeded_db):
    db, counts = seeded_db
    store = OutcomeStore(db)
    decisions, outcomes = store.decisions_frame(), store.outcomes_after(0)
    store.close()
    assert counts["requests"] == 14 * 30 and len(decisions) == counts["rankings"]
    assert len(outcomes) == counts["calls"] and outcomes["answered"].sum() == counts["answered"]
    payload = kpi_payload(decisions, outcomes)
    json.dumps(payload, allow_nan=False)
    totals = {r["arm"]: r for r in payload["totals"]}
    assert set(totals) == {"rules", "control"}
    assert sum(r["requests"] for r in totals.values()) == counts["requests"]
    assert 0.1 < totals["control"]["requests"] / counts["requests"] < 0.3
    # the service never schedules a call outside calling hours, in either arm
    assert all(r["illegal_calls"] == 0 for r in totals.values())
    assert all(r["attempts"] <= 3 for r in totals.values())
    # no model: every AI-arm ranking fell back, for that reason
    assert totals["rules"]["fallback_share"] == 1.0
    assert set(payload["fallback_reasons"]) == {"no model loaded"}
    assert sum(c["calls"] for c in payload["heatmap"]) == counts["calls"]
    funnel = {f["arm"]: f for f in payload["funnel"]}
    assert funnel["rules"]["reached_by_3"] == round(
        totals["rules"]["success_rate"] * totals["rules"]["requests"])
    weeks = [r for r in payload["periods"] if r["arm"] == "rules"]
    assert [w["period"] for w in weeks] == ["2026-04-06", "2026-04-13"]
    # the simulated dialer labels each request with a campaign and a team
    assert payload["choices"]["campaigns"] == sorted(CAMPAIGNS)
    assert payload["choices"]["teams"] == sorted(TEAMS)
    per_campaign = [kpi_payload(decisions, outcomes, Filters(campaign=c))["requests"]
                    for c in CAMPAIGNS]
    assert sum(per_campaign) == counts["requests"] and min(per_campaign) > 0


def test_roi_command_writes_one_self_contained_page(seeded_db, tmp_path):
    db, counts = seeded_db
    out = tmp_path / "report" / "roi.html"
    run = subprocess.run([CLI, "roi", "--db", str(db), "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert f"{counts['requests']} callback requests" in run.stdout
    html = out.read_text()
    assert "plotly.min.js" not in html and "Plotly.react" in html and len(html) > 3_000_000
    filtered = subprocess.run([CLI, "roi", "--db", str(db), "--out", str(tmp_path / "w.html"),
                               "--start", "2026-04-13"], capture_output=True, text=True,
                              timeout=120)
    assert "210 callback requests" in filtered.stdout
    one = subprocess.run([CLI, "roi", "--db", str(db), "--out", str(tmp_path / "c.html"),
                          "--campaign", "trade-fair", "--team", "team-north"],
                         capture_output=True, text=True, timeout=120)
    shown = int(one.stdout.split(" callback requests")[0].split()[-1])
    assert 0 < shown < counts["requests"] / 5  # 20 % of requests x 60 % of them, about
    bad = subprocess.run([CLI, "roi", "--db", str(db), "--start", "2026-13-01"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        "error: --start: not a date (YYYY-MM-DD): '2026-13-01'"]
    missing = subprocess.run([CLI, "roi", "--db", str(tmp_path / "none.db")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "no outcome store" in missing.stderr


# --- the dashboard's snapshot: a restart reads only the rows stored since -----------------


def _rounded(value):
    """A payload with its floats to 9 significant digits (sums in another order)."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _copy_of(seeded_db, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "o.db"
    shutil.copy(seeded_db[0], db)
    return db


def _payload_read_whole(db: Path) -> dict:
    store = OutcomeStore(db)
    try:
        return KpiSource(store, snapshot=None).payload()
    finally:
        store.close()


def _snapshotted(db: Path) -> tuple[KpiSource, dict]:
    source = KpiSource(OutcomeStore(db))
    payload = source.payload()
    source.wait_snapshot()
    return source, payload


def test_a_restart_starts_from_the_snapshot_and_gets_the_same_figures(seeded_db, tmp_path):
    db = _copy_of(seeded_db, tmp_path)
    first, before = _snapshotted(db)
    assert not first.restored and first.snapshot_path == tmp_path / "o.db.kpis.npz"
    assert first.snapshot_path.stat().st_mode & 0o077 == 0  # its owner's only
    # rows stored while the server was down: a new request, a call of an old one
    store = first._store
    old = store.decisions_frame()["request_id"].iloc[0]
    late = T0 + pd.Timedelta(days=30)
    store.log_decisions([{k: v for k, v in _decision(0, "snap-1", "model", now=late).items()
                          if k != "seq"}])
    calls = pd.DataFrame([_call("snap-1", 24 * 30 + 2, True), _call(old, 24 * 30 + 3, False)])
    store.add_outcomes(calls.drop(columns="answered"))
    store.close()
    again = KpiSource(OutcomeStore(db))
    after = again.payload()
    assert again.restored
    assert after["requests"] == before["requests"] + 1
    assert _rounded(after) == _rounded(_payload_read_whole(db))
    # the arrays themselves survive a snapshot, request ids included
    data = again._data
    pd.testing.assert_frame_equal(KpiData.from_snapshot(data.snapshot()).fates(),
                                  data.fates())


def test_a_snapshot_that_no_longer_fits_the_store_is_not_used(seeded_db, tmp_path, caplog):
    db = _copy_of(seeded_db, tmp_path / "a")
    first, _ = _snapshotted(db)
    first._store.close()
    snapshot = first.snapshot_path
    # rows removed from the store since
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM outcomes WHERE seq IN (SELECT seq FROM outcomes LIMIT 5)")
    source = KpiSource(OutcomeStore(db))
    assert _rounded(source.payload()) == _rounded(_payload_read_whole(db))
    assert not source.restored and "removed" in caplog.text
    # the snapshot of another store
    other = OutcomeStore(tmp_path / "b" / "o.db")
    shutil.copy(snapshot, tmp_path / "b" / "o.db.kpis.npz")
    source = KpiSource(other)
    assert source.payload()["empty"] and not source.restored
    assert "another store" in caplog.text
    # a damaged file: read afresh, nothing raised
    snapshot.write_bytes(snapshot.read_bytes()[:1000])
    source = KpiSource(OutcomeStore(db))
    assert source.payload()["requests"] > 0 and not source.restored
    # taken with other calling hours: its illegal-call flags would be wrong
    with np.load(tmp_path / "b" / "o.db.kpis.npz") as z:
        arrays = {k: z[k] for k in z.files}
    KpiData.from_snapshot(arrays)
    with pytest.raises(ValueError, match="calling hours"):
        KpiData.from_snapshot(arrays, PolicyConfig(calling_hours={
            "default": ((9 * 60, 17 * 60),) * 7}))


# --- in a real browser, against a real server --------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync"]


@pytest.mark.slow
def test_dashboard_in_a_real_browser(seeded_db, tmp_path):
    from playwright.sync_api import sync_playwright

    from tests.test_service import Server

    assert os.path.exists(CHROMIUM), "Debian's chromium is needed: `make test` installs it"
    db = tmp_path / "o.db"
    shutil.copy(seeded_db[0], db)
    ARTIFACTS.mkdir(exist_ok=True)
    with Server(tmp_path, tmp_path / "no-model", db, CALLBACK_TIMING_API_KEY="k3y") as server, \
            sync_playwright() as pw:
        key = {"X-API-Key": "k3y"}
        assert httpx.get(f"{server.url}/dashboard/").status_code == 401
        assert httpx.get(f"{server.url}/kpis").status_code == 401
        kpis = httpx.get(f"{server.url}/kpis", headers=key).json()
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800},
                                accept_downloads=True)
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        # the key once in the address: it becomes a cookie and leaves the address
        page.goto(f"{server.url}/dashboard/?api_key=k3y")
        assert page.url == f"{server.url}/dashboard/"
        page.wait_for_selector("#chart-heatmap .main-svg")
        page.wait_for_selector("#chart-trend .main-svg")

        for row in kpis["totals"]:
            shown = page.locator(f'#kpi-table tr[data-arm="{row["arm"]}"]')
            assert shown.locator('[data-k="requests"]').text_content() == str(row["requests"])
            assert shown.locator('[data-k="success_rate"]').text_content() == \
                f"{100 * row['success_rate']:.1f}%"
            assert shown.locator('[data-k="attempts"]').text_content() == \
                f"{row['attempts']:.2f}"
        d = kpis["roi_defaults"]
        expected = roi(kpis["experiment"], d["cost_per_attempt"],
                       d["conversion_rate"] * d["deal_value"], d["investment"])
        assert page.text_content("#roi-value") == f"{expected['roi_pct']:.1f}%"
        page.fill("#in-invest", "250")
        changed = roi(kpis["experiment"], d["cost_per_attempt"],
                      d["conversion_rate"] * d["deal_value"], 250.0)
        assert page.text_content("#roi-value") == f"{changed['roi_pct']:.1f}%"
        assert changed["roi_pct"] != expected["roi_pct"]

        # the trend draws the KPI asked for, per arm, as /kpis has it
        page.select_option("#trend-kpi", "attempts")
        drawn = page.evaluate("() => document.getElementById('chart-trend').data"
                              ".map(t => [t.name, t.x, t.y])")
        assert sorted(name for name, _, _ in drawn) == sorted({r["arm"] for r in kpis["periods"]})
        for name, x, y in drawn:
            rows = [r for r in kpis["periods"] if r["arm"] == name]
            assert (x, y) == ([r["period"] for r in rows], [r["attempts"] for r in rows])

        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)  # unfiltered

        industry = kpis["choices"]["industries"][0]
        page.select_option("#f-industry", industry)
        with page.expect_response(lambda r: "/kpis/" in r.url):
            page.click("#apply")
        page.wait_for_function(
            "n => document.querySelectorAll('#kpi-table tbody tr').length > 0 && "
            "[...document.querySelectorAll('#kpi-table [data-k=requests]')]"
            ".reduce((s, e) => s + Number(e.textContent), 0) === n",
            arg=httpx.get(f"{server.url}/kpis", params={"industry": industry},
                          headers=key).json()["requests"])
        # the dialer labels its requests: the campaign filter is shown, with its campaigns
        assert page.is_visible("#f-campaign") and page.is_visible("#f-team")
        options = page.eval_on_selector_all("#f-campaign option", "os => os.map(o => o.value)")
        assert options == ["", *kpis["choices"]["campaigns"]]
        page.select_option("#f-campaign", "trade-fair")
        with page.expect_response(lambda r: "campaign=trade-fair" in r.url):
            page.click("#apply")
        filtered = httpx.get(f"{server.url}/kpis", params={"industry": industry,
                                                           "campaign": "trade-fair"},
                             headers=key).json()["requests"]
        assert 0 < filtered < kpis["requests"]
        page.wait_for_function(
            "n => [...document.querySelectorAll('#kpi-table [data-k=requests]')]"
            ".reduce((s, e) => s + Number(e.textContent), 0) === n", arg=filtered)
        with page.expect_download() as download:
            page.click("#csv")
        csv = pd.read_csv(download.value.path())
        assert list(csv.columns[:3]) == ["period", "arm", "requests"]
        assert csv["requests"].sum() == filtered  # the filtered periods, not all of them
        browser.close()
        assert errors == []
        log = server.log.read_text()
    assert "k3y" not in log
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 50_000


def test_kpi_source_follows_the_store_with_only_the_new_rows(seeded_db, tmp_path):
    from callback_timing.dashboard import KpiSource

    db = tmp_path / "o.db"
    shutil.copy(seeded_db[0], db)
    store = OutcomeStore(db)
    source = KpiSource(store)
    before = source.payload()
    world = ct.simulate(contacts=120, days=5, seed=4).world
    ranker = OnlineRanker(ServeSettings(model_dir=None, db=str(db), control_share=0.2,
                                        watch_seconds=0))
    more = seed_traffic(ranker_poster(ranker), world, None,
                        pd.Timestamp("2026-04-20", tz="UTC"), days=2, per_day=30, seed=5)
    ranker.close()
    after = source.payload()
    assert after["requests"] == before["requests"] + more["requests"]
    fresh = KpiSource(OutcomeStore(db)).payload()
    assert json.dumps(after, sort_keys=True) == json.dumps(fresh, sort_keys=True)
    store.close()


def test_a_page_asked_while_the_store_is_first_read_is_told_to_ask_again(seeded_db):
    import threading

    from callback_timing.dashboard import KpiSource, StillReading

    release, reading = threading.Event(), threading.Event()

    class SlowStore:  # the real store, whose first read waits for the test
        def __init__(self):
            self.store = OutcomeStore(seeded_db[0])

        def __getattr__(self, name):
            return getattr(self.store, name)

        def rows_after(self, *args):
            reading.set()
            release.wait(10)
            return self.store.rows_after(*args)

    source = KpiSource(SlowStore(), snapshot=None)  # a store read for the first time
    reader = threading.Thread(target=source.refresh)
    reader.start()
    assert reading.wait(10)  # the reader is inside its first read
    with pytest.raises(StillReading, match="reading the outcome store"):
        source.payload(wait=False)
    release.set()
    reader.join(10)
    assert source.payload(wait=False)["requests"] == seeded_db[1]["requests"]
