"""``callback-timing serve``: the BentoML HTTP server of contract section 3.

Checks what a user can get wrong (the outcome store, the rules files, the port) and says so
in one line, then replaces itself with ``bentoml serve callback_timing.service:CallbackTiming``
configured through the ``CALLBACK_TIMING_*`` variables (see
:meth:`~callback_timing.online.ServeSettings.from_env`).
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from callback_timing import config
from callback_timing.cli_policy import RulesOption, RulesTableOption
from callback_timing.schema import ConfigError

SERVICE = "callback_timing.service:CallbackTiming"


def check_port(host: str, port: int) -> None:
    """Raise :class:`ConfigError` (one line) if nothing can listen on ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except socket.gaierror as exc:  # the name, not the port, is wrong
            raise ConfigError(f"--host: {host!r} is not an address of this machine "
                              f"({exc.strerror})") from None
        except OSError as exc:
            why = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            option = "--port" if exc.errno in (errno.EADDRINUSE, errno.EACCES) else "--host"
            raise ConfigError(f"{option}: cannot listen on {host}:{port}: {why}") from None


def serve_environment(model: Path | None, db: str, control_share: float,
                      rules: Path | None, rules_table: Path | None,
                      watch: float, workers: int = 1) -> dict[str, str]:
    """The environment ``bentoml serve`` runs the service with (the options as variables)."""
    env = dict(os.environ)
    env.update({
        "CALLBACK_TIMING_MODEL_DIR": str(Path(model).resolve()) if model else "",
        "CALLBACK_TIMING_DB": db if "://" in db else str(Path(db).resolve()),
        "CALLBACK_TIMING_CONTROL_SHARE": repr(control_share),
        "CALLBACK_TIMING_WATCH_SECONDS": repr(watch),
        "CALLBACK_TIMING_WORKERS": str(workers),
        "BENTOML_DO_NOT_TRACK": "True",
    })
    for name, path in (("CALLBACK_TIMING_RULES", rules),
                       ("CALLBACK_TIMING_RULES_TABLE", rules_table)):
        if path is not None:
            env[name] = str(Path(path).resolve())
        else:
            env.pop(name, None)
    return env


def serve_cmd(
    model: Annotated[Path, typer.Option(help="Model bundle folder (none there: the rules "
                                             "answer until a model is reloaded).")
                     ] = config.model_dir(),
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP port.")] = 3000,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface)."
                                      )] = "127.0.0.1",
    db: Annotated[str, typer.Option(help="Outcome store: a SQLite file or a SQLAlchemy URL "
                                         "such as postgresql://user@host/db.")
                  ] = config.db_path(),
    control_share: Annotated[float, typer.Option(
        min=0.0, max=0.99, help="Share of policy=auto requests answered as a traditional "
                                "desk (arm: control) to measure the uplift; 0 turns it off.")
                             ] = 0.10,
    rules: RulesOption = None,
    rules_table: RulesTableOption = None,
    workers: Annotated[int, typer.Option(
        min=1, help="Worker processes; they share outcomes and reloads through the store "
                    "at once. Clients with keep-alive connections may all land on one.")] = 1,
    watch: Annotated[float, typer.Option(
        min=0.0, help="Seconds between looks at the model folder for a new bundle (0: only "
                      "POST /admin/reload).")] = 5.0,
) -> None:
    """Start the HTTP server for dialers and supervisors.

    Dialers use /rank, /rank_batch, /outcomes, /check and /info; supervisors the ROI dashboard
    at /dashboard and its figures at /kpis.

    Set CALLBACK_TIMING_API_KEY to require an API key (X-API-Key header) on every endpoint but
    the health probes. Stop with Ctrl-C."""
    args, env = prepare_serve(model, port, host, db, control_share, rules, rules_table,
                              workers, watch)
    os.execvpe(sys.executable, args, env)


