"""The BentoML service dialers call (contract section 3): thin, the work is in
:class:`~callback_timing.online.OnlineRanker`.

Started by ``callback-timing serve`` (which sets the ``CALLBACK_TIMING_*`` variables of
:meth:`~callback_timing.online.ServeSettings.from_env`), or by ``bentoml serve
callback_timing.service:CallbackTiming``; ``serving/bentofile.yaml`` builds it into a Bento.

- ``POST /rank``, ``/rank_batch``, ``/outcomes``, ``/check``; ``GET /info``;
  ``POST /admin/reload``; the supervisor's dashboard at ``/dashboard`` and its figures at
  ``GET /kpis`` (:mod:`callback_timing.dashboard`); BentoML's ``/readyz``, ``/livez`` and
  ``/metrics``; the OpenAPI spec at ``/docs.json`` and its page at ``/docs``.
- Requests the service cannot use get a 4xx whose JSON names the field and the problem,
  and one log line without a traceback (:class:`ClientErrorLog`).
- ``CALLBACK_TIMING_API_KEY``: when set, every endpoint but the health probes needs it
  (``X-API-Key: KEY`` or ``Authorization: Bearer KEY``; a browser opens
  ``/dashboard/?api_key=KEY`` once and gets the key as an HTTP-only cookie). Bodies over
  ``CALLBACK_TIMING_MAX_BODY_MB`` (default 16) are refused with 413.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import os
import re
import threading

import anyio
import bentoml
from sqlalchemy import exc as sa_exc
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse, RedirectResponse

from callback_timing import config
from callback_timing.contacts_api import contacts_app
from callback_timing.dashboard import KpiSource, dashboard_app, kpis_app
from callback_timing.http_models import (
    CheckRequest,
    CheckResponse,
    InfoResponse,
    OutcomesRequest,
    OutcomesResponse,
    RankBatchRequest,
    RankBatchResponse,
    RankRequest,
    RankResponse,
    ReloadRequest,
    ReloadResponse,
    batch_item,
)
from callback_timing.monitor import monitor_app, service_report
from callback_timing.online import OnlineRanker, ServeSettings
from callback_timing.policy import ModelUnavailable
from callback_timing.rank_requests import RankRequestError
from callback_timing.service_metrics import ServiceMetrics
from callback_timing.store import OutcomeStore

logger = logging.getLogger(__name__)

API_KEY_ENV = config.API_KEY_ENV
#: BentoML's health probes: open without the API key (load balancers do not send one).
COOKIE = "ct_api_key"
OPEN_PATHS = frozenset({"/readyz", "/livez", "/healthz"})
#: Without an API key, ``/admin/`` answers these client addresses only.
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def _error(status: int, message: str) -> JSONResponse:
    field, _, problem = message.partition(": ")
    detail = [{"loc": field.split("."), "msg": problem or message}]
    return JSONResponse({"error": message, "detail": detail}, status_code=status)


def _client_error(path: str, message: str) -> JSONResponse:
    """A 400 naming the field, and its WARNING line: the field, not the value (which may be
    personal: a phone number, a contact id)."""
    logger.warning("client error %s: %s", path, message.partition(": ")[0])
    return _error(400, message)


class ClientErrorLog(logging.Filter):
    """BentoML logs a full traceback at ERROR for every request it could not validate; a
    client's mistake is one WARNING line here (server errors keep their traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Turn a client's error (a request that does not validate, a 4xx) into one WARNING
        line without traceback; every record is kept."""
        try:
            from pydantic import ValidationError

            exc = record.exc_info[1] if record.exc_info else None
            code = getattr(getattr(exc, "error_code", None), "value", 500)
            # a request body that does not validate (not a response model: that is our bug)
            invalid = isinstance(exc, ValidationError) and (
                exc.title.endswith("IODescriptor") or exc.title == "Input")
            if invalid or (exc is not None and 400 <= code < 500):
                lines = str(exc).splitlines() or [type(exc).__name__]
                what = lines[0][:200]
                if invalid and exc.errors():  # the field, not "1 validation error for Input"
                    first = exc.errors()[0]
                    what = ".".join(str(x) for x in first.get("loc", ())) or "body"
                    what += f": {first.get('type', 'invalid')}"  # no value: it may be personal
                where = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
                record.msg, record.args = "client error %s: %s", (where, what)
                record.exc_info = record.exc_text = None
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        except Exception:  # noqa: BLE001 - a log filter must never break the request
            pass
        return True


#: the scope key that carries a ``/contacts/`` request's real path past BentoML's middleware
CONTACT_PATH = "callback_timing.contact_path"
#: what BentoML's request metrics, tracing and access log see of a ``/contacts/`` path
CONTACT_TEMPLATE = "/contacts/{contact_id}"


def hide_contact_paths() -> None:
    """BentoML's request metrics label each request with its path, and ``/metrics`` would list
    every contact id asked about (kept in its multiprocess files too). Its metrics middleware,
    the outermost, is given the path as a template instead (``/contacts/{contact_id}``), and so
    are the tracing and access log inside it; :class:`Guard` puts the real path back."""
    from bentoml._internal.server.http import instruments

    for name in ("RunnerTrafficMetricsMiddleware", "HTTPTrafficMetricsMiddleware"):
        cls = getattr(instruments, name, None)
        if cls is None or getattr(cls.__call__, "_hides_contacts", False):
            continue
        call = cls.__call__

        async def hidden(self, scope, receive, send, _call=call):
            path = scope.get("path", "") if isinstance(scope, dict) else ""
            if path.startswith("/contacts/"):
                scope = {**scope, "path": CONTACT_TEMPLATE, CONTACT_PATH: path}
            return await _call(self, scope, receive, send)

        hidden._hides_contacts = True
        cls.__call__ = hidden


class ContactPathLog(logging.Filter):
    """BentoML's access log writes each request's path: the contact id of a ``/contacts/``
    path is replaced, so that no contact id reaches the log.

    >>> record = logging.LogRecord("bentoml.access", 20, "", 0, "%s (%s)", (
    ...     "127.0.0.1:5", "scheme=http,method=GET,path=/contacts/c-42/opt_out"), None)
    >>> ContactPathLog().filter(record), record.getMessage()
    (True, '127.0.0.1:5 (scheme=http,method=GET,path=/contacts/<contact>)')
    >>> record.args = ("127.0.0.1:5", "method=GET,path=/contacts/Ann Lee, +48 6,type=,length=0")
    >>> ContactPathLog().filter(record), record.getMessage()
    (True, '127.0.0.1:5 (method=GET,path=/contacts/<contact>,type=,length=0)')
    """

    # to the end of the path: the next field of the line (ids may hold spaces and commas)
    _PATH = re.compile(r"/contacts/.*?(?=,type=|,length=|$)")

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the contact id of a ``/contacts/`` path in the record's arguments with
        ``<contact>``; every record is kept."""
        if isinstance(record.args, tuple) and any(
                isinstance(a, str) and "/contacts/" in a for a in record.args):
            record.args = tuple(self._PATH.sub("/contacts/<contact>", a) if isinstance(a, str)
                                else a for a in record.args)
        return True


