"""End-to-end jobs as library functions: ``train`` (load → fit → evaluate → track → store).

The CLI and ``training/`` call these; notebooks can too. Every side effect lives here or in the
modules it calls (:mod:`~callback_timing.tracking` for MLflow, :mod:`~callback_timing.model_store`
for BentoML), so :mod:`~callback_timing.training` stays pure.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from callback_timing import config
from callback_timing.bundle import ModelBundle
from callback_timing.data import LoadResult, load_history
from callback_timing.plots import answer_heatmap, importance_plot, reliability_plot
from callback_timing.schema import ConfigError, read_config_text, require_file
from callback_timing.simulation import load_ground_truth
from callback_timing.training import Evaluation, evaluate_bundle_on, fit_and_evaluate, metrics_table

if TYPE_CHECKING:
    from distributed import Client

    from callback_timing.dask_engine import ClusterLike
    from callback_timing.world import World

log = logging.getLogger(__name__)


@dataclass
class TrainReport:
    """What :func:`train` did: the evaluation, where the bundle went, the registry decision."""

    evaluation: Evaluation
    load: LoadResult
    bundle_dir: Path
    run_id: str | None = None
    model_version: str | None = None
    promoted: bool | None = None
    decision: str | None = None
    bentoml_tag: str | None = None
    #: calls left out because their contact is on the forget list (erased)
    forgotten_calls: int = 0
    #: calls left out because they are older than the retention (``older_than``)
    expired_calls: int = 0


def resolve_params(spec: str | None) -> dict:
    """``None`` → defaults; ``best`` → the tuned parameters; a path → a JSON object of params."""
    if spec is None:
        return {}
    path = config.best_params_path() if spec == "best" else Path(spec)
    if not path.is_file():
        hint = " (run `callback-timing tune` first)" if spec == "best" else ""
        raise ConfigError(f"no parameter file {path}{hint}")
    try:
        params = json.loads(read_config_text(path))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"parameter file {path} is not valid JSON: {exc.msg}") from None
    if not isinstance(params, dict):
        raise ConfigError(f"parameter file {path} must hold a JSON object of XGBoost parameters")
    params = params.get("params", params)
    check_params(params, f"parameter file {path}")
    return params


def check_params(params: dict, where: str) -> None:
    """:class:`ConfigError` (one line naming ``where``) unless XGBoost takes ``params``: one
    round on four rows with them, so a wrong value or an unknown name shows before training
    instead of as a stack trace (or a warning) after reading the history."""
    import warnings

    import xgboost as xgb

    from callback_timing.model import AnswerModel

    rounds = params.get("n_estimators", 1)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"{where}: n_estimators must be a whole number >= 1, not {rounds!r}")
    if params.get("calibration", "sigmoid") not in ("sigmoid", "isotonic", "none"):
        raise ConfigError(f"{where}: calibration must be 'sigmoid', 'isotonic' or 'none', "
                          f"not {params['calibration']!r}")
    try:
        kwargs = AnswerModel(**params).classifier_kwargs()
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    for key in ("early_stopping_rounds", "callbacks"):
        kwargs.pop(key, None)
    kwargs.update(n_estimators=1, n_jobs=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            xgb.XGBClassifier(**kwargs).fit(np.array([[0.0], [1.0], [0.0], [1.0]]), [0, 1, 0, 1])
        except (xgb.core.XGBoostError, ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: {str(exc).strip().splitlines()[0]}") from None
    unused = [m for w in caught for m in re.findall(r"Parameters: \{(.*?)\} are not used",
                                                    str(w.message))]
    if unused:
        raise ConfigError(f"{where}: XGBoost does not know {unused[0].strip()}")


def check_model_folder(target: str | Path) -> Path:
    """``target`` as a :class:`Path` when a model bundle may be written there: a new or empty
    folder, or a model bundle (``metadata.json``) to replace. Anything else raises
    :class:`ConfigError`: the folder is replaced whole, and a history file or a folder of
    other files must never go with it."""
    target = Path(target)
    if target.is_dir():
        if (target / "metadata.json").is_file() or not any(target.iterdir()):
            return target
        raise ConfigError(f"{target} holds other files, not a model bundle, and would be "
                          "replaced: give a new folder or a model folder")
    if target.exists() or target.is_symlink():
        raise ConfigError(f"{target} is a file, not a model folder: give a new folder or a "
                          "model folder")
    return target


def _replace_folder(new: Path, target: Path) -> None:
    """Move ``new`` to ``target`` with the shortest possible window without a bundle."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """A new folder beside ``target``, to be filled in the block; it replaces ``target``
    (:func:`_replace_folder`) when the block ends, and is removed if the block fails (no
    half-written bundle is ever served). ``target`` must pass :func:`check_model_folder`."""
    check_model_folder(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield staging
        _replace_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _flat_metrics(evaluation: Evaluation) -> dict[str, float]:
    flat = {f"test_{k}": v for k, v in evaluation.metrics["model"].items()}
    for name, values in evaluation.metrics.items():
        if name != "model":
            flat.update({f"{name}.{k}": v for k, v in values.items() if k != "n"})
    flat.update({f"truth.{k}": v for k, v in evaluation.truth.items()})
    return flat


def train(
    history: str | Path,
    out_dir: str | Path | None = None,
    mapping: dict[str, str] | None = None,
    assume_tz: str | None = None,
    default_tz: str = "UTC",
    params: dict | None = None,
    use_truth: bool = True,
    track: bool = True,
    bentoml: bool = True,
    progress: Callable[[int, int], None] | None = None,
    engine: str = "pandas",
    scheduler: str | Client | ClusterLike | None = None,
    workers: int = 2,
    forget: set[str] | None = None,
    older_than: pd.Timestamp | None = None,
    time_format: str | None = None,
    on_loaded: Callable[[LoadResult], None] | None = None,
) -> TrainReport:
    """Train, calibrate and evaluate the answer model on a history file; track and store it.

    Writes the bundle to ``out_dir`` (default :func:`config.model_dir`), logs an MLflow run with
    metrics, plots and the bundle, registers the model and promotes it to ``champion`` only when
    it is not worse than the current champion on this run's test slice, and saves the bundle to
    the BentoML model store.

    ``engine="dask"`` reads partitioned Parquet (a folder, glob or fsspec URL) and runs the
    pipeline on the Dask cluster ``scheduler``: an address, a ``distributed.Client`` or a
    cluster object (Coiled, Dask Gateway: their credentials come with it); default a
    ``LocalCluster`` of ``workers`` processes. See :mod:`callback_timing.dask_engine`. The
    simulator's truth is not used there.

    ``forget``: keyed pseudonyms of erased contacts (the outcome store's forget list,
    :meth:`~callback_timing.store.OutcomeStore.forgotten_hashes`): their calls are left out.
    ``older_than``: calls before this instant (the retention's cutoff) are left out too.
    ``mapping``, ``assume_tz``, ``default_tz`` and ``time_format``: how the history is read
    (:func:`~callback_timing.data.clean_history`). ``on_loaded(result)`` is told how the
    history read (rows, rejects, duplicates): before training with pandas (so a history too
    dirty to train on is accounted for), after it with Dask (the clean calls gathered).
    """
    if engine not in ("pandas", "dask"):
        raise ConfigError(f"unknown engine {engine!r}: expected 'pandas' or 'dask'")
    out_dir = check_model_folder(out_dir if out_dir is not None else config.model_dir())
    if engine == "dask":
        from callback_timing.dask_engine import dask_client, fit_and_evaluate_dask, read_history

        with dask_client(scheduler, workers) as client:
            spread = read_history(str(history), client, mapping=mapping, assume_tz=assume_tz,
                                  default_tz=default_tz, time_format=time_format)
            gone, expired, left = spread.leave_out(older_than, forget,
                                                   _keys() if forget else None)
            if left == 0:
                raise ConfigError(_nothing_left(older_than))
            trained = fit_and_evaluate_dask(spread, params, progress=progress)
            report = TrainReport(evaluation=trained.evaluation,
                                 load=spread.load_result(trained.calls), bundle_dir=out_dir,
                                 forgotten_calls=gone, expired_calls=expired)
            if on_loaded is not None:
                on_loaded(report.load)
            _store(report, _source_name(history), track, bentoml, trained.champion_metrics)
        return report
    history = Path(history)
    result = load_history(history, mapping=mapping, assume_tz=assume_tz, default_tz=default_tz,
                          time_format=time_format)
    if on_loaded is not None:
        on_loaded(result)
    left_out = leave_out_forgotten(result, forget)
    expired = leave_out_expired(result, older_than)
    truth, world = load_ground_truth(history) if use_truth else (None, None)
    report = train_loaded(result, history.name, out_dir, params=params, track=track,
                          bentoml=bentoml, progress=progress, truth=truth, world=world)
    report.forgotten_calls, report.expired_calls = left_out, expired
    return report


#: ``veto(challenger)`` of :func:`train_loaded`: further metrics of the challenger bundle
#: (logged to its run) and a reason not to promote it, or ``None``
Veto = Callable[[ModelBundle], tuple[dict, str | None]]


def train_loaded(
    result: LoadResult,
    name: str,
    out_dir: str | Path | None = None,
    params: dict | None = None,
    track: bool = True,
    bentoml: bool = True,
    progress: Callable[[int, int], None] | None = None,
    truth: pd.DataFrame | None = None,
    world: World | None = None,
    veto: Veto | None = None,
    incumbent: ModelBundle | None = None,
) -> TrainReport:
    """:func:`train` on a call history already loaded (and cleaned): ``name`` names it in
    MLflow. ``veto`` (with ``track``) may keep a challenger that is not worse on the test
    slice from being promoted (e.g. an off-policy estimate on the live traffic).
    ``incumbent``: the model being served, the one to beat when the registry has no
    champion (a new tracking store)."""
    out_dir = check_model_folder(out_dir if out_dir is not None else config.model_dir())
    evaluation = fit_and_evaluate(result.calls, params, truth=truth, world=world,
                                  progress=progress)
    report = TrainReport(evaluation=evaluation, load=result, bundle_dir=out_dir)
    _store(report, name, track, bentoml,
           lambda bundle: evaluate_bundle_on(bundle, result.calls, evaluation.split), veto,
           incumbent)
    return report


def leave_out_forgotten(result: LoadResult, forget: set[str] | None) -> int:
    """Drop the calls of erased contacts from ``result`` (in place); returns how many."""
    if not forget:
        return 0
    from callback_timing.privacy import forgotten_mask

    calls = result.calls
    gone = forgotten_mask(calls["contact_id"], forget, _keys())
    if gone.any():
        result.calls = calls[~gone].reset_index(drop=True)
    return int(gone.sum())


def _nothing_left(at: pd.Timestamp | None) -> str:
    before = f" (before {at:%Y-%m-%d %H:%M} UTC)" if at is not None else ""
    return (f"every call of the history is older than the retention{before} or of an erased "
            "contact: nothing to train on")


def _keys() -> list[bytes]:
    """The keys the forget list was made with: the server's, never a new one."""
    from callback_timing.contacts import load_keys

    return load_keys(create=False)


def leave_out_expired(result: LoadResult, older_than: pd.Timestamp | None) -> int:
    """Drop the calls before ``older_than`` from ``result`` (in place); returns how many.
    ``ConfigError`` when none is left."""
    if older_than is None or not len(result.calls):
        return 0
    calls = result.calls
    old = pd.to_datetime(calls["called_at"], utc=True) < older_than
    if old.all():
        raise ConfigError(_nothing_left(older_than))
    if old.any():
        result.calls = calls[~old].reset_index(drop=True)
    return int(old.sum())


def _source_name(source: str | Path) -> str:
    """The last part of a path or URL (``s3://bucket/calls/`` -> ``calls``)."""
    return str(source).rstrip("/").rsplit("/", 1)[-1] or str(source)


def _store(report: TrainReport, name: str, track: bool, bentoml: bool,
           champion_metrics: Callable[[ModelBundle], dict], veto: Veto | None = None,
           incumbent: ModelBundle | None = None) -> None:
    """Write the bundle (atomically), track and register it, save it to BentoML."""
    out_dir, evaluation = report.bundle_dir, report.evaluation
    bundle = evaluation.bundle
    with (staged_folder(out_dir) as staging,
          tempfile.TemporaryDirectory(prefix="callback-timing-train-") as tmp):
        if track:
            _track(report, name, Path(tmp), staging, champion_metrics, veto, incumbent)
        else:
            bundle.metadata["version"] = bundle.metadata["trained_at"]
            bundle.save(staging)
    if bentoml:
        from callback_timing.model_store import save_to_bentoml

        report.bentoml_tag = save_to_bentoml(
            out_dir,
            labels={"decision": {True: "champion", False: "challenger",
                                 None: "untracked"}[report.promoted]},
            metadata={"version": bundle.version, "mlflow_run_id": report.run_id or "",
                      "test_log_loss": evaluation.metrics["model"]["log_loss"]},
        )
    log.info("trained model %s (test log loss %.4f)", bundle.version,
             evaluation.metrics["model"]["log_loss"])


def _track(report: TrainReport, name: str, tmp: Path, staging: Path,
           champion_metrics: Callable[[ModelBundle], dict], veto: Veto | None = None,
           incumbent: ModelBundle | None = None) -> None:
    """Log the run to MLflow, register the model and decide champion or challenger."""
    from callback_timing import tracking
    from callback_timing.report import quality_report

    evaluation, result = report.evaluation, report.load
    bundle = evaluation.bundle
    shown = ("model", "rules", "logistic_regression", "truth")
    curves = {name: (evaluation.y_test, evaluation.p_test[name])
              for name in shown if name in evaluation.p_test}
    figures = {
        "reliability": reliability_plot(curves, tmp / "reliability.png"),
        "feature_importance": importance_plot(
            bundle.model.feature_importance(), tmp / "importance.png"
        ),
        "answer_rate_weekday_hour": answer_heatmap(result.calls, tmp / "heatmap.png",
                                                   title=name),
    }
    rejects = result.write_rejects(tmp / "rejects.csv")
    with tracking.start_run(run_name=f"train {name}",
                            tags={"history": name, "kind": "train"}) as run:
        report.run_id = run.info.run_id
        bundle.metadata.update(version=run.info.run_id[:12], mlflow_run_id=run.info.run_id)
        bundle.save(staging)
        tracking.log_training(
            params={**bundle.model.params, "best_iteration": bundle.model.best_iteration_,
                    "rows": bundle.metadata["rows"], "split": bundle.metadata["split"]},
            metrics=_flat_metrics(evaluation),
            figures=figures,
            tables={"data_quality": quality_report(result),
                    "metrics": metrics_table(evaluation).reset_index(names="scorer")},
            bundle_dir=staging,
            booster=bundle.model.booster_[: bundle.model.best_iteration_ + 1],
            input_example=evaluation.X_test.head(5),
            extra_artifacts=[rejects],
        )
    report.model_version = tracking.register_model(report.run_id)
    champion = tracking.champion(dest=tmp / "champion")
    champion_on_test = None
    if champion is not None and champion.run_id != report.run_id:
        try:
            champion_bundle = ModelBundle.load(champion.bundle_dir)
            champion_on_test = champion_metrics(champion_bundle)
        except Exception as exc:  # an unreadable champion must not block a new model
            log.warning("champion version %s cannot be evaluated (%s): replacing it",
                        champion.version, type(exc).__name__)
    elif champion is None and incumbent is not None:  # a registry that never saw it
        champion_on_test = champion_metrics(incumbent)
    decision = tracking.decide_promotion(evaluation.metrics["model"], champion_on_test)
    if champion is None and champion_on_test is not None:
        decision = tracking.Decision(decision.promote, "no registered champion, compared "
                                                       f"with the served model: {decision.reason}")
    if champion_on_test is not None:
        tracking.log_to_run(report.run_id, {f"champion.{k}": v
                                            for k, v in champion_on_test.items()})
    if veto is not None:
        extra, why = veto(bundle)
        tracking.log_to_run(report.run_id, extra)
        if why and decision.promote:
            offline = decision.reason.removeprefix("promoted: ")
            decision = tracking.Decision(False, f"not promoted: {why} (the offline "
                                                f"comparison passed: {offline})")
    tracking.apply_decision(config.REGISTERED_MODEL_NAME, report.model_version, decision)
    tracking.log_to_run(report.run_id, {}, {"decision": "champion" if decision.promote
                                            else "challenger",
                                            "decision_reason": decision.reason})
    report.promoted, report.decision = decision.promote, decision.reason
    # in the bundle too: a server watching its folder serves only a champion by itself
    bundle.metadata["decision"] = "champion" if decision.promote else "challenger"
    bundle.save_metadata(staging)


@dataclass
class CampaignReport:
    """What :func:`evaluate_campaign` did."""

    result: object  # callback_timing.campaign.CampaignResult
    start: str
    model_note: str
    figure: Path | None = None
    run_id: str | None = None


def evaluate_campaign(
    history: str | Path,
    model_dir: str | Path | None = None,
    requests: int = 1000,
    seed: int = 0,
    cost_per_attempt: float = 1.0,
    plot: str | Path | None = None,
    track: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> CampaignReport:
    """Replay the callback requests of a simulated history's last period for every policy.

    The campaign starts where the model's test period starts (its ``metadata.json``; without a
    model, at the latest 20% of the calls); the requests made from then on (the first ``requests``
    of them) are replayed on the calls before it. Needs the world written beside
    the history by ``simulate``.
    """
    import pandas as pd

    from callback_timing.campaign import replay
    from callback_timing.evaluate import first_requests
    from callback_timing.plots import campaign_plot
    from callback_timing.policy import Policy, load_bundle, smoke_test

    history = require_file(history, "--history")
    _, world = load_ground_truth(history)
    if world is None:
        raise ConfigError(f"{history} has no synthetic world beside it (*.world.parquet): "
                          "`evaluate` replays requests in the world `simulate` wrote")
    calls = load_history(history).calls
    bundle, note = load_bundle(model_dir)
    if bundle is not None:  # one that loads but cannot rank would replay as the rules
        problem = smoke_test(Policy(bundle))
        if problem is not None:
            note = f"model {bundle.version} from {model_dir} refused ({problem}): the rules answer"
            bundle = None
    if bundle is not None and "split" in bundle.metadata:
        start = pd.Timestamp(bundle.metadata["split"]["test_from"])
    else:
        start = calls["called_at"].quantile(0.8)
    before = calls[calls["called_at"] < start]
    asked = first_requests(calls[calls["requested_at"] >= start])
    if len(asked) == 0:
        raise ConfigError(f"no callback requests in {history} after {start.isoformat()}")
    # the first ones in time: a random sample would leave gaps in the contacts' histories
    # (calls of requests not replayed) that no live system has
    asked = asked.sort_values("now", kind="stable").head(requests)
    asked = asked.rename(columns={"now": "requested_at"})
    result = replay(world, before, asked, bundle=bundle, seed=seed,
                    cost_per_attempt=cost_per_attempt, progress=progress)
    report = CampaignReport(result=result, start=start.isoformat(), model_note=note)
    if plot is not None:
        report.figure = campaign_plot(result.kpis, plot)
    if track:
        from callback_timing import tracking

        with tempfile.TemporaryDirectory(prefix="callback-timing-campaign-") as tmp:
            figure = report.figure or campaign_plot(result.kpis, Path(tmp) / "campaign.png")
            with tracking.start_run("campaign", tags={"kind": "campaign"}) as run:
                flat = {f"{policy}.{k}": v for policy, row in result.kpis.iterrows()
                        for k, v in row.items()}
                tracking.log_report(
                    {"history": history.name, "requests": len(asked), "seed": seed,
                     "cost_per_attempt": cost_per_attempt, "start": report.start,
                     "model": bundle.version if bundle is not None else "none"},
                    {k.replace(" ", "_").replace("(", "").replace(")", ""): v
                     for k, v in flat.items()},
                    {"campaign": figure}, {"campaign_kpis": result.kpis})
                report.run_id = run.info.run_id
    return report
