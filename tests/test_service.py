"""The HTTP service (contract section 3): in process through BentoML's ASGI app, and as a
real ``callback-timing serve`` subprocess (end to end, ``kill -9``, API key, schemathesis)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.conftest import free_port, tiny_bundle

CLI = str(Path(sys.executable).with_name("callback-timing"))
NOW = "2026-05-04T07:00:00Z"


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    _, folder, _ = tiny_bundle(tmp_path_factory.mktemp("svc") / "model", n_calls=2000,
                               version="v1")
    return folder


# --- in process: BentoML's ASGI app (one lifespan per process) -----------------------------

@pytest.fixture(scope="module")
def client(bundle_dir, tmp_path_factory):
    from starlette.testclient import TestClient

    env = {"CALLBACK_TIMING_MODEL_DIR": str(bundle_dir),
           "CALLBACK_TIMING_DB": str(tmp_path_factory.mktemp("db") / "o.db"),
           "CALLBACK_TIMING_CONTROL_SHARE": "0", "CALLBACK_TIMING_WATCH_SECONDS": "0"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        from callback_timing.service import CallbackTiming

        with TestClient(CallbackTiming.to_asgi()) as c:
            yield c
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_rank_answers_the_contract(client):
    r = client.post("/rank", json={"request_id": "r-1", "contact": {"contact_id": "c-0001"},
                                   "now": NOW, "top_k": 2})
    assert r.status_code == 200
    body = r.json()
    assert (body["request_id"], body["contact_id"], body["source"], body["arm"],
            body["model_version"]) == ("r-1", "c-0001", "model", "model", "v1")
    assert 1 <= len(body["windows"]) <= 2
    w = body["windows"][0]
    assert set(w) == {"start", "end", "local_start", "p_answer", "score", "reasons"}
    assert pd.Timestamp(NOW) <= pd.Timestamp(w["start"]) < pd.Timestamp(w["end"])
    assert [x["score"] for x in body["windows"]] == sorted(
        (x["score"] for x in body["windows"]), reverse=True)


def test_rank_batch_keeps_the_order_and_answers_bad_requests_in_place(client):
    reqs = [{"request_id": f"b-{i}", "contact": {"contact_id": f"c-{i:04d}"}, "now": NOW}
            for i in range(5)]
    reqs.insert(2, {"request_id": "bad", "contact": {"contact_id": "c-9",
                                                     "timezone": "Mars/Base"}})
    # requests that do not validate are answered in place too, not with a 400 for all
    reqs.insert(4, {"request_id": "no-id", "contact": {}, "now": NOW})
    reqs.append({"request_id": "x" * 300, "contact": {"contact_id": "c-1"}, "top_k": 0})
    reqs.append(7)
    r = client.post("/rank_batch", json={"requests": reqs})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["request_id"] for x in results[:-2]] == [q["request_id"] for q in reqs[:-2]]
    assert results[2] == {"request_id": "bad",
                          "error": "contact.timezone: unknown time zone 'Mars/Base'"}
    assert results[4] == {"request_id": "no-id", "error": "contact.contact_id: Field required"}
    assert results[-2] == {"request_id": None,  # too long to echo
                           "error": "request_id: String should have at most 256 characters"}
    assert results[-1]["request_id"] is None and results[-1]["error"].startswith("request: ")
    assert [bool(x.get("windows")) for x in results] == [
        True, True, False, True, False, True, True, False, False]


def test_outcomes_then_rank_then_check(client):
    r = client.post("/outcomes", json={"outcomes": [
        {"call_id": "h-1", "request_id": "r-h", "contact_id": "c-0007",  # New York
         "called_at": "2026-05-04T14:00:00Z", "outcome": "no_answer", "attempt": 1},
        {"call_id": "h-2", "contact_id": "c-0007", "called_at": "not a time",
         "outcome": "no_answer"},
        {"call_id": "h-3", "contact_id": "c-0007", "called_at": "2099-05-04T14:00:00Z",
         "outcome": "answered"}]})  # a typo that would count as a call for decades
    assert r.status_code == 200
    body = r.json()
    assert (body["accepted"], body["duplicates"]) == (1, 0)
    assert [(x["index"], x["call_id"], x["field"]) for x in body["rejected"]] == [
        (1, "h-2", "called_at"), (2, "h-3", "called_at")]
    assert body["rejected"][1]["reason"].startswith("in the future")
    again = client.post("/outcomes", json={"outcomes": [
        {"call_id": "h-1", "contact_id": "c-0007", "called_at": "2026-05-04T14:00:00Z",
         "outcome": "no_answer"}]}).json()
    assert (again["accepted"], again["duplicates"]) == (0, 1)
    changed = client.post("/outcomes", json={"outcomes": [  # a "correction" of a stored call
        {"call_id": "h-1", "contact_id": "c-0007", "called_at": "2026-05-04T14:00:00Z",
         "outcome": "answered"},
        {"contact_id": "c-0007", "called_at": "2026-05-04T14:00:00Z", "outcome": "busy"}]})
    assert changed.json() == {"accepted": 1, "duplicates": 0, "rejected": [
        {"index": 0, "call_id": "h-1", "field": "outcome",
         "reason": "call_id already stored with another outcome: the stored call is kept "
                   "(give a correction a new call_id)"}]}
    ranked = client.post("/rank", json={"contact": {"contact_id": "c-0007"},
                                        "now": "2026-05-04T14:01:00Z"}).json()
    assert pd.Timestamp(ranked["windows"][0]["start"]) >= pd.Timestamp("2026-05-04T16:00:00Z")
    check = client.post("/check", json={"contact": {"contact_id": "c-0007"},
                                        "at": "2026-05-04T14:30:00Z"}).json()
    assert check["allowed"] is False and "after the last call" in check["reasons"][0]


@pytest.mark.parametrize(("body", "field"), [
    ({"contact": {}}, "contact.contact_id"),
    ({"contact": {"contact_id": "c"}, "horizon_hours": 0}, "horizon_hours"),
    ({"contact": {"contact_id": "c"}, "horizon_hours": 10_000}, "horizon_hours"),
    ({"contact": {"contact_id": "c"}, "top_k": 0}, "top_k"),
    ({"contact": {"contact_id": "c"}, "top_k": "three"}, "top_k"),
    ({"contact": {"contact_id": "c"}, "policy": "magic"}, "policy"),
    ({"contact": {"contact_id": "c"}, "urgency": "now!"}, "urgency"),
    ({"contact": {"contact_id": "c"}, "now": "yesterday"}, "now"),
    ({"contact": {"contact_id": "c", "timezone": "Mars/Base"}}, "contact.timezone"),
    ({"contact": {"contact_id": "c", "country": "Poland"}}, "contact.country"),
    ({"request_id": "a\u0000b", "contact": {"contact_id": "c"}}, "request_id"),
    ({"contact": {"contact_id": "c"}, "now": "2026-06-01T10:00:00Z",
      "requested_at": "2026-06-02T10:00:00Z"}, "requested_at"),
    ({"contact": {"contact_id": "c"}, "now": "2026-06-01T10:00:00"}, "now"),  # no offset
    ({"contact": {"contact_id": "c"}, "now": "2026-06-01T10:00:00Z",
      "requested_at": "2026-06-01T09:00"}, "requested_at"),
    # no lax coercion: true is not 1 hour, "yes" not true, a number not a time since 1970
    ({"contact": {"contact_id": "c"}, "top_k": True}, "top_k"),
    ({"contact": {"contact_id": "c"}, "horizon_hours": "48"}, "horizon_hours"),
    ({"contact": {"contact_id": "c", "opt_out": "yes"}}, "contact.opt_out"),
    ({"contact": {"contact_id": "c"}, "now": 1764064800000}, "now"),
    ({"contact": {"contact_id": "c"}, "now": "1234567890"}, "now"),  # not 2009-02-13
    ({"contact": {"contact_id": "c", "country": "XX"}}, "contact.country"),
    ({"contact": {"contact_id": "c", "country": "PL", "subdivision": "TX"}},
     "contact.subdivision"),
    ({"contact": {"contact_id": "c", "phone": "abc"}}, "contact.phone"),
])
def test_bad_rank_requests_get_a_400_naming_the_field(client, body, field, caplog):
    with caplog.at_level(logging.INFO):
        r = client.post("/rank", json=body)
    assert r.status_code == 400
    assert r.json()["error"].startswith(f"{field}: ")
    assert not [rec for rec in caplog.records if rec.exc_info]  # no traceback logged
    warned = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    assert any(m.startswith("client error /rank: ") and field in m for m in warned), warned


def test_null_is_the_default_and_a_dialer_clock_a_little_ahead_is_forgiven(client):
    body = {"contact": {"contact_id": "c-0007", "opt_out": None}, "top_k": None,
            "horizon_hours": None, "policy": None, "urgency": None,
            "now": "2026-05-04T06:00:00Z"}
    r = client.post("/rank", json=body)
    assert r.status_code == 200 and len(r.json()["windows"]) == 3, r.text
    ahead = pd.Timestamp.now(tz="UTC") + pd.Timedelta(seconds=5)  # no `now`: the server's
    r = client.post("/rank", json={"contact": {"contact_id": "c-0007"},
                                   "requested_at": ahead.isoformat()})
    assert r.status_code == 200, r.text
    hour = (ahead + pd.Timedelta(hours=1)).isoformat()
    r = client.post("/rank", json={"contact": {"contact_id": "c-0007"}, "requested_at": hour})
    assert r.status_code == 400 and r.json()["error"] == "requested_at: must not be after now"
    r = client.post("/rank", json={"contact": {"contact_id": "c-0007"}, "now": 12345})
    assert r.json()["error"] == ("now: expected an ISO 8601 timestamp with offset, e.g. "
                                 "2026-06-01T10:00:00Z")


def test_every_timestamp_needs_its_offset(client):
    at = client.post("/check", json={"contact": {"contact_id": "c-0007"},
                                     "at": "2026-05-04T14:30:00"})
    assert at.status_code == 400 and at.json()["error"] == (
        "at: give the UTC offset (e.g. 2026-05-04T14:30:00Z or 2026-05-04T14:30:00+02:00)")
    done = client.post("/outcomes", json={"outcomes": [
        {"call_id": "naive-1", "contact_id": "c-0007", "called_at": "2026-05-04 10:05",
         "outcome": "answered"}]}).json()
    assert done["accepted"] == 0 and done["rejected"] == [
        {"index": 0, "call_id": "naive-1", "field": "called_at",
         "reason": "timestamp without UTC offset (give one, e.g. 2026-06-01T10:00:00Z or "
                   "2026-06-01T12:00:00+02:00)"}]


def test_malformed_json_is_a_400(client):
    r = client.post("/rank", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    r = client.post("/outcomes", json={"outcomes": "all of them"})
    assert r.status_code == 400 and r.json()["error"].startswith("outcomes: ")


def test_json_sent_as_form_data_is_read_as_json(client):
    """``curl -d '{...}'`` without ``-H content-type`` says form data; the body is JSON."""
    body = b'{"contact": {"contact_id": "c-0007"}, "now": "2026-05-04T06:00:00Z"}'
    for kind in (None, "application/x-www-form-urlencoded", "text/plain; charset=utf-8"):
        r = client.post("/rank", content=body, headers={"content-type": kind} if kind else {})
        assert r.status_code == 200 and r.json()["contact_id"] == "c-0007", (kind, r.text)
    r = client.post("/outcomes", content=b'{"outcomes": []}',
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.json()["accepted"] == 0
    r = client.post("/rank", content=b"contact=c-0007",  # real form data: still refused
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400
    for kind in ("multipart/form-data; boundary=x", "multipart/form-data"):
        for path in ("/rank", "/rank_batch", "/outcomes", "/check"):
            r = client.post(path, content=b"garbage", headers={"content-type": kind})
            assert r.status_code == 415, (path, kind, r.text)
            assert r.json()["error"].startswith("content-type: the API reads JSON")


def test_info_docs_and_readiness(client):
    assert client.get("/readyz").status_code == 200
    info = client.get("/info").json()
    assert (info["source"], info["degraded"], info["model_version"]) == ("model", False, "v1")
    assert client.post("/info", json={}).json()["model_version"] == "v1"
    spec = client.get("/docs.json").json()
    assert {"/rank", "/rank_batch", "/outcomes", "/check", "/info"} <= set(spec["paths"])
    docs = client.get("/docs", follow_redirects=False)
    assert docs.status_code in (302, 307) and docs.headers["location"] == "/"


def test_a_body_over_the_limit_is_refused(client):
    from callback_timing.service import Guard

    async def echo(scope, receive, send):  # an app that must not be reached
        raise AssertionError("reached the app")

    from starlette.testclient import TestClient

    small = TestClient(Guard(echo, api_key="k", max_body=100))
    assert small.post("/rank", content=b"x" * 500, headers={"x-api-key": "k"}
                      ).status_code == 413
    assert small.post("/rank", content=b"x", headers={"x-api-key": "wrong"}).status_code == 401
    assert small.post("/rank", content=b"x").json()["error"].startswith("X-API-Key")
    assert small.post("/rank", content=b"x", headers={"x-api-key": "\u00e9".encode("latin-1")}
                      ).status_code == 401  # not a 500

    from starlette.responses import JSONResponse

    async def ok(scope, receive, send):
        await JSONResponse({"ok": True})(scope, receive, send)

    open_guard = Guard(ok, api_key=None)
    remote = TestClient(open_guard, client=("10.1.2.3", 40000))
    local = TestClient(open_guard, client=("127.0.0.1", 40000))
    assert remote.post("/admin/reload", json={}).status_code == 403
    assert local.post("/admin/reload", json={}).status_code == 200
    # a contact's data and rights: the same without a key
    assert remote.get("/contacts/c-1").json()["error"].startswith(
        "X-API-Key: /contacts/ needs CALLBACK_TIMING_API_KEY")
    assert remote.delete("/contacts/c-1").status_code == 403
    assert local.delete("/contacts/c-1").status_code == 200
    assert remote.post("/rank", json={}).status_code == 200


def test_the_client_error_filter_never_breaks_logging():
    from bentoml.exceptions import BadInput

    from callback_timing.service import ClientErrorLog

    for exc in (BadInput(""), BadInput("bad body\nsecond line")):
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "Exception on %s [%s]",
                                   ("/rank", "POST"), (type(exc), exc, None))
        assert ClientErrorLog().filter(record)
        assert record.levelno == logging.WARNING and record.exc_info is None
        assert record.getMessage().startswith("client error /rank: ")
    server_bug = logging.LogRecord("x", logging.ERROR, __file__, 1, "Exception on %s [%s]",
                                   ("/rank", "POST"), (RuntimeError, RuntimeError("x"), None))
    assert ClientErrorLog().filter(server_bug) and server_bug.levelno == logging.ERROR
    assert server_bug.exc_info is not None


# --- a real server --------------------------------------------------------------------------

class Server:
    """``callback-timing serve`` in its own process group."""

    def __init__(self, tmp: Path, model: Path, db: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "CALLBACK_TIMING_HOME": str(tmp / "home"),
                    "BENTOML_HOME": str(tmp / "bentoml"), **env}
        rules = tmp / "no-budget.yaml"  # the model is awaited (see conftest._no_model_budget)
        rules.write_text("model: {latency_budget_ms: 0}\n")
        self.args = [CLI, "serve", "--model", str(model), "--db", str(db), "--port",
                     str(self.port), "--control-share", "0", "--watch", "0",
                     "--rules", str(rules)]
        self.log = tmp / f"server-{self.port}.log"

    def __enter__(self) -> Server:
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=self.log.open("w"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not ready: {self.log.read_text()[-2000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the server and its workers (BentoML starts each worker in its own session,
        so the process group alone would miss the one that answered)."""
        import psutil

        try:
            family = [psutil.Process(self.proc.pid),
                      *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        for p in (family if sig == signal.SIGKILL else family[:1]):
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(sig)
        self.proc.wait(timeout=30)
        for p in family[1:]:  # a worker left behind by SIGTERM
            try:
                p.wait(timeout=15)
            except psutil.TimeoutExpired:
                p.kill()
            except psutil.NoSuchProcess:
                pass

    def __exit__(self, *exc) -> None:
        self.kill(signal.SIGTERM)

    def post(self, path: str, body: dict, **kw) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, timeout=30, **kw)


