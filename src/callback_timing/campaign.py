"""Offline campaign evaluator: replay callback requests in the synthetic world, per policy.

Each policy works the same requests event by event: decide (rank at ``now``) -> call at the
chosen slot -> the world answers with its true probability (including fatigue from every
earlier call) -> decide again after a failure, up to three attempts within 48 h of the request.
The policies:

``desk``
    the traditional callback desk: the earliest allowed slot in desk hours (Mon-Fri
    08:00-18:00 local), a retry two hours later, the third attempt a day after that.
``rules``
    the rule-based fallback (``rules.yaml``) under the calling rules, with urgency.
``model``
    the trained answer model under the calling rules, with urgency (no exploration).
``oracle``
    knows the truth: the same decision as the others (true probability x urgency x the wait
    discount), so its lead over ``model`` is what knowing the truth is worth.

Outcomes use common random numbers (one uniform draw per request and attempt), so policy
differences are not sampling noise of the outcomes. Requests are played a day at a time in
order of request (``chunk_hours``); every decision sees the calls the replay made before it for
earlier days, whichever request they belonged to, and the calls of its own day's earlier
attempt rounds.

KPIs (:func:`campaign_kpis`): first-attempt answer rate, reached within the deadline, average
attempts, mean hours to contact, cost per reached callback, value (urgency-weighted reach), and
calls outside legal hours, overall and for cold-start contacts (no earlier call).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from callback_timing import calendar
from callback_timing.policy import Policy
from callback_timing.policy_config import PolicyConfig, desk_config, load_policy_config
from callback_timing.sim.outcomes import failure_labels
from callback_timing.slots import SLOT_MINUTES

if TYPE_CHECKING:
    from callback_timing.bundle import ModelBundle
    from callback_timing.world import World

POLICY_NAMES = ("desk", "rules", "model", "oracle")
_CONTACT = ["timezone", "country", "subdivision", "industry"]


@dataclass
class CampaignResult:
    """What :func:`replay` returns: every call made and every request's fate, per policy."""

    calls: pd.DataFrame
    requests: pd.DataFrame
    kpis: pd.DataFrame


def _policies(bundle, config: PolicyConfig, history: pd.DataFrame, names) -> dict:
    """One :class:`Policy` per name; evaluation runs without exploration."""
    quiet = dataclasses.replace(config, exploration_share=0.0)
    setups = {"desk": (None, desk_config(config)), "rules": (None, quiet),
              "model": (bundle, quiet), "oracle": (None, quiet)}
    return {name: Policy(*setups[name], history=history) for name in names}


def replay(
    world: World,
    history: pd.DataFrame,
    requests: pd.DataFrame,
    bundle: ModelBundle | None = None,
    config: PolicyConfig | None = None,
    policies: tuple[str, ...] = POLICY_NAMES,
    max_attempts: int = 3,
    deadline_hours: float = 48.0,
    seed: int = 0,
    cost_per_attempt: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
    chunk_hours: float = 24.0,
) -> CampaignResult:
    """Replay ``requests`` (``request_id``, ``contact_id``, ``requested_at`` and the contact
    columns) for each policy, starting from the clean call ``history`` before them, a chunk of
    ``chunk_hours`` of requests at a time (see the module docstring)."""
    config = config or load_policy_config()
    if "model" in policies and bundle is None:
        policies = tuple(p for p in policies if p != "model")
    requests = requests.reset_index(drop=True)
    draws = np.random.default_rng(seed).random((len(requests), max_attempts))
    built = _policies(bundle, config, history, policies)
    calls, fates = [], []
    step = progress or (lambda done, total: None)
    for n, (name, policy) in enumerate(built.items()):
        made = _run(name, policy, world, history, requests, draws, max_attempts,
                    deadline_hours, chunk_hours)
        calls.append(made.assign(policy=name))
        fates.append(_fates(made, requests, history, config).assign(policy=name))
        step(n + 1, len(built))
    calls_frame = pd.concat(calls, ignore_index=True)
    fates_frame = pd.concat(fates, ignore_index=True)
    return CampaignResult(calls_frame, fates_frame, campaign_kpis(fates_frame, cost_per_attempt))


def _run(name, policy, world, history, requests, draws, max_attempts, deadline_hours,
         chunk_hours):
    """All calls one policy makes for the requests (one row per call).

    Requests are played in chronological chunks of ``chunk_hours`` by request time: each
    decision sees the calls of every earlier chunk, so a contact's history is never staler
    than one chunk, however long the campaign."""
    chunk = pd.to_datetime(requests["requested_at"], utc=True).dt.floor(
        pd.Timedelta(hours=chunk_hours))
    log, made = history, []
    for _, pos in sorted(chunk.groupby(chunk).indices.items()):
        part = requests.iloc[pos].reset_index(drop=True)
        calls, log = _rounds(name, policy, world, log, part, draws[pos], max_attempts,
                             deadline_hours)
        made += calls
    if not made:
        return pd.DataFrame(columns=["request_id", "contact_id", "called_at", "attempt",
                                     "p_true", "answered"])
    return pd.concat(made, ignore_index=True)


