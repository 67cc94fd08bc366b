"""The learning loop's command: ``retrain`` (see :mod:`callback_timing.retrain`)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path  # noqa: TC003 - Typer reads the annotations
from typing import Annotated

import typer

from callback_timing import config


def retrain_cmd(
    db: Annotated[str, typer.Option(help="Outcome store: a SQLite file or a SQLAlchemy URL.")
                  ] = config.db_path(),
    history: Annotated[Path | None, typer.Option(
        help="The original call history (.csv or .parquet) to merge with the store's calls."
    )] = None,
    model: Annotated[Path, typer.Option(
        help="The served model folder: replaced when the challenger is promoted (the "
             "challenger stays in <folder>.challenger).")] = config.model_dir(),
    server: Annotated[str | None, typer.Option(
        help="Base URL of a running server (http://127.0.0.1:3000) to tell about a "
             "promotion (POST /admin/reload with the folder; it must see that path).")] = None,
    params: Annotated[str | None, typer.Option(
        help="XGBoost parameters: 'best' (from `tune`) or a JSON file.")] = None,
    min_new_calls: Annotated[int | None, typer.Option(
        min=0, help="Train only when the store holds this many calls after the served "
                    "model's data (default: retraining.min_new_calls of the policy file).")
    ] = None,
    rules: Annotated[Path | None, typer.Option(
        help="Policy file (calling rules, retention, retraining thresholds).")] = None,
    rules_table: Annotated[Path | None, typer.Option(
        help="The server's rule table (serve --rules-table), for the off-policy replay.")
    ] = None,
    map_: Annotated[list[str] | None, typer.Option(
        "--map", help="Rename a column of the history: new=old (repeatable).")] = None,
    assume_tz: Annotated[str | None, typer.Option(
        help="IANA zone for history timestamps without offset.")] = None,
    time_format: Annotated[str | None, typer.Option(
        help="strftime layout of history timestamps that are not ISO-8601, e.g. "
             "'%d.%m.%Y %H:%M'.")] = None,
    default_tz: Annotated[str, typer.Option(
        help="IANA zone for rows with no timezone, country or valid phone.")] = "UTC",
    bentoml: Annotated[bool, typer.Option(
        help="Save the challenger to the BentoML store.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")
                       ] = False,
) -> None:
    """One turn of the learning loop: retrain on the served traffic, promote if not worse.

    Export the outcome store, merge it with the history, train a challenger, compare it with the
    champion on the same recent slice (log loss, calibration) and off-policy on the logged
    traffic, promote it only when it is not worse, and tell the server.

    One log line and one MLflow run per decision; exit code 0 also when it skipped or kept the
    champion, 1 when a promoted model did not reach the server. Schedule it with cron or a
    systemd timer (see the README)."""
    from callback_timing.cli import _progress, console
    from callback_timing.data import parse_mapping
    from callback_timing.retrain import retrain
    from callback_timing.workflow import resolve_params

    with _progress("retraining") as progress:
        report = retrain(db, history=history, model_dir=model, server=server,
                         api_key=os.environ.get("CALLBACK_TIMING_API_KEY") or None,
                         params=resolve_params(params), mapping=parse_mapping(map_ or []),
                         assume_tz=assume_tz, default_tz=default_tz, rules_path=rules,
                         time_format=time_format,
                         rules_table_path=rules_table,
                         min_new_calls=min_new_calls, bentoml=bentoml, progress=progress)
    if as_json:
        console.print_json(json.dumps({**dataclasses.asdict(report), "line": report.line()},
                                      default=str))
    else:
        console.print(report.line(), highlight=False, soft_wrap=True)
    if report.unreached:
        raise typer.Exit(1)

