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
"""

from __future__ import annotations

import pandas as pd

from callback_timing.contacts import pseudonymise


def contact_hash(contact_id: str, key: bytes) -> str:
    """The keyed pseudonym of a contact id (what the forget list holds)."""
    return str(pseudonymise(pd.Series([str(contact_id)]), key).iloc[0])


def forgotten_ids(contact_ids: pd.Series, forgotten: set[str], key: bytes) -> set[str]:
    """The ids among ``contact_ids`` whose pseudonym is on the forget list."""
    if not forgotten or not len(contact_ids):
        return set()
    ids = pd.Series(pd.unique(contact_ids.astype(str)))
    hashed = pseudonymise(ids, key)
    return set(ids[hashed.isin(forgotten)])


def lawful_history(history: pd.DataFrame, cutoff: pd.Timestamp | None,
                   forgotten: set[str], key: bytes | None) -> pd.DataFrame:
    """``history`` without calls before ``cutoff`` and without the calls of forgotten
    contacts (the frame itself when nothing goes)."""
    if not len(history):
        return history
    keep = pd.Series(True, index=history.index)
    if cutoff is not None:
        keep &= pd.to_datetime(history["called_at"], utc=True) >= cutoff
    if forgotten and key is not None:
        keep &= ~history["contact_id"].astype(str).isin(
            forgotten_ids(history["contact_id"], forgotten, key))
    return history if keep.all() else history[keep].reset_index(drop=True)
