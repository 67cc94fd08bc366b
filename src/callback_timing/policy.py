"""From answer probabilities to ranked call windows under the calling rules.

:class:`Policy` answers ``/rank`` requests (contract section 3): a 15-minute slot grid over
``[now, now + horizon]`` in UTC (DST-safe), the calling rules of :mod:`policy_config` (legal
hours per country/subdivision in the contact's zone, and in its phone number's zone when the
two disagree; public holidays; attempt caps; minimum gap; opt-out), ``p_answer`` from the model
or the rule-based fallback (same interface), ``score = p_answer x urgency``, windows of adjacent
good slots with plain-language reasons, and a small exploration share with its propensity.

Examples
--------
>>> policy = Policy()                      # no model: the rules answer
>>> out = policy.rank([{"request_id": "r-1", "contact": {"contact_id": "c-1",
...     "industry": "it", "country": "PL", "timezone": "Europe/Warsaw"},
...     "now": "2026-06-01T06:00:00Z"}])[0]
>>> out["source"], out["fallback_reason"], len(out["windows"])
('rules', 'no model loaded', 3)
>>> out["windows"][0]["local_start"] >= "2026-06-01T08:00:00+02:00"
True
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from callback_timing import fastpath as fp
from callback_timing import tzclock
from callback_timing.fastpath import SlotBatch
from callback_timing.feature_block import FeatureBlock
from callback_timing.features import build_features
from callback_timing.history_kernel import CallArrays
from callback_timing.model import AnswerModel
from callback_timing.policy_config import PolicyConfig, load_policy_config
from callback_timing.priors import Priors
from callback_timing.rank_requests import RankRequestError, RequestReader
from callback_timing.rules import RuleModel
from callback_timing.schema import CallbackTimingError
from callback_timing.slot_features import SlotFeatures
from callback_timing.windows import respond_all

if TYPE_CHECKING:
    from pathlib import Path

    from callback_timing.bundle import ModelBundle

#: At most this many feature rows of the project's own XGBoost model are predicted in the
#: ranking thread (a few requests); more, or another model, predict in the budget's thread.
INLINE_PREDICT_ROWS = 512

logger = logging.getLogger(__name__)

_HISTORY_COLUMNS = ["call_id", "contact_id", "called_at", "answered", "outcome", "timezone",
                    "country", "subdivision", "industry", "request_id"]


#: The feature columns the rule-based fallback reads.
_RULE_INPUTS = ("industry", "weekday", "minute_of_day", "holiday", "bridge_day", "hist_n",
                "hist_rate", "prior_industry")

class ModelUnavailable(CallbackTimingError):
    """``policy: model`` was asked for but no model is loaded."""


class Policy:
    """Ranks call windows for callback requests; the rules answer when the model cannot.

    Parameters
    ----------
    bundle : a trained :class:`~callback_timing.bundle.ModelBundle` (``None``: rules only).
    config : calling rules (default: :func:`~callback_timing.policy_config.load_policy_config`).
    rules : the fallback (default: the packaged ``rules.yaml``).
    history : clean call history the history features read (default: the bundle's).
    priors : priors the history features smooth toward (default: the bundle's).
    """

    #: Build slot features with :func:`~callback_timing.features.build_features` on pandas
    #: frames (the reference the fast path is tested against) instead of :class:`SlotFeatures`.
    _slow_features = False

    def __init__(self, bundle=None, config: PolicyConfig | None = None,
                 rules: RuleModel | None = None, history: pd.DataFrame | None = None,
                 priors: Priors | None = None) -> None:
        self.bundle = bundle
        self.config = config or load_policy_config()
        self.rules = rules or RuleModel.from_file()
        if history is None:
            history = bundle.history if bundle is not None else _empty_history()
        self._weeks: dict[tuple, np.ndarray] = {}
        self._booster_copy: tuple | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._late: Future | None = None  # the last prediction past its budget
        self._inline = True  # small predictions of an AnswerModel run in the calling thread
        if priors is None:
            priors = bundle.priors if bundle is not None else _empty_priors()
        self.priors = priors
        self.history = history

    @property
    def model_version(self) -> str | None:
        """Version of the loaded model bundle, if any."""
        return self.bundle.version if self.bundle is not None else None

    # --- requests --------------------------------------------------------------------------

    def normalise(self, request: dict, now: pd.Timestamp | None = None) -> dict:
        """Validate one ``/rank`` request and fill the contract's defaults.

        Raises :class:`RankRequestError` naming the field for anything it cannot use.
        """
        return self._reader.normalise(request, now)

    # --- ranking ---------------------------------------------------------------------------

    def rank(self, requests: list[dict], now: pd.Timestamp | None = None,
             errors: str = "raise") -> list[dict]:
        """Responses for ``/rank`` requests, in order (contract section 3).

        With ``errors="raise"`` an invalid request raises :class:`RankRequestError` and
        ``policy: model`` without a model :class:`ModelUnavailable`; with ``errors="return"``
        such a request is answered in place by ``{"request_id": ..., "error": "field:
        problem"}`` and the others are ranked. Everything else falls back to the rules.
        """
        if errors not in ("raise", "return"):
            raise ValueError(f"errors must be 'raise' or 'return', not {errors!r}")
        out: list[dict | None] = []
        good = []
        for request in requests:
            try:
                good.append(self.check(request, now))
                out.append(None)
            except (RankRequestError, ModelUnavailable) as exc:
                if errors == "raise":
                    raise
                rid = request.get("request_id") if isinstance(request, dict) else None
                out.append({"request_id": rid, "error": str(exc)})
        answers = iter(respond_all(self._scored(good, every_slot=False), self.rules,
                                   self.model_version) if good else [])
        return [item if item is not None else next(answers) for item in out]

    def slot_table(self, requests: list[dict], now: pd.Timestamp | None = None,
                   allowed_only: bool = False) -> pd.DataFrame:
        """Every candidate slot of every request (only the allowed ones if ``allowed_only``,
        which skips scoring slots outside calling hours): what the windows are cut from.

        Returns one row per (request, 15-minute slot) with ``request_id``, ``contact_id``,
        ``at`` (UTC), ``p_answer``, ``worth`` (urgency), ``wait`` (the wait discount),
        ``score`` (``p_answer x worth x wait``), ``allowed``, ``why_not``
        (the first calling rule that forbids the slot), ``source`` and ``calls_last_24h``
        (calls to the contact in the 24 h before the slot, as far as known at ``now``).
        """
        reqs = [self.check(r, now) for r in requests]
        b = self._scored(reqs, every_slot=not allowed_only) if reqs else None
        if b is None or b.X is None:
            return pd.DataFrame(columns=["request_id", "contact_id", "at", "p_answer", "worth",
                                         "wait", "score", "allowed", "why_not", "source"])
        req_of = b.req_of
        _, worth, wait, score = b.scores(np.arange(len(b.at)))
        unit = pd.to_datetime(pd.Series([r["now"] for r in b.reqs]), utc=True).dt.unit
        at = pd.Series(pd.DatetimeIndex(b.at.view("datetime64[ns]")).tz_localize("UTC")
                       .as_unit(unit))
        table = pd.DataFrame({
            "request_id": np.array([r["request_id"] for r in b.reqs], dtype=object)[req_of],
            "contact_id": np.array([r["contact"].contact_id for r in b.reqs],
                                   dtype=object)[req_of],
            "at": at, "p_answer": b.p, "worth": worth, "wait": wait, "score": score,
            "allowed": b.allowed, "why_not": b.why_texts(), "source": b.source[req_of],
            "calls_last_24h": np.asarray(b.X["calls_last_24h"])[b.feat],
        })
        # an allowed slot is inside calling hours, so it has features (``feat >= 0``)
        return table[b.allowed].reset_index(drop=True) if allowed_only else table

    def check(self, request: dict, now: pd.Timestamp | None = None) -> dict:
        """:meth:`normalise`, and ``policy: model`` needs a model (else
        :class:`ModelUnavailable`): what :meth:`rank` and :meth:`slot_table` accept."""
        req = self.normalise(request, now)
        if req["policy"] == "model" and self.bundle is None:
            raise ModelUnavailable("policy: 'model' asked for, but no model is loaded")
        return req

    def dial_check(self, contact: dict, at: str | datetime | None = None,
                   request_id: str | None = None,
                   now: pd.Timestamp | None = None) -> dict:
        """May the contact be called now? The check a dialer makes at the moment of dialing.

        ``contact`` is a ``/rank`` contact, ``at`` the instant of the call (default: ``now``,
        the clock) and ``request_id`` the callback request it belongs to (for its attempt
        cap). Returns ``{"allowed": bool, "reasons": [...]}``: every calling rule that
        forbids a call starting at ``at``, the first in this order first (calling hours in
        the contact's zone and the phone
        number's, public holiday, minimum gap, caps per 24 h and 7 days, attempts per
        request, an attempt of the request that found the number invalid, do-not-call), in
        plain language. Windows ranked hours earlier can have
        become illegal since: this asks again.
        """
        raw = {"contact": contact, "now": at, "policy": "rules",
               "horizon_hours": fp.SLOT_MINUTES / 60}
        if request_id is not None:
            raw["request_id"] = request_id
        req = self.normalise(raw, now)
        b = self._scored([req], every_slot=True, exact=True)
        codes = b.every_code(0) if len(b.why) else [fp.OUTSIDE]
        if not codes:
            return {"allowed": True, "reasons": []}
        texts = []
        for code in codes:
            text = b.why_text(code, 0)
            if code == fp.OUTSIDE:
                c = req["contact"]
                (_minute,), (weekday,) = fp.local_parts(np.array([req["now"].value]),
                                                       np.array([c.timezone], dtype=object))
                start, end = self._week(c.country, c.subdivision)[weekday]
                text = (f"outside calling hours {start // 60:02d}:{start % 60:02d}-"
                        f"{end // 60:02d}:{end % 60:02d} {c.timezone}" if end > start
                        else f"no calls on this weekday in {c.timezone}")
            texts.append(text)
        return {"allowed": False, "reasons": texts}

    # --- calls made since the history --------------------------------------------------------

    #: Calls added with :meth:`add_calls` are folded into the history (one rebuild) once
    #: there are more than this many, or more than this share of the history.
    compact_rows = 50_000
    compact_share = 0.05

    def add_calls(self, calls: pd.DataFrame) -> None:
        """Calls made since the history (clean call-history rows, e.g. from ``/outcomes``):
        the next ranking of their contacts takes them into account (history features, gap,
        caps, attempts per request, the contact's zone and attributes).

        They are kept beside the history per contact, so adding is cheap; a ranking of a
        contact with added calls builds its features from that contact's calls alone.
        """
        if not len(calls):
            return
        calls = calls.sort_values("called_at", kind="stable")
        if len(self._history):  # one time unit: pandas concatenates two units as objects
            calls = calls.assign(called_at=calls["called_at"].astype(
                self._history["called_at"].dtype))
        fields = ("timezone", "country", "subdivision", "industry")
        last = calls.drop_duplicates("contact_id", keep="last")
        for row in last.reindex(columns=["contact_id", *fields]).itertuples(index=False):
            known = self._profiles.get(row.contact_id, {})
            self._profiles[row.contact_id] = {
                f: (v if isinstance(v, str) else known.get(f))
                for f, v in zip(fields, row[1:], strict=True)}
        self._reader = RequestReader(self.config, self._profiles)  # contacts may have changed
        self._recent_rows += len(calls)
        self._added.append(calls)  # in order of arrival, for folding in (few frames)
        if len(self._added) > 64:
            self._added = [pd.concat(self._added, ignore_index=True)]
        if self._recent_rows > max(self.compact_rows, self.compact_share * len(self._history)):
            # fold into the history at once (one concatenation of a few frames), without
            # keeping these calls per contact first
            profiles = self._profiles  # merged field by field: the last call may lack some
            self.history = pd.concat([self._history, *self._added], ignore_index=True)
            self._profiles = profiles
            self._reader = RequestReader(self.config, profiles)
            return
        arrays = CallArrays.of(calls, np.zeros(len(calls), dtype=np.int64))
        for cid, rows in calls.groupby("contact_id", sort=False).indices.items():
            part = calls.iloc[rows].reset_index(drop=True)
            old = self._recent.get(cid)
            self._recent[cid] = part if old is None else pd.concat([old, part],
                                                                   ignore_index=True)
            mine = arrays.take(rows)
            old_arrays = self._recent_arrays.get(cid)
            self._recent_arrays[cid] = (mine if old_arrays is None
                                        else CallArrays.concat([old_arrays, mine]))

    def profile(self, contact_id: str) -> dict:
        """The last known ``timezone``, ``country``, ``subdivision`` and ``industry`` of a
        contact in the history and the added calls (empty for an unknown contact)."""
        return self._profiles.get(contact_id) or {}

    def _sources(self, contacts: set[str]) -> SlotFeatures:
        """The features to rank ``contacts`` with: the history's, or, when some of them have
        calls added since, ones prepared from the calls of ``contacts`` alone."""
        if not any(c in self._recent for c in contacts):
            return self._features
        return self._features.with_calls(sorted(contacts), self._recent_arrays)

    def _calls_of(self, contacts: set[str]) -> pd.DataFrame:
        """The history rows of ``contacts`` and the calls added since (the slow path's)."""
        fresh = [self._recent[c] for c in contacts if c in self._recent]
        calls = self._index.calls_of(contacts)
        return pd.concat([calls, *fresh], ignore_index=True) if fresh else calls

    def _attempts(self, request_ids: list, contacts: set[str]) -> dict[str, list]:
        """Calls made so far per request id among ``request_ids`` (history and added), and
        whether one of them ended ``invalid_number``: ``[calls, invalid]``."""
        made = self._index.attempts(request_ids, contacts)
        wanted = set(request_ids)
        for c in contacts:
            part = self._recent.get(c)
            if part is not None and "request_id" in part:
                fp.count_attempts(made, wanted, part["request_id"].to_numpy(object),
                                  fp.invalid_calls(part))
        return made

    def _scored(self, reqs: list[dict], every_slot: bool, exact: bool = False) -> SlotBatch:
        """Slots, features, ``p_answer`` and calling rules of normalised requests.

        Features are built once per distinct (contact, ``now``) grid, and only for slots
        inside the contact's calling hours unless ``every_slot`` (the other slots are
        forbidden by the first rule whatever their features say). ``exact``: one slot per
        request, a call starting at ``now`` itself (the dial-time check).
        """
        b = SlotBatch(reqs, self.config)
        now_ns = np.array([r["now"].value for r in reqs], dtype=np.int64)
        if exact:
            first, count = now_ns, np.ones(len(reqs), dtype=np.int64)
        else:
            first, count = fp.slot_grid(now_ns, [r["horizon_hours"] for r in reqs])
        b.layout(count)
        if exact:
            b.keep_every_rule()
        grids = fp.shared_grids(reqs, now_ns, first, count)
        zones = np.array([c.timezone for c in grids.contacts], dtype=object)
        local = tzclock.local_ns(grids.at, zones[grids.of])
        minute, weekday = fp.minute_weekday(local)
        weeks = np.stack([self._week(c.country, c.subdivision) for c in grids.contacts])
        span = 1 if exact else fp.SLOT_MINUTES  # a call at that minute, or the whole slot
        outside = fp.outside_hours(minute, weekday, weeks, grids.of, span)
        rows = np.arange(len(grids.at)) if every_slot else np.flatnonzero(~outside)
        feat_of = np.full(len(grids.at), -1, dtype=np.int64)
        feat_of[rows] = np.arange(len(rows))
        grid_off = np.concatenate([[0], np.cumsum(grids.count)])
        row_of = grid_off[grids.group][b.req_of] + b.slot_no
        b.at, b.feat = grids.at[row_of], feat_of[row_of]
        contacts = {c.contact_id for c, n in zip(grids.contacts, grids.count, strict=True) if n}
        features = self._sources(contacts)
        if len(rows) and self._slow_features:
            b.frame = build_features(self._calls_of(contacts), grids.targets(rows),
                                     self.priors)
            b.X = FeatureBlock.from_frame(b.frame)
        elif len(rows):
            b.X = features.block(grids.contacts, grids.now_ns, grids.of[rows],
                                       grids.at[rows], local[rows])
        b.has_slots = bool(count.sum())
        use_model, started = self._start(b, grids.group, grids.of[rows])
        # wait for the model at once: Python work here meanwhile would fight it for the GIL
        self._score(b, use_model, started)
        b.forbid(outside[row_of], fp.OUTSIDE)
        self._allowed(b, now_ns, contacts, exact)
        return b

    def _week(self, country: str | None, subdivision: str | None) -> np.ndarray:
        """Calling hours of a country/subdivision as a 7 x 2 array (cached)."""
        key = (country, subdivision)
        if key not in self._weeks:
            self._weeks[key] = fp.week_table(self.config.hours_for(country, subdivision))
        return self._weeks[key]

    def _start(self, b: SlotBatch, group: np.ndarray, group_of_row: np.ndarray):
        """Decide each request's source and start the model's prediction for its requests.

        ``group`` is each request's slot grid, ``group_of_row`` each feature row's. Returns
        ``(use_model, started)``: ``started`` is ``None`` (no model rows) or ``(wanted,
        outcome)`` for :meth:`_score`, where ``outcome`` is the prediction, a running
        future or why the model cannot answer.
        """
        n = len(b.reqs)
        b.source = np.array(["rules"] * n, dtype=object)
        b.reason = [None] * n
        b.p = np.full(len(b.at), np.nan)
        use_model = np.zeros(n, dtype=bool)
        if not b.has_slots:
            b.reason = ["no allowed slot"] * n
            return use_model, None
        for i, r in enumerate(b.reqs):
            if r["contact"].opt_out:
                b.reason[i] = "contact opted out of AI timing (traditional callback)"
            elif r["policy"] == "rules":
                b.reason[i] = "policy=rules"
            elif self.bundle is None:
                b.reason[i] = fp.NO_MODEL
            else:
                use_model[i] = True
        if b.X is None or not use_model.any():
            return use_model, None
        model_group = np.zeros(int(group.max()) + 1, dtype=bool)
        model_group[group[use_model]] = True
        wanted = model_group[group_of_row]
        X = b.X.take(wanted) if b.frame is None else b.frame[wanted]
        booster = self._small_booster(len(X))
        budget = self.config.model_budget_s(len(b.reqs))
        if budget is None:
            return use_model, (wanted, self._predict_now(X, booster))
        if self._inline and booster is not None and len(X) <= INLINE_PREDICT_ROWS \
                and type(self.bundle.model) is AnswerModel:
            # the project's XGBoost model on a few rows: bounded work (~0.4 ms), predicted
            # here; the hand-off to the budget's thread would cost more than the prediction
            started = time.perf_counter()
            outcome = self._predict_now(X, booster)
            if time.perf_counter() - started > budget:  # never expected: stop trusting it
                self._inline = False
                logger.warning("the model took longer than its latency budget in the "
                               "ranking thread: from now on it predicts in the budget's thread")
            return use_model, (wanted, outcome)
        if self._late is not None and not self._late.done():
            return use_model, (wanted, "model busy after exceeding its latency budget")
        future = self._pool().submit(fp.predict_answer, self.bundle.model, X, booster)
        return use_model, (wanted, (future, budget))

    def _predict_now(self, X, booster):
        """The model's answer for ``X`` in this thread, or why it failed."""
        try:
            return fp.predict_answer(self.bundle.model, X, booster=booster)
        except Exception as exc:  # noqa: BLE001 - any model failure means the rules answer
            return f"model failed ({type(exc).__name__})"

    def _score(self, b: SlotBatch, use_model: np.ndarray, started) -> None:
        """p_answer per slot: the model's (when it answers in time) or the rules'."""
        if not b.has_slots:
            return
        if b.X is None:  # every slot outside calling hours: nothing to score
            b.source[use_model] = "model"
            return
        has = b.feat >= 0
        if started is not None:
            failure = self._model_p(b, use_model, has, *started)
            if failure is None:
                b.source[use_model] = "model"
            else:
                for i in np.flatnonzero(use_model):
                    b.reason[i] = failure
                use_model[:] = False
        if use_model.all():
            return
        # the rules score the rest; an opted-out contact gets the table alone (no history)
        opt_out = np.array([r["contact"].opt_out for r in b.reqs])
        for table_only in (False, True):
            mine = has & ~use_model[b.req_of] & (opt_out[b.req_of] == table_only)
            if mine.any():
                needed, inverse = np.unique(b.feat[mine], return_inverse=True)
                rows = (b.X.take(needed, _RULE_INPUTS) if b.frame is None
                        else b.frame.iloc[needed])
                p = self.rules.table_p(rows) if table_only else self.rules.p_answer(rows)
                b.p[mine] = p[inverse]

    def _model_p(self, b: SlotBatch, use_model: np.ndarray, has: np.ndarray,
                 wanted: np.ndarray, outcome) -> str | None:
        """Fill ``b.p`` of the model's requests; return why it failed (``None``: it did not)."""
        if isinstance(outcome, tuple):  # (future, budget): wait for it, within the budget
            future, budget = outcome
            try:
                outcome = future.result(timeout=budget)
            except FutureTimeout:
                self._late = future
                return f"model exceeded its latency budget ({budget * 1000:.0f} ms)"
            except Exception as exc:  # noqa: BLE001 - any model failure means the rules answer
                return f"model failed ({type(exc).__name__})"
        if isinstance(outcome, str):
            return outcome
        p_model = np.asarray(outcome, dtype=float)
        if not np.isfinite(p_model).all():
            return "model returned NaN"
        full = np.full(len(b.X), np.nan)
        full[wanted] = p_model
        mine = has & use_model[b.req_of]
        b.p[mine] = full[b.feat[mine]]
        return None

    def _pool(self) -> ThreadPoolExecutor:
        """Threads the model predicts in, so a late prediction can be left behind."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=4,
                                                thread_name_prefix="callback-timing-model")
        return self._executor

    def _small_booster(self, rows: int):
        """A single-threaded copy of the model's booster for a few rows (threads cost more
        than they save there; the predictions are the same), or ``None``."""
        booster = getattr(self.bundle.model, "booster_", None)
        if rows > fp.SMALL_PREDICT_ROWS or booster is None:
            return None
        if self._booster_copy is None or self._booster_copy[0] is not booster:
            try:
                copy = booster.copy()
                copy.set_param({"nthread": 1})
            except Exception:  # noqa: BLE001 - not an XGBoost booster: predict as it is
                return None
            self._booster_copy = (booster, copy)
        return self._booster_copy[1]

    def _allowed(self, b: SlotBatch, now_ns: np.ndarray, contacts: set[str],
                 exact: bool) -> None:
        """Whether each slot may be called, and why not (the first rule that forbids it)."""
        cfg = self.config
        phoned = [i for i, r in enumerate(b.reqs) if r["contact"].phone_zone is not None]
        if phoned:
            idx = np.concatenate([np.arange(b.off[i], b.off[i] + b.count[i]) for i in phoned])
            zones = np.array([b.reqs[i]["contact"].phone_zone for i in phoned], dtype=object)
            owner = np.repeat(np.arange(len(phoned)), b.count[phoned])
            minute, weekday = fp.local_parts(b.at[idx], zones[owner])
            weeks = np.stack([self._week(b.reqs[i]["contact"].country,
                                         b.reqs[i]["contact"].subdivision) for i in phoned])
            bad = np.zeros(len(b.at), dtype=bool)
            bad[idx] = fp.outside_hours(minute, weekday, weeks, owner,
                                        1 if exact else fp.SLOT_MINUTES)
            b.forbid(bad, fp.PHONE_HOURS)
        ends = now_ns + np.array([fp.horizon_ns(r["horizon_hours"]) for r in b.reqs])
        b.forbid(b.at + fp.STEP_NS > ends[b.req_of], fp.HORIZON)
        if b.X is not None:
            X = b.X
            gap = np.asarray(X["hours_since_last_call"], dtype=float)  # NaN: no call, no gap
            rules = [(gap < cfg.min_gap_hours, fp.GAP),
                     (np.asarray(X["calls_last_24h"]) >= cfg.max_calls_24h, fp.CAP_24H),
                     (np.asarray(X["calls_last_168h"]) >= cfg.max_calls_7d, fp.CAP_7D)]
            if not cfg.allow_holiday_calls:
                rules.insert(0, (np.asarray(X["holiday"], dtype=bool), fp.HOLIDAY))
            # the first of these rules that forbids each feature row (written last to first,
            # so the first one's code stays; np.select does the same, slower on few rows),
            # then each slot's row's
            first = np.full(len(gap), -1, dtype=np.int8)
            for mask, code in reversed(rules):
                first[mask] = code
            has = b.feat >= 0
            codes = np.full(len(b.at), -1, dtype=np.int8)
            codes[has] = first[b.feat[has]]
            open_ = (b.why < 0) & (codes >= 0)
            b.why[open_] = codes[open_]
            if b.every is not None:  # the dial-time check names every rule
                for mask, code in rules:
                    hit = np.zeros(len(b.at), dtype=bool)
                    hit[has] = np.asarray(mask, dtype=bool)[b.feat[has]]
                    b.every[hit] |= 1 << code
        made = self._attempts([r["request_id"] for r in b.reqs], contacts)
        if made:
            for i, r in enumerate(b.reqs):
                done, invalid = made.get(r["request_id"], (0, False))
                b.attempts[i] = done
                if invalid and cfg.stop_after_invalid_number:
                    b.forbid_request(i, fp.INVALID_NUMBER)
                elif done >= cfg.max_attempts_per_request:
                    b.forbid_request(i, fp.ATTEMPTS)
        for i, r in enumerate(b.reqs):
            if r["contact"].do_not_call:
                b.forbid_request(i, fp.DO_NOT_CALL)

    # --- history ---------------------------------------------------------------------------

    @property
    def history(self) -> pd.DataFrame:
        """Clean call history the history features read, with the calls of :meth:`add_calls`
        (assign a new frame to replace it)."""
        if not self._added:
            return self._history
        return pd.concat([self._history, *self._added], ignore_index=True)

    @history.setter
    def history(self, frame: pd.DataFrame) -> None:
        """Replace the history with ``frame`` and rebuild what is read from it (calls added
        since, contact index and profiles, request reader, slot features)."""
        self._history = frame
        self._recent: dict[str, pd.DataFrame] = {}  # calls added since, per contact
        self._recent_arrays: dict[str, CallArrays] = {}  # the same as kernel arrays
        self._added: list[pd.DataFrame] = []  # the same in order of arrival
        self._recent_rows = 0
        self._index = fp.HistoryIndex(frame)
        last = frame.sort_values("called_at", kind="stable").drop_duplicates(
            "contact_id", keep="last") if len(frame) else frame
        fields = ["timezone", "country", "subdivision", "industry"]
        #: the last known attributes of each contact in the history (a dict: fast lookups)
        self._profiles: dict = {cid: dict(zip(fields, values, strict=True)) for cid, *values in
                                zip(last["contact_id"], *(last[f].to_numpy(object)
                                                          for f in fields), strict=True)}
        self._reader = RequestReader(self.config, self._profiles)  # a fresh contact cache
        previous = getattr(self, "_features", None)
        self._features = SlotFeatures(frame, self.priors, calendar_of=previous)


def _empty_history() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in _HISTORY_COLUMNS})
    frame["called_at"] = pd.Series(dtype="datetime64[ns, UTC]")
    frame["answered"] = pd.Series(dtype=np.int8)
    return frame


def _empty_priors() -> Priors:
    priors = Priors()
    priors.population_ = 0.2
    return priors


def load_bundle(model_dir: str | Path | None = None) -> tuple[ModelBundle | None, str]:
    """The bundle at ``model_dir`` if it loads (else ``None``) and one line saying so.

    A missing or broken model is not an error: the rules answer, and the line says why.
    """
    from pathlib import Path

    from callback_timing.bundle import ModelBundle

    if model_dir is None:
        return None, "no model folder given: the rules answer"
    folder = Path(model_dir)
    if not (folder / "metadata.json").is_file():
        return None, f"no model bundle at {folder}: the rules answer"
    try:
        bundle = ModelBundle.load(folder)
    except CallbackTimingError as exc:
        return None, f"model bundle at {folder} could not be loaded ({exc}): the rules answer"
    return bundle, f"model {bundle.version} from {folder}"


def smoke_test(policy: Policy) -> str | None:
    """Why ``policy``'s model cannot answer (``None``: it ranks a contact of its history with
    the model and finite probabilities). A bundle that loads may still fail to predict, e.g.
    one written by another version whose features this one does not build."""
    try:
        h = policy.history
        cid = str(h["contact_id"].iloc[-1]) if len(h) else "smoke-test"
        now = (h["called_at"].max() if len(h) else pd.Timestamp.now(tz="UTC"))
        slots = policy.slot_table([{"contact": {"contact_id": cid}, "now": now.isoformat(),
                                    "policy": "model", "horizon_hours": 72}], allowed_only=True)
    except CallbackTimingError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - any failure disqualifies the bundle
        return f"{type(exc).__name__} while ranking"
    if len(slots) and (slots["source"] != "model").any():
        return "the model did not answer"
    if not np.isfinite(slots["p_answer"].to_numpy(dtype=float)).all():
        return "the model returned NaN"
    return None


def load_policy(model_dir: str | Path | None = None, rules_path: str | Path | None = None,
                rules_table_path: str | Path | None = None) -> tuple[Policy, str]:
    """A :class:`Policy` with the bundle at ``model_dir`` if it loads and answers
    (:func:`smoke_test`, as a server checks a bundle before serving it), else rules only.

    Returns the policy and one line saying what answers (:func:`load_bundle`). Mistakes in
    the rules files are :class:`~callback_timing.schema.ConfigError`.
    """
    config = load_policy_config(rules_path)
    rules = RuleModel.from_file(rules_table_path)
    bundle, note = load_bundle(model_dir)
    policy = Policy(bundle, config=config, rules=rules)
    if bundle is not None:
        problem = smoke_test(policy)
        if problem is not None:
            note = f"model {bundle.version} from {model_dir} refused ({problem}): the rules answer"
            policy = Policy(None, config=config, rules=rules)
    return policy, note
