"""Train and evaluate the answer model on a call history, split by time as production sees it.

:func:`fit_and_evaluate` is pure (frames in, bundle and metrics out); :func:`train` adds the
edges: loading the file, plots, the bundle folder, MLflow tracking and registry, and the BentoML
model store.

Split: the earliest ``train`` share of the period trains the booster and fits the priors, the
next ``valid`` share early-stops and calibrates it, the last ``test`` share is only evaluated.
Contacts appear in several slices, as in production.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from callback_timing.bundle import ModelBundle, library_versions
from callback_timing.evaluate import (
    baseline_scores,
    classification_metrics,
    first_requests,
    information_bound,
    slot_regret,
    weekday_hour_baseline,
)
from callback_timing.features import (
    MODEL_FEATURES,
    build_features,
    fit_priors,
    scored_calls,
    training_frame,
)
from callback_timing.model import RULES_MARGIN, AnswerModel
from callback_timing.schema import CallbackTimingError

if TYPE_CHECKING:
    from callback_timing.world import World

log = logging.getLogger(__name__)

#: Time shares of the train / validation (early stopping + calibration) / test slices.
SPLIT = (0.6, 0.2, 0.2)
MIN_ROWS = 300
MIN_SLICE_ROWS = 50
MIN_DAYS = 3.0


class TrainingDataError(CallbackTimingError):
    """The history cannot train a model (too few rows, one class, too short a period)."""


@dataclass
class Split:
    """Boolean masks of the three time slices (aligned with the calls as given) and their
    boundaries (UTC)."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    bounds: dict[str, str]


def split_by_time(calls: pd.DataFrame, shares: tuple[float, float, float] = SPLIT) -> Split:
    """Split clean calls into consecutive time slices; raise TrainingDataError when unusable."""
    n = len(calls)
    if n < MIN_ROWS:
        raise TrainingDataError(f"too few clean calls to train: {n} (need at least {MIN_ROWS})")
    classes = calls["answered"].nunique()
    if classes < 2:
        only = "answered" if calls["answered"].iloc[0] else "not answered"
        raise TrainingDataError(f"every clean call has the same outcome ({only}): nothing to learn")
    t = calls["called_at"]
    days = (t.max() - t.min()).total_seconds() / 86400
    if days < MIN_DAYS:
        raise TrainingDataError(
            f"the history spans {days:.1f} days; at least {MIN_DAYS:g} are needed to split it "
            "into train, validation and test periods"
        )
    q1, q2 = t.quantile(shares[0]), t.quantile(shares[0] + shares[1])
    train = (t < q1).to_numpy()
    valid = ((t >= q1) & (t < q2)).to_numpy()
    test = (t >= q2).to_numpy()
    for name, mask in (("train", train), ("validation", valid), ("test", test)):
        labels = calls.loc[mask, "answered"]
        if mask.sum() < MIN_SLICE_ROWS or labels.nunique() < 2:
            raise TrainingDataError(
                f"the {name} period has {int(mask.sum())} calls with "
                f"{labels.nunique()} outcome class(es); a longer history is needed"
            )
    bounds = {
        "train_from": t.min().isoformat(), "valid_from": q1.isoformat(),
        "test_from": q2.isoformat(), "test_to": t.max().isoformat(),
    }
    return Split(train=train, valid=valid, test=test, bounds=bounds)


@dataclass
class Evaluation:
    """What :func:`fit_and_evaluate` measured."""

    bundle: ModelBundle
    split: Split
    metrics: dict[str, dict[str, float]]
    y_test: np.ndarray
    p_test: dict[str, np.ndarray]
    truth: dict[str, float] = field(default_factory=dict)
    X_test: pd.DataFrame | None = None


def answer_model(**params: Any) -> AnswerModel:
    """The project's answer model: starts from the rule table's chance
    (:data:`~callback_timing.model.RULES_MARGIN`) and reads :data:`MODEL_FEATURES`;
    ``params`` are :class:`AnswerModel` arguments (XGBoost hyper-parameters among them)."""
    return AnswerModel(margin_feature=RULES_MARGIN, features=MODEL_FEATURES, **params)