def prepare_serve(model: Path | None, port: int, host: str, db: str, control_share: float,
                  rules: Path | None, rules_table: Path | None, workers: int,
                  watch: float) -> tuple[list[str], dict[str, str]]:
    """Check what ``serve`` is given (one line on a mistake), print where it will listen,
    and return the ``bentoml serve`` command and its environment."""
    from callback_timing.cli import console
    from callback_timing.policy import load_bundle
    from callback_timing.policy_config import load_policy_config
    from callback_timing.rules import RuleModel
    from callback_timing.store import OutcomeStore

    load_policy_config(rules)
    RuleModel.from_file(rules_table)
    store = OutcomeStore(db)
    where = store.safe_url
    store.close()
    check_port(host, port)
    _, note = load_bundle(model)
    base = base_url(host, port)
    console.print(f"ranking with {note}\noutcome store: {where}", highlight=False)
    console.print(f"API docs:  {base}/docs\ndashboard: {base}/dashboard\n"
                  f"status:    {base}/info\n(Ctrl-C stops the server)", highlight=False)
    key = config.API_KEY_ENV
    if host not in ("127.0.0.1", "::1", "localhost") and not os.environ.get(key):
        console.print(f"[yellow]warning:[/] listening on {host} without an API key: anyone who "
                      "reaches this port can rank contacts (their reasons tell of their "
                      f"calls), read /kpis, /monitor and /metrics; set {key}", highlight=False)
    sys.stdout.flush()
    env = serve_environment(model, db, control_share, rules, rules_table, watch, workers)
    args = [sys.executable, "-m", "bentoml", "serve", SERVICE, "--port", str(port),
            "--host", host]
    return args, env


def base_url(host: str, port: int) -> str:
    """The server's URL as a user on this machine opens it."""
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host
    return f"http://{shown}:{port}"


def roi_cmd(
    out: Annotated[Path, typer.Option(help="The HTML file to write.")] = Path("roi.html"),
    db: Annotated[str, typer.Option(help="Outcome store: a SQLite file or a SQLAlchemy URL.")
                  ] = config.db_path(),
    start: Annotated[str | None, typer.Option(help="First day of requests (YYYY-MM-DD).")
                     ] = None,
    end: Annotated[str | None, typer.Option(help="Day after the last (YYYY-MM-DD).")] = None,
    industry: Annotated[str | None, typer.Option(help="Only this industry.")] = None,
    country: Annotated[str | None, typer.Option(help="Only this country (e.g. PL).")] = None,
    campaign: Annotated[str | None, typer.Option(
        help="Only the requests the dialer ranked with this campaign.")] = None,
    team: Annotated[str | None, typer.Option(
        help="Only the requests the dialer ranked with this team.")] = None,
    period: Annotated[str, typer.Option(help="Trend per 'day' or 'week'.")] = "week",
) -> None:
    """Write the supervisor's ROI dashboard as one self-contained HTML file.

    KPIs per arm (model, rules, control), ROI against the control arm with a confidence
    interval, trend, answer-rate heatmap and funnel, from the outcome store and decision log of
    ``serve``."""
    from callback_timing.cli import check_outputs, console
    from callback_timing.dashboard import KpiSource, parse_query, write_report
    from callback_timing.store import open_store, store_file

    check_outputs({"--db": store_file(db)}, {"--out": out})
    try:
        filters, period = parse_query({"start": start, "end": end, "industry": industry,
                                       "country": country, "campaign": campaign,
                                       "team": team, "period": period})
    except ValueError as exc:
        raise ConfigError(f"--{exc}") from None
    store = open_store(db)
    source = KpiSource(store)  # starts from, and leaves, the dashboard's snapshot
    try:
        payload = source.payload(filters, period)
        source.wait_snapshot()
    finally:
        store.close()
    path = write_report(payload, out)
    if payload["empty"]:
        console.print(payload["next_step"], highlight=False, soft_wrap=True)
    roi = payload["roi"]
    shown = ("n/a (too few requests in an arm)" if roi["roi_pct"] is None else
             f"{roi['roi_pct']:.1f}% (95% interval {roi['low_pct']:.1f}% to "
             f"{roi['high_pct']:.1f}%{'' if roi['conclusive'] else ', not conclusive'})")
    console.print(f"{payload['requests']} callback requests; ROI at the default inputs: "
                  f"{shown}\nreport: {path}", highlight=False, soft_wrap=True)
