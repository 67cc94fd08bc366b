"""From a scored slot batch to ``/rank`` responses: windows, exploration, reasons.

:func:`respond_all` cuts each request's allowed slots into windows (:func:`cut_windows`: the
best remaining slot starts a window that runs on over adjacent slots scoring at least
``keep_ratio`` x its first), applies exploration (a stable hash of ``request_id`` decides; the
pick is drawn in proportion to score and its propensity returned) and writes the reasons
(:func:`callback_timing.reasons.window_reasons`).

Examples
--------
>>> at = np.array(["2026-06-01T08:00", "2026-06-01T08:15", "2026-06-01T12:00"],
...               dtype="datetime64[ns]")
>>> from callback_timing.policy_config import load_policy_config
>>> cut_windows(at, np.array([0.30, 0.28, 0.35]), load_policy_config(), top_k=2)
[(2, 2), (0, 1)]
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from callback_timing.fastpath import (
    ATTEMPTS,
    DO_NOT_CALL,
    INVALID_NUMBER,
    NO_MODEL,
    STEP_NS,
    SlotBatch,
    iso_local,
    iso_utc,
)
from callback_timing.slots import SLOT_MINUTES

if TYPE_CHECKING:
    from callback_timing.policy_config import PolicyConfig
    from callback_timing.rules import RuleModel

_REASON_COLUMNS = ("weekday", "hour", "hist_n", "hist_rate", "prior_industry", "hist_wdband_n",
                   "hist_wdband_rate", "prior_wdband", "calls_last_24h", "holiday",
                   "bridge_day", "industry")
#: The columns the rule table's notes read.
_RULE_COLUMNS = ("industry", "weekday", "minute_of_day", "holiday", "bridge_day")


def respond_all(batch: SlotBatch, rules: RuleModel, model_version: str | None) -> list[dict]:
    """The ``/rank`` response of every request of a scored batch, in order."""
    from callback_timing.reasons import window_reasons

    plans = [_plan(batch, i) for i in range(len(batch.reqs))]
    X = batch.X
    needed = sorted({int(batch.feat[row]) for plan in plans if plan.get("windows")
                     for row in plan["rows"][[a for a, _ in plan["windows"]]]})
    notes = dict(zip(needed, rules.notes(X.take(np.array(needed), _RULE_COLUMNS)),
                     strict=True)) if needed else {}
    # the reason columns of the rows windows start at, as Python values
    picked = np.array(needed, dtype=np.int64)
    cols = {} if X is None else {c: dict(zip(needed, X.decoded(c)[picked].tolist(), strict=True))
                                 for c in _REASON_COLUMNS if c in X}
    out = []
    for i, (r, plan) in enumerate(zip(batch.reqs, plans, strict=True)):
        c, source = r["contact"], str(batch.source[i])
        res = {"request_id": r["request_id"], "contact_id": c.contact_id, "source": source,
               "arm": source, "fallback_reason": batch.reason[i],
               "model_version": model_version if source == "model" else None,
               "windows": [], "explored": False, "propensity": None, "notes": list(c.notes)}
        out.append(res)
        if plan.get("note"):
            res["notes"].append(plan["note"])
        if "windows" not in plan:
            continue
        explored, propensity = plan["explored"], plan["propensity"]
        res["explored"], res["propensity"] = explored, (
            None if propensity is None else round(float(propensity), 6))
        at, score, worth, hours = plan["at"], plan["score"], plan["worth"], plan["hours"]
        for k, (a, b) in enumerate(plan["windows"]):
            row = plan["rows"][a]
            f = int(batch.feat[row])
            win_score = (1.0 / (k + 1)) if r["urgency"] == "urgent" else float(score[a])
            res["windows"].append({
                "start": iso_utc(int(at[a])),
                "end": iso_utc(int(at[b]) + STEP_NS),
                "local_start": iso_local(int(at[a]), c.timezone),
                "p_answer": round(float(batch.p[row]), 4),
                "score": round(win_score, 4),
                "reasons": window_reasons(
                    {name: values[f] for name, values in cols.items()}, source=source,
                    rule_note=notes[f], urgency=r["urgency"], worth=float(worth[a]),
                    hours_since=float(hours[a]), contact_notes=c.notes,
                    explored=explored and k == 0, opt_out=c.opt_out),
            })
        if r["urgency"] != "urgent":
            # best first; an exploring ranking keeps its random pick first (explored: true)
            first = res["windows"][:1] if explored else []
            rest = sorted(res["windows"][len(first):], key=lambda w: -w["score"])
            res["windows"] = first + rest
    return out


def _plan(batch: SlotBatch, i: int) -> dict:
    """Request ``i``'s windows (slot positions), exploration and propensity, or a note."""
    r, cfg = batch.reqs[i], batch.config
    lo, hi = int(batch.off[i]), int(batch.off[i] + batch.count[i])
    rows = lo + np.flatnonzero(batch.why[lo:hi] < 0)
    if len(rows) == 0:
        if hi > lo:
            # a rule of the whole request (attempt cap, do not call, invalid number) is why,
            # though the night's slots, forbidden first by the hours, outnumber the rest
            whole = np.flatnonzero(np.isin(batch.why[lo:hi], REQUEST_RULES))
            reasons = pd.Series(batch.why_texts(lo + whole if len(whole) else np.arange(lo, hi)))
            return {"note": "no allowed slot in the horizon: " + reasons.value_counts().index[0]}
        return {}
    at = batch.at[rows]
    hours, worth, _, score = batch.scores(rows)
    windows = cut_windows(at.view("datetime64[ns]"), score, cfg, r["top_k"],
                       urgent=r["urgency"] == "urgent")
    explored, propensity = False, None
    share = cfg.exploration_share
    # the model explores; so do the rules of a server without a model, so that its log can
    # evaluate the first model off-policy (not a fallback the caller or contact chose)
    exploring = batch.source[i] == "model" or batch.reason[i] == NO_MODEL
    if exploring and share > 0 and r["urgency"] != "urgent":
        total = score.sum()
        best = windows[0][0] if windows else 0
        if stable_unit(r["request_id"], "explore") < share and total > 0:
            rng = np.random.default_rng(int(stable_unit(r["request_id"], "pick") * 2**32))
            pick = int(rng.choice(len(rows), p=score / total))
            # the others keep their distance from the explored slot, as from each other
            sep = cfg.min_separation_minutes * 60 * 10**9  # ``at`` is in nanoseconds
            near = [at[w[0]] - sep < at[pick] < at[w[1]] + sep for w in windows]
            windows = [(pick, pick)] + [w for w, n in zip(windows, near, strict=True)
                                        if not n][: r["top_k"] - 1]
            explored = True
        chosen = windows[0][0]
        propensity = pick_probability(share, score[chosen], total, chosen == best)
    return {"rows": rows, "at": at, "hours": hours, "worth": worth, "score": score,
            "windows": windows, "explored": explored, "propensity": propensity}


