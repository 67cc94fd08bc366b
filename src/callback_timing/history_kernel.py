"""The point-in-time history kernel behind :func:`callback_timing.features.build_features`.

Calls and targets are arrays (:class:`CallArrays`; targets as contact code, instant, cut-off,
local weekday and hour). The kernel has two halves:

- :class:`PreparedCalls`, the calls side: calls sorted by the composite key ``(contact,
  group, second)`` with running answer counts, for the contact and each grouping (weekday,
  hour band, weekday x band, hour, weekday x hour), the groupings stacked in one key space;
- :func:`history_arrays`, the targets side: a few ``np.searchsorted`` calls per feature, so a
  target sees exactly the calls of its own contact and group before its cut-off.

Training prepares the calls and queries them at once; the ranking policy prepares its whole
history once and only runs the targets side per request.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from callback_timing import calendar, config, tzclock
from callback_timing.priors import N_BANDS, hour_band
from callback_timing.schema import OUTCOMES

_EPOCH = np.datetime64("2000-01-01T00:00:00", "s")
_EPOCH_NS = int((_EPOCH - np.datetime64(0, "s")).astype(np.int64)) * 10**9
_SHIFT = np.int64(2**32)  # seconds since 2000 fit in 32 bits until 2136
#: Groups per contact of each grouping: weekday, band, weekday x band, hour, weekday x hour.
_GROUPS_PER_CONTACT = (7, N_BANDS, 7 * N_BANDS, 24, 7 * 24)


def seconds_of_ns(utc_ns: np.ndarray) -> np.ndarray:
    """Whole seconds since 2000-01-01 UTC (clipped at 0) of nanoseconds since the epoch."""
    return np.maximum((np.asarray(utc_ns, dtype=np.int64) - _EPOCH_NS) // 10**9, 0)


class _Sorted:
    """Calls sorted by ``group * 2**32 + second`` with cumulative answer counts."""

    def __init__(self, group: np.ndarray, sec: np.ndarray, answered: np.ndarray):
        key = group.astype(np.int64) * _SHIFT + sec
        order = np.argsort(key, kind="stable")
        self.key = key[order]
        self.order = order
        self.cum = np.concatenate([[0], np.cumsum(answered[order], dtype=np.int64)])

    def previous(self, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Key and original row of the call just before position ``hi`` (0 where none)."""
        if len(self.key) == 0:
            zeros = np.zeros(len(hi), dtype=np.int64)
            return zeros, zeros
        pos = np.maximum(hi - 1, 0)
        return self.key[pos], self.order[pos]

    def count_answered(self, group: np.ndarray, sec: np.ndarray):
        """Calls and answers of ``group`` before second ``sec``."""
        base = group.astype(np.int64) * _SHIFT
        hi = self.key.searchsorted(base + sec, side="left")
        lo = self.key.searchsorted(base, side="left")
        return hi - lo, self.cum[hi] - self.cum[lo]


