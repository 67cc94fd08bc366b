"""Array helpers behind :class:`~callback_timing.policy.Policy`: slot grids, clocks, predictions.

The policy answers a batch of ``/rank`` requests with a handful of numpy calls instead of
per-request pandas work. These helpers are pure functions of their arguments:

- :func:`slot_grid`: each request's 15-minute slot starts over ``[now, now + horizon]`` as
  nanoseconds since the epoch (UTC), the same instants as
  :func:`~callback_timing.slots.candidate_slots` with ``calling_hours=(0, 24)``;
- :func:`local_parts`: contact-local minute of day and weekday of UTC instants, per zone (the
  ``minute_of_day`` and ``weekday`` of :func:`~callback_timing.calendar.local_clock`);
- :func:`week_table`: a calling-hours week as a ``7 x 2`` array of minutes;
- :func:`predict_answer`: an :class:`~callback_timing.model.AnswerModel`'s calibrated
  ``p_answer`` through XGBoost's dense prediction on a numeric matrix (:func:`dense_predict`:
  bit-identical to the ``DMatrix`` path, without its per-call DataFrame conversion or the
  Python wrapper's per-call work), any other model as is;
- :func:`iso_utc`, :func:`iso_local`: the ISO strings of a slot instant, cached;
- :class:`SlotBatch`: a scored batch (slots, features, scores, the rule that forbids each
  slot), which :mod:`callback_timing.windows` turns into responses.

Examples
--------
>>> import numpy as np
>>> now = np.array([pd.Timestamp("2026-06-01T17:50Z").value])
>>> first, count = slot_grid(now, np.array([1.0]))
>>> iso_utc(int(first[0])), int(count[0])
('2026-06-01T18:00:00Z', 4)
>>> local_parts(first, np.array(["Europe/Warsaw"], dtype=object))
(array([1200]), array([0]))
>>> iso_local(int(first[0]), "Europe/Warsaw")
'2026-06-01T20:00:00+02:00'
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.special import expit

from callback_timing import tzclock
from callback_timing.feature_block import FeatureBlock
from callback_timing.slots import SLOT_MINUTES

if TYPE_CHECKING:
    import xgboost as xgb

    from callback_timing.model import AnswerModel
    from callback_timing.policy_config import WeekHours

STEP_NS = SLOT_MINUTES * 60 * 10**9
#: The fallback reason of a server without a model (it explores like the model would).
NO_MODEL = "no model loaded"
#: Up to this many rows, the policy predicts with a single-threaded copy of the booster.
SMALL_PREDICT_ROWS = 2048
_MINUTE_NS = 60 * 10**9
_DAY_NS = 86_400 * 10**9


@lru_cache(maxsize=1024)
def horizon_ns(hours: float) -> int:
    """``pd.Timedelta(hours=hours)`` in nanoseconds (the same rounding)."""
    return int(pd.Timedelta(hours=hours).value)


def slot_grid(now_ns: np.ndarray, horizon_hours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First slot start (``now`` rounded up to the slot) and slot count of each request.

    Slot ``k`` of a request starts at ``first + k * STEP_NS``; the count keeps every start in
    ``[now, now + horizon]`` on the grid of ``int(horizon * 60 // SLOT_MINUTES) + 1`` steps.
    """
    now_ns = np.asarray(now_ns, dtype=np.int64)
    first = -(-now_ns // STEP_NS) * STEP_NS
    end = now_ns + np.array([horizon_ns(h) for h in horizon_hours], dtype=np.int64)
    steps = np.array([int(h * 60 // SLOT_MINUTES) + 1 for h in horizon_hours], dtype=np.int64)
    fits = np.where(end >= first, (end - first) // STEP_NS + 1, 0)
    return first, np.minimum(steps, fits)


def minute_weekday(local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minute of day and weekday (Mon=0) of local wall times in nanoseconds
    (:func:`callback_timing.tzclock.local_ns`)."""
    minute = (local // _MINUTE_NS) % 1440
    weekday = (local // _DAY_NS + 3) % 7  # 1970-01-01 was a Thursday
    return minute, weekday


def local_parts(at_ns: np.ndarray, zones: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local minute of day and weekday (Mon=0) of UTC instants ``at_ns`` in ``zones``."""
    return minute_weekday(tzclock.local_ns(np.asarray(at_ns, dtype=np.int64),
                                           np.asarray(zones, dtype=object)))


def week_table(week: WeekHours) -> np.ndarray:
    """A calling-hours week (7 spans of minutes, or ``None`` for no calls) as a 7 x 2 array."""
    return np.array([(h[0], h[1]) if h else (0, 0) for h in week], dtype=np.int64)


def outside_hours(minute: np.ndarray, weekday: np.ndarray, weeks: np.ndarray,
                  owner: np.ndarray, minutes: int = SLOT_MINUTES) -> np.ndarray:
    """Slots outside calling hours; slot ``j`` follows week ``weeks[owner[j]]`` (7 x 2).

    A slot is inside when its ``minutes`` (default: the whole slot) are; ``minutes=1`` asks
    about a call starting at that minute (the dial-time check).
    """
    start, end = weeks[owner, weekday, 0], weeks[owner, weekday, 1]
    return (minute < start) | (minute + minutes > end)


@dataclass
class Grids:
    """Slot grids shared by the requests with the same contact attributes and ``now``.

    Their features are the same, so they are built once per grid slot.
    """

    group: np.ndarray  #: grid of each request
    contacts: list  #: contact of each grid
    count: np.ndarray  #: slots of each grid (as many as its longest request's)
    now_ns: np.ndarray  #: ``now`` of each grid
    of: np.ndarray  #: grid of each grid slot
    at: np.ndarray  #: start of each grid slot (UTC nanoseconds)

    def targets(self, rows: np.ndarray) -> pd.DataFrame:
        """The targets frame of grid slots ``rows`` for :func:`features.build_features`."""
        of = self.of[rows]

        def column(name: str) -> np.ndarray:
            return np.array([getattr(c, name) for c in self.contacts], dtype=object)[of]

        utc = pd.DatetimeIndex(self.at[rows].view("datetime64[ns]")).tz_localize("UTC")
        asof = pd.DatetimeIndex(self.now_ns[of].view("datetime64[ns]")).tz_localize("UTC")
        return pd.DataFrame({"contact_id": column("contact_id"), "at": utc,
                             "timezone": column("timezone"), "country": column("country"),
                             "subdivision": column("subdivision"),
                             "industry": column("industry"), "asof": asof})


def shared_grids(reqs: list[dict], now_ns: np.ndarray, first: np.ndarray,
                 count: np.ndarray) -> Grids:
    """Group normalised requests by (contact attributes, ``now``) into shared slot grids."""
    keys: dict[tuple, int] = {}
    group = np.empty(len(reqs), dtype=np.int64)
    for i, r in enumerate(reqs):
        c = r["contact"]
        key = (c.contact_id, c.timezone, c.country, c.subdivision, c.industry, int(now_ns[i]))
        group[i] = keys.setdefault(key, len(keys))
    heads = np.zeros(len(keys), dtype=np.int64)
    heads[group[::-1]] = np.arange(len(reqs))[::-1]  # the first request of each grid
    g_count = np.zeros(len(keys), dtype=np.int64)
    np.maximum.at(g_count, group, count)
    off = np.concatenate([[0], np.cumsum(g_count)])
    of = np.repeat(np.arange(len(keys)), g_count)
    at = first[heads][of] + (np.arange(off[-1]) - off[of]) * STEP_NS
    return Grids(group, [reqs[h]["contact"] for h in heads], g_count, now_ns[heads], of, at)


class HistoryIndex:
    """A call history's rows per contact (lazy) and the attempts already made per request."""

    def __init__(self, history: pd.DataFrame) -> None:
        self.history = history
        self._rows: dict | None = None
        self._request_ids: np.ndarray | None = None
        self._invalid: np.ndarray | None = None

    def rows(self) -> dict:
        """Row positions of each contact's calls, in their original order."""
        if self._rows is None:
            h = self.history
            self._rows = h.groupby("contact_id", sort=False).indices if len(h) else {}
        return self._rows

    def calls_of(self, contacts: set[str]) -> pd.DataFrame:
        """The history rows of ``contacts``, in their original order."""
        h = self.history
        rows = self.rows()
        parts = [rows[c] for c in contacts if c in rows]
        return h.iloc[np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)]

    def attempts(self, request_ids: list, contacts: set[str]) -> dict[str, list]:
        """The attempts already made for ``request_ids`` among the calls of ``contacts``:
        ``[calls, whether one ended invalid_number]`` per request id that has any."""
        h = self.history
        if not len(h) or "request_id" not in h:
            return {}
        if self._request_ids is None:
            self._request_ids = h["request_id"].to_numpy(object)
            self._invalid = invalid_calls(h)
        rows = self.rows()
        parts = [rows[c] for c in contacts if c in rows]
        if not parts:
            return {}
        mine = np.concatenate(parts)
        made: dict[str, list] = {}
        count_attempts(made, set(request_ids), self._request_ids[mine], self._invalid[mine])
        return made


#: The outcome after which a request gets no further attempt (``stop_after_invalid_number``).
INVALID_OUTCOME = "invalid_number"


def invalid_calls(calls: pd.DataFrame) -> np.ndarray:
    """Whether each call of a frame ended ``invalid_number`` (all false without outcomes)."""
    if "outcome" not in calls:
        return np.zeros(len(calls), dtype=bool)
    return calls["outcome"].to_numpy(object) == INVALID_OUTCOME


def count_attempts(made: dict[str, list], wanted: set, request_ids, invalid) -> None:
    """Add calls (their request ids and whether each ended invalid_number) to ``made``:
    ``[calls, any invalid]`` per request id in ``wanted``."""
    for rid, bad in zip(request_ids, invalid, strict=True):
        if rid in wanted:
            entry = made.setdefault(rid, [0, False])
            entry[0] += 1
            entry[1] = entry[1] or bool(bad)


def predict_answer(model: AnswerModel, X: pd.DataFrame | FeatureBlock,
                   booster: xgb.Booster | None = None) -> np.ndarray:
    """``model.p_answer(X)``; for an AnswerModel via :func:`dense_predict` (same numbers).

    ``X`` is a feature frame or a :class:`~callback_timing.feature_block.FeatureBlock` (read
    as arrays: the booster's float32 matrix is built straight from them, and the margin
    feature's logit, if the model has one, from its float64 column). ``booster`` may be a
    copy of the model's booster to predict with (e.g. single-threaded for a few rows).
    """
    from callback_timing.model import AnswerModel

    block = isinstance(X, FeatureBlock)
    if type(model) is not AnswerModel or len(X) == 0:
        return model.p_answer(X.to_frame() if block else X)
    arrays = X if block else FeatureBlock.from_frame(X)
    matrix = arrays.matrix(model.feature_names_, model.categories_ or {})
    if matrix is None:
        return model.p_answer(X.to_frame() if block else X)
    booster = model.booster_ if booster is None else booster
    trees = (0, model.best_iteration_ + 1)
    margin = model.margin(X)
    if margin is None:
        return model.calibrate(dense_predict(booster, matrix, trees, margin=False))
    # the trees' margin plus ours instead of XGBoost's ``base_margin`` input, which costs a
    # per-call proxy matrix (~0.25 ms of a 2 ms ranking); the margin output adds the
    # intercept, which a base margin replaces
    z = dense_predict(booster, matrix, trees, margin=True)
    return model.calibrate(expit(z - _intercept(booster) + margin))


def dense_predict(booster: xgb.Booster, matrix: np.ndarray, trees: tuple[int, int],
                  margin: bool) -> np.ndarray:
    """``booster.inplace_predict(matrix, iteration_range=trees, predict_type=...)``.

    The same XGBoost call, ``XGBoosterPredictFromDense`` of its C API, made without the
    Python wrapper's per-call work (input type checks, JSON built twice, a class defined per
    call to read the output): about 0.15 ms of a 0.2 ms prediction of a ranking's ~100 rows.
    Each booster is checked once against ``inplace_predict`` (bit-identical answers on the
    first matrix it predicts); a booster without the C handle, an XGBoost whose library
    looks different, or any mismatch keeps ``inplace_predict``.
    """
    kind = "margin" if margin else "value"
    try:
        direct = _DIRECT.get(booster)
    except TypeError:  # not weakly referable: not an XGBoost booster
        direct = False
    if direct is None:
        direct = _DIRECT[booster] = _DirectPredict.check(booster, matrix, trees, kind)
    if direct is not False and direct.trees == trees \
            and direct.handle_value == booster.handle.value:
        return direct(matrix, margin)
    return booster.inplace_predict(matrix, iteration_range=trees, predict_type=kind)


#: Each booster's direct predictor, or ``False`` where its check failed. Kept beside the
#: booster, not on it: ``Booster.copy()`` and pickling carry a booster's attributes along.
_DIRECT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _DirectPredict:
    """A booster's dense prediction through XGBoost's C API (see :func:`dense_predict`)."""

    def __init__(self, booster: xgb.Booster, trees: tuple[int, int]) -> None:
        import ctypes

        from xgboost import core

        self.trees = trees
        self._ctypes = ctypes
        # the handle as a number, not the booster: the predictor is only ever called with
        # its booster in hand, and must not keep it alive (see ``_DIRECT``)
        self.handle_value = booster.handle.value
        self._handle = ctypes.c_void_p(self.handle_value)
        self._call = core._LIB.XGBoosterPredictFromDense
        self._error = core._LIB.XGBGetLastError
        self._error.restype = ctypes.c_char_p
        self._args = {
            kind: json.dumps({"type": int(kind), "training": False,
                              "iteration_begin": int(trees[0]),
                              "iteration_end": int(trees[1]), "missing": float("nan"),
                              "strict_shape": False, "cache_id": 0}).encode()
            for kind in (0, 1)}

    @classmethod
    def check(cls, booster, matrix: np.ndarray, trees: tuple[int, int],
              kind: str) -> _DirectPredict | bool:
        """A direct predictor for ``booster`` if it answers ``matrix`` exactly as
        ``inplace_predict`` does, else ``False``."""
        try:
            direct = cls(booster, trees)
            mine = direct(matrix, kind == "margin")
        except Exception:  # noqa: BLE001 - an XGBoost unlike the one we know: its own wrapper
            return False
        theirs = booster.inplace_predict(matrix, iteration_range=trees, predict_type=kind)
        same = mine.shape == np.shape(theirs) and np.array_equal(mine, theirs, equal_nan=True)
        return direct if same else False

    def __call__(self, matrix: np.ndarray, margin: bool) -> np.ndarray:
        ctypes = self._ctypes
        data = np.ascontiguousarray(matrix, dtype=np.float32)
        if data.ndim != 2:
            raise ValueError(f"a 2-d matrix is needed, not {data.ndim}-d")
        interface = (b'{"data": [%d, false], "strides": null, "typestr": "<f4", '
                     b'"shape": [%d, %d], "version": 3}'
                     % (data.ctypes.data, data.shape[0], data.shape[1]))
        shape = ctypes.POINTER(ctypes.c_uint64)()
        dims = ctypes.c_uint64()
        out = ctypes.POINTER(ctypes.c_float)()
        if self._call(self._handle, interface, self._args[int(margin)], None,
                      ctypes.byref(shape), ctypes.byref(dims), ctypes.byref(out)) != 0:
            raise RuntimeError(self._error().decode(errors="replace"))
        size = 1
        for k in range(dims.value):
            size *= int(shape[k])
        # the output is XGBoost's per-thread buffer, reused by the next call: copy it
        return np.ctypeslib.as_array(out, shape=(size,)).copy()


def _intercept(booster) -> float:
    """The booster's intercept (``base_score``) on the logit scale, kept beside it (as
    ``_DIRECT`` keeps its predictor)."""
    cached = _INTERCEPT.get(booster)
    if cached is None:
        learner = json.loads(booster.save_config())["learner"]
        base = float(str(learner["learner_model_param"]["base_score"]).strip("[]"))
        cached = _INTERCEPT[booster] = float(np.log(base / (1.0 - base)))
    return cached


_INTERCEPT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _iso_seconds(ns: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of a whole second given in nanoseconds since the epoch."""
    return str(np.datetime64(ns, "ns").astype("datetime64[s]"))


@lru_cache(maxsize=65_536)
def iso_utc(at_ns: int) -> str:
    """``2026-06-01T18:00:00Z`` for an instant in nanoseconds since the epoch."""
    if at_ns % 10**9 == 0:  # what pandas writes for a whole second, without pandas
        return _iso_seconds(at_ns) + "Z"
    return pd.Timestamp(at_ns, tz="UTC").isoformat().replace("+00:00", "Z")


@lru_cache(maxsize=65_536)
def iso_local(at_ns: int, zone: str) -> str:
    """The local ISO time with offset of an instant in ``zone``."""
    if at_ns % 10**9 == 0:  # whole second and whole-minute offset: what pandas writes
        try:
            offset = int(tzclock.utc_offset_ns(np.array([at_ns], dtype=np.int64), zone)[0])
        except (ValueError, TypeError, KeyError, OSError):
            offset = None
        if offset is not None and offset % _MINUTE_NS == 0:
            hours, minutes = divmod(abs(offset) // _MINUTE_NS, 60)
            sign = "-" if offset < 0 else "+"
            return f"{_iso_seconds(at_ns + offset)}{sign}{hours:02d}:{minutes:02d}"
    return pd.Timestamp(at_ns, tz="UTC").tz_convert(zone).isoformat()


# --- a batch of requests' slots and the responses cut from them ---------------------------

#: The calling rules' codes (a slot's ``why`` is the first rule that forbids it, in the order
#: ``Policy._allowed`` checks them).
(OUTSIDE, PHONE_HOURS, HORIZON, HOLIDAY, GAP, CAP_24H, CAP_7D, ATTEMPTS, DO_NOT_CALL,
 INVALID_NUMBER) = range(10)


class SlotBatch:
    """The slots of a batch of normalised requests, request after request, in time order.

    Slot arrays (one entry per slot): ``at`` (UTC nanoseconds), ``req_of`` (request),
    ``feat`` (row of the feature block ``X``, -1 when no features were built), ``p``
    (``p_answer``) and ``why`` (code of the first rule that forbids the slot, -1: allowed).
    Per request: ``off``/``count`` (its slots), ``source``, ``reason`` and ``attempts``.
    """

    def __init__(self, reqs: list[dict], config) -> None:
        self.reqs, self.config = reqs, config
        self.X: FeatureBlock | None = None
        self.frame: pd.DataFrame | None = None  #: ``X`` as built by the slow path, if it ran
        self.has_slots = False
        self.attempts: dict[int, int] = {}
        self.at = self.feat = self.p = np.zeros(0, dtype=np.int64)
        self.source = np.zeros(0, dtype=object)
        self.reason: list[str | None] = []
        self._times: tuple | None = None

    def layout(self, count: np.ndarray) -> None:
        """Lay out ``count[i]`` slots for request ``i``; every slot allowed so far."""
        self.count = np.asarray(count, dtype=np.int64)
        self.off = np.concatenate([[0], np.cumsum(self.count)])[:-1]
        self.req_of = np.repeat(np.arange(len(self.count)), self.count)
        self.slot_no = np.arange(int(self.count.sum())) - self.off[self.req_of]
        self.why = np.full(len(self.req_of), -1, dtype=np.int8)
        #: with :meth:`keep_every_rule`: a bit per rule that forbids each slot (``1 << code``)
        self.every: np.ndarray | None = None

    def keep_every_rule(self) -> None:
        """Record every rule that forbids a slot, not only the first (the dial-time check)."""
        self.every = np.zeros(len(self.req_of), dtype=np.int32)

    def every_code(self, pos: int) -> list[int]:
        """The codes of every rule that forbids slot ``pos`` (after :meth:`keep_every_rule`),
        the first one's first."""
        bits = int(self.every[pos]) if self.every is not None else 0
        first = int(self.why[pos])
        return [first] * (first >= 0) + [c for c in range(31) if bits >> c & 1 and c != first]

    def scores(self, rows: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(hours since the request, worth, wait, score)`` of the slots at positions ``rows``;
        ``wait`` is the wait discount (:meth:`PolicyConfig.slot_factors`), ``score = p_answer x
        worth x wait``."""
        if self._times is None:  # per request: requested_at, now (ns) and flexible
            self._times = (np.array([r["requested_at"].value for r in self.reqs], dtype=np.int64),
                           np.array([r["now"].value for r in self.reqs], dtype=np.int64),
                           np.array([r["urgency"] == "flexible" for r in self.reqs]))
        requested, now, flexible = self._times
        at, req = self.at[rows], self.req_of[rows]
        hours = (at - requested[req]) / 3.6e12
        worth, wait = self.config.slot_factors(flexible[req], hours, (at - now[req]) / 3.6e12)
        return hours, worth, wait, self.p[rows] * worth * wait

    def forbid(self, mask: np.ndarray, code: int) -> None:
        """Forbid the slots of ``mask`` that no earlier rule forbids."""
        self.why[mask & (self.why < 0)] = code
        if self.every is not None:
            self.every[mask] |= 1 << code

    def forbid_request(self, i: int, code: int) -> None:
        """Forbid every still allowed slot of request ``i``."""
        part = self.why[self.off[i]:self.off[i] + self.count[i]]
        part[part < 0] = code
        if self.every is not None:
            self.every[self.off[i]:self.off[i] + self.count[i]] |= 1 << code

    @property
    def allowed(self) -> np.ndarray:
        """Whether each slot may be called."""
        return self.why < 0

    def why_text(self, code: int, i: int) -> str:
        """The plain-language rule of ``code`` for request ``i``."""
        cfg = self.config
        texts = {
            OUTSIDE: "outside calling hours",
            PHONE_HOURS: lambda: (f"outside calling hours in {self.reqs[i]['contact'].phone_zone}"
                                  f" ({self.reqs[i]['contact'].second_zone_why})"),
            HORIZON: "beyond the horizon",
            HOLIDAY: "public holiday",
            GAP: f"less than {cfg.min_gap_hours:g} h after the last call",
            CAP_24H: f"{cfg.max_calls_24h} calls to this contact in 24 h already",
            CAP_7D: f"{cfg.max_calls_7d} calls to this contact in 7 days already",
            ATTEMPTS: lambda: (f"{self.attempts.get(i, 0)} attempts made for this request "
                               f"(cap {cfg.max_attempts_per_request})"),
            DO_NOT_CALL: "the contact objected to being called (do_not_call)",
            INVALID_NUMBER: ("an earlier attempt of this request found the number invalid "
                             "(invalid_number): check it, or send a new request with the "
                             "corrected number"),
        }
        text = texts[code]
        return text() if callable(text) else text

    def why_texts(self, rows: np.ndarray | None = None) -> np.ndarray:
        """``why`` as text (``None`` where allowed) for ``rows`` (default: every slot)."""
        rows = np.arange(len(self.why)) if rows is None else rows
        out = np.full(len(rows), None, dtype=object)
        codes, req = self.why[rows], self.req_of[rows]
        for j in np.flatnonzero(codes >= 0):
            out[j] = self.why_text(int(codes[j]), int(req[j]))
        return out