#: the service's own loggers whose INFO lines belong in the server log: the model it ranks
#: with (at start and after every reload), retention purges, store migrations
SERVICE_LOGGERS = ("callback_timing.online", "callback_timing.store")


def quiet_client_errors() -> None:
    """Install :class:`ClientErrorLog` on BentoML's request logger and
    :class:`ContactPathLog` on its access log (once), and let :data:`SERVICE_LOGGERS` log at
    INFO (BentoML's root logger only passes warnings; a model switch must be on record)."""
    for name, kind in (("bentoml._internal.server.http_app", ClientErrorLog),
                       ("bentoml.access", ContactPathLog)):
        target = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in target.filters):
            target.addFilter(kind())
    for name in SERVICE_LOGGERS:
        own = logging.getLogger(name)
        if own.level == logging.NOTSET:  # an operator's logging configuration wins
            own.setLevel(logging.INFO)


def _as_json(scope: dict, body: bytes) -> dict:
    """``scope`` with ``Content-Type: application/json`` when the body is a JSON object or
    array sent without it (``curl -d '{...}'`` says form data): the API reads only JSON, and
    would otherwise report the fields it was sent as missing."""
    headers = scope["headers"]
    given = dict(headers).get(b"content-type", b"").split(b";")[0].strip().lower()
    if given.endswith(b"json") or body.lstrip()[:1] not in (b"{", b"["):
        return scope
    if given not in (b"", b"application/x-www-form-urlencoded", b"text/plain"):
        return scope
    kept = [(k, v) for k, v in headers if k.lower() != b"content-type"]
    return {**scope, "headers": [*kept, (b"content-type", b"application/json")]}