def _rounds(name, policy, world, log, requests, draws, max_attempts, deadline_hours):
    """The calls one policy makes for a chunk of requests, attempt round by round (one frame
    per round), and the call log with them appended."""
    requested = pd.to_datetime(requests["requested_at"], utc=True)
    deadline = requested + pd.Timedelta(hours=deadline_hours)
    now = requested.copy()
    active = np.ones(len(requests), dtype=bool)
    rows = requests[["request_id", "contact_id", *_CONTACT]].to_dict("records")
    made: list[pd.DataFrame] = []
    for k in range(max_attempts):
        left = ((deadline - now).dt.total_seconds() / 3600).to_numpy()
        active &= left >= 0.25
        idx = np.flatnonzero(active)
        if len(idx) == 0:
            break
        policy.history = log
        reqs = [{
            "request_id": str(rows[i]["request_id"]),
            "contact": {"contact_id": rows[i]["contact_id"],
                        **{c: rows[i][c] for c in _CONTACT if isinstance(rows[i][c], str)}},
            "now": now.iloc[i], "requested_at": requested.iloc[i],
            "horizon_hours": float(left[i]), "top_k": 1,
            "urgency": "urgent" if name == "desk" else "standard",
        } for i in idx]
        at = _choose(name, policy, world, reqs)
        chosen = at.notna().to_numpy()
        active[idx[~chosen]] = False
        idx, at = idx[chosen], at[chosen]
        if len(idx) == 0:
            break
        round_calls = _outcomes(world, log, requests.iloc[idx], at, draws[idx, k], k + 1)
        made.append(round_calls)
        log = pd.concat([log, round_calls[log.columns.intersection(round_calls.columns)]],
                        ignore_index=True)
        by_id = round_calls.set_index("request_id").reindex(requests["request_id"].iloc[idx])
        active[idx[by_id["answered"].to_numpy(bool)]] = False
        # the outcome is known a minute after the call; the desk's third try is a day later
        gap = pd.Timedelta(days=1) if (name == "desk" and k == 1) else pd.Timedelta(minutes=1)
        now.iloc[idx] = (by_id["called_at"] + gap).to_numpy()
    return made, log


def _choose(name, policy, world, reqs) -> pd.Series:
    """The call time each request's policy picks (NaT: no allowed slot left)."""
    ids = [r["request_id"] for r in reqs]
    if name != "oracle":
        out = policy.rank(reqs)
        return pd.Series([pd.Timestamp(o["windows"][0]["start"]) if o["windows"] else pd.NaT
                          for o in out], index=ids, dtype="datetime64[ns, UTC]")
    table = policy.slot_table(reqs, allowed_only=True)
    p_true = world.p_answer(table["contact_id"].to_numpy(), table["at"],
                            table["calls_last_24h"].to_numpy())
    best = (table.assign(value=p_true * table["worth"].to_numpy() * table["wait"].to_numpy())
            .sort_values("value", ascending=False, kind="stable")
            .drop_duplicates("request_id").set_index("request_id")["at"])
    return best.reindex(ids)


def _outcomes(world, log, reqs, at, draw, attempt) -> pd.DataFrame:
    """Play the round's calls in time order; fatigue counts every earlier call to the contact."""
    frame = reqs[["request_id", "contact_id", *_CONTACT]].copy()
    frame["called_at"] = pd.DatetimeIndex(at).tz_convert("UTC")
    frame["requested_at"] = pd.DatetimeIndex(pd.to_datetime(reqs["requested_at"], utc=True))
    frame["_draw"] = draw
    frame = frame.sort_values("called_at", kind="stable").reset_index(drop=True)
    mine = log[log["contact_id"].isin(frame["contact_id"].unique())]
    naive = pd.to_datetime(mine["called_at"], utc=True).dt.tz_localize(None)
    earlier = {cid: np.sort(t.to_numpy("datetime64[ns]"))
               for cid, t in naive.groupby(mine["contact_id"].to_numpy())}
    at_naive = frame["called_at"].dt.tz_localize(None).to_numpy("datetime64[ns]")
    recent = np.zeros(len(frame), dtype=np.int64)
    extra: dict[str, list] = {}
    for j, (cid, t64) in enumerate(zip(frame["contact_id"], at_naive, strict=True)):
        past = earlier.get(cid, np.array([], dtype="datetime64[ns]"))
        lo = t64 - np.timedelta64(24, "h")
        recent[j] = (np.searchsorted(past, t64) - np.searchsorted(past, lo)
                     + sum(lo <= x < t64 for x in extra.get(cid, [])))
        extra.setdefault(cid, []).append(t64)
    p_true = world.p_answer(frame["contact_id"].to_numpy(), frame["called_at"], recent)
    frame["p_true"] = p_true
    draw = frame.pop("_draw").to_numpy()
    answered = draw < p_true
    frame["answered"] = answered.astype(np.int8)
    # a failed call's draw, rescaled, is a fresh uniform number: it picks the outcome (busy,
    # voicemail, ...) in the simulator's shares, so replayed calls look like the history's
    beyond = (draw - p_true) / np.maximum(1.0 - p_true, 1e-12)
    frame["outcome"] = np.where(answered, "answered",
                                failure_labels(np.clip(beyond, 0.0, 1.0 - 1e-12)))
    frame["attempt"] = attempt
    frame["call_id"] = frame["request_id"].astype(str) + f"#{attempt}"
    return frame


