"""Commands of the ``callback-timing`` CLI that use the ranking policy: ``rank``, ``schedule``,
``evaluate``.

Registered on the Typer app by :mod:`callback_timing.cli`; kept apart so each module stays
small. I/O lives here; the work is in :mod:`callback_timing.policy`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from callback_timing import config
from callback_timing.schema import require_file

RulesOption = Annotated[
    Path | None,
    typer.Option("--rules", help="Calling rules YAML overriding the defaults (policy.yaml)."),
]
RulesTableOption = Annotated[
    Path | None,
    typer.Option("--rules-table", help="Rule-based fallback table YAML (default: rules.yaml)."),
]


def _read_requests(path: Path) -> list[tuple[int, dict | str]]:
    """``(line number, request)`` per non-empty JSON-lines line; a string says what is wrong."""
    parsed: list[tuple[int, dict | str]] = []
    for n, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError:
            parsed.append((n, "not UTF-8 text"))
            continue
        if not line.strip():
            continue
        try:
            value = json.loads(line)
            parsed.append((n, value if isinstance(value, dict) else "expected a JSON object"))
        except json.JSONDecodeError as exc:
            parsed.append((n, f"not valid JSON ({exc.msg})"))
    return parsed


def rank_cmd(
    requests: Annotated[Path, typer.Option(help="JSON-lines file of /rank requests.")],
    out: Annotated[Path, typer.Option(help="JSON-lines file for the responses.")],
    model: Annotated[Path, typer.Option(help="Model bundle folder.")] = config.model_dir(),
    rules: RulesOption = None,
    rules_table: RulesTableOption = None,
    batch: Annotated[int, typer.Option(min=1, help="Requests ranked together.")] = 500,
) -> None:
    """Offline batch ranking: JSON-lines /rank requests in, JSON-lines responses out.

    A request the policy cannot use is answered by {"line": N, "error": "field: problem"} in
    its place, so the output keeps the input's order; the count is printed.
    """
    from callback_timing.cli import _progress, check_outputs, console, err_console
    from callback_timing.policy import load_policy

    check_outputs({"--requests": requests}, {"--out": out})
    require_file(requests, "--requests")  # before loading the model
    policy, note = load_policy(model, rules, rules_table)
    err_console.print(note, highlight=False)
    parsed = _read_requests(requests)
    results: list[dict] = []
    with _progress("ranking") as progress:
        for start in range(0, len(parsed), batch):
            chunk = parsed[start:start + batch]
            answers = iter(policy.rank([req for _, req in chunk if isinstance(req, dict)],
                                       errors="return"))
            for n, req in chunk:
                answer = next(answers) if isinstance(req, dict) else {"error": req}
                results.append({"line": n, "error": answer["error"]} if "error" in answer
                               else answer)
            progress(min(start + batch, len(parsed)), len(parsed))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for item in results:
            fh.write(json.dumps(item, ensure_ascii=False) + "\n")
    bad = sum("error" in r for r in results)
    ranked = len(results) - bad
    console.print(f"ranked {ranked:,} request{'' if ranked == 1 else 's'} to {out}; "
                  f"{bad:,} rejected"
                  + (" (see their 'error' lines)" if bad else ""), highlight=False)


def evaluate_cmd(
    history: Annotated[Path, typer.Option(help="Simulated history (its world file beside it).")],
    model: Annotated[Path, typer.Option(help="Model bundle folder.")] = config.model_dir(),
    requests: Annotated[int, typer.Option(
        min=1, help="Callback requests to replay (the first ones after the cut).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the simulated call outcomes.")] = 0,
    cost_per_attempt: Annotated[
        float, typer.Option(min=0, help="Cost of one call attempt (any currency).")
    ] = 1.0,
    plot: Annotated[Path | None, typer.Option(help="Write the KPI bar chart here (.png).")] = None,
    track: Annotated[bool, typer.Option(help="Log the campaign to MLflow.")] = True,
) -> None:
    """Replay callback requests in the synthetic world: desk vs rules vs model vs oracle."""
    from rich.table import Table

    from callback_timing.cli import _progress, check_outputs, console, err_console
    from callback_timing.workflow import evaluate_campaign

    check_outputs({"--history": history}, {"--plot": plot})

    with _progress("replaying the campaign") as progress:
        report = evaluate_campaign(history, model, requests=requests, seed=seed,
                                   cost_per_attempt=cost_per_attempt, plot=plot, track=track,
                                   progress=progress)
    err_console.print(report.model_note, highlight=False)
    kpis = report.result.kpis
    table = Table(title=f"Campaign from {report.start[:10]} ({int(kpis.iloc[0]['requests'])} "
                  "requests, <= 3 attempts within 48 h)", title_justify="left")
    columns = {"1st try": ("first_attempt_rate", "{:.1%}"),
               "reached": ("reached_rate", "{:.1%}"), "tries": ("attempts", "{:.2f}"),
               "hours": ("hours_to_contact", "{:.1f}"),
               "cost": ("cost_per_reached", "{:.2f}"), "value": ("value", "{:.3f}"),
               "illegal": ("illegal_calls", "{:.0f}")}
    table.add_column("policy", no_wrap=True)
    for name in columns:
        table.add_column(name, justify="right")
    for name, row in kpis.iterrows():
        cells = ("–" if row[col] != row[col] else fmt.format(row[col])  # NaN: nobody reached
                 for col, fmt in columns.values())
        table.add_row(str(name).replace(" (cold start)", ", cold"), *cells,
                      style="bold" if name == "model" else None)
    console.print(table)
    console.print("1st try: first attempt answered; reached: within 48 h; tries: attempts per "
                  "request; hours: to contact; cost: per reached callback; value: urgency-"
                  "weighted reach; illegal: calls outside legal hours; cold: contacts with no "
                  "earlier call", highlight=False)
    shares = lift_line(kpis)
    if shares:
        console.print(shares, highlight=False)
    if report.figure:
        console.print(f"plot: {report.figure}", highlight=False)
    if report.run_id:
        console.print(f"MLflow: run {report.run_id}", highlight=False)


def lift_line(kpis) -> str | None:
    """The campaign's "share of the oracle's value lift" line for the model and the rules;
    n/a when the oracle did not beat the desk (too few requests to measure a lift)."""
    from callback_timing.campaign import value_lift_captured

    if not {"desk", "oracle"} <= set(kpis.index):
        return None
    head = "share of the oracle's value lift over the desk: "
    if kpis.at["oracle", "value"] <= kpis.at["desk", "value"]:
        return (head + f"n/a (the oracle did not beat the desk on these "
                f"{int(kpis.iloc[0]['requests'])} requests: too few to measure; give more "
                "--requests)")
    shares = [f"{p} {value_lift_captured(kpis, p):.0%}" for p in ("model", "rules")
              if p in kpis.index]
    return head + ", ".join(shares) if shares else None


def schedule_cmd(
    requests: Annotated[Path, typer.Option(help="JSON-lines file of /rank requests.")],
    out: Annotated[Path, typer.Option(help="CSV file for the assigned call times.")],
    capacity: Annotated[int, typer.Option(min=0, help="Calls per 15-minute slot.")] = 20,
    capacity_file: Annotated[
        Path | None,
        typer.Option(help="CSV with columns at (slot start) and capacity; other slots: 0."),
    ] = None,
    model: Annotated[Path, typer.Option(help="Model bundle folder.")] = config.model_dir(),
    rules: RulesOption = None,
    rules_table: RulesTableOption = None,
) -> None:
    """Assign call times to many requests under agent capacity (maximum expected value)."""
    import pandas as pd

    from callback_timing.cli import check_outputs, console, err_console
    from callback_timing.isotime import parse_iso
    from callback_timing.policy import ModelUnavailable, RankRequestError, load_policy
    from callback_timing.schedule import assign, compare
    from callback_timing.schema import ConfigError

    check_outputs({"--requests": requests, "--capacity-file": capacity_file}, {"--out": out})
    require_file(requests, "--requests")
    if capacity_file is not None:
        require_file(capacity_file, "--capacity-file")
    seats: int | pd.Series = capacity
    if capacity_file is not None:  # read before the work: a mistake in it is told at once
        try:
            table = pd.read_csv(capacity_file, dtype=str, keep_default_na=False)
        except (ValueError, UnicodeDecodeError) as exc:  # ParserError, EmptyDataError too
            raise ConfigError(f"--capacity-file: cannot read {capacity_file} as CSV "
                              f"({type(exc).__name__})") from None
        if not {"at", "capacity"} <= set(table.columns):
            raise ConfigError(f"--capacity-file: {capacity_file} needs columns 'at' and "
                              "'capacity'")
        number = pd.to_numeric(table["capacity"], errors="coerce")
        if number.isna().any():
            row = int(number.isna().to_numpy().argmax()) + 2  # its CSV line (header = 1)
            raise ConfigError(f"--capacity-file: line {row}: capacity is not a number: "
                              f"{table['capacity'].iloc[row - 2][:20]!r}")
        starts = []
        for line, text in enumerate(table["at"].astype(str), start=2):
            try:  # ISO 8601 with its offset, as the README asks: never a guess
                start = parse_iso(text)
            except ValueError:
                start = None
            if start is None or start.tzinfo is None:
                raise ConfigError(f"--capacity-file: line {line}: at must be a slot start with "
                                  f"its offset (e.g. 2026-06-01T10:00:00+02:00), not "
                                  f"{text[:40]!r}")
            starts.append(start.tz_convert("UTC"))
        seats = pd.Series(number.to_numpy(), index=pd.DatetimeIndex(starts))
    policy, note = load_policy(model, rules, rules_table)
    err_console.print(note, highlight=False)
    good, bad = [], []
    for n, req in _read_requests(requests):
        try:
            if isinstance(req, str):
                raise RankRequestError(req)
            policy.check(req)
            good.append(req)
        except (RankRequestError, ModelUnavailable) as exc:
            bad.append(f"line {n}: {exc}")
    for line in bad[:5]:
        err_console.print(f"skipped {line}", highlight=False)
    slots = policy.slot_table(good)
    chosen = assign(slots, seats)
    summary = compare(slots, seats, best=chosen)
    out.parent.mkdir(parents=True, exist_ok=True)
    # ISO 8601 with Z, as the API answers (not pandas' "2026-06-01 12:00:00+00:00")
    chosen.assign(at=chosen["at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(out, index=False)
    opt, greedy = summary["optimal"], summary["greedy"]
    console.print(
        f"{len(chosen):,} requests ({len(bad):,} skipped): {opt['assigned']:,} assigned to "
        f"{out}\nexpected answers {opt['expected_answers']:.1f} (per-contact greedy "
        f"{greedy['expected_answers']:.1f}); urgency-weighted value {opt['value']:.1f} "
        f"(greedy {greedy['value']:.1f})", highlight=False)
