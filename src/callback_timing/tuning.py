"""Hyper-parameter search for the answer model: Optuna TPE with median pruning, tracked in MLflow.

The history is split by time as :func:`~callback_timing.training.fit_and_evaluate` splits it.
Tuning sees the train and validation periods only, never the test period, so the test metrics of
a later ``train --params best`` remain an honest estimate. Priors are fitted on the train period
and the feature matrix is built once; each trial fits an :class:`~callback_timing.model.AnswerModel`
on the train period, early-stopped on the validation period, while optuna-integration's
``XGBoostPruningCallback`` reports the booster's validation log loss after every boosting round
to a :class:`~optuna.pruners.MedianPruner`.

The objective is the validation log loss of the *calibrated* model (what serving uses). Early
stopping and the two-parameter Platt calibrator are fitted on the same period, so the value is
slightly optimistic, by about the same amount for every trial: it ranks trials; the test period
judges the winner. Trial 0 is always :data:`~callback_timing.model.DEFAULT_PARAMS`, so tuning
never returns anything worse than the defaults on validation.

With tracking on, the search is one MLflow run (``tune <n> trials``) with one nested run per
trial (its parameters, ``valid_log_loss`` and tag ``state``: ``complete`` or ``pruned``); the
parent is tagged with the best trial. The best parameters are written to
:func:`config.best_params_path`, where ``train --params best`` reads them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import optuna
import pandas as pd
from optuna.pruners import MedianPruner
from optuna.samplers import TPESampler
from optuna.trial import TrialState
from optuna_integration.xgboost import XGBoostPruningCallback
from sklearn.metrics import log_loss

from callback_timing import config
from callback_timing.features import fit_priors, training_frame
from callback_timing.model import DEFAULT_PARAMS
from callback_timing.training import answer_model, split_by_time

log = logging.getLogger(__name__)

#: Searched XGBoost parameters: name -> (low, high, log scale); int bounds give an int parameter.
#: ``n_estimators`` is not searched: it is a cap, every trial early-stops on validation.
SEARCH_SPACE: dict[str, tuple[float, float, bool]] = {
    "max_depth": (2, 8, False),
    "min_child_weight": (1.0, 200.0, True),
    "learning_rate": (0.01, 0.2, True),
    "subsample": (0.5, 1.0, False),
    "colsample_bytree": (0.3, 1.0, False),
    "reg_lambda": (1e-3, 100.0, True),
    "reg_alpha": (1e-3, 10.0, True),
}
#: ``n_estimators`` of the searched trials: high enough for the lowest learning rate.
N_ESTIMATORS = 3000
#: Median stopping rule: no trial is pruned before this many trials completed, nor before this
#: boosting round (the early rounds mostly measure the learning rate, not the end model).
STARTUP_TRIALS, WARMUP_ROUNDS = 5, 100
#: The validation metric XGBoost's scikit-learn API reports for ``eval_set[0]``.
OBSERVATION_KEY = "validation_0-logloss"


@dataclass
class TuneResult:
    """What :func:`tune` found.

    Attributes
    ----------
    best_params : full XGBoost parameters of the best trial (defaults included).
    best_value : its validation log loss (calibrated model).
    default_value : trial 0's, i.e. :data:`~callback_timing.model.DEFAULT_PARAMS`'.
    best_trial : number of the best trial (0 = the defaults won).
    n_trials, n_pruned : trials run (fewer than asked if the timeout hit) and pruned.
    parent_run_id : the MLflow parent run (None without tracking).
    params_path : where the best parameters were saved (None if not saved).
    study : the Optuna study (in memory), e.g. for ``optuna.visualization``.
    """

    best_params: dict[str, float | int]
    best_value: float
    default_value: float
    best_trial: int
    n_trials: int
    n_pruned: int
    parent_run_id: str | None
    params_path: Path | None
    study: optuna.Study


def suggest_params(trial: optuna.Trial) -> dict[str, float | int]:
    """Sample one point of :data:`SEARCH_SPACE` for ``trial``."""
    params: dict[str, float | int] = {}
    for name, (low, high, log_scale) in SEARCH_SPACE.items():
        if isinstance(low, int):
            params[name] = trial.suggest_int(name, low, int(high), log=log_scale)
        else:
            params[name] = trial.suggest_float(name, low, high, log=log_scale)
    return params


def _defaults_point() -> dict[str, float | int]:
    """DEFAULT_PARAMS as a point of the search space (``reg_alpha`` 0 -> the log scale's 1e-3).

    Trial 0 registers this point with the sampler but fits exactly DEFAULT_PARAMS.
    """
    return {
        name: type(low)(min(max(DEFAULT_PARAMS[name], low), high))
        for name, (low, high, _) in SEARCH_SPACE.items()
    }


def tune(
    calls: pd.DataFrame,
    trials: int,
    timeout: float | None = None,
    seed: int = 0,
    track: bool = True,
    progress: Callable[[int, int], None] | None = None,
    save: bool = True,
    tags: dict[str, str] | None = None,
    n_jobs: int = 1,
) -> TuneResult:
    """Search XGBoost hyper-parameters on the train/validation periods of ``calls``.

    Parameters
    ----------
    calls : clean call history (:func:`callback_timing.data.clean_history`).
    trials : number of trials (trial 0 is the defaults).
    timeout : seconds after which no new trial starts (the running one finishes); trial 0
        (the defaults) always runs.
    seed : seeds the TPE sampler (XGBoost's own seed is fixed), so a search is repeatable.
    track : log a parent MLflow run with a nested run per trial; False touches no MLflow store.
    progress : ``progress(done, total)`` after each trial.
    save : write the best parameters to :func:`config.best_params_path` (see
        :func:`save_best_params`).
    tags : extra tags of the parent run (e.g. the history file name).
    n_jobs : XGBoost threads per trial. 1 is about as fast on histories of this size and does
        not collapse when the CPU is busy (OpenMP threads spin-wait for a core).

    Raises
    ------
    TrainingDataError
        When the history cannot be split (too few rows, one outcome, too short a period).

    Examples
    --------
    >>> import callback_timing as ct
    >>> sim = ct.simulate(contacts=300, days=40, seed=2, dirt_rate=0.0)
    >>> calls = ct.clean_history(sim.history, key=b"doc").calls
    >>> result = tune(calls, trials=2, track=False, save=False)
    >>> result.n_trials, result.best_value <= result.default_value
    (2, True)
    """
    if trials < 1:
        raise ValueError(f"trials must be at least 1, not {trials}")
    step = progress or (lambda done, total: None)
    split = split_by_time(calls)
    # point-in-time features of train/valid rows never look at later calls: drop the test period
    seen = calls[~split.test].reset_index(drop=True)
    train, valid = split.train[~split.test], split.valid[~split.test]
    X, y = training_frame(seen, fit_priors(seen[train]))
    y = y.to_numpy()
    slices = (X[train], y[train], X[valid], y[valid])
    step(0, trials)

    tracking = None
    if track:
        from callback_timing import tracking
    parent = (
        tracking.start_run(f"tune {trials} trials", tags={"kind": "tune", **(tags or {})})
        if tracking else nullcontext()
    )
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no INFO line per trial
    try:
        pruner = MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=WARMUP_ROUNDS)
        study = optuna.create_study(direction="minimize", sampler=TPESampler(seed=seed),
                                    pruner=pruner)
        study.enqueue_trial(_defaults_point(), user_attrs={"defaults": True})
        with parent as run:
            if tracking:
                tracking.log_params({
                    "trials": trials, "timeout": timeout, "seed": seed, "sampler": "TPESampler",
                    "pruner": f"MedianPruner({STARTUP_TRIALS}, {WARMUP_ROUNDS})",
                    "objective": "valid_log_loss (calibrated)", "split": split.bounds,
                    "rows": {"train": len(slices[1]), "valid": len(slices[3])},
                })
            objective = partial(_objective, study=study, slices=slices, tracking=tracking,
                                n_jobs=n_jobs)
            report = [lambda s, _: step(len(s.trials), trials)]
            started = time.monotonic()
            study.optimize(objective, n_trials=1, callbacks=report)  # the defaults, always
            if trials > 1:
                left = None if timeout is None else max(timeout - time.monotonic() + started, 0)
                study.optimize(objective, n_trials=trials - 1, timeout=left, callbacks=report)
            result = _result(study, run.info.run_id if tracking else None)
            if tracking:
                tracking.log_metrics({
                    "best_valid_log_loss": result.best_value,
                    "default_valid_log_loss": result.default_value,
                    "n_trials": result.n_trials, "n_pruned": result.n_pruned,
                })
                tracking.tag_best_trial(result.parent_run_id, result.best_trial,
                                        result.best_value, result.best_params)
    finally:
        optuna.logging.set_verbosity(verbosity)
    if save:
        result.params_path = save_best_params(result)
    log.info("tuned %d trials (%d pruned): best trial %d, validation log loss %.5f",
             result.n_trials, result.n_pruned, result.best_trial, result.best_value)
    return result


def _result(study: optuna.Study, parent_run_id: str | None) -> TuneResult:
    best = study.best_trial
    states = [t.state for t in study.trials]
    return TuneResult(
        best_params=dict(best.user_attrs["xgb_params"]),
        best_value=float(best.value),
        default_value=float(study.trials[0].value),
        best_trial=best.number,
        n_trials=len(states),
        n_pruned=states.count(TrialState.PRUNED),
        parent_run_id=parent_run_id,
        params_path=None,
        study=study,
    )


def _objective(
    trial: optuna.Trial, *, study: optuna.Study, slices: tuple, tracking, n_jobs: int
) -> float:
    """Fit one trial; return the calibrated model's validation log loss."""
    X_train, y_train, X_valid, y_valid = slices
    suggested = suggest_params(trial)
    params = dict(DEFAULT_PARAMS) if trial.user_attrs.get("defaults") else {
        **DEFAULT_PARAMS, "n_estimators": N_ESTIMATORS, **suggested
    }
    trial.set_user_attr("xgb_params", params)
    run = (
        tracking.start_run(f"trial {trial.number}", nested=True,
                           tags={"trial": str(trial.number)})
        if tracking else nullcontext()
    )
    with run:
        if tracking:
            tracking.log_params(params)
        try:
            model = answer_model(
                n_jobs=n_jobs, callbacks=[XGBoostPruningCallback(trial, OBSERVATION_KEY)],
                **params,
            ).fit(X_train, y_train, X_valid, y_valid)
        except optuna.TrialPruned:
            if tracking:  # the run itself ends normally; the tag says it was pruned
                curve = _running(study, trial.number).intermediate_values
                last = max(curve)
                tracking.set_tags({"state": "pruned"})
                tracking.log_metrics({"pruned_at_round": last,
                                      "valid_booster_log_loss": curve[last]})
            pruned = True
        else:
            pruned = False
            value = float(log_loss(y_valid, model.p_answer(X_valid)))
            booster = float(log_loss(y_valid, model.predict_raw(X_valid)))
            trial.set_user_attr("best_iteration", model.best_iteration_)
            if tracking:
                tracking.set_tags({"state": "complete"})
                tracking.log_metrics({"valid_log_loss": value, "valid_booster_log_loss": booster,
                                      "best_iteration": model.best_iteration_})
    if pruned:
        raise optuna.TrialPruned(f"trial {trial.number} pruned")
    return value


def _running(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    states = (TrialState.RUNNING,)
    return next(t for t in study.get_trials(deepcopy=False, states=states) if t.number == number)


def save_best_params(result: TuneResult, path: str | Path | None = None) -> Path:
    """Write ``{"params", "value", "default_value", "trials", "created", "parent_run_id"}``.

    ``path`` defaults to :func:`config.best_params_path`; the file is replaced atomically and
    read by :func:`callback_timing.workflow.resolve_params` (``train --params best``).
    """
    path = Path(path) if path is not None else config.best_params_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "params": result.best_params,
        "value": result.best_value,
        "default_value": result.default_value,
        "trials": result.n_trials,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "parent_run_id": result.parent_run_id,
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
    return path


__all__ = ["SEARCH_SPACE", "TuneResult", "save_best_params", "suggest_params", "tune"]
