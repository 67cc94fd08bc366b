"""Data-protection commands: ``purge`` (storage limitation), ``register`` (the record of
processing) and ``export`` (the store as a call history, within retention and erasures)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from callback_timing import config
from callback_timing.schema import ConfigError


def parse_instant(text: str | None, option: str) -> pd.Timestamp | None:
    """An instant given on the command line: ISO 8601 with an offset or ``Z``, or a date
    (midnight UTC); ``ConfigError`` naming ``option`` otherwise."""
    if text is None:
        return None
    from callback_timing.isotime import parse_iso

    try:
        at = parse_iso(text)
    except ValueError:
        raise ConfigError(f"{option}: not a timestamp: {text[:40]!r}") from None
    if at.tz is None:
        if at != at.normalize() or "T" in text or ":" in text:
            raise ConfigError(f"{option}: give the offset too (e.g. {text.strip()}Z)")
        return at.tz_localize("UTC")
    return at.tz_convert("UTC")


def purge_cmd(
    db: Annotated[str, typer.Option(help="Outcome store: a SQLite file or a SQLAlchemy URL.")
                  ] = config.db_path(),
    now: Annotated[str | None, typer.Option(
        help="Purge as of this instant (ISO 8601 with offset, or a date); default: now.")
                   ] = None,
    rules: Annotated[Path | None, typer.Option(
        help="Policy file whose retention section applies (default: the packaged one).")
                     ] = None,
) -> None:
    """Delete call-level data past its retention from the outcome store.

    Calls and rankings older than retention.call_times_months (12 by default) are deleted;
    anonymised aggregates are kept (calls and answers per month, industry, country, local
    weekday and hour)."""
    from callback_timing.cli import console
    from callback_timing.policy_config import load_policy_config
    from callback_timing.store import open_store

    cfg = load_policy_config(rules)
    cutoff = cfg.retention_cutoff(parse_instant(now, "--now"))
    store = open_store(db)
    try:
        done = store.purge(cutoff)
        if done["outcomes"] or done["decisions"]:  # a server on this store forgets them now
            from callback_timing.online import Beacon, beacon_path

            Beacon(beacon_path(store, "privacy")).ring()
    finally:
        store.close()
    console.print(f"purged {done['outcomes']:,} calls and {done['decisions']:,} rankings "
                  f"older than {cutoff:%Y-%m-%d %H:%M:%S} UTC "
                  f"({cfg.retention_call_months} months); their counts are kept in the "
                  "anonymised aggregates (answer_patterns)", highlight=False, soft_wrap=True)


def register_cmd(
    out: Annotated[Path | None, typer.Option(
        help="Write it to this file (default: print it).")] = None,
    rules: Annotated[Path | None, typer.Option(
        help="Policy file whose retention section applies (default: the packaged one).")
                     ] = None,
) -> None:
    """The record of processing (GDPR Art. 30) of this configuration.

    What the service keeps, why, for how long and who can reach it (docs/processing-register.md
    is this with the packaged policy)."""
    from callback_timing.cli import console
    from callback_timing.policy_config import load_policy_config
    from callback_timing.privacy import processing_register

    text = processing_register(load_policy_config(rules))
    if out is None:
        typer.echo(text, nl=False)
        return
    from callback_timing.cli import check_outputs

    check_outputs({}, {"--out": out})
    if out.is_file() and out.read_bytes()[:16] == b"SQLite format 3\x00":
        raise ConfigError(f"--out: {out} is a database (an outcome store?), which would be "
                          "overwritten: give another file")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    console.print(f"wrote {out}", highlight=False)


def export_cmd(
    out: Annotated[Path, typer.Option(help="The call history to write (.csv or .parquet).")],
    db: Annotated[str, typer.Option(help="Outcome store: a SQLite file or a SQLAlchemy URL.")
                  ] = config.db_path(),
    rules: Annotated[Path | None, typer.Option(
        help="Policy file whose retention section applies (default: the packaged one).")
                     ] = None,
) -> None:
    """Export the outcome store as a call history in the contract's schema, for retraining.

    Each call carries the arm and propensity of its request from the decision log; calls past
    the retention and those of erased contacts are left out."""
    from callback_timing.cli import check_outputs, console
    from callback_timing.contacts import load_keys
    from callback_timing.export import export_history
    from callback_timing.policy_config import load_policy_config
    from callback_timing.store import open_store, store_file

    check_outputs({"--db": store_file(db)}, {"--out": out})
    cfg = load_policy_config(rules)
    cutoff = cfg.active_cutoff()
    store = open_store(db)
    try:
        keys = load_keys(create=False) if store.forgotten_hashes() else None
        done = export_history(store, out, cutoff, keys)
    finally:
        store.close()
    console.print(f"exported {done.calls:,} calls of {done.contacts:,} contacts to {done.path}"
                  f" (left out: {done.expired:,} past the retention of "
                  f"{cfg.retention_call_months} months, {done.erased:,} of erased contacts)",
                  highlight=False, soft_wrap=True)
