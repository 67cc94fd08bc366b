"""Data protection by design: what the service keeps about a contact, for how long, and how a
contact's rights are met (GDPR Art. 6(1)(f), 5(1)(c) and (e), 15, 17, 21).

- **Retention**: call-level data older than ``retention.call_times_months`` (12) is deleted
  from the outcome store (:meth:`~callback_timing.store.OutcomeStore.purge`: anonymised
  aggregates are kept) and from the service's memory (:func:`lawful_history`).
- **Erasure**: a contact's rows are deleted and the keyed pseudonym of its id
  (:func:`contact_hash`) goes on the forget list, which the service and ``train`` honour.
- **Opt-out**: an opted-out (or erased) contact is ranked as a traditional callback, from the
  rule table alone, without its history.

>>> contact_hash("c-42", b"k") == contact_hash("c-42", b"k") != contact_hash("c-43", b"k")
True
>>> contact_hash("c-42", b"k") == pseudonymise(pd.Series(["c-42"]), b"k")[0]
True
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

import pandas as pd

from callback_timing.contacts import PSEUDONYM_HEX_CHARS, pseudonymise

if TYPE_CHECKING:
    from callback_timing.policy_config import PolicyConfig


def contact_hash(contact_id: str, key: bytes) -> str:
    """The keyed pseudonym of a contact id (what the forget list holds): the same as
    :func:`~callback_timing.contacts.pseudonymise`, for one id (a few microseconds: it runs
    per ranked request once the forget list is not empty)."""
    return hmac.digest(key, str(contact_id).encode(), "sha256").hex()[:PSEUDONYM_HEX_CHARS]


def is_forgotten(contact_id: str, forgotten: set[str], keys: list[bytes]) -> bool:
    """Whether a contact's pseudonym under any of ``keys`` (rotation) is on the forget
    list."""
    return bool(forgotten) and any(contact_hash(contact_id, k) in forgotten for k in keys)


def forgotten_ids(contact_ids: pd.Series, forgotten: set[str], keys: list[bytes]) -> set[str]:
    """The ids among ``contact_ids`` whose pseudonym under any of ``keys`` is on the forget
    list."""
    if not forgotten or not len(contact_ids):
        return set()
    ids = pd.Series(pd.unique(contact_ids.astype(str)))
    hit = pd.Series(False, index=ids.index)
    for key in keys:
        hit |= pseudonymise(ids, key).isin(forgotten)
    return set(ids[hit])


def forgotten_mask(contact_ids: pd.Series, forgotten: set[str] | None,
                   keys: list[bytes] | None) -> pd.Series:
    """Which rows of ``contact_ids`` belong to an erased contact (a boolean Series on the same
    index)."""
    if not forgotten or not keys:
        return pd.Series(False, index=contact_ids.index)
    return contact_ids.astype(str).isin(forgotten_ids(contact_ids, forgotten, keys))


def lawful_history(history: pd.DataFrame, cutoff: pd.Timestamp | None,
                   forgotten: set[str], keys: list[bytes] | None) -> pd.DataFrame:
    """``history`` without calls before ``cutoff`` and without the calls of forgotten
    contacts (the frame itself when nothing goes)."""
    if not len(history):
        return history
    keep = pd.Series(True, index=history.index)
    if cutoff is not None:
        keep &= pd.to_datetime(history["called_at"], utc=True) >= cutoff
    keep &= ~forgotten_mask(history["contact_id"], forgotten, keys)
    return history if keep.all() else history[keep].reset_index(drop=True)


# --- the record of processing (GDPR Art. 30), generated so that it stays true ---------------

#: What each stored column is, per table: (description, personal data?). A column missing
#: here fails the test that keeps ``docs/processing-register.md`` current.
COLUMNS: dict[str, dict[str, tuple[str, bool]]] = {
    "outcomes": {
        "seq": ("storage order", False),
        "call_id": ("the dialer's id of the call", True),
        "contact_id": ("the CRM's pseudonymous id of the person called", True),
        "request_id": ("the dialer's id of the callback request", True),
        "attempt": ("attempt number within the request", True),
        "called_at": ("when the call was made (UTC)", True),
        "outcome": ("answered, no answer, busy, voicemail, rejected, invalid number", True),
        "answered": ("1 if answered", True),
        "duration_s": ("call duration", True),
        "requested_at": ("when the callback was requested", True),
        "timezone": ("the contact's time zone (derived from the phone number)", True),
        "country": ("the contact's country (holiday calendar)", True),
        "subdivision": ("the contact's region (regional holidays)", True),
        "industry": ("the contact's industry (normalised)", True),
        "received_at": ("when the service stored it", True),
    },
    "decisions": {
        "seq": ("storage order", False),
        "request_id": ("the dialer's id of the callback request", True),
        "contact_id": ("the CRM's pseudonymous id of the person", True),
        "arm": ("model, rules or control (the experiment)", True),
        "source": ("who decided: model or rules", True),
        "fallback_reason": ("why the rules answered", True),
        "model_version": ("the model that answered", False),
        "policy": ("auto, model or rules, as asked", True),
        "urgency": ("standard, urgent or flexible, as asked", True),
        "now": ("when the ranking was asked for", True),
        "requested_at": ("when the callback was requested", True),
        "window_start": ("the proposed call window", True),
        "window_end": ("the proposed call window", True),
        "p_answer": ("the predicted answer probability", True),
        "score": ("the window's score", True),
        "windows": ("how many windows were proposed", True),
        "explored": ("whether the first window was an exploration", True),
        "propensity": ("the probability of that choice", True),
        "decided_at": ("when the service answered", True),
        "campaign": ("the dialer's campaign label", True),
        "team": ("the dialer's team label", True),
        "horizon_hours": ("how far ahead the ranking looked", True),
    },
    "opt_outs": {
        "contact_id": ("a contact who objected to AI timing", True),
        "since": ("when", True),
    },
    "forgotten": {
        "contact_hash": ("keyed pseudonym (HMAC-SHA256) of an erased contact's id", True),
        "forgotten_at": ("when it was erased", True),
    },
    "answer_patterns": {
        "month": ("month of the calls (UTC)", False),
        "industry": ("industry", False),
        "country": ("country", False),
        "weekday": ("contact-local weekday", False),
        "hour": ("contact-local hour", False),
        "calls": ("calls made", False),
        "answered": ("calls answered", False),
    },
    "ct_meta": {
        "key": ("schema version, store id, deletion generation", False),
        "value": ("its value", False),
    },
}

_RETENTION = {
    "outcomes": "{calls} months after the call (`called_at`), then deleted",
    "decisions": "{calls} months after the ranking (`decided_at`), then deleted",
    "opt_outs": "until the contact opts back in or is erased",
    "forgotten": "without limit (to keep honouring the erasure); holds no id in clear",
    "answer_patterns": "without limit (anonymised: no id of any kind)",
    "ct_meta": "without limit (no personal data)",
}


def processing_register(config: PolicyConfig) -> str:
    """The record of processing (``docs/processing-register.md``) from the policy config
    and the store's tables: what is kept, why, for how long, and who can reach it."""
    from callback_timing.store import metadata

    calls, phones = config.retention_call_months, config.retention_phone_months
    lines = [
        "# Record of processing: callback-timing",
        "",
        "<!-- Generated by `callback-timing register` from policy.yaml and the outcome store's",
        "     tables; do not edit by hand (a test fails when it is out of date). -->",
        "",
        "| | |",
        "|---|---|",
        "| Controller | the operator of the service (fill in: name, contact, DPO) |",
        "| Purpose | choosing when to call back a person who asked to be called back, and "
        "measuring whether that timing works better than a traditional callback desk |",
        "| Legal basis | legitimate interest, GDPR Art. 6(1)(f): the person asked for the "
        "callback; calling when they are likely to answer serves them and the operator. "
        "They may object at any time (opt-out below) |",
        "| Data subjects | persons who requested a callback (leads, customers) |",
        "| Recipients | the operator's dialer and supervisors; no transfer by this software |",
        f"| Retention | call times and outcomes, rankings: {calls} months; phone numbers: none "
        f"kept by callback-timing (the operator's own exports: {phones} months); anonymised "
        "aggregates: without limit |",
        f"| Deletion | `callback-timing purge`; the server purges as it starts and daily at "
        f"{config.purge_hour_utc:02d}:00 UTC |",
        "| Access | `GET /contacts/{contact_id}`: everything stored and how the best time is "
        "found |",
        "| Erasure | `DELETE /contacts/{contact_id}`; `train` leaves out erased contacts |",
        "| Objection | `POST /contacts/{contact_id}/opt_out`: a traditional callback, "
        "without the person's history |",
        "| Safeguards | no phone number stored; phone numbers and erased ids only as keyed "
        "pseudonyms (HMAC-SHA256, key in `CALLBACK_TIMING_PSEUDONYM_KEY` or "
        "`pseudonym.key`); with `CALLBACK_TIMING_API_KEY` set, every endpoint but the health "
        "probes needs it (without, `/contacts` and `/admin` answer the server's machine only); "
        "logs without contact ids or phone numbers |",
        "",
        "## What the outcome store keeps",
        "",
    ]
    for table in ("outcomes", "decisions", "opt_outs", "forgotten", "answer_patterns",
                  "ct_meta"):
        columns = metadata.tables[table].columns
        lines += [f"### `{table}`: kept {_RETENTION[table].format(calls=calls)}", "",
                  "| column | what | personal data |", "|---|---|---|"]
        for column in columns:
            what, personal = COLUMNS[table][column.name]
            lines.append(f"| `{column.name}` | {what} | {'yes' if personal else 'no'} |")
        lines.append("")
    lines += [
        "## Elsewhere",
        "",
        "- **Model bundles** (`models/`): the contacts' call history as of training "
        "(contact id, call times and outcomes, time zone, country, industry; no phone number "
        "nor its pseudonym), the model and priors. Erased contacts and calls past retention "
        "are left out when a server loads a bundle; retrain to remove them from the model.",
        "- **Dashboard snapshot** (`<store>.kpis.npz`): request ids and per-call figures, "
        "saved again after every purge or erasure.",
        "- **Copies of bundles**: every MLflow training run (`mlruns/`, artifact `bundle/`), "
        "the BentoML model store (`$BENTOML_HOME/models/callback-timing-answer/`) and a "
        "`<model>.challenger` folder left by `retrain` hold a bundle, so the same call "
        "history. Neither an erasure nor the retention reaches them: delete old runs "
        "(`mlflow gc`) and old store models (`bentoml models delete`) on the same schedule "
        "as the retention, and after erasures retrain and delete the runs and models before "
        "it.",
        "- **Logs**: no contact id, phone number or API key.",
        "",
    ]
    return "\n".join(lines)