@pytest.mark.slow
def test_an_acknowledged_outcome_survives_kill_9(tmp_path, bundle_dir):
    db = tmp_path / "o.db"
    outcome = {"call_id": "k-1", "request_id": "r-k", "contact_id": "c-0011",
               "called_at": "2026-05-04T08:00:00Z", "outcome": "no_answer"}
    req = {"request_id": "r-k", "contact": {"contact_id": "c-0011"},
           "now": "2026-05-04T08:01:00Z"}
    with Server(tmp_path, bundle_dir, db) as server:
        before = server.post("/rank", req).json()["windows"]
        assert server.post("/outcomes", {"outcomes": [outcome]}).json()["accepted"] == 1
        server.kill(signal.SIGKILL)  # at once, after the acknowledgement
    with Server(tmp_path, bundle_dir, db) as server:
        after = server.post("/rank", req).json()["windows"]
        again = server.post("/outcomes", {"outcomes": [outcome]}).json()
    assert (again["accepted"], again["duplicates"]) == (0, 1)
    assert after != before
    assert pd.Timestamp(after[0]["start"]) >= pd.Timestamp("2026-05-04T10:00:00Z")


@pytest.mark.slow
def test_without_a_model_the_rules_answer_and_the_api_key_is_required(tmp_path):
    with Server(tmp_path, tmp_path / "no-model", tmp_path / "o.db",
                CALLBACK_TIMING_API_KEY="s3cret") as server:
        assert httpx.get(f"{server.url}/readyz").status_code == 200  # probes stay open
        assert server.post("/rank", {"contact": {"contact_id": "c"}}).status_code == 401
        key = {"headers": {"X-API-Key": "s3cret"}}
        info = httpx.get(f"{server.url}/info", **key).json()
        assert (info["source"], info["degraded"]) == ("rules", True)
        ranked = server.post("/rank", {"contact": {"contact_id": "c"}}, **key).json()
        assert (ranked["source"], ranked["fallback_reason"]) == ("rules", "no model loaded")
        forced = server.post("/rank", {"contact": {"contact_id": "c"}, "policy": "model"},
                             headers={"Authorization": "Bearer s3cret"})
        assert forced.status_code == 503 and forced.json()["error"].startswith("policy: ")
        # personal data in requests, good and bad, never reaches the log
        phone = "+48512345678"
        assert server.post("/rank", {"contact": {"contact_id": "c-secret-7", "phone": phone}},
                           **key).status_code == 200
        assert server.post("/rank", {"contact": {"contact_id": "c-secret-7", "phone": phone,
                                                 "country": 48}}, **key).status_code == 400
        stored = server.post("/outcomes", {"outcomes": [
            {"call_id": "p1", "contact_id": "c-secret-7", "phone": phone, "outcome": "answered",
             "called_at": "2026-05-04T10:00:00Z"},
            {"call_id": "p2", "contact_id": "c-secret-7", "phone": phone, "outcome": "??",
             "called_at": "2026-05-04T10:00:00Z"}]}, **key).json()
        assert (stored["accepted"], len(stored["rejected"])) == (1, 1)
        # a contact's rights: its id (here with a space, a comma and a phone number) stays
        # out of the access log and of BentoML's request metrics, which label by path
        named = httpx.get(f"{server.url}/contacts/Ann%20Lee%2C%20%2B48%20601", **key)
        assert named.status_code == 200 and named.json()["contact_id"] == "Ann Lee, +48 601"
        metrics = httpx.get(f"{server.url}/metrics", **key).text
        assert 'endpoint="/contacts/{contact_id}"' in metrics and "Ann Lee" not in metrics
        log = server.log.read_text()
    assert "s3cret" not in log
    assert "512345678" not in log and "c-secret-7" not in log
    assert "Ann Lee" not in log and "+48 601" not in log


