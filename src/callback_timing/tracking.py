"""MLflow: experiment runs, logged models and the champion/challenger registry.

The only module that talks to MLflow. By default everything lives under
:func:`config.mlruns_dir`: a SQLite database ``mlflow.db`` and an ``artifacts/`` folder with an
absolute location, so ``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db`` shows runs,
artifacts and registered models. ``$MLFLOW_TRACKING_URI`` overrides the store.

Promotion is a pure decision (:func:`decide_promotion`) applied with aliases: ``champion``
names the version serving should use, ``challenger`` the latest version that did not beat it.

Examples
--------
>>> decide_promotion({"log_loss": 0.59, "ece": 0.01}, {"log_loss": 0.60, "ece": 0.02}).promote
True
>>> d = decide_promotion({"log_loss": 0.62, "ece": 0.01}, {"log_loss": 0.60, "ece": 0.02})
>>> d.promote, d.reason.split("; ")[0]
(False, 'kept champion: log loss 0.6200 > 0.6012 (champion 0.6000 + 0.2%)')
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# champion downloads happen inside CLI commands that draw their own progress bar
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402
import mlflow.xgboost
import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from callback_timing import config
from callback_timing.bundle import installed

#: Run metrics copied onto a registered version as tags (exact name or ``*_name``/``*.name``).
KEY_METRICS = ("log_loss", "ece", "brier", "auc")
#: Libraries the logged model needs, pinned to the installed versions.
MODEL_REQUIREMENTS = ("xgboost", "scikit-learn", "pandas", "numpy")
_MAX_VALUE, _MAX_KEY = 6000, 250  # MLflow's limits on a parameter's value and key
_BAD_KEY = re.compile(r"[^\w\-. /:]")
_BAD_FILE = re.compile(r"[^\w\-.]")


def _default_uri() -> str:
    folder = config.mlruns_dir().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else a SQLite database in :func:`config.mlruns_dir`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or _default_uri()


def _client() -> MlflowClient:
    uri = tracking_uri()
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    # set_tracking_uri also exports the URI; put the environment back, so that only the
    # user's own $MLFLOW_TRACKING_URI ever counts as a choice
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
    return MlflowClient(tracking_uri=uri)


def ensure_experiment(name: str = config.EXPERIMENT_NAME) -> str:
    """Set the tracking URI; return the id of experiment ``name``, created if missing.

    A new experiment keeps its artifacts in ``<mlruns>/artifacts`` (absolute ``file://`` URI)
    with the default store, and in MLflow's default location with any other store.
    """
    client = _client()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if client.tracking_uri == _default_uri():
        location = (config.mlruns_dir().resolve() / "artifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created meanwhile by another process?
        if (experiment := client.get_experiment_by_name(name)) is None:
            raise
        return experiment.experiment_id


@contextmanager
def start_run(
    run_name: str,
    nested: bool = False,
    tags: dict[str, str] | None = None,
    parent_run_id: str | None = None,
    experiment: str = config.EXPERIMENT_NAME,
) -> Iterator[mlflow.ActiveRun]:
    """``mlflow.start_run`` in ``experiment`` (created if missing), as a context manager.

    ``parent_run_id`` nests the run under a parent that is not active in this thread
    (e.g. a tuning trial run by a worker thread).
    """
    experiment_id = ensure_experiment(experiment)
    with mlflow.start_run(
        run_name=run_name,
        experiment_id=experiment_id,
        nested=nested or parent_run_id is not None,
        parent_run_id=parent_run_id,
        tags=tags,
    ) as run:
        yield run


# --- logging a training run ---------------------------------------------------------------------


def _flatten(values: Mapping, prefix: str = "") -> Iterator[tuple[str, object]]:
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield _BAD_KEY.sub("_", f"{prefix}{key}").strip("/")[:_MAX_KEY], value


def flatten_params(params: Mapping) -> dict[str, str]:
    """MLflow-safe parameters: nested keys joined by ``.``, values as (truncated) strings.

    >>> flatten_params({"xgb": {"max_depth": 6}, "features": ["a", "b"], "calibration": None})
    {'xgb.max_depth': '6', 'features': '["a", "b"]', 'calibration': 'None'}
    """
    out = {}
    for key, value in _flatten(params):
        if isinstance(value, list | tuple | Mapping):
            value = json.dumps(value, default=str)
        text = str(value)
        out[key] = text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 3] + "..."
    return out


def clean_metrics(metrics: Mapping) -> dict[str, float]:
    """Finite numeric metrics (nested keys joined by ``.``); None, NaN and text are skipped.

    >>> clean_metrics({"log_loss": np.float32(0.5), "ece": None, "test": {"auc": float("nan")}})
    {'log_loss': 0.5}
    """
    return {
        key: float(value)
        for key, value in _flatten(metrics)
        if isinstance(value, int | float | np.number) and math.isfinite(float(value))
    }


def _stage_artifacts(folder: Path, figures: Mapping, tables: Mapping, extra: Sequence) -> None:
    """Copy figures, tables and extra files into ``folder`` in their artifact layout."""
    for name, path in figures.items():
        suffix = Path(path).suffix or ".png"
        stem = _BAD_FILE.sub("_", name).removesuffix(suffix)
        (folder / "figures").mkdir(exist_ok=True)
        shutil.copyfile(path, folder / "figures" / f"{stem}{suffix}")
    for name, table in tables.items():
        stem = folder / "tables" / _BAD_FILE.sub("_", name).removesuffix(".csv")
        stem.parent.mkdir(exist_ok=True)
        if isinstance(table, pd.DataFrame):
            keep_index = not isinstance(table.index, pd.RangeIndex)
            table.to_csv(f"{stem}.csv", index=keep_index)
        else:
            Path(f"{stem}.json").write_text(json.dumps(table, indent=2, default=str))
    for path in extra:
        shutil.copyfile(path, folder / Path(path).name)


def _not_serving_check(record: logging.LogRecord) -> bool:
    return "Failed to validate serving input example" not in record.getMessage()


def log_booster(booster: xgb.Booster, input_example: pd.DataFrame) -> str:
    """Log ``booster`` as the active run's ``model`` (XGBoost flavor); return its URI.

    MLflow has no category type (mlflow#12910): the signature and the input example (first 5
    rows) hold categorical columns as strings. Load the model with ``mlflow.xgboost.load_model``
    and predict on ``xgb.DMatrix(frame, enable_categorical=True)``. The pyfunc wrapper of a
    Booster builds its DMatrix without ``enable_categorical``, so MLflow's serving-input check
    fails by construction; that log line is dropped. Serving uses the bundle, not the pyfunc.
    The project's booster starts from the rule table's chance (``margin_feature`` of
    :class:`~callback_timing.model.AnswerModel`): give it ``base_margin=logit(prior_rules)``.
    """
    example = input_example.head(5)
    example = (example[booster.feature_names] if booster.feature_names else example).copy()
    output = booster.predict(xgb.DMatrix(example, enable_categorical=True))
    for col in example.columns:
        if isinstance(example[col].dtype, pd.CategoricalDtype):
            example[col] = example[col].astype(str)
    # MLflow compares the column index with a range(), which pandas 3 deprecates for str indexes
    example.columns = pd.Index(list(example.columns), dtype=object)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        signature = infer_signature(example, output)
    requirements = ["{}=={}".format(*installed(p)) for p in MODEL_REQUIREMENTS]
    model_logger = logging.getLogger("mlflow.models.model")
    model_logger.addFilter(_not_serving_check)
    try:
        info = mlflow.xgboost.log_model(
            booster,
            name="model",
            signature=signature,
            input_example=example,
            pip_requirements=requirements,
        )
    finally:
        model_logger.removeFilter(_not_serving_check)
    return info.model_uri


def log_training(
    params: Mapping,
    metrics: Mapping,
    figures: Mapping[str, Path],
    tables: Mapping[str, dict | pd.DataFrame],
    bundle_dir: Path,
    booster: xgb.Booster,
    input_example: pd.DataFrame,
    extra_artifacts: Sequence[Path] = (),
) -> str:
    """Log a training run into the active MLflow run; return the logged model's URI.

    Parameters
    ----------
    params : run parameters, nested dicts allowed (see :func:`flatten_params`).
    metrics : run metrics; None and NaN are skipped (see :func:`clean_metrics`).
    figures : name -> image file, logged as ``figures/<name>.png``.
    tables : name -> dict (``tables/<name>.json``) or DataFrame (``tables/<name>.csv``).
    bundle_dir : the model bundle folder, logged as ``bundle/``.
    booster : the XGBoost booster, logged as the run's ``model`` (see :func:`log_booster`).
    input_example : feature rows (the first 5, in the booster's columns, are the model's input
        example).
    extra_artifacts : further files (e.g. a rejects CSV), logged at the artifact root.
    """
    _require_active_run("log_training")
    log_report(params, metrics, figures, tables, extra_artifacts)
    mlflow.log_artifacts(str(bundle_dir), artifact_path="bundle")
    return log_booster(booster, input_example)


def tag_best_trial(parent_run_id: str, trial_number: int, value: float, params: Mapping) -> None:
    """Tag a tuning parent run with its best trial: number, objective value, parameters."""
    tags = {f"best_param.{k}": v[:5000] for k, v in flatten_params(params).items()}
    tags.update(
        best_trial=str(trial_number),
        best_value=repr(float(value)),
        best_params=json.dumps(dict(params), default=str)[:5000],
    )
    client = _client()
    for key, tag in tags.items():
        client.set_tag(parent_run_id, key, tag)


# --- registry -----------------------------------------------------------------------------------


def register_model(run_id: str, name: str = config.REGISTERED_MODEL_NAME) -> str:
    """Register run ``run_id``'s logged ``model`` as a new version of ``name``; return it.

    The version is tagged with the run's key metrics (:data:`KEY_METRICS`).
    """
    client = _client()
    run = client.get_run(run_id)
    outputs = sorted(run.outputs.model_outputs if run.outputs else [], key=lambda o: o.step)
    models = [o.model_id for o in outputs if client.get_logged_model(o.model_id).name == "model"]
    if not models:
        raise ValueError(f"run {run_id} has no logged model named 'model'")
    tags = {
        key: repr(value)
        for key, value in sorted(run.data.metrics.items())
        if any(key == k or key.endswith((f"_{k}", f".{k}")) for k in KEY_METRICS)
    }
    return str(mlflow.register_model(f"models:/{models[-1]}", name, tags=tags).version)


@dataclass(frozen=True)
class ChampionInfo:
    """The version behind the ``champion`` alias, with its ``bundle/`` downloaded."""

    name: str
    version: str
    run_id: str
    metrics: dict[str, float]
    bundle_dir: Path


def champion(
    name: str = config.REGISTERED_MODEL_NAME, dest: Path | None = None
) -> ChampionInfo | None:
    """The champion of ``name`` (None if there is none), its bundle downloaded into ``dest``.

    ``dest`` defaults to a new temporary folder; ``bundle_dir`` is ``dest/bundle``, readable by
    :meth:`ModelBundle.load <callback_timing.bundle.ModelBundle.load>`.
    """
    client = _client()
    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    if "champion" not in aliases:  # registered, but nothing promoted yet
        return None
    version = client.get_model_version(name, str(aliases["champion"]))
    dest = Path(dest) if dest is not None else Path(tempfile.mkdtemp(prefix="champion-"))
    dest.mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(
        run_id=version.run_id, artifact_path="bundle", dst_path=str(dest)
    )
    metrics = dict(client.get_run(version.run_id).data.metrics)
    return ChampionInfo(name, str(version.version), version.run_id, metrics, Path(local))


@dataclass(frozen=True)
class Decision:
    """Whether a candidate replaces the champion, and why, in words with the numbers."""

    promote: bool
    reason: str


def decide_promotion(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    tol_logloss: float = 0.002,
    tol_ece: float = 0.005,
) -> Decision:
    """Promote iff there is no champion or the candidate is not worse on both metrics.

    Not worse: log loss <= champion's x (1 + ``tol_logloss``) and ECE <= champion's +
    ``tol_ece``, both measured on the same test slice.
    """
    gated = ("log_loss", "ece")
    if champion is None:
        shown = ", ".join(f"{k} {float(v):.4f}" for k, v in candidate.items() if k in gated)
        return Decision(True, f"no champion yet: candidate promoted ({shown})")
    for who, values in (("candidate", candidate), ("champion", champion)):
        if missing := [k for k in gated if k not in values]:
            raise ValueError(f"{who} metrics lack {missing[0]!r}: {sorted(values)}")
    ll, ece = float(candidate["log_loss"]), float(candidate["ece"])
    ch_ll, ch_ece = float(champion["log_loss"]), float(champion["ece"])
    ll_max, ece_max = ch_ll * (1 + tol_logloss), ch_ece + tol_ece
    promote = ll <= ll_max and ece <= ece_max
    reason = (
        f"{'promoted' if promote else 'kept champion'}: "
        f"log loss {ll:.4f} {'<=' if ll <= ll_max else '>'} {ll_max:.4f} "
        f"(champion {ch_ll:.4f} + {tol_logloss:.1%}); "
        f"ECE {ece:.4f} {'<=' if ece <= ece_max else '>'} {ece_max:.4f} "
        f"(champion {ch_ece:.4f} + {tol_ece:g})"
    )
    return Decision(promote, reason)


def apply_decision(name: str, version: str | int, decision: Decision) -> None:
    """Point alias ``champion`` (promoted) or ``challenger`` (not) at ``version``.

    The version is tagged ``decision`` (``champion``/``challenger``) and ``decision_reason``.
    """
    client = _client()
    alias = "champion" if decision.promote else "challenger"
    client.set_registered_model_alias(name, alias, str(version))
    client.set_model_version_tag(name, str(version), "decision", alias)
    client.set_model_version_tag(name, str(version), "decision_reason", decision.reason)


# --- logging into the active run (tuning trials) ------------------------------------------------


def _require_active_run(what: str) -> None:
    # without an active run mlflow.log_* would silently start a new, unnamed one
    if mlflow.active_run() is None:
        raise RuntimeError(f"{what} needs an active run: use `with start_run(...):`")


def log_params(params: Mapping) -> None:
    """Log ``params`` (flattened, see :func:`flatten_params`) to the active run."""
    _require_active_run("log_params")
    mlflow.log_params(flatten_params(params))


def log_metrics(metrics: Mapping, step: int | None = None) -> None:
    """Log finite ``metrics`` (see :func:`clean_metrics`) to the active run, at ``step``."""
    _require_active_run("log_metrics")
    mlflow.log_metrics(clean_metrics(metrics), step=step)


def set_tags(tags: Mapping[str, object]) -> None:
    """Set ``tags`` (values as strings) on the active run."""
    _require_active_run("set_tags")
    mlflow.set_tags({key: str(value) for key, value in tags.items()})


def log_to_run(run_id: str, metrics: Mapping, tags: Mapping[str, object] | None = None
               ) -> None:
    """Add finite ``metrics`` (nested keys joined by ``.``) and ``tags`` to a run that has
    ended (e.g. the champion's scores on the run's test slice, or the decision about it)."""
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    _client().log_batch(  # one request, as log_metric and set_tag would fill them in
        run_id,
        metrics=[Metric(key, value, now, 0) for key, value in clean_metrics(metrics).items()],
        tags=[RunTag(key, str(value)[:5000]) for key, value in (tags or {}).items()])


def log_report(params: Mapping, metrics: Mapping, figures: Mapping[str, Path],
               tables: Mapping[str, dict | pd.DataFrame],
               extra_artifacts: Sequence[Path] = ()) -> None:
    """Log parameters, metrics, figures, tables and further files (at the artifact root) into
    the active run (e.g. a campaign)."""
    _require_active_run("log_report")
    mlflow.log_params(flatten_params(params))
    mlflow.log_metrics(clean_metrics(metrics))
    with tempfile.TemporaryDirectory(prefix="callback-timing-run-") as tmp:
        _stage_artifacts(Path(tmp), figures, tables, extra_artifacts)
        mlflow.log_artifacts(tmp)
