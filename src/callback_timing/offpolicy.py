"""Off-policy evaluation (issue 11): what a challenger policy would have earned on the live
traffic the champion served, from the decision log's logged propensities (exploration).

Each logged ranking chose its first window ``a`` with probability ``propensity`` (the logging
policy's, ``p0``) and earned ``reward`` (e.g. the request reached in time). A new policy would
have chosen that same window with probability ``p1``. Then (Dudík et al., 2011):

- ``ips``: inverse propensity scoring, mean(r · p1 / p0): unbiased when ``p0`` > 0 wherever
  ``p1`` > 0, with a variance that grows with the weights;
- ``snips``: self-normalised, sum(r · w) / sum(w): a little biased, far steadier;
- ``dr``: doubly robust, mean(q1 + w · (r − q0)) with a reward model's estimate ``q0`` of
  the logged window and ``q1`` of the new policy's expected reward: unbiased if either the
  propensities or the reward model are right.

Each comes with its standard error (of the mean, or the delta method for ``snips``), and the
effective sample size of the weights says how much of the log the estimate really uses.

>>> import numpy as np
>>> r = np.array([1.0, 0.0, 1.0, 0.0]); p0 = np.full(4, 0.5); p1 = np.array([1.0, 1, 0, 0])
>>> round(off_policy_value(r, p0, p1)["ips"], 3)
0.5
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from callback_timing.bundle import ModelBundle
    from callback_timing.policy import Policy
    from callback_timing.policy_config import PolicyConfig
    from callback_timing.rules import RuleModel
    from callback_timing.store import OutcomeStore


def off_policy_value(reward: np.ndarray, p0: np.ndarray, p1: np.ndarray,
                     q0: np.ndarray | None = None, q1: np.ndarray | None = None,
                     clip: float | None = None) -> dict:
    """Estimates of the new policy's mean reward per logged decision (see the module
    docstring). ``clip``: cap the weights p1/p0 (less variance, some bias). ``q0``/``q1``
    (reward-model estimates) add the doubly robust estimate. Rows with ``p0`` <= 0 or
    missing are left out (they cannot be reweighted) and counted in ``left_out``."""
    r, p0, p1 = (np.asarray(x, dtype=float) for x in (reward, p0, p1))
    ok = np.isfinite(p0) & (p0 > 0) & np.isfinite(p1) & np.isfinite(r)
    out: dict = {"n": int(ok.sum()), "left_out": int((~ok).sum())}
    r, p0, p1 = r[ok], p0[ok], p1[ok]
    n = len(r)
    if n == 0:
        return {**out, "ips": None, "ips_se": None, "snips": None, "snips_se": None,
                "dr": None, "dr_se": None, "ess": 0.0, "logged": None}
    w = p1 / p0
    if clip is not None:
        w = np.minimum(w, clip)
    ips_terms = r * w
    out["ips"] = float(ips_terms.mean())
    out["ips_se"] = float(ips_terms.std(ddof=1) / np.sqrt(n)) if n > 1 else None
    if w.sum() > 0:
        snips = float(ips_terms.sum() / w.sum())
        # delta method: the ratio of two means
        resid = w * (r - snips)
        out["snips"] = snips
        out["snips_se"] = (float(np.sqrt(np.sum(resid**2)) / w.sum()) if n > 1 else None)
    else:
        out["snips"] = out["snips_se"] = None
    out["ess"] = float(w.sum() ** 2 / np.sum(w**2)) if np.sum(w**2) > 0 else 0.0
    out["logged"] = float(r.mean())  # what the logging policy earned on the same rows
    if q0 is not None and q1 is not None:
        q0, q1 = np.asarray(q0, dtype=float)[ok], np.asarray(q1, dtype=float)[ok]
        dr_terms = q1 + w * (r - q0)
        out["dr"] = float(dr_terms.mean())
        out["dr_se"] = float(dr_terms.std(ddof=1) / np.sqrt(n)) if n > 1 else None
    else:
        out["dr"] = out["dr_se"] = None
    return out


# --- the decision log, replayed ----------------------------------------------------------------

#: decision-log columns the replay reads
_LOG_COLUMNS = ("seq", "request_id", "contact_id", "arm", "source", "fallback_reason",
                "model_version", "urgency", "now", "requested_at", "window_start",
                "propensity", "horizon_hours")


def logged_choices(store: OutcomeStore, calls: pd.DataFrame, since: pd.Timestamp | None = None
                   ) -> pd.DataFrame:
    """The logged rankings an off-policy estimate can reweight, with their reward.

    Rankings with a propensity (a model's, or the rules' of a server without a model; not
    urgent, not the control arm) made at or after ``since``. ``reward`` is 1 when the call
    the dialer made from that ranking (the request's first call at or after the ranking and
    before its next ranking, in ``calls``: clean call history) was answered, 0 when not; a
    ranking with no such call is left out.
    """
    # from ``since`` on, in SQL: a kept ranking's next ranking is later, so it is read too
    log = store.rows_after("decisions", _LOG_COLUMNS,
                           since=None if since is None else ("now", since))
    # each request's next ranking time, over every ranking (two at one instant share a call)
    nxt = log[["request_id", "now"]].drop_duplicates().sort_values("now", kind="stable")
    nxt = nxt.assign(next_now=nxt.groupby("request_id")["now"].shift(-1)).set_index(
        ["request_id", "now"])["next_now"]
    log = log[log["propensity"].notna() & log["window_start"].notna()
              & (log["arm"] != "control") & (log["urgency"] != "urgent")]
    log = log.join(nxt, on=["request_id", "now"])
    made = calls.loc[calls["request_id"].notna(), ["request_id", "called_at", "answered"]]
    made = made.assign(called_at=pd.to_datetime(made["called_at"], utc=True).astype(
        log["now"].dtype)).sort_values("called_at", kind="stable")
    log = log.sort_values("now", kind="stable")
    log["request_id"] = log["request_id"].astype(str)
    made["request_id"] = made["request_id"].astype(str)
    joined = pd.merge_asof(log, made, left_on="now", right_on="called_at", by="request_id",
                           direction="forward")
    ok = joined["called_at"].notna() & (joined["next_now"].isna()
                                        | (joined["called_at"] < joined["next_now"]))
    out = joined[ok].assign(reward=lambda d: d["answered"].astype(float))
    return out.drop(columns=["answered", "next_now"]).sort_values("seq").reset_index(drop=True)


def replay_choices(policy: Policy, choices: pd.DataFrame, chunk: int = 2000,
                   progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """What ``policy`` (a :class:`~callback_timing.policy.Policy`) would have done at each
    logged ranking of ``choices`` (:func:`logged_choices`): ``p1``, the probability that it
    picks the logged first window (exploration included), ``q0``, its answer probability for
    that window, ``q1``, the answer probability it expects of its own pick, and ``best``,
    whether the logged window is the one it would pick without exploring. A window
    it would not allow gets ``p1 = q0 = 0``; a ranking where it allows no window
    ``q1 = 0`` too.

    Each ranking is asked again as it was (contact, ``now``, ``requested_at``, horizon,
    urgency) under a fresh request id; the policy's history features see only the calls
    before ``now``.
    """
    share = policy.config.exploration_share
    out = []
    for lo in range(0, len(choices), chunk):
        part = choices.iloc[lo:lo + chunk]
        ids = [f"replay-{s}" for s in part["seq"]]
        reqs = [{"request_id": rid, "contact": {"contact_id": str(cid)},
                 "now": _iso(now), "requested_at": _iso(asked),
                 **({"horizon_hours": float(h)} if pd.notna(h) else {}),
                 "urgency": urgency or "standard", "policy": "auto"}
                for rid, cid, now, asked, h, urgency in zip(
                    ids, part["contact_id"], part["now"], part["requested_at"].fillna(
                        part["now"]), part["horizon_hours"], part["urgency"], strict=True)]
        slots = policy.slot_table(reqs, allowed_only=True)
        out.append(_choice_probabilities(slots, pd.Series(ids, index=part.index),
                                         part["window_start"], share))
        if progress is not None:
            progress(min(lo + chunk, len(choices)), len(choices))
    if not out:
        return pd.DataFrame(columns=["p1", "q0", "q1", "best"], dtype=float)
    return pd.concat(out)


def _iso(t) -> str:
    t = pd.Timestamp(t)
    return (t.tz_localize("UTC") if t.tzinfo is None else t).isoformat()


def _choice_probabilities(slots: pd.DataFrame, ids: pd.Series, chosen: pd.Series,
                          share: float) -> pd.DataFrame:
    """``p1``, ``q0``, ``q1`` per logged ranking (index of ``ids``) from its replayed slots."""
    from callback_timing.windows import pick_probability

    # no allowed slot: the policy would not call (nothing chosen, nothing answered)
    result = pd.DataFrame({"p1": 0.0, "q0": 0.0, "q1": 0.0, "best": False}, index=ids.index)
    if not len(slots):
        return result
    s = slots[["request_id", "at", "p_answer", "score"]].reset_index(drop=True)
    g = s.groupby("request_id", sort=False)["score"]
    total = g.transform("sum").to_numpy(float)
    best = np.zeros(len(s), dtype=bool)
    best[g.idxmax().to_numpy()] = True  # the first best slot, as the windows are cut
    with np.errstate(invalid="ignore", divide="ignore"):
        pick = pick_probability(share, s["score"].to_numpy(float), total, best)
    s["pick"] = pick
    s["expect"] = pick * s["p_answer"].to_numpy(float)
    q1 = s.groupby("request_id", sort=False)["expect"].sum()
    row_of = pd.Series(ids.index, index=ids.to_numpy())
    result.loc[row_of.reindex(q1.index).to_numpy(), "q1"] = q1.to_numpy()
    at = pd.to_datetime(s["at"], utc=True).dt.tz_localize(None).astype("datetime64[ns]")
    logged = pd.DataFrame({"request_id": ids.to_numpy(),
                           "at": pd.to_datetime(chosen, utc=True).dt.tz_localize(None)
                           .astype("datetime64[ns]").to_numpy(), "row": ids.index})
    hit = logged.merge(s.assign(at=at, best=best)[["request_id", "at", "pick", "p_answer",
                                                   "best"]],
                       on=["request_id", "at"], how="inner")
    result.loc[hit["row"].to_numpy(), "p1"] = hit["pick"].to_numpy()
    result.loc[hit["row"].to_numpy(), "q0"] = hit["p_answer"].to_numpy()
    result.loc[hit["row"].to_numpy(), "best"] = hit["best"].to_numpy()
    return result


#: the cap on the weights p1/p0 of :func:`challenger_estimate`: with a small exploration
#: share a deterministic challenger's best window was rarely the logged one, and a handful
#: of weights of 100 or more would decide the estimate alone
CLIP = 20.0


def challenger_estimate(store: OutcomeStore, calls: pd.DataFrame, challenger: ModelBundle,
                        logging: ModelBundle | None = None,
                        since: pd.Timestamp | None = None, config: PolicyConfig | None = None,
                        rules: RuleModel | None = None,
                        clip: float | None = CLIP, max_rankings: int | None = 20_000,
                        progress: Callable[[int, int], None] | None = None) -> dict:
    """Off-policy estimates of the answer rate of the first attempt a ``challenger`` bundle
    would have had on the logged traffic since ``since`` (see :func:`off_policy_value`, with
    the weights capped at ``clip``; the challenger's answer probabilities are the doubly
    robust estimate's reward model, and their mean for its own picks, ``direct``, the
    direct method's estimate). ``agreement``: the share of logged rankings whose first
    window the challenger would have picked too. At most the ``max_rankings`` most recent
    rankings are replayed (``n`` says how many were used, ``rankings`` how many there were).

    ``logging``: the served bundle, if any; the log's rankings made with it (same version)
    or with the rules of a server without a model are replayed too, and ``replayed`` says
    the share whose logged propensity the replay reproduces (within 0.01): how far the
    replay can be trusted. ``calls`` is the clean call history the policies read (the
    original history and the store's calls).
    """
    import dataclasses

    from callback_timing.fastpath import NO_MODEL
    from callback_timing.policy import Policy
    from callback_timing.policy_config import load_policy_config

    config = dataclasses.replace(config or load_policy_config(), model_budget_ms=0,
                                 model_budget_ms_per_request=0)
    choices = logged_choices(store, calls, since)
    logged = len(choices)
    if max_rankings is not None and logged > max_rankings:  # the most recent ones
        choices = choices.iloc[-max_rankings:]
    estimate = {"rankings": int(logged), "clip": clip,
                "since": None if since is None else pd.Timestamp(since).isoformat()}
    if not len(choices):
        return {**estimate, **off_policy_value(np.array([]), np.array([]), np.array([]))}
    new = replay_choices(Policy(challenger, config=config, rules=rules, history=calls),
                         choices, progress=progress)
    estimate.update(off_policy_value(choices["reward"].to_numpy(), choices["propensity"],
                                     new["p1"], new["q0"], new["q1"], clip=clip))
    estimate["direct"] = float(new["q1"].mean())
    estimate["agreement"] = float(new["best"].astype(bool).mean())
    estimate["by_arm"] = {str(k): int(v) for k, v in choices["arm"].value_counts().items()}
    groups = [(None, (choices["fallback_reason"] == NO_MODEL).to_numpy())]
    if logging is not None:
        groups.append((logging, (choices["model_version"] == logging.version).to_numpy()))
    old = [replay_choices(Policy(bundle, config=config, rules=rules, history=calls),
                          choices[rows]) for bundle, rows in groups if rows.any()]
    if old:
        p0 = pd.concat(old)["p1"]
        close = np.abs(p0.to_numpy() - choices.loc[p0.index, "propensity"].to_numpy()) < 0.01
        estimate["replayed"] = float(close.mean())
        estimate["replayed_of"] = int(len(p0))
    return estimate
