"""The ``callback-timing`` command line: thin Typer commands over the library.

Exit codes: 0 success; 1 a user mistake (bad file, bad option value: one line on stderr, no
stack trace); 2 a usage error (unknown option, missing argument: Typer's message).
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from callback_timing import __version__, config
from callback_timing.exits import exit_code, leave
from callback_timing.schema import CallbackTimingError, ConfigError

app = typer.Typer(
    name="callback-timing",
    help="Tells a call centre when to call a customer back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
for _c in (console, err_console):  # into a file or a pipe (a cron log): one line each, not
    _c.soft_wrap = not _c.is_terminal  # cut at 80 columns; a terminal wraps at its width
log = logging.getLogger("callback_timing")


HISTORY_HELP = ("Call history file: CSV (UTF-8; comma, semicolon, tab or | separated; "
                ".gz/.bz2/.xz too) or Parquet")

# options shared by every command that reads a call history
MapOption = Annotated[
    list[str] | None,
    typer.Option("--map", help="Rename a column of a foreign export: new=old (repeatable)."),
]
AssumeTzOption = Annotated[
    str | None,
    typer.Option(help="IANA zone for timestamps without offset (else they are rejected)."),
]
TimeFormatOption = Annotated[
    str | None,
    typer.Option(help="strftime layout of timestamps that are not ISO-8601, e.g. "
                      "'%d.%m.%Y %H:%M' (read in --assume-tz) or '%m/%d/%Y %I:%M %p %z'."),
]


class Engine(StrEnum):
    """Where ``train`` runs: one process (pandas) or a Dask cluster."""

    pandas = "pandas"
    dask = "dask"


DefaultTzOption = Annotated[
    str, typer.Option(help="IANA zone for rows with no timezone, country or valid phone.")
]


def _version(value: bool) -> None:
    if value:
        console.print(f"callback-timing {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    """callback-timing: ranked call windows with the probability that the person picks up."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@contextmanager
def _progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar; yields a ``progress(done, total)`` callback (quiet if no TTY)."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    ) as bar:
        task = bar.add_task(description, total=1)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=max(total, 1))

        yield update


def _run_simulate(
    contacts: int, days: int, seed: int, out: Path, start: date, dirt_rate: float
) -> Path:
    from callback_timing.simulation import (
        check_history_path,
        ground_truth_paths,
        save_ground_truth,
        simulate,
        write_history,
    )

    if out.is_dir():
        raise ConfigError(f"--out: {out} is a folder: give a file such as {out / 'history.csv'}")
    check_history_path(out)  # before the work, not after it
    world = ground_truth_paths(out)[1]
    if out.exists() and not world.exists():  # a real export, not one simulate wrote
        raise ConfigError(f"--out: {out} exists and is not a simulated history (no "
                          f"{world.name} beside it): give another file")
    with _progress("simulating calls") as progress:
        result = simulate(
            contacts=contacts,
            days=days,
            seed=seed,
            start=start,
            dirt_rate=dirt_rate,
            progress=progress,
        )
    path = write_history(result.history, out)
    _, world_path = save_ground_truth(result, path)
    console.print(
        f"wrote {len(result.history):,} calls of {contacts:,} contacts ({days} "
        f"{'day' if days == 1 else 'days'} from "
        f"{start}) to {path} (ground truth: {world_path})"
    )
    return path


def check_outputs(inputs: dict[str, Path | None], outputs: dict[str, Path | None]) -> None:
    """:class:`ConfigError` when an output option names one of the command's input files
    (``{"--history": path}``): writing it would destroy the input; or a folder."""
    for out_name, out in outputs.items():
        if out is not None and out.is_dir():
            raise ConfigError(f"{out_name}: {out} is a folder: give a file in it")
        for in_name, source in inputs.items():
            if out is not None and source is not None and out.resolve() == source.resolve():
                raise ConfigError(f"{out_name} is the {in_name} file, which would be "
                                  "overwritten: give another path")


def _sidecar(path: Path, kind: str, suffix: str | None = None) -> Path:
    """``data/history.csv`` -> ``data/history.<kind><suffix>``."""
    return path.with_name(f"{path.stem}.{kind}{suffix if suffix is not None else ''}")