#: the rules that forbid a whole request, not some of its slots
REQUEST_RULES = (ATTEMPTS, DO_NOT_CALL, INVALID_NUMBER)


def stable_unit(text: str, salt: str) -> float:
    """A number in [0, 1) that depends only on ``text`` and ``salt``."""
    digest = hashlib.sha256(f"{salt}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def cut_windows(at: np.ndarray, score: np.ndarray, cfg: PolicyConfig, top_k: int,
             urgent: bool = False) -> list[tuple[int, int]]:
    """``(first, last)`` slot positions of up to ``top_k`` windows, best first.

    A window starts at the best remaining slot (the earliest one when ``urgent``) and runs on
    over adjacent allowed slots while each scores at least ``keep_ratio`` x its first, up to
    ``max_window_minutes``; windows start at least ``min_separation_minutes`` apart.
    """
    free = np.ones(len(at), dtype=bool)
    at = np.asarray(at).astype("datetime64[ns]").view(np.int64)  # nanoseconds: cheap maths
    sep = int(np.timedelta64(cfg.min_separation_minutes, "m") // np.timedelta64(1, "ns"))
    longest = max(cfg.max_window_minutes // SLOT_MINUTES, 1)
    out = []
    while len(out) < top_k and free.any():
        candidates = np.flatnonzero(free)
        first = candidates[0] if urgent else candidates[np.argmax(score[candidates])]
        # run on while the next slot is free, adjacent, good enough and the window not too long
        end = min(len(at), first + longest)
        runs = (free[first + 1:end] & (at[first + 1:end] - at[first:end - 1] == STEP_NS)
                & (score[first + 1:end] >= cfg.keep_ratio * score[first]))
        last = first + (len(runs) if runs.all() else int(np.argmin(runs)))
        out.append((int(first), int(last)))
        free &= ~((at > at[first] - sep) & (at < at[last] + sep))
    return out


def pick_probability(share: float, score: float | np.ndarray, total: float | np.ndarray,
                     best: bool | np.ndarray) -> float | np.ndarray:
    """The probability that a ranking's first window is the slot of ``score``: explored
    (``share`` of rankings) in proportion to score, else the ``best`` slot. The logged
    propensity (one slot), and what an off-policy replay asks of a new policy (arrays)."""
    return share * score / total + (1 - share) * best