@dataclass
class CallArrays:
    """Calls as aligned arrays, the history kernel's input (one entry per call)."""

    contact: np.ndarray  #: contact code (int64)
    sec: np.ndarray  #: seconds since 2000 (:func:`seconds_of_ns`)
    answered: np.ndarray  #: 0/1 (int64)
    outcome: np.ndarray  #: code in ``OUTCOMES`` (-1: another outcome)
    weekday: np.ndarray  #: contact-local weekday (int64)
    hour: np.ndarray  #: contact-local hour (int64)

    @classmethod
    def of(cls, calls: pd.DataFrame, contact: np.ndarray,
           clock: dict | pd.DataFrame | None = None) -> CallArrays:
        """A clean call frame's arrays; ``clock`` is its local clock (weekday, hour)."""
        utc_ns = calendar.utc_ns_of(calls["called_at"])
        if clock is None:
            local = tzclock.local_ns(utc_ns, calls["timezone"].to_numpy(object))
            clock = calendar.clock_arrays(utc_ns, local)
        return cls(np.asarray(contact, dtype=np.int64), seconds_of_ns(utc_ns),
                   calls["answered"].to_numpy(np.int64),
                   pd.Categorical(calls["outcome"], categories=OUTCOMES).codes,
                   np.asarray(clock["weekday"], dtype=np.int64),
                   np.asarray(clock["hour"], dtype=np.int64))

    def take(self, rows: np.ndarray, contact: int | None = None) -> CallArrays:
        """The calls at positions ``rows`` (with contact code ``contact`` if given)."""
        code = (self.contact[rows] if contact is None
                else np.full(len(rows), contact, dtype=np.int64))
        return CallArrays(code, self.sec[rows], self.answered[rows], self.outcome[rows],
                          self.weekday[rows], self.hour[rows])

    @classmethod
    def concat(cls, parts: list[CallArrays]) -> CallArrays:
        """The calls of ``parts`` one after the other."""
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return cls(empty, empty, empty, empty.astype(np.int8), empty, empty)
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("contact", "sec", "answered", "outcome", "weekday", "hour")))


def _group_keys(code: np.ndarray, weekday: np.ndarray, hour: np.ndarray) -> list[np.ndarray]:
    """Group ids of each grouping (see ``_GROUPS_PER_CONTACT``), unique across contacts."""
    band = hour_band(hour).astype(np.int64)
    wd7 = code * 7 + weekday
    return [wd7, code * N_BANDS + band, wd7 * N_BANDS + band, code * 24 + hour, wd7 * 24 + hour]