@app.command("simulate")
def simulate_cmd(
    contacts: Annotated[int, typer.Option(min=1, help="Number of synthetic contacts.")] = 2000,
    days: Annotated[int, typer.Option(min=1, help="Length of the simulated period in days.")] = 120,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same history).")] = 0,
    out: Annotated[
        Path, typer.Option(help="Output file (.csv or .parquet).")
    ] = config.data_dir() / "history.csv",
    start: Annotated[str | None, typer.Option(
        metavar="YYYY-MM-DD",
        help="First day of the period; default: the Monday about DAYS + 7 days ago, so the "
             "history ends a week or two before today and the 12-month retention keeps it. "
             "Give it for a fixed history (same seed, same start: same history).")] = None,
    dirt_rate: Annotated[
        float,
        typer.Option(min=0.0, max=0.5, help="Share of rows spoiled like a real CRM export."),
    ] = 0.03,
) -> None:
    """Write a synthetic call history with a known ground truth (contract section 1)."""
    from callback_timing.simulation import recent_start

    if start is None:
        first = recent_start(days + 7)
    else:
        try:
            first = date.fromisoformat(start.strip())
        except ValueError as exc:  # 2026-02-30: "day is out of range for month"
            raise ConfigError(f"--start: not a date (YYYY-MM-DD): {start[:40]!r} "
                              f"({exc})") from None
    _run_simulate(contacts, days, seed, out, first, dirt_rate)


def _run_validate(
    history: Path,
    mapping: list[str] | None,
    assume_tz: str | None,
    rejects: Path | None,
    as_json: bool,
    default_tz: str = "UTC",
    plot: Path | None = None,
    time_format: str | None = None,
):
    from callback_timing.data import load_history, parse_mapping
    from callback_timing.report import quality_report, render_report

    check_outputs({"--history": history}, {"--rejects": rejects, "--plot": plot})
    with _progress("validating history") as progress:
        progress(0, 1)
        result = load_history(
            history, mapping=parse_mapping(mapping or []), assume_tz=assume_tz,
            default_tz=default_tz, time_format=time_format,
        )
        progress(1, 1)
    rejects_path = rejects or _sidecar(history, "rejects", ".csv")
    result.write_rejects(rejects_path)
    report = quality_report(result)
    report["rejects_file"] = str(rejects_path)
    if plot is not None and len(result.calls):
        from callback_timing.plots import answer_heatmap

        report["plot"] = str(answer_heatmap(result.calls, plot, title=history.name))
    if as_json:
        console.print_json(json.dumps(report, default=str))
    else:
        console.print(render_report(report))
        console.print(f"rejected rows with reasons: {rejects_path}")
        if "plot" in report:
            console.print(f"answer rate by weekday x local hour: {report['plot']}")
    return result, report