def fit_and_evaluate(
    calls: pd.DataFrame,
    params: dict | None = None,
    truth: pd.DataFrame | None = None,
    world: World | None = None,
    progress: Callable[[int, int], None] | None = None,
    baselines: bool = True,
) -> Evaluation:
    """Fit priors, features, booster and calibrator; evaluate model and baselines on the test.

    Parameters
    ----------
    calls : clean call history (:func:`callback_timing.data.clean_history`).
    params : XGBoost hyper-parameters overriding :data:`callback_timing.model.DEFAULT_PARAMS`.
    truth : the simulator's truth frame (``call_id``, ``p_true``) for the ceiling AUC.
    world : the simulator's :class:`~callback_timing.world.World` for slot regret and (with
        ``truth``) the information bound (:func:`~callback_timing.evaluate.information_bound`).
    """
    step = progress or (lambda done, total: None)
    split = split_by_time(calls)
    step(1, 6)
    priors = fit_priors(calls[split.train])
    X, y = training_frame(calls, priors)
    y = y.to_numpy()
    step(2, 6)
    model = answer_model(**(params or {}))
    model.fit(X[split.train], y[split.train], X[split.valid], y[split.valid])
    step(3, 6)
    X_test, y_test = X[split.test], y[split.test]
    p_test = {"model": model.p_answer(X_test)}
    if baselines:
        p_test.update(baseline_scores(X[split.train], y[split.train], X_test))
    metrics = {name: classification_metrics(y_test, p) for name, p in p_test.items()}
    step(4, 6)
    extra: dict[str, float] = {}
    if truth is not None:
        p_true = truth.set_index("call_id")["p_true"].reindex(calls.loc[split.test, "call_id"])
        if p_true.notna().all():
            p_test["truth"] = p_true.to_numpy(dtype=float)
            metrics["truth"] = classification_metrics(y_test, p_test["truth"])
            extra["ceiling_auc"] = metrics["truth"]["roc_auc"]
            extra["auc_vs_ceiling"] = metrics["model"]["roc_auc"] / extra["ceiling_auc"]
            if world is not None:
                bound = pd.Series(information_bound(truth, world), index=truth["call_id"])
                p_test["information_bound"] = bound.reindex(p_true.index).to_numpy(dtype=float)
                metrics["information_bound"] = classification_metrics(
                    y_test, p_test["information_bound"])
                extra["bound_auc"] = metrics["information_bound"]["roc_auc"]
                extra["bound_vs_ceiling"] = extra["bound_auc"] / extra["ceiling_auc"]
                extra["auc_vs_bound"] = metrics["model"]["roc_auc"] / extra["bound_auc"]
    if world is not None:
        requests = first_requests(calls[split.test])
        X_train, y_train = X[split.train], y[split.train]
        extra.update(
            slot_regret(
                requests,
                features=lambda targets: build_features(calls, targets, priors),
                scorers={
                    "model": model.p_answer,
                    "weekday_hour_rate": lambda F: weekday_hour_baseline(X_train, y_train, F),
                },
                world=world,
            )
        )
    step(5, 6)
    metadata = {
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "split": split.bounds,
        "rows": {"train": int(split.train.sum()), "valid": int(split.valid.sum()),
                 "test": int(split.test.sum())},
        "params": model.params,
        "margin_feature": model.margin_feature,
        "best_iteration": model.best_iteration_,
        "metrics": metrics["model"],
        "truth": extra,
        "libraries": library_versions(),
    }
    bundle = ModelBundle(model=model, priors=priors, history=calls, metadata=metadata)
    step(6, 6)
    return Evaluation(bundle=bundle, split=split, metrics=metrics, y_test=y_test,
                      p_test=p_test, truth=extra, X_test=X_test)


def evaluate_bundle_on(bundle: ModelBundle, calls: pd.DataFrame, split: Split) -> dict:
    """Metrics of another bundle (e.g. the champion) on this run's test slice and features."""
    return classification_metrics(*scored_calls(calls, split.test, bundle.model, bundle.priors))


def metrics_table(evaluation: Evaluation) -> pd.DataFrame:
    """One row per scorer (model, baselines, truth) with the test metrics."""
    cols = ["roc_auc", "pr_auc", "log_loss", "brier", "ece"]
    return pd.DataFrame(evaluation.metrics).T[cols]


__all__ = [
    "Evaluation",
    "Split",
    "TrainingDataError",
    "answer_model",
    "evaluate_bundle_on",
    "fit_and_evaluate",
    "metrics_table",
    "split_by_time",
]
