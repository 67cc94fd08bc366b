"""``callback-timing export``: the outcome store as a call history (contract section 1), for
retraining on what the service saw.

One row per stored call, in the contract's columns (``called_at`` and ``requested_at`` in
UTC with ``Z``), plus what the decision log knows of its callback request: ``arm`` and
``propensity`` of the request's first ranking, and its ``requested_at`` when the call did not
carry one. It honours the retention (calls past it are left out, even if the store was not
purged yet) and the erasures (the forget list, with every pseudonymisation key).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from callback_timing.privacy import forgotten_mask
from callback_timing.schema import ConfigError

if TYPE_CHECKING:
    from callback_timing.store import OutcomeStore

#: the exported columns: the contract's (but ``phone``: never stored), then the decision log's
EXPORT_COLUMNS = ("contact_id", "called_at", "outcome", "call_id", "country", "subdivision",
                  "timezone", "industry", "requested_at", "request_id", "attempt",
                  "duration_s", "arm", "propensity")


@dataclass
class Export:
    """What :func:`export_history` wrote."""

    path: Path
    calls: int
    contacts: int
    expired: int
    erased: int


def history_of(store: OutcomeStore, cutoff: pd.Timestamp | None, keys: list[bytes] | None) -> tuple[
        pd.DataFrame, int, int]:
    """The store's calls as a call history (:data:`EXPORT_COLUMNS`), with the calls before
    ``cutoff`` and those of erased contacts left out; returns it and how many of each went."""
    calls = store.outcomes_after(0)
    expired = erased = 0
    if cutoff is not None and len(calls):
        old = calls["called_at"] < cutoff
        expired = int(old.sum())
        calls = calls[~old]
    forgotten = store.forgotten_hashes()
    if forgotten and len(calls):
        if not keys:
            raise ConfigError("the store has erased contacts: the pseudonymisation key is "
                              "needed to leave them out")
        gone = forgotten_mask(calls["contact_id"], forgotten, keys)
        erased = int(gone.sum())
        calls = calls[~gone]
    log = store.rows_after("decisions", ("seq", "request_id", "arm", "propensity",
                                         "requested_at", "now"))
    first = log.drop_duplicates("request_id", keep="first").set_index("request_id")
    by_request = calls["request_id"]
    if len(first):
        asked = first["requested_at"].fillna(first["now"])
        logged_at = by_request.map(asked).astype(calls["requested_at"].dtype)
    else:  # no ranking logged (outcomes only): its columns hold no times
        logged_at = pd.Series(pd.NaT, index=calls.index, dtype=calls["requested_at"].dtype)
    out = calls.assign(
        requested_at=calls["requested_at"].fillna(logged_at),
        arm=by_request.map(first["arm"]),
        propensity=by_request.map(first["propensity"]),
    ).sort_values(["called_at", "call_id"], kind="stable")
    for column in ("called_at", "requested_at"):
        at = pd.to_datetime(out[column], utc=True)
        out[column] = at.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").where(at.notna(), None)
    out["attempt"] = out["attempt"].astype("Int64")
    return out[list(EXPORT_COLUMNS)].reset_index(drop=True), expired, erased


def export_history(store: OutcomeStore, out: str | Path, cutoff: pd.Timestamp | None,
                   keys: list[bytes] | None) -> Export:
    """Write :func:`history_of` to ``out`` (``.parquet``, else CSV, compressed by a ``.gz``,
    ``.bz2`` or ``.xz`` suffix); folders are made. Another file type is a
    :class:`ConfigError` naming ``--out``: ``train`` would not read it."""
    out = Path(out)
    kind = "".join(out.suffixes[-2:]).lower()
    if not (kind.endswith((".csv", ".parquet")) or kind in (".csv.gz", ".csv.bz2", ".csv.xz")):
        raise ConfigError(f"--out: {out.name} is neither .csv (.csv.gz) nor .parquet: the "
                          "history `train` reads")
    frame, expired, erased = history_of(store, cutoff, keys)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".parquet":
        frame.to_parquet(out, index=False)
    else:
        frame.to_csv(out, index=False)
    return Export(path=out, calls=len(frame), contacts=int(frame["contact_id"].nunique()),
                  expired=expired, erased=erased)