@app.command("validate")
def validate_cmd(
    history: Annotated[Path, typer.Option(help=HISTORY_HELP + ".")],
    map_: MapOption = None,
    assume_tz: AssumeTzOption = None,
    time_format: TimeFormatOption = None,
    default_tz: DefaultTzOption = "UTC",
    rejects: Annotated[
        Path | None, typer.Option(help="Where to write rejected rows (default: beside input).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    plot: Annotated[
        Path | None,
        typer.Option(help="Also write a PNG heatmap of answer rate by weekday x local hour."),
    ] = None,
) -> None:
    """Print a data-quality report: rows, rejects by reason, duplicates, coverage."""
    _run_validate(history, map_, assume_tz, rejects, as_json, default_tz, plot, time_format)


def _account(history: str | Path, rejects: Path | None):
    """``on_loaded`` of ``train`` and ``tune``: one line of what the history held, and its
    rejected rows written to ``rejects`` (default: beside a local history file)."""
    def told(result) -> None:
        if rejects is not None:
            where: Path | None = rejects
        else:
            local = Path(str(history))
            where = (_sidecar(local, "rejects", ".csv")
                     if "://" not in str(history) and local.is_file() else None)
        line = (f"history: {result.n_input_rows:,} rows, {result.n_clean:,} clean, "
                f"{result.n_rejected_rows:,} rejected, {result.n_duplicates:,} exact "
                "duplicates")
        if result.n_rejected_rows and where is not None:
            result.write_rejects(where)
            line += f" (rejected rows with reasons: {where})"
        elif result.n_rejected_rows:
            line += " (--rejects FILE writes them with their reasons)"
        console.print(line, highlight=False, soft_wrap=True)
    return told


RejectsOption = Annotated[Path | None, typer.Option(
    help="CSV file for the rejected rows with row number, column and reason (default: "
         "beside the history, as HISTORY.rejects.csv).")]


def _print_training(report) -> None:
    from rich.table import Table

    from callback_timing.training import metrics_table

    ev = report.evaluation
    table = Table(title="Test slice (the latest 20% of the calls)", title_justify="left")
    table.add_column("scorer")
    for col in ("ROC AUC", "PR AUC", "log loss", "Brier", "ECE"):
        table.add_column(col, justify="right")
    for name, row in metrics_table(ev).iterrows():
        style = "bold" if name == "model" else None
        table.add_row(str(name), *(f"{v:.4f}" for v in row.to_numpy()), style=style)
    console.print(table)
    t = ev.truth
    if "ceiling_auc" in t:
        console.print(
            f"truth ceiling AUC {t['ceiling_auc']:.4f}: the model reaches "
            f"{t['auc_vs_ceiling']:.1%} of it"
        )
    if "bound_auc" in t:
        console.print(
            f"information bound AUC {t['bound_auc']:.4f} ({t['bound_vs_ceiling']:.1%} of the "
            "ceiling): a predictor told every habit except each contact's reachability, learnt "
            "from its earlier calls; no model beats it. The model reaches "
            f"{t['auc_vs_bound']:.1%} of it"
        )
    if "regret_model" in t:
        console.print(
            f"slot choice over {t['n_requests']:,} test requests (48 h, 08:00-21:00 local): "
            f"true p of the model's slot {t['p_true_model']:.3f}, best {t['p_true_best']:.3f}, "
            f"weekday x hour rate {t['p_true_weekday_hour_rate']:.3f}, "
            f"random {t['p_true_random_slot']:.3f}; regret {t['regret_model']:.3f}"
        )
    console.print(f"model bundle: {report.bundle_dir}  (version {ev.bundle.version})")
    if report.model_version is not None:
        state = "champion" if report.promoted else "challenger"
        console.print(
            f"MLflow: run {report.run_id}, registered version {report.model_version} "
            f"-> {state}: {report.decision}"
        )
    if report.bentoml_tag:
        console.print(f"BentoML model store: {report.bentoml_tag}")


ForgetDbOption = Annotated[str, typer.Option(
    help="Outcome store whose forget list (erased contacts) is honoured: their calls are "
         "left out. Skipped when that SQLite file does not exist.")]


@app.command("train")
def train_cmd(
    history: Annotated[str, typer.Option(
        help=HISTORY_HELP + "; with --engine dask partitioned Parquet: "
             "a folder, glob or fsspec URL (s3://, gs://, abfs://, ...).")],
    out: Annotated[
        Path, typer.Option(help="Folder for the model bundle.")
    ] = config.model_dir(),
    params: Annotated[
        str | None,
        typer.Option(help="XGBoost parameters: 'best' (from `tune`) or a JSON file."),
    ] = None,
    map_: MapOption = None,
    assume_tz: AssumeTzOption = None,
    time_format: TimeFormatOption = None,
    default_tz: DefaultTzOption = "UTC",
    track: Annotated[
        bool, typer.Option(help="Log the run to MLflow and register the model.")
    ] = True,
    bentoml: Annotated[bool, typer.Option(help="Save the bundle to the BentoML store.")] = True,
    engine: Annotated[
        Engine, typer.Option(help="pandas: one process; dask: features and XGBoost on a Dask "
                                  "cluster (partitioned Parquet input).")
    ] = Engine.pandas,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Dask scheduler address (tcp://host:8786); default: start a "
                          "LocalCluster on this machine."),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes of the LocalCluster (no --scheduler).")
    ] = 2,
    forget_db: ForgetDbOption = config.db_path(),
    rejects: RejectsOption = None,
) -> None:
    """Build features, train and calibrate the answer model, evaluate it on a later period."""
    from callback_timing.data import parse_mapping
    from callback_timing.workflow import resolve_params, train

    if scheduler and engine is not Engine.dask:
        raise ConfigError("--scheduler needs --engine dask")
    if "://" not in history:
        check_outputs({"--history": Path(history)}, {"--rejects": rejects})
    forget = _forget_list(forget_db)
    cutoff, months = _retention()
    with _progress(f"training ({engine.value})") as progress:
        report = train(
            history, out, mapping=parse_mapping(map_ or []), assume_tz=assume_tz,
            default_tz=default_tz, params=resolve_params(params), track=track,
            bentoml=bentoml, progress=progress, engine=engine.value, scheduler=scheduler,
            workers=workers, forget=forget, older_than=cutoff, time_format=time_format,
            on_loaded=_account(history, rejects),
        )
    if report.forgotten_calls:
        console.print(f"left out {report.forgotten_calls:,} calls of erased contacts (the "
                      f"forget list of {forget_db})", highlight=False, soft_wrap=True)
    if report.expired_calls:
        console.print(f"left out {report.expired_calls:,} calls older than the retention of "
                      f"{months} months (retention.call_times_months)", highlight=False,
                      soft_wrap=True)
    _print_training(report)