class PreparedCalls:
    """The calls side of the kernel: calls sorted by contact and by each grouping.

    Parameters
    ----------
    calls : the calls.
    n_codes : contact codes of the targets to come are below this (calls' codes included).
    """

    def __init__(self, calls: CallArrays, n_codes: int) -> None:
        self.calls, self.n_codes = calls, n_codes
        self.outcome = np.append(calls.outcome, -1)
        self.by_contact = _Sorted(calls.contact, calls.sec, calls.answered)
        sizes = [n_codes * k for k in _GROUPS_PER_CONTACT]
        self.offsets = np.cumsum([0, *sizes[:-1]]).tolist()
        self._stacked: _Sorted | None = None
        self._each: list[_Sorted] | None = None
        if sum(sizes) < 2**31 and calls.contact.min(initial=0) >= 0:
            keys = _group_keys(calls.contact, calls.weekday, calls.hour)
            self._stacked = _Sorted(
                np.concatenate([g + o for g, o in zip(keys, self.offsets, strict=True)]),
                np.tile(calls.sec, len(keys)), np.tile(calls.answered, len(keys)))

    def rows_of(self, code: int) -> np.ndarray:
        """Positions in ``calls`` of contact ``code``'s calls, by time (ties in call order)."""
        key = self.by_contact.key
        lo, hi = key.searchsorted([code * _SHIFT, (code + 1) * _SHIFT], side="left")
        return self.by_contact.order[lo:hi]

    def group_counts(self, t_code: np.ndarray, t_wd: np.ndarray, t_hour: np.ndarray,
                     cut: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Calls and answers before ``cut`` in each target's group, per grouping."""
        keys = _group_keys(t_code, t_wd, t_hour)
        k, n = len(keys), len(cut)
        if self._stacked is not None and (n == 0 or (
                t_code.min() >= 0 and t_code.max() < self.n_codes)):
            counts, answers = self._stacked.count_answered(
                np.concatenate([g + o for g, o in zip(keys, self.offsets, strict=True)]),
                np.tile(cut, k))
            return [(counts[i * n:(i + 1) * n], answers[i * n:(i + 1) * n]) for i in range(k)]
        if self._each is None:  # codes outside the stacked key space: one sort per grouping
            c = self.calls
            self._each = [_Sorted(g, c.sec, c.answered)
                          for g in _group_keys(c.contact, c.weekday, c.hour)]
        return [s.count_answered(g, cut) for s, g in zip(self._each, keys, strict=True)]


_NAMES = ("hist_wd", "hist_band", "hist_wdband", "hist_hour", "hist_wdhour")
_PRIORS = ("prior_wd", "prior_band", "prior_wdband", "prior_band", "prior_wdband")


def history_arrays(calls: PreparedCalls, t_code: np.ndarray, t_sec: np.ndarray,
                   cut: np.ndarray, t_wd: np.ndarray, t_hour: np.ndarray,
                   prior: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The history features of targets from calls strictly before their cut-off.

    Targets are given by contact code, instant and cut-off (seconds since 2000), local
    weekday and hour; ``prior`` holds their prior features. ``last_outcome`` comes as codes
    of ``["none", *OUTCOMES]``.
    """
    t_code = np.asarray(t_code, dtype=np.int64)
    t_wd, t_hour = np.asarray(t_wd, dtype=np.int64), np.asarray(t_hour, dtype=np.int64)
    m = config.PRIOR_STRENGTH
    out: dict[str, np.ndarray] = {}

    by_contact = calls.by_contact
    key, cum = by_contact.key, by_contact.cum
    base = t_code * _SHIFT  # the contact's calls before the cut-off: positions lo .. hi - 1
    lo, hi = key.searchsorted(base, side="left"), key.searchsorted(base + cut, side="left")
    count, answers = hi - lo, cum[hi] - cum[lo]
    out["hist_n"] = count.astype(np.float32)
    out["hist_rate"] = (answers + m * prior["prior_industry"]) / (count + m)
    counted = calls.group_counts(t_code, t_wd, t_hour, cut)
    for name, prior_name, (counts, group_answers) in zip(_NAMES, _PRIORS, counted, strict=True):
        out[f"{name}_n"] = counts.astype(np.float32)
        out[f"{name}_rate"] = (group_answers + m * prior[prior_name]) / (counts + m)
        # the same evidence without the prior: exactly 0 where the contact has no call in the
        # group (rate - prior would leave rounding residue there)
        out[f"{name}_excess"] = (group_answers - counts * prior[prior_name]) / (counts + m)

    has_prev = hi > lo
    last_key, last_row = by_contact.previous(hi)
    out["hours_since_last_call"] = np.where(has_prev, (t_sec - (last_key - base)) / 3600.0,
                                            np.nan)
    out["last_outcome"] = np.where(has_prev, calls.outcome[last_row] + 1, 0).astype(np.int8)
    windows = {}
    for hours in {*config.RECENT_WINDOWS_H, 168}:
        since = base + np.maximum(t_sec - hours * 3600, 0)
        lo_w = np.maximum(lo, key.searchsorted(since, side="left"))
        windows[hours] = lo_w, np.maximum(hi, lo_w)  # a window ending before it starts: empty
    for hours in config.RECENT_WINDOWS_H:
        lo_w, hi_w = windows[hours]
        out[f"calls_last_{hours}h"] = (hi_w - lo_w).astype(np.float32)
    lo_w, hi_w = windows[168]
    out["answers_last_168h"] = (cum[hi_w] - cum[lo_w]).astype(np.float32)

    # the last answered call before the cut-off sits just before the first position where the
    # running answer count reaches its value at the cut-off
    has_answer = answers > 0
    if len(key):
        last_answer_key = key[np.maximum(cum.searchsorted(cum[hi], side="left") - 1, 0)]
    else:
        last_answer_key = np.zeros(len(hi), dtype=np.int64)
    out["hours_since_last_answer"] = np.where(
        has_answer, (t_sec - (last_answer_key - base)) / 3600.0, np.nan
    )
    after_answer = key.searchsorted(last_answer_key, side="right")
    out["consecutive_no_answers"] = np.where(has_answer, hi - after_answer, count).astype(
        np.float32
    )
    return out