def _fates(calls, requests, history, config) -> pd.DataFrame:
    """One row per request: reached, attempts, hours to contact, value, cold start, legal."""
    out = requests[["request_id", "contact_id"]].copy()
    requested = pd.to_datetime(requests["requested_at"], utc=True)
    seen = set(history["contact_id"])
    out["cold_start"] = ~requests["contact_id"].isin(seen).to_numpy()
    by_request = calls.groupby("request_id")
    out["attempts"] = out["request_id"].map(by_request.size()).fillna(0).astype(int)
    first = calls[calls["attempt"] == 1].set_index("request_id")["answered"]
    out["first_answered"] = out["request_id"].map(first).fillna(0).astype(bool)
    hit = pd.to_datetime(calls[calls["answered"] == 1].set_index("request_id")["called_at"],
                         utc=True)
    reached_at = hit.reindex(out["request_id"]).set_axis(out.index)  # none reached: all NaT
    out["reached"] = reached_at.notna().to_numpy()
    hours = (reached_at - requested).dt.total_seconds() / 3600
    out["hours_to_contact"] = hours
    out["value"] = np.where(out["reached"], config.urgency_worth(hours.fillna(0).to_numpy()), 0.0)
    illegal = _illegal_calls(calls, config)
    out["illegal_calls"] = out["request_id"].map(
        calls.assign(bad=illegal).groupby("request_id")["bad"].sum()).fillna(0).astype(int)
    return out


def _illegal_calls(calls: pd.DataFrame, config: PolicyConfig) -> np.ndarray:
    """Calls outside the calling hours of the contact's zone and region (checked afresh)."""
    if len(calls) == 0:
        return np.zeros(0, dtype=bool)
    clock = calendar.local_clock(pd.to_datetime(calls["called_at"], utc=True),
                                 calls["timezone"].reset_index(drop=True))
    bad = np.zeros(len(calls), dtype=bool)
    for j, (ctry, sub, wd, minute) in enumerate(zip(
            calls["country"], calls["subdivision"], clock["weekday"], clock["minute_of_day"],
            strict=True)):
        hours = config.hours_for(ctry if isinstance(ctry, str) else None,
                                 sub if isinstance(sub, str) else None)[int(wd)]
        bad[j] = hours is None or not hours[0] <= minute <= hours[1] - SLOT_MINUTES
    return bad


def campaign_kpis(fates: pd.DataFrame, cost_per_attempt: float = 1.0) -> pd.DataFrame:
    """KPIs per policy (rows ``<policy>`` and ``<policy> (cold start)``)."""
    rows = {}
    for (name, cold), group in [*((k, g) for k, g in fates.groupby(["policy", "cold_start"])),
                                *(((k, None), g) for k, g in fates.groupby("policy"))]:
        label = name if cold is None else (f"{name} (cold start)" if cold else None)
        if label is None:
            continue
        reached = int(group["reached"].sum())
        rows[label] = {
            "requests": len(group),
            "first_attempt_rate": group["first_answered"].mean(),
            "reached_rate": group["reached"].mean(),
            "attempts": group["attempts"].mean(),
            "hours_to_contact": group.loc[group["reached"], "hours_to_contact"].mean(),
            "cost_per_reached": (cost_per_attempt * group["attempts"].sum() / reached
                                 if reached else float("nan")),
            "value": group["value"].mean(),
            "illegal_calls": int(group["illegal_calls"].sum()),
        }
    order = [n for p in POLICY_NAMES for n in (p, f"{p} (cold start)") if n in rows]
    return pd.DataFrame(rows).T.loc[order]


def value_lift_captured(kpis: pd.DataFrame, policy: str) -> float:
    """Share of the oracle's value lift over the desk that ``policy`` captures."""
    desk, oracle = kpis.at["desk", "value"], kpis.at["oracle", "value"]
    return float((kpis.at[policy, "value"] - desk) / (oracle - desk))