def _retention():
    """The retention's cutoff for training (``None`` when ``CALLBACK_TIMING_PURGE=0``:
    replaying old data) and its months."""
    from callback_timing.policy_config import load_policy_config

    cfg = load_policy_config()
    return cfg.active_cutoff(), cfg.retention_call_months


def _forget_list(db: str) -> set[str]:
    """The forget list of the outcome store ``db`` (empty when the default store does not
    exist; another missing file is a mistake)."""
    if "://" not in db and not Path(db).is_file():
        if Path(db) != Path(config.db_path()):
            raise ConfigError(f"--forget-db: no outcome store at {db}")
        console.print(f"no outcome store at {db}: no erased contacts to leave out (a server "
                      "on another store: --forget-db PATH)", highlight=False, soft_wrap=True)
        return set()
    from callback_timing.store import OutcomeStore

    store = OutcomeStore(db)
    try:
        return store.forgotten_hashes()
    finally:
        store.close()


@app.command("tune")
def tune_cmd(
    history: Annotated[Path, typer.Option(help=HISTORY_HELP + ".")],
    trials: Annotated[int, typer.Option(min=1, help="Number of Optuna trials.")] = 30,
    timeout: Annotated[
        float | None,
        typer.Option(min=0, help="Start no new trial after this many seconds."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the TPE sampler.")] = 0,
    map_: MapOption = None,
    assume_tz: AssumeTzOption = None,
    time_format: TimeFormatOption = None,
    default_tz: DefaultTzOption = "UTC",
    track: Annotated[
        bool, typer.Option(help="Log the search (one nested run per trial) to MLflow.")
    ] = True,
    forget_db: ForgetDbOption = config.db_path(),
    rejects: RejectsOption = None,
) -> None:
    """Search XGBoost parameters on the train/validation periods; save the best for `train`."""
    from callback_timing.data import load_history, parse_mapping
    from callback_timing.tuning import tune
    from callback_timing.workflow import leave_out_expired, leave_out_forgotten

    check_outputs({"--history": history}, {"--rejects": rejects})
    loaded = load_history(history, mapping=parse_mapping(map_ or []), assume_tz=assume_tz,
                          default_tz=default_tz, time_format=time_format)
    _account(history, rejects)(loaded)
    leave_out_forgotten(loaded, _forget_list(forget_db))
    leave_out_expired(loaded, _retention()[0])
    with _progress(f"tuning ({trials} trials)") as progress:
        result = tune(loaded.calls, trials, timeout=timeout, seed=seed, track=track,
                      progress=progress, tags={"history": history.name})
    change = result.best_value / result.default_value - 1
    winner = "the defaults" if result.best_trial == 0 else f"trial {result.best_trial}"
    lines = [
        f"best of {result.n_trials} trials ({result.n_pruned} pruned): {winner}",
        f"validation log loss {result.best_value:.5f} vs {result.default_value:.5f} with the "
        f"defaults (trial 0): {change:+.2%}",
        f"parameters: {json.dumps(result.best_params)}",
        f"saved to {result.params_path} (`callback-timing train --params best` uses them)",
    ]
    if result.parent_run_id:
        lines.append(f"MLflow: parent run {result.parent_run_id}, one nested run per trial")
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False)


DEMO_MIN_CONTACT_DAYS = 5000
"""The demo's smallest world: ~0.1 simulated call per contact and day, 300 clean calls to train."""
DEMO_MIN_DAYS = 3
"""Fewer days do not split into train, validation and test periods."""


@app.command("demo")
def demo_cmd(
    workdir: Annotated[Path, typer.Option(help="Folder for the generated files.")] = (
        config.data_dir()
    ),
    contacts: Annotated[int, typer.Option(
        min=1, help="Synthetic contacts (--contacts x --days at least "
                    f"{DEMO_MIN_CONTACT_DAYS:,}: about 0.1 call per contact and day, and "
                    "training needs 300 clean calls).")] = 2000,
    days: Annotated[int, typer.Option(
        min=DEMO_MIN_DAYS, help="Simulated days (train, validation and test periods).")] = 120,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    model: Annotated[Path, typer.Option(help="Folder for the model bundle.")] = (
        config.model_dir()
    ),
    serve: Annotated[bool, typer.Option(help="End with the ranking server on localhost.")
                     ] = True,
    port: Annotated[int, typer.Option(min=1, max=65535, help="The server's port.")] = 3000,
    traffic_days: Annotated[int, typer.Option(
        min=0, help="Days of simulated dialer traffic sent through the server's API for the "
                    "dashboard (only into an empty outcome store; 0: none).")] = 30,
    traffic_per_day: Annotated[int, typer.Option(
        min=1, help="Callback requests per day of that traffic.")] = 80,
) -> None:
    """The main job on embedded defaults: simulate, train, replay a campaign, serve.

    Simulate a call history, validate it, train on it, replay a callback campaign with the
    traditional desk, the rules, the model and the oracle, serve the model on localhost, and
    send it a month of simulated dialer traffic so the ROI dashboard has figures (Ctrl-C stops
    the server)."""
    from callback_timing.cli_policy import evaluate_cmd
    from callback_timing.cli_serve import check_port
    from callback_timing.simulation import ground_truth_paths, recent_start
    from callback_timing.workflow import check_model_folder, train

    steps = 5 if serve else 4
    if contacts * days < DEMO_MIN_CONTACT_DAYS:  # found before the work, not at training
        raise ConfigError(
            f"--contacts x --days: {contacts:,} x {days:,} = {contacts * days:,} contact-days "
            f"simulate ~{contacts * days // 10:,} calls, too few to train on: give at least "
            f"{DEMO_MIN_CONTACT_DAYS:,} (e.g. --contacts {-(-DEMO_MIN_CONTACT_DAYS // days):,} "
            f"--days {days:,})")
    check_model_folder(model)  # before the work, like the port
    history = workdir / "history.csv"
    world = ground_truth_paths(history)[1]  # what simulate writes beside a history
    if history.exists() and not world.exists():
        raise ConfigError(f"{history} is not a simulated history (no {world.name} beside it) "
                          "and the demo would overwrite it: give --workdir another folder")
    if serve:  # before the work: a busy port would only show at the end
        check_port("127.0.0.1", port)
    console.rule(f"1/{steps} simulate a call history")
    # dated to end before today (the traffic's retries, up to 48 h after its last day, too),
    # so the store's retention (12 months) keeps the demo's data whenever it runs
    start = recent_start(days + (traffic_days + 3 if serve else 7))
    path = _run_simulate(contacts, days, seed, history, start, 0.03)
    console.rule(f"2/{steps} validate it")
    _run_validate(path, None, None, None, False, plot=_sidecar(path, "heatmap", ".png"))
    console.rule(f"3/{steps} train the answer model")
    with _progress("training") as progress:
        report = train(path, model, progress=progress)
    _print_training(report)
    console.rule(f"4/{steps} replay a callback campaign: desk vs rules vs model vs oracle")
    evaluate_cmd(history=path, model=model, requests=400, seed=seed,
                 plot=_sidecar(path, "campaign", ".png"))
    console.print(
        "\nnext: [bold].venv/bin/callback-timing --help[/] lists every command; "
        "[bold].venv/bin/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db[/] shows the run"
    )
    if serve:
        console.rule(f"5/{steps} serve the model on localhost")
        _serve_with_traffic(path, model, port, traffic_days, traffic_per_day, seed)


def _serve_with_traffic(history: Path, model: Path, port: int, days: int, per_day: int,
                        seed: int) -> None:
    """Start the server, send it ``days`` of simulated dialer traffic if its store is empty,
    and serve until Ctrl-C."""
    import signal
    import subprocess
    import time
    import urllib.request

    import pandas as pd

    from callback_timing.cli_serve import base_url, prepare_serve
    from callback_timing.simulation import load_ground_truth
    from callback_timing.store import OutcomeStore
    from callback_timing.traffic import http_poster, seed_traffic

    db = config.db_path()
    store = OutcomeStore(db)
    empty = store.decision_count() == 0
    store.close()
    args, env = prepare_serve(model, port, "127.0.0.1", db, 0.10, None, None, 1, 5.0)
    server = subprocess.Popen(args, env=env)
    try:
        base = base_url("127.0.0.1", port)
        if days and empty:
            deadline = time.monotonic() + 120
            while server.poll() is None and time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"{base}/readyz", timeout=2) as r:  # noqa: S310
                        if r.status == 200:
                            break
                except OSError:
                    time.sleep(0.5)
            _, world = load_ground_truth(history)
            called = pd.read_csv(history, usecols=["called_at"])["called_at"]
            start = pd.to_datetime(called, utc=True, errors="coerce", format="mixed").max()
            if world is not None and server.poll() is None:
                contacts = sorted(world.contacts["contact_id"].astype(str))
                with _progress("dialer traffic (days)") as progress:
                    done = [0]

                    def step(n: int) -> None:
                        done[0] += n
                        progress(done[0], days)

                    counts = seed_traffic(http_poster(base), world, contacts,
                                          start.normalize() + pd.Timedelta(days=1), days,
                                          per_day, seed, progress=step)
                console.print(f"sent {counts['requests']} callback requests "
                              f"({counts['rankings']} rankings, {counts['calls']} calls) "
                              f"through the API: the dashboard has figures at "
                              f"{base}/dashboard", highlight=False, soft_wrap=True)
                console.print(f"close the learning loop on it (in another shell): "
                              f"[bold].venv/bin/callback-timing retrain --history {history} "
                              f"--model {model} --server {base}[/]", highlight=False,
                              soft_wrap=True)
        elif days:
            console.print("the outcome store already holds rankings: no simulated traffic "
                          f"sent; the dashboard shows them at {base}/dashboard",
                          highlight=False, soft_wrap=True)
        server.wait()
    except KeyboardInterrupt:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        raise
    finally:
        if server.poll() is None:
            server.terminate()