class Guard:
    """ASGI middleware: the optional API key, the body size limit, ``/docs``, and JSON bodies
    sent without their content type."""

    def __init__(self, app, api_key: str | None = None, max_body: int = 16 * 2**20) -> None:
        self.app, self.api_key, self.max_body = app, api_key, max_body

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if CONTACT_PATH in scope:  # see hide_contact_paths: the id back for the contacts app
            scope = {**scope, "path": scope[CONTACT_PATH]}
        path = scope["path"]
        if self.api_key and path.startswith("/dashboard") and scope["query_string"]:
            login = await self._login(scope)
            if login is not None:
                return await login(scope, receive, send)
        if self.api_key and path not in OPEN_PATHS and not self._authorised(scope):
            return await _error(401, "X-API-Key: missing or wrong API key")(scope, receive,
                                                                             send)
        if (not self.api_key and path.startswith(("/admin/", "/contacts/"))
                and (scope.get("client") or ("",))[0] not in LOOPBACK):
            where = path.split("/")[1]
            return await _error(403, f"X-API-Key: /{where}/ needs CALLBACK_TIMING_API_KEY "
                                     "set, or a call from this machine")(scope, receive, send)
        if path in ("/docs", "/docs/"):
            return await RedirectResponse("/")(scope, receive, send)
        if path == "/dashboard":  # the page's relative links need the slash
            return await RedirectResponse("/dashboard/")(scope, receive, send)
        if path in ("/kpis", "/monitor"):  # the mounted apps answer at their root
            scope = {**scope, "path": path + "/", "raw_path": (path + "/").encode()}
        if path == "/info" and scope["method"] == "GET":  # BentoML's APIs are POST only
            scope = {**scope, "method": "POST",
                     "headers": [(b"content-type", b"application/json")]}
            done = []

            async def empty():
                if done:
                    return await receive()
                done.append(True)
                return {"type": "http.request", "body": b"{}", "more_body": False}

            return await self.app(scope, empty, send)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        kind = dict(scope["headers"]).get(b"content-type", b"").strip().lower()
        if kind.startswith(b"multipart/"):  # BentoML's form parser answers a bad one with 500
            return await _error(415, "content-type: the API reads JSON: send the body as "
                                     "application/json, not multipart form data")(
                scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            return await self._too_large(scope, receive, send)
        messages, size = [], 0
        while True:  # read the body (checking its size) before BentoML does
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.max_body:
                return await self._too_large(scope, receive, send)
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        scope = _as_json(scope, b"".join(m.get("body", b"") for m in messages))
        return await self.app(scope, replay, _FieldErrors(send))

    def _authorised(self, scope) -> bool:
        headers = dict(scope["headers"])
        given = headers.get(b"x-api-key", b"").decode("latin-1")
        bearer = headers.get(b"authorization", b"").decode("latin-1")
        if not given and bearer.lower().startswith("bearer "):
            given = bearer[7:].strip()
        if not given:  # a browser on the dashboard: the cookie set by /dashboard/?api_key=
            given = cookie_parser(headers.get(b"cookie", b"").decode("latin-1")).get(COOKIE, "")
        return bool(given) and hmac.compare_digest(given.encode("latin-1"),
                                                   self.api_key.encode("utf-8"))

    async def _login(self, scope):
        """``/dashboard/?api_key=KEY`` with the right key: a redirect to the page that sets
        the key as an HTTP-only cookie (the browser sends it on every later request)."""
        from urllib.parse import parse_qs

        given = parse_qs(scope["query_string"].decode("latin-1")).get("api_key", [""])[0]
        if not given or not hmac.compare_digest(given.encode("latin-1"),
                                                self.api_key.encode("utf-8")):
            return None
        response = RedirectResponse("/dashboard/", status_code=303)
        response.set_cookie(COOKIE, given, httponly=True, samesite="strict", path="/")
        return response

    async def _too_large(self, scope, receive, send) -> None:
        mb = self.max_body / 2**20
        await _error(413, f"body: larger than {mb:g} MB")(scope, receive, send)


class _FieldErrors:
    """Rewrites BentoML's 400 for a body that does not validate into the service's form:
    ``{"error": "contact.contact_id: Field required", "detail": [{"loc", "msg"}]}``."""

    def __init__(self, send) -> None:
        self.send, self.start, self.body = send, None, b""

    async def __call__(self, message) -> None:
        if message["type"] == "http.response.start" and message["status"] == 400:
            self.start = message
            return
        if self.start is None:
            return await self.send(message)
        self.body += message.get("body", b"")
        if message.get("more_body"):
            return
        body = self.body
        try:
            data = json.loads(body)
            detail = data.get("detail") if isinstance(data, dict) else None
            if isinstance(detail, list) and "validation error" in str(data.get("error")):
                items = [{"loc": list(d.get("loc", [])),
                          "msg": str(d.get("msg", "")).removeprefix("Value error, ")}
                         for d in detail if isinstance(d, dict)]
                first = items[0] if items else {"loc": [], "msg": "invalid body"}
                where = ".".join(str(x) for x in first["loc"]) or "body"
                body = json.dumps({"error": f"{where}: {first['msg']}",
                                   "detail": items}).encode()
        except ValueError:
            pass
        headers = [(k, v) for k, v in self.start["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.send({**self.start, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})


def _workers() -> int:
    try:
        return max(1, int(os.environ.get("CALLBACK_TIMING_WORKERS", "1")))
    except ValueError:
        return 1


def _open_store():
    return OutcomeStore(ServeSettings.from_env().db)


#: the dashboard's figures, read from the store in the background as the service starts
KPIS = KpiSource(_open_store)


def _warm_kpis() -> None:
    try:
        KPIS.refresh()
    except Exception as exc:  # noqa: BLE001 - the page will say so when it is asked for
        logger.warning("dashboard: could not read the outcome store yet (%s)",
                       type(exc).__name__)


#: the service's ranker, for the mounted ``/contacts`` app (set as the service starts)
_RANKER: dict = {}


#: seconds between two monitoring reports for the ``/metrics`` gauges (the first worker's)
MONITOR_REFRESH_SECONDS = float(os.environ.get("CALLBACK_TIMING_MONITOR_SECONDS", "300"))


def _refresh_monitor(ranker: OnlineRanker, metrics: ServiceMetrics) -> None:
    """Compute the monitoring report every :data:`MONITOR_REFRESH_SECONDS` for the gauges
    of ``/metrics`` (its alerts are logged as warnings)."""
    wait = min(30.0, MONITOR_REFRESH_SECONDS)
    while not ranker.stopped.wait(wait):
        wait = MONITOR_REFRESH_SECONDS
        try:
            metrics.observe_monitor(service_report(ranker))
        except Exception as exc:  # noqa: BLE001 - monitoring must never stop the service
            logger.warning("monitor: no report for /metrics (%s)", type(exc).__name__)


def _flush_decisions() -> None:
    """Write this worker's queued rankings to the decision log now (before ``/kpis`` reads
    it; another worker's are written within ``decision_interval_s``)."""
    ranker = _RANKER.get("ranker")
    if ranker is not None:
        ranker.flush(timeout=2.0)


def _kpis_follow() -> None:
    """Let the dashboard drop deleted rows now (an erasure, a purge; and save its snapshot
    again)."""
    threading.Thread(target=_warm_kpis, name="kpis-after-erasure", daemon=True).start()


@bentoml.asgi_app(monitor_app(lambda: _RANKER.get("ranker")), path="/monitor")
@bentoml.asgi_app(contacts_app(lambda: _RANKER.get("ranker")), path="/contacts")
@bentoml.asgi_app(dashboard_app(), path="/dashboard")
@bentoml.asgi_app(kpis_app(KPIS, before=_flush_decisions), path="/kpis")
@bentoml.service(name="callback_timing", workers=_workers(), traffic={"timeout": 60})
class CallbackTiming:
    """Ranked call windows for callback requests; the rules answer when the model cannot."""

    def __init__(self) -> None:
        quiet_client_errors()
        self.ranker = OnlineRanker(ServeSettings.from_env())
        self.ranker.after_deletion = _kpis_follow
        self.metrics = ServiceMetrics()
        self.ranker.on_model = self.metrics.observe_model
        self.metrics.observe_model(self.ranker.model_version)
        _RANKER["ranker"] = self.ranker
        if bentoml.server_context.worker_index in (None, 1) and MONITOR_REFRESH_SECONDS > 0:
            self.metrics.monitoring()
            threading.Thread(target=_refresh_monitor, args=(self.ranker, self.metrics),
                             name="monitor-metrics", daemon=True).start()
        threading.Thread(target=_warm_kpis, name="kpis-warm-up", daemon=True).start()

    @bentoml.api(route="/rank")
    async def rank(self, request: RankRequest, /) -> RankResponse:
        """When to call one contact back: windows best first, with ``p_answer`` and reasons."""
        body = [request.to_policy()]
        try:
            # at once when nothing is to wait for (no thread hop); else in a thread, so the
            # event loop (health probes, other connections) never waits on a lock or the store
            answers = self.ranker.try_rank(body, errors="raise")
            if answers is None:
                answers = await anyio.to_thread.run_sync(
                    functools.partial(self.ranker.rank, body, errors="raise"))
            self.metrics.observe_rankings(answers)
            return JSONResponse(answers[0])
        except RankRequestError as exc:
            return _client_error("/rank", str(exc))
        except ModelUnavailable as exc:
            return _error(503, str(exc))

    @bentoml.api(route="/rank_batch")
    def rank_batch(self, body: RankBatchRequest, /) -> RankBatchResponse:
        """Several rankings at once, answered in order; a request that cannot be ranked as
        given is answered by ``{"request_id", "error"}`` in its place."""
        items = [batch_item(r) for r in body.requests]
        valid = [item for item in items if "error" not in item]
        ranked = iter(self.ranker.rank(valid) if valid else [])
        results = [item if "error" in item else next(ranked) for item in items]
        self.metrics.observe_rankings(results)
        return RankBatchResponse.model_validate({"results": results})

    @bentoml.api(route="/outcomes")
    def outcomes(self, body: OutcomesRequest, /) -> OutcomesResponse:
        """Store call outcomes (idempotent by ``call_id``; durable before the answer); the
        next ranking of the contact takes them into account."""
        try:
            result = self.ranker.outcomes([o.model_dump(exclude_none=True)
                                           for o in body.outcomes])
            self.metrics.observe_outcomes(result)
            return OutcomesResponse.model_validate(result)
        except sa_exc.OperationalError:  # one transaction: nothing of this call was stored
            logger.warning("outcomes: the outcome store did not answer; asked to resend")
            return _error(503, "outcomes: the outcome store is unavailable; nothing was "
                               "stored, send them again")

    @bentoml.api(route="/check")
    def check(self, body: CheckRequest, /) -> CheckResponse:
        """May the contact be called now (or at ``at``)? The check made when dialing."""
        try:
            return CheckResponse.model_validate(self.ranker.check(
                body.contact.model_dump(exclude_none=True), body.at, body.request_id))
        except RankRequestError as exc:
            return _client_error("/check", str(exc).replace("now: ", "at: ", 1))

    @bentoml.api(route="/info")
    def info(self) -> InfoResponse:
        """The model version, who answers (model or rules) and whether the service is
        degraded (serving the rules because the model is missing or broken)."""
        return InfoResponse.model_validate(self.ranker.info())

    @bentoml.api(route="/admin/reload")
    def reload(self, body: ReloadRequest, /) -> ReloadResponse:
        """Serve a new model bundle without downtime, if it loads and answers."""
        return ReloadResponse.model_validate(self.ranker.reload(body.model_dir))

    @bentoml.on_shutdown
    def _close(self) -> None:
        self.ranker.close()


def _max_body() -> int:
    raw = os.environ.get("CALLBACK_TIMING_MAX_BODY_MB", "16")
    try:
        return int(float(raw) * 2**20)
    except ValueError:
        logger.warning("CALLBACK_TIMING_MAX_BODY_MB=%r is not a number: 16 MB used", raw)
        return 16 * 2**20


CallbackTiming.add_asgi_middleware(Guard, api_key=os.environ.get(API_KEY_ENV) or None,
                                   max_body=_max_body())
hide_contact_paths()