def test_serve_reports_user_mistakes_in_one_line(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    env = {**os.environ, "CALLBACK_TIMING_HOME": str(tmp_path / "home")}
    try:
        busy = subprocess.run([CLI, "serve", "--port", str(port), "--db", str(tmp_path / "d")],
                              capture_output=True, text=True, env=env, timeout=60)
    finally:
        taken.close()
    assert busy.returncode == 1
    assert busy.stderr.strip().splitlines() == [
        f"error: --port: cannot listen on 127.0.0.1:{port}: already in use"]
    (tmp_path / "file").write_text("x")
    bad_db = subprocess.run([CLI, "serve", "--db", str(tmp_path / "file" / "o.db")],
                            capture_output=True, text=True, env=env, timeout=60)
    assert bad_db.returncode == 1 and len(bad_db.stderr.strip().splitlines()) == 1
    assert "Traceback" not in bad_db.stderr


def test_serving_beyond_this_machine_without_a_key_is_warned_of(tmp_path, capsys,
                                                               monkeypatch):
    from callback_timing.cli_serve import prepare_serve

    monkeypatch.delenv("CALLBACK_TIMING_API_KEY", raising=False)
    db = str(tmp_path / "o.db")
    prepare_serve(None, free_port(), "127.0.0.1", db, 0.1, None, None, 1, 5.0)
    assert "without an API key" not in capsys.readouterr().out
    prepare_serve(None, free_port(), "0.0.0.0", db, 0.1, None, None, 1, 5.0)
    shown = " ".join(capsys.readouterr().out.split())
    assert "warning: listening on 0.0.0.0 without an API key" in shown
    assert "set CALLBACK_TIMING_API_KEY" in shown
    monkeypatch.setenv("CALLBACK_TIMING_API_KEY", "k")
    prepare_serve(None, free_port(), "0.0.0.0", db, 0.1, None, None, 1, 5.0)
    assert "without an API key" not in capsys.readouterr().out


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(tmp_path, bundle_dir):
    """Generated requests (valid and invalid) against the OpenAPI spec: never a 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    with Server(tmp_path, bundle_dir, tmp_path / "o.db") as server:
        schema = schemathesis.openapi.from_url(f"{server.url}/docs.json")
        failures, calls = [], []
        for path in ("/rank", "/rank_batch", "/outcomes", "/check"):
            op = schema[path]["POST"]
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @settings(max_examples=20, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck))
                @given(case=op.as_strategy(generation_mode=mode))
                def run(case):
                    response = case.call(base_url=server.url, timeout=30)
                    calls.append(response.status_code)
                    if response.status_code >= 500:
                        failures.append((case.path, response.status_code,
                                         response.text[:300]))

                run()
        log = server.log.read_text()
    assert failures == []
    assert len(calls) >= 80 and any(400 <= c < 500 for c in calls) and 200 in calls
    assert "Traceback" not in log  # clients' mistakes are one line each


@pytest.mark.slow
def test_bentofile_builds_a_bento_of_the_service(tmp_path):
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"),
           "BENTOML_DO_NOT_TRACK": "True"}
    built = subprocess.run([sys.executable, "-m", "bentoml", "build", "-f",
                            "serving/bentofile.yaml", "."], cwd=root, env=env,
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    (bento,) = [p for p in (tmp_path / "bentoml" / "bentos" / "callback_timing").iterdir()
                if p.name != "latest"]
    src = bento / "src"
    assert (src / "serving" / "service.py").is_file()
    assert (src / "src" / "callback_timing" / "service.py").is_file()
    assert (src / "src" / "callback_timing" / "policy.yaml").is_file()
    assert not list(src.rglob("*.db")) and not (src / "mlruns").exists()
    spec = (bento / "apis" / "openapi.yaml").read_text()
    assert all(f"{path}:" in spec for path in ("/rank", "/rank_batch", "/outcomes", "/check"))
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "bentoml==" in requirements and "xgboost-cpu==" in requirements
    # in the Bento's image the package is its copied source: serving/service.py finds it
    site = next(p for p in sys.path if p.endswith("site-packages"))
    probe = subprocess.run(
        [sys.executable, "-S", "-c", "import serving.service, callback_timing; "
                                     "print(callback_timing.__file__)"],
        cwd=src, env={**env, "PYTHONPATH": site}, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert probe.stdout.strip() == str(src / "src" / "callback_timing" / "__init__.py")


def test_outcomes_answer_503_when_the_store_is_down(tmp_path, bundle_dir, monkeypatch):
    """The service class called directly (no HTTP): a store that does not answer loses
    nothing silently: the dialer is told to send again."""
    import sqlalchemy as sa

    from callback_timing.http_models import OutcomesRequest, RankBatchRequest, RankRequest
    from callback_timing.service import _RANKER, CallbackTiming

    monkeypatch.setenv("CALLBACK_TIMING_MODEL_DIR", str(bundle_dir))
    monkeypatch.setenv("CALLBACK_TIMING_DB", str(tmp_path / "o.db"))
    monkeypatch.setenv("CALLBACK_TIMING_WATCH_SECONDS", "0")
    # a second instance in this process: the mounted apps go on with the `client` fixture's
    monkeypatch.setitem(_RANKER, "ranker", _RANKER.get("ranker"))
    service = CallbackTiming()
    body = OutcomesRequest(outcomes=[{"call_id": "d1", "contact_id": "c-0001",
                                      "called_at": "2026-05-04T06:00:00Z", "outcome": "busy"}])

    def down(*args, **kwargs):
        raise sa.exc.OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(service.ranker.store, "add_outcomes", down)
    refused = service.outcomes(body)
    assert refused.status_code == 503 and b"send them again" in refused.body
    monkeypatch.undo()
    assert service.outcomes(body).accepted == 1
    ranked = service.rank_batch(RankBatchRequest(
        requests=[RankRequest(contact={"contact_id": "c-0001"}, now=NOW)]))
    assert ranked.results[0].source == "model"
    service.ranker.close()


@pytest.mark.slow
def test_a_new_champion_is_served_without_downtime_and_a_bad_one_is_refused(tmp_path,
                                                                            bundle_dir):
    _, v2, _ = tiny_bundle(tmp_path / "v2", n_calls=1800, seed=4, version="v2")
    broken = tmp_path / "broken"
    shutil.copytree(v2, broken)
    (broken / "model" / "booster.json").write_text("{ not a model")
    req = {"contact": {"contact_id": "c-0001"}, "now": NOW}
    with Server(tmp_path, bundle_dir, tmp_path / "o.db") as server:
        assert server.post("/rank", req).json()["model_version"] == "v1"
        done = server.post("/admin/reload", {"model_dir": str(v2)}).json()
        assert (done["reloaded"], done["model_version"]) == (True, "v2")
        assert server.post("/rank", req).json()["model_version"] == "v2"
        refused = server.post("/admin/reload", {"model_dir": str(broken)}).json()
        assert (refused["reloaded"], refused["model_version"]) == (False, "v2")
        assert refused["detail"].startswith(f"not reloaded: model bundle at {broken} could "
                                            "not be loaded")
        assert refused["detail"].endswith("; model v2 still answers")
        assert httpx.get(f"{server.url}/info").json()["model_version"] == "v2"
        assert server.post("/rank", req).json()["source"] == "model"
        log = server.log.read_text()  # every switch, and every refusal, is on record
    assert f"ranking with model v1 from {bundle_dir}; outcome store" in log
    assert f"now ranking with model v2 from {v2}" in log
    assert "reload refused: model bundle at" in log


def test_kpis_follow_rankings_and_outcomes_and_the_dashboard_is_served(client):
    from callback_timing.service import _RANKER

    ranker = _RANKER["ranker"]
    ranker.decision_interval_s = 3600.0  # the decision writer would now wait an hour ...
    ranker._wake.set()  # (cut its current half-second wait short)
    time.sleep(0.3)
    try:
        rid = "kpi-r1"
        ranked = client.post("/rank", json={
            "request_id": rid, "contact": {"contact_id": "c-0012"},
            "now": "2026-05-05T06:00:00Z", "campaign": "spring-webinar",
            "team": "north"}).json()
        start = ranked["windows"][0]["start"]
        assert client.post("/outcomes", json={"outcomes": [
            {"call_id": "kpi-1", "request_id": rid, "contact_id": "c-0012",
             "called_at": start, "outcome": "answered", "attempt": 1}]}).json()["accepted"] == 1
        assert ranker._log.unfinished_tasks == 1  # the ranking is queued, not written ...
        # ... but /kpis writes the queued rankings first: the one just made is counted
        kpis = client.get("/kpis", params={"start": "2026-05-05", "end": "2026-05-06"})
        assert kpis.status_code == 200
    finally:
        del ranker.decision_interval_s
        ranker._wake.set()  # out of its hour's wait: back to the half-second
    mine = next((r for r in kpis.json()["totals"] if r["arm"] == ranked["arm"]), None)
    assert mine is not None
    assert (mine["requests"], mine["first_attempt_rate"], mine["attempts"]) == (1, 1.0, 1.0)
    # the dialer's campaign and team label the request: filters of the dashboard
    labelled = client.get("/kpis", params={"campaign": "spring-webinar", "team": "north"}).json()
    assert labelled["requests"] == 1 and labelled["choices"]["campaigns"] == ["spring-webinar"]
    assert client.get("/kpis", params={"campaign": "other"}).json()["requests"] == 0
    too_long = client.post("/rank", json={"contact": {"contact_id": "c-0012"},
                                          "campaign": "x" * 129})
    assert too_long.status_code == 400 and "campaign" in too_long.text
    assert client.get("/kpis", params={"period": "month"}).json() == {
        "error": "period: 'day' or 'week', not 'month'"}
    moved = client.get("/dashboard", follow_redirects=False)
    assert moved.status_code == 307 and moved.headers["location"] == "/dashboard/"
    page = client.get("/dashboard/")
    assert page.status_code == 200 and '<script src="plotly.min.js">' in page.text
    # monitoring: the model's calibration and the traffic's drift, as JSON
    monitor = client.get("/monitor", params={"days": "30"}).json()
    assert monitor["days"] == 30 and monitor["model_version"] == "v1"
    assert monitor["rankings"] >= 1 and set(monitor) >= {"calibration", "drift", "fallbacks",
                                                          "psi", "alerts"}
    assert client.get("/monitor", params={"days": "-1"}).json() == {
        "error": "days: a number of days from 0 to 366, not '-1'"}
    script = client.get("/dashboard/plotly.min.js")
    assert script.status_code == 200 and "plotly" in script.text[:2000].lower()