def _register_policy_commands() -> None:
    from callback_timing.cli_loop import retrain_cmd
    from callback_timing.cli_policy import evaluate_cmd, rank_cmd, schedule_cmd
    from callback_timing.cli_privacy import export_cmd, purge_cmd, register_cmd
    from callback_timing.cli_serve import roi_cmd, serve_cmd

    app.command("rank")(rank_cmd)
    app.command("serve")(serve_cmd)
    app.command("roi")(roi_cmd)
    app.command("purge")(purge_cmd)
    app.command("register")(register_cmd)
    app.command("export")(export_cmd)
    app.command("retrain")(retrain_cmd)
    app.command("schedule")(schedule_cmd)
    app.command("evaluate")(evaluate_cmd)


_register_policy_commands()


def reflow_help(doc: str) -> str:
    """A command's docstring as ``--help`` prints it: each paragraph one line, for the terminal
    to wrap (Typer keeps the docstring's line breaks), list items (``- ``) on lines of their
    own, and reST's double backquotes single."""
    paragraphs = []
    for paragraph in inspect.cleandoc(doc).split("\n\n"):
        lines: list[str] = []
        for line in paragraph.splitlines():
            if lines and not line.lstrip().startswith(("- ", "* ")):
                lines[-1] += " " + line.strip()
            else:
                lines.append(line.rstrip())
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs).replace("``", "`")


def _reflow_command_help() -> None:
    for info in app.registered_commands:
        doc = info.help or (info.callback.__doc__ if info.callback else None)
        if doc:
            info.help = reflow_help(doc)


_reflow_command_help()


def main() -> None:
    """Console-script entry point: user mistakes become one line on stderr and exit code 1;
    the process ends through :func:`~callback_timing.exits.leave`."""
    leave(_run())


def _run() -> int:
    """Run the command line; its exit code."""
    try:
        app()  # Typer ends with SystemExit
    except SystemExit as exc:
        return exit_code(exc.code)
    except CallbackTimingError as exc:
        # one line whatever the terminal's width (a long path must not wrap the message)
        err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 1
    except OSError as exc:  # unreadable/unwritable paths: the user's to fix, not a crash
        where = f": {exc.filename}" if exc.filename is not None else ""
        what = exc.strerror or str(exc)
        if isinstance(exc, FileExistsError) and exc.filename and Path(exc.filename).is_file():
            what = "a file is there where a folder is needed"  # e.g. --out FILE/name.csv
        err_console.print(f"[red]error:[/] {what}{where}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    main()
