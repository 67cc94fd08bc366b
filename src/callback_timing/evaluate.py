"""Honest evaluation: probability metrics, calibration, baselines, and regret against the truth.

Pure functions over arrays and frames (the pictures are in :mod:`callback_timing.plots`). Used
by training (and later by the campaign evaluator).

Examples
--------
>>> import numpy as np
>>> y = np.array([0, 0, 1, 1]); p = np.array([0.1, 0.4, 0.35, 0.8])
>>> m = classification_metrics(y, p)
>>> round(m["roc_auc"], 2), round(m["brier"], 4)
(0.75, 0.1581)
>>> expected_calibration_error(np.array([0, 1] * 50), np.full(100, 0.5))
0.0
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from callback_timing.features import CATEGORICAL_FEATURES

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from callback_timing.world import World

_EPS = 1e-6


def expected_calibration_error(y: ArrayLike, p: ArrayLike, n_bins: int = 10) -> float:
    """ECE over ``n_bins`` equal-count bins: sum of |observed - predicted| weighted by size.

    Equal predictions count with their mean outcome, so a bin edge that falls among them
    (a rule table gives many rows the same chance) does not make the figure depend on the
    rows' order.
    """
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    if len(p) == 0:
        return float("nan")
    # sorted predictions, each distinct value as often as it occurs, with its group's rate
    values, group, size = np.unique(p, return_inverse=True, return_counts=True)
    p, y = np.repeat(values, size), np.repeat(np.bincount(group, weights=y) / size, size)
    bins = np.array_split(np.arange(len(p)), min(n_bins, len(p)))
    gaps = [abs(y[b].mean() - p[b].mean()) * len(b) for b in bins if len(b)]
    return round(float(np.sum(gaps) / len(p)), 6)


def classification_metrics(y: ArrayLike, p: ArrayLike) -> dict[str, float]:
    """ROC AUC, PR AUC, log loss, Brier score and ECE of probabilities ``p`` for labels ``y``."""
    y = np.asarray(y, dtype=int)
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    two_classes = len(np.unique(y)) == 2
    return {
        "roc_auc": float(roc_auc_score(y, p)) if two_classes else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if two_classes else float("nan"),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "mean_p": float(p.mean()),
        "answer_rate": float(y.mean()),
        "n": int(len(y)),
    }


# --- baselines ----------------------------------------------------------------------------


def weekday_hour_baseline(X_train: pd.DataFrame, y_train: ArrayLike, X: pd.DataFrame,
                          m: float = 20.0) -> np.ndarray:
    """Population answer rate by contact-local weekday x hour (smoothed), as a score."""
    y_train = np.asarray(y_train, dtype=float)
    prior = y_train.mean()
    key = X_train["weekday"].astype(int) * 24 + X_train["hour"].astype(int)
    agg = pd.DataFrame({"k": key.to_numpy(), "y": y_train}).groupby("k")["y"].agg(["sum", "count"])
    rate = (agg["sum"] + m * prior) / (agg["count"] + m)
    keys = X["weekday"].astype(int) * 24 + X["hour"].astype(int)
    return keys.map(rate).fillna(prior).to_numpy(dtype=float)


def logistic_baseline(X_train: pd.DataFrame, y_train: ArrayLike, X: pd.DataFrame,
                      max_rows: int = 200_000) -> np.ndarray:
    """Logistic regression on the same features (one-hot categoricals, scaled numbers)."""
    numeric = [c for c in X_train.columns if c not in CATEGORICAL_FEATURES]
    categorical = [c for c in CATEGORICAL_FEATURES if c in X_train.columns]
    pipe = make_pipeline(
        ColumnTransformer(
            [
                ("num", make_pipeline(SimpleImputer(strategy="median", add_indicator=True),
                                      StandardScaler()), numeric),
                ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
            ]
        ),
        LogisticRegression(max_iter=500),
    )
    rows = np.arange(len(X_train))
    if len(rows) > max_rows:
        rows = np.random.default_rng(0).choice(rows, max_rows, replace=False)
    pipe.fit(_as_plain(X_train.iloc[rows]), np.asarray(y_train)[rows])
    return pipe.predict_proba(_as_plain(X))[:, 1]


def _as_plain(X: pd.DataFrame) -> pd.DataFrame:
    out = X.copy()
    for c in CATEGORICAL_FEATURES:
        if c in out:
            out[c] = out[c].astype(object).where(out[c].notna(), "missing").astype(str)
    return out


def baseline_scores(X_train: pd.DataFrame, y_train: ArrayLike, X_test: pd.DataFrame
                    ) -> dict[str, np.ndarray]:
    """Scores of the baselines on ``X_test``: weekday x hour rate, contact rate, logistic
    regression, and the rule-based fallback (:class:`~callback_timing.rules.RuleModel`)."""
    from callback_timing.rules import RuleModel

    return {
        "weekday_hour_rate": weekday_hour_baseline(X_train, y_train, X_test),
        "contact_rate": X_test["hist_rate"].to_numpy(dtype=float),
        "logistic_regression": logistic_baseline(X_train, y_train, X_test),
        "rules": RuleModel.from_file().p_answer(X_test),
    }


# --- regret against the simulator's truth ---------------------------------------------------


def first_requests(calls: pd.DataFrame) -> pd.DataFrame:
    """One row per callback request (its first attempt) with ``now`` = ``requested_at``."""
    first = calls[calls["requested_at"].notna() & calls["request_id"].notna()]
    first = first.sort_values("called_at", kind="stable").drop_duplicates("request_id")
    cols = ["request_id", "contact_id", "timezone", "country", "subdivision", "industry"]
    out = first[cols].copy()
    out["now"] = first["requested_at"]
    out["first_call_id"] = first["call_id"]
    return out.reset_index(drop=True)


def slot_regret(
    requests: pd.DataFrame,
    features: Callable[[pd.DataFrame], pd.DataFrame],
    scorers: dict,
    world: World,
    horizon_hours: float = 48,
    max_requests: int | None = 1500,
    seed: int = 0,
) -> dict[str, float]:
    """Mean regret of each scorer's chosen slot per request, against the true best slot.

    Parameters
    ----------
    requests : :func:`first_requests` rows.
    features : callable turning a targets frame into a feature frame (cut at ``asof``).
    scorers : name -> callable(features) -> scores; each picks its top slot per request.
    world : :class:`~callback_timing.world.World` giving the true probability of any slot.

    Returns
    -------
    ``{f"regret_{name}": mean, f"p_true_{name}": mean, "p_true_best": mean, "n_requests": n}``;
    regret is the true probability of the best allowed slot minus that of the chosen one.
    """
    from callback_timing.slots import candidate_slots

    if max_requests is not None and len(requests) > max_requests:
        requests = requests.sample(max_requests, random_state=seed)
    slots = candidate_slots(requests, horizon_hours=horizon_hours)
    if len(slots) == 0:
        return {"n_requests": 0}
    X = features(slots)
    p_true = world.p_answer(
        slots["contact_id"].to_numpy(), slots["at"], X["calls_last_24h"].to_numpy()
    )
    group = pd.Series(pd.factorize(slots["request_id"])[0])
    best = pd.Series(p_true).groupby(group).max()
    out: dict[str, float] = {"n_requests": int(len(best)), "p_true_best": float(best.mean())}
    rng = np.random.default_rng(seed)
    all_scorers = {**scorers, "random_slot": lambda X: rng.random(len(X))}
    for name, scorer in all_scorers.items():
        chosen = pd.Series(np.asarray(scorer(X), dtype=float)).groupby(group).idxmax()
        picked = p_true[chosen.to_numpy()]
        out[f"p_true_{name}"] = float(picked.mean())
        out[f"regret_{name}"] = float((best.to_numpy() - picked).mean())
    return out


# --- what the history can reveal --------------------------------------------------------------


def information_bound(truth: pd.DataFrame, world: World, grid: int = 161,
                      chunk_rows: int = 50_000) -> np.ndarray:
    """Answer probabilities of the best predictor the call history allows, for every truth row.

    The truth ceiling (the AUC of the true probabilities) assumes each contact's personal habits
    are known exactly. No model can know them: it sees only the contact's earlier calls. This
    predictor is told *everything* about the simulated world (the truth function, each contact's
    golden and never windows, vacation, fatigue) except the contact's personal reachability
    ``baseline``, which it infers point-in-time by Bayes' rule from the contact's earlier calls
    (prior ``N(0, baseline_sd**2)``, exact on a grid). Ranking by it is optimal for the
    information it has, and a real model has less, so its AUC bounds every model's from above
    (up to sampling noise): a quality gate above it cannot be met on that history.

    Parameters
    ----------
    truth : the simulator's truth frame (``contact_id``, ``called_at``, ``p_true``,
        ``answered``): every call the contacts received.
    world : the :class:`~callback_timing.world.World` that produced it.

    Returns
    -------
    ndarray aligned with ``truth``: the posterior predictive answer probability of each call.

    Examples
    --------
    >>> from callback_timing.simulation import simulate
    >>> sim = simulate(contacts=40, days=30, seed=2, dirt_rate=0.0)
    >>> p = information_bound(sim.truth, sim.world)
    >>> bool(((p > 0) & (p < 1)).all()) and len(p) == len(sim.truth)
    True
    """
    sd = float(world.params.baseline_sd)
    p_true = truth["p_true"].to_numpy(dtype=float)
    if sd <= 0 or len(truth) == 0:
        return p_true.copy()
    idx = world.index_of(truth["contact_id"].to_numpy())
    logit = np.log(p_true) - np.log1p(-p_true)
    known = logit - world.contacts["baseline"].to_numpy(float)[idx]  # everything but baseline
    answered = truth["answered"].to_numpy(dtype=bool)
    order = np.lexsort((truth["called_at"].to_numpy(), idx))
    b = np.linspace(-5 * sd, 5 * sd, grid)
    log_prior = -0.5 * (b / sd) ** 2
    out = np.empty(len(truth))
    contact = idx[order]
    starts = np.flatnonzero(np.r_[True, contact[1:] != contact[:-1]])
    # chunks of whole contacts, about chunk_rows rows each, to bound memory
    cuts = np.r_[starts[np.r_[True, np.diff(starts // chunk_rows) > 0]], len(order)]
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        rows = order[lo:hi]
        s = 1.0 / (1.0 + np.exp(-(b[None, :] + known[rows, None])))
        loglik = np.where(answered[rows, None], np.log(s), np.log1p(-s))
        cum = np.vstack([np.zeros(grid), np.cumsum(loglik, axis=0)])
        first = starts[(starts >= lo) & (starts < hi)] - lo  # contact starts in the chunk
        own_start = first[np.searchsorted(first, np.arange(hi - lo), "right") - 1]
        post = cum[:-1] - cum[own_start] + log_prior[None, :]  # the contact's earlier calls
        post = np.exp(post - post.max(axis=1, keepdims=True))
        out[rows] = (post * s).sum(axis=1) / post.sum(axis=1)
    return out
