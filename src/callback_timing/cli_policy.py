"""Commands of the ``callback-timing`` CLI that use the ranking policy: ``rank``.

Registered on the Typer app by :mod:`callback_timing.cli`; kept apart so each module stays
small. I/O lives here; the work is in :mod:`callback_timing.policy`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from callback_timing import config

RulesOption = Annotated[
    Path | None,
    typer.Option("--rules", help="Calling rules YAML overriding the defaults (policy.yaml)."),
]
RulesTableOption = Annotated[
    Path | None,
    typer.Option("--rules-table", help="Rule-based fallback table YAML (default: rules.yaml)."),
]


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
    from callback_timing.cli import _progress, console, err_console
    from callback_timing.policy import ModelUnavailable, RankRequestError, load_policy

    policy, note = load_policy(model, rules, rules_table)
    err_console.print(note, highlight=False)
    lines = requests.read_text("utf-8").splitlines()
    parsed: list[tuple[int, dict | str]] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
            parsed.append((n, value if isinstance(value, dict) else "expected a JSON object"))
        except json.JSONDecodeError as exc:
            parsed.append((n, f"not valid JSON ({exc.msg})"))
    results: list[dict] = []
    with _progress("ranking") as progress:
        for start in range(0, len(parsed), batch):
            chunk = parsed[start:start + batch]
            good = []
            for n, req in chunk:
                if isinstance(req, str):
                    results.append({"line": n, "error": req})
                    continue
                try:
                    policy.normalise(req)
                    good.append((n, req))
                    results.append({"line": n})
                except RankRequestError as exc:
                    results.append({"line": n, "error": str(exc)})
            try:
                answers = iter(policy.rank([req for _, req in good]))
            except ModelUnavailable as exc:
                answers = None
                for item in results[start:]:
                    item.setdefault("error", str(exc))
            for item in results[start:]:
                if "error" not in item and answers is not None:
                    item.clear()
                    item.update(next(answers))
            progress(min(start + batch, len(parsed)), len(parsed))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for item in results:
            fh.write(json.dumps(item, ensure_ascii=False) + "\n")
    bad = sum("error" in r for r in results)
    console.print(f"ranked {len(results) - bad:,} requests to {out}; {bad:,} rejected"
                  + (" (see their 'error' lines)" if bad else ""), highlight=False)
