"""Training on a Dask cluster, for call histories beyond one machine (``train --engine dask``).

The same pipeline as :func:`callback_timing.training.fit_and_evaluate`, with the rows spread
over the cluster's workers and the same functions applied to each piece:

1. **read** partitioned Parquet (a folder, a glob or any fsspec URL: ``s3://``, ``gs://``,
   ``abfs://``…) with :func:`dask.dataframe.read_parquet`, number the records (``row`` = the
   record's position in the dataset + 2, as for a single Parquet file), map the columns;
2. **shuffle by contact** so each partition holds every record of its contacts, then clean each
   partition with :func:`callback_timing.data.clean_history` (duplicates are found within a
   contact; the pseudonymisation key is the driver's);
3. **split by time** on the gathered ``called_at`` column (exact quantiles, so the same
   boundaries as the pandas path), **fit the priors** from each partition's group totals
   (:meth:`Priors.fit` accepts counts);
4. **features** of each partition with :func:`callback_timing.features.training_frame` (point
   in time per contact, so partitions need nothing from each other);
5. **train** ``xgboost.dask.DaskXGBClassifier`` with the single-machine estimator's arguments
   (:meth:`AnswerModel.classifier_kwargs`), the rule-table margin and early stopping on the
   validation period;
6. **calibrate and evaluate** on the booster's predictions made where the rows live; only
   labels and probabilities of the validation and test periods travel to the driver.

The bundle has the pandas path's form and serves unchanged. Its ``history`` (the contact
profiles the server reads) is gathered on the driver, as the serving process needs it anyway;
the features (several times larger) and the booster's training stay on the workers. Baselines
that must see the whole training set (weekday x hour rates, logistic regression) and the
simulator's truth are left out; the rules and the contact's own rate are reported.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd

from callback_timing import schema
from callback_timing.bundle import HISTORY_COLUMNS, ModelBundle, library_versions
from callback_timing.calendar import utc_ns_of
from callback_timing.data import LoadResult, clean_history, time_format_option, zone_option
from callback_timing.evaluate import classification_metrics
from callback_timing.features import build_features, prior_rows, scored_calls
from callback_timing.model import AnswerModel
from callback_timing.priors import Priors
from callback_timing.reading import apply_mapping, check_required
from callback_timing.schema import ConfigError, SchemaError
from callback_timing.training import Evaluation, Split, answer_model, split_by_time

if TYPE_CHECKING:
    from distributed import Client

    class ClusterLike(Protocol):
        """A cluster object that hands out a client (Coiled, Dask Gateway)."""

        def get_client(self) -> Client: ...

log = logging.getLogger(__name__)

_SLICES = ("train", "valid", "test")


@contextlib.contextmanager
def dask_client(scheduler: str | Client | ClusterLike | None = None, workers: int = 2,
                threads_per_worker: int = 1, quiet: bool = True) -> Iterator[Client]:
    """A ``distributed.Client`` for the block.

    ``scheduler`` is an address (``tcp://host:8786``; connected and closed after the
    block), a ``Client`` or a cluster object with ``get_client()`` (e.g. from Coiled or Dask
    Gateway, whose TLS addresses need the cluster's credentials; used as they are, not
    closed), or ``None``: a ``LocalCluster`` of ``workers`` processes, closed after the block.

    ``quiet``: Dask's own INFO lines (cluster start, every worker and client coming and
    going) are not shown, nor the p2p shuffle's per-shuffle warnings, unless this
    package's logger is at INFO (``callback-timing -v``).
    """
    if quiet and not log.isEnabledFor(logging.INFO):
        os.environ.setdefault("DASK_DISTRIBUTED__LOGGING__DISTRIBUTED", "warning")  # workers
        logging.getLogger("distributed").setLevel(logging.WARNING)
        logging.getLogger("distributed.shuffle").setLevel(logging.ERROR)
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        yield scheduler
        return
    if hasattr(scheduler, "get_client"):
        yield scheduler.get_client()
        return
    if scheduler:
        try:
            client = Client(scheduler)
        except (OSError, ValueError, TypeError) as exc:  # unreachable, or not an address
            raise ConfigError(f"cannot reach the Dask scheduler {scheduler!r}: "
                              f"{type(exc).__name__}: {exc}") from None
        with client:
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker,
                      processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


@dataclass
class DistributedHistory:
    """A clean call history spread over a cluster: one list entry per partition, each a
    future of a pandas frame holding every clean call of its contacts
    (:data:`~callback_timing.schema.CLEAN_COLUMNS`, sorted by contact and time)."""

    client: object
    parts: list
    rejects: pd.DataFrame
    n_input_rows: int
    n_duplicates: int
    warnings: dict[str, int] = field(default_factory=dict)

    def gather(self, columns: list[str] | None = None) -> pd.DataFrame:
        """The clean calls on the driver (only ``columns`` if given), sorted by contact and
        time as :func:`~callback_timing.data.clean_history` returns them."""
        cols = list(columns or schema.CLEAN_COLUMNS)
        frames = self.client.gather([self.client.submit(_columns, p, cols) for p in self.parts])
        calls = pd.concat(frames, ignore_index=True)
        return calls.sort_values(["contact_id", "called_at"], kind="stable", ignore_index=True)

    def leave_out(self, older_than: pd.Timestamp | None, forgotten: set[str] | None,
                  keys: list[bytes] | None) -> tuple[int, int, int]:
        """Drop, on the workers, the calls of forgotten (erased) contacts and the calls before
        ``older_than`` (the retention); returns (forgotten, expired, left) call counts. The
        erased ids are found on the driver: the keys never leave it."""
        if older_than is None and not forgotten:
            return 0, 0, -1
        erased: set[str] = set()
        if forgotten:
            from callback_timing.privacy import forgotten_ids

            ids = self.client.gather([self.client.submit(_contact_ids, p) for p in self.parts])
            erased = forgotten_ids(pd.Series(np.concatenate(ids) if ids else []), forgotten,
                                   keys or [])
        futures = [self.client.submit(_leave_out_part, p, older_than, erased)
                   for p in self.parts]
        self.parts = [self.client.submit(_pick, f, 0) for f in futures]
        counts = np.asarray(self.client.gather([self.client.submit(_pick, f, 1)
                                                for f in futures]), dtype=np.int64)
        gone, old, left = counts.reshape(-1, 3).sum(axis=0)
        return int(gone), int(old), int(left)

    def load_result(self, calls: pd.DataFrame) -> LoadResult:
        """The :class:`LoadResult` of the whole history, with ``calls`` gathered."""
        return LoadResult(calls=calls, rejects=self.rejects, n_input_rows=self.n_input_rows,
                          n_duplicates=self.n_duplicates, warnings=self.warnings)


def _contact_ids(frame: pd.DataFrame) -> np.ndarray:
    return pd.unique(frame["contact_id"].astype(str))


def _leave_out_part(frame: pd.DataFrame, older_than, erased: set[str]
                    ) -> tuple[pd.DataFrame, tuple[int, int, int]]:
    gone = frame["contact_id"].astype(str).isin(erased)
    old = (pd.to_datetime(frame["called_at"], utc=True) < older_than
           if older_than is not None else pd.Series(False, index=frame.index)) & ~gone
    keep = ~(gone | old)
    return (frame[keep].reset_index(drop=True),
            (int(gone.sum()), int(old.sum()), int(keep.sum())))


def _columns(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return frame[columns]


def _number_rows(frame: pd.DataFrame, offsets: np.ndarray, partition_info=None) -> pd.DataFrame:
    """Index a raw partition by record number (``row``) and add the shuffle key."""
    start = int(offsets[partition_info["number"]]) if partition_info else 2
    frame = frame.copy()
    frame.index = pd.RangeIndex(start, start + len(frame), name="row")
    key = frame["contact_id"].astype("string").str.strip() if "contact_id" in frame else None
    frame["_contact"] = key.fillna("") if key is not None else ""
    return frame


def _clean_part(frame: pd.DataFrame, assume_tz, key, default_tz, time_format=None) -> tuple:
    """Clean one contact partition: (clean calls, rejects, input rows, duplicates, warnings)."""
    frame = frame.drop(columns="_contact")
    frame.index = frame.index.astype("int64").rename("row")
    frame = frame.sort_index()  # the dataset's order: the first copy of a duplicate wins
    result = clean_history(frame, assume_tz=assume_tz, key=key, default_tz=default_tz,
                           time_format=time_format)
    return (result.calls, result.rejects, result.n_input_rows, result.n_duplicates,
            result.warnings)


def read_history(source: str, client: Client, mapping: dict[str, str] | None = None,
                 assume_tz: str | None = None, default_tz: str = "UTC",
                 key: bytes | None = None, partitions: int | None = None,
                 storage_options: dict | None = None,
                 time_format: str | None = None) -> DistributedHistory:
    """Read, map, shuffle by contact and clean a partitioned Parquet call history.

    ``partitions``: how many contact partitions (default: as many as the input has, at least
    two per worker). Raises :class:`SchemaError` for an unreadable source or missing columns.
    """
    import dask
    import dask.dataframe as dd

    from callback_timing.contacts import load_key

    key = load_key() if key is None else key
    assume_tz = zone_option(assume_tz, "--assume-tz")  # mistakes found before any reading
    default_tz = zone_option(default_tz, "--default-tz") or "UTC"
    time_format = time_format_option(time_format, assume_tz)
    with dask.config.set({"dataframe.convert-string": False}):
        try:
            raw = dd.read_parquet(_history_files(source, storage_options),
                                  storage_options=storage_options)
        except ImportError as exc:  # e.g. s3:// without s3fs
            raise SchemaError(f"cannot read call history {source}: {exc}") from None
        except (OSError, ValueError) as exc:
            raise SchemaError(f"cannot read call history {source}: {_read_error(exc)}"
                              ) from None
        raw = apply_mapping(raw, mapping)
        check_required(raw._meta)
        try:  # the first pass over the files: a file of another schema shows here
            sizes = np.asarray(raw.map_partitions(len).compute(), dtype=np.int64)
        except (KeyError, ValueError, OSError) as exc:
            raise SchemaError(
                f"cannot read call history {source}: {_read_error(exc)} (every file must "
                "have the history's columns; name them with a glob if others lie beside)"
            ) from None
        offsets = np.concatenate([[2], 2 + np.cumsum(sizes)[:-1]])
        numbered = raw.map_partitions(_number_rows, offsets,
                                      meta=_number_rows(raw._meta, offsets))
        workers = max(len(client.scheduler_info()["workers"]), 1)
        n = partitions or max(raw.npartitions, 2 * workers)
        shuffled = numbered.shuffle(on="_contact", npartitions=n)
        tasks = [dask.delayed(_clean_part, nout=5)(p, assume_tz, key, default_tz, time_format)
                 for p in shuffled.to_delayed()]
        futures = client.compute(tasks)
    parts = [client.submit(_pick, f, 0) for f in futures]
    summary = client.gather([client.submit(_summary, f) for f in futures])
    rejects = pd.concat([s[0] for s in summary], ignore_index=True).sort_values(
        "row", kind="stable", ignore_index=True)
    warnings: dict[str, int] = {}
    for s in summary:
        for kind, count in s[3].items():
            warnings[kind] = warnings.get(kind, 0) + int(count)
    del futures  # the clean frames are kept by ``parts``
    return DistributedHistory(client=client, parts=parts, rejects=rejects,
                              n_input_rows=int(sum(s[1] for s in summary)),
                              n_duplicates=int(sum(s[2] for s in summary)),
                              warnings=warnings)


#: Files ``simulate`` writes beside a history (its ground truth), never call rows.
_SIDECARS = (".truth.parquet", ".world.parquet")


def _history_files(source: str, storage_options: dict | None):
    """``source``, or for a folder holding the simulator's ground-truth files beside the
    history, the folder's other Parquet files (a list)."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(source, **(storage_options or {}))
        if not fs.isdir(path):
            return source
        files = sorted(f for f in fs.find(path) if f.endswith(".parquet"))
    except (ImportError, OSError, ValueError):
        return source  # read_parquet says what is wrong
    if not any(f.endswith(_SIDECARS) for f in files):
        return source
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol
    keep = [f for f in files if not f.endswith(_SIDECARS)]
    return [f if protocol == "file" else f"{protocol}://{f}" for f in keep] or source


def _read_error(exc: Exception) -> str:
    """Why Dask could not read a source, in a few words (Dask wraps the reader's error)."""
    inner = exc.__cause__ or exc
    if isinstance(inner, FileNotFoundError):
        return "no such file or folder"
    if isinstance(inner, KeyError):
        return f"a file lacks column(s) {inner}"
    if "magic bytes" in str(inner):
        return "not Parquet (--engine dask reads Parquet; convert CSV first)"
    first = (str(inner).strip().splitlines() or [""])[0]
    return f"{type(inner).__name__}: {first[:100]}"


def _pick(result: tuple, i: int):
    return result[i]


def _summary(result: tuple) -> tuple:
    return result[1], result[2], result[3], result[4]


# --- per-partition pieces of the pipeline ----------------------------------------------------


def _times(calls: pd.DataFrame) -> pd.DataFrame:
    return calls[["called_at", "answered"]]


def _prior_counts(calls: pd.DataFrame, train_to: pd.Timestamp) -> tuple[pd.DataFrame, list]:
    """Calls and answers per (industry, weekday, band) of the training period; countries."""
    train = calls[calls["called_at"] < train_to]
    frame = prior_rows(train).astype({"answered": np.int64})
    counts = frame.groupby(["industry", "weekday", "band"], observed=True)["answered"].agg(
        answered="sum", count="size").reset_index()
    return counts, train["country"].dropna().astype(str).unique().tolist()


def _slice_codes(called_at: pd.Series, bounds: tuple[pd.Timestamp, pd.Timestamp]) -> np.ndarray:
    """0 train, 1 validation, 2 test (the boundaries of :func:`split_by_time`)."""
    edges = np.array([pd.Timestamp(b).as_unit("ns").value for b in bounds], dtype=np.int64)
    return np.searchsorted(edges, utc_ns_of(called_at), side="right").astype(np.int8)


def _features(calls: pd.DataFrame, priors: Priors, bounds, model: AnswerModel
              ) -> pd.DataFrame:
    """The model's training rows of one partition, with ``_y``, ``_slice`` and ``_margin``
    (the logit ``model`` starts from; 0 without a margin feature)."""
    X = build_features(calls, None, priors)
    X["_y"] = calls["answered"].to_numpy(dtype=np.int8)
    X["_slice"] = _slice_codes(calls["called_at"], bounds)
    margin = model.margin(X)
    X["_margin"] = 0.0 if margin is None else margin
    return X


def _predict(X: pd.DataFrame, model: AnswerModel, slices: tuple[int, ...]) -> pd.DataFrame:
    """Labels, slice, raw booster probabilities and the baselines' of some slices' rows."""
    from callback_timing.rules import RuleModel

    rows = X[X["_slice"].isin(slices)]
    empty = np.empty(0)
    return pd.DataFrame({
        "y": rows["_y"].to_numpy(), "slice": rows["_slice"].to_numpy(),
        "raw": model.predict_raw(rows) if len(rows) else empty,
        # the baselines of evaluate.baseline_scores that need no training data
        "rules": RuleModel.from_file().p_answer(rows) if len(rows) else empty,
        "contact_rate": rows["hist_rate"].to_numpy(dtype=float)})


def _champion_p(calls: pd.DataFrame, model: AnswerModel, priors: Priors, bounds
                ) -> pd.DataFrame:
    """A model's answers for one partition's test calls, with its own priors."""
    test = _slice_codes(calls["called_at"], bounds) == 2
    if not test.any():
        return pd.DataFrame({"y": np.empty(0, np.int8), "p": np.empty(0)})
    y, p = scored_calls(calls, test, model, priors)
    return pd.DataFrame({"y": y, "p": p})


# --- the pipeline ------------------------------------------------------------------------------


@dataclass
class DaskTraining:
    """What :func:`fit_and_evaluate_dask` produced: the evaluation (as the pandas path's) and
    the split boundaries the champion is compared on (:meth:`champion_metrics`)."""

    evaluation: Evaluation
    history: DistributedHistory
    bounds: tuple[pd.Timestamp, pd.Timestamp]
    calls: pd.DataFrame  #: the clean calls, gathered on the driver

    def champion_metrics(self, bundle: ModelBundle) -> dict:
        """Test metrics of another bundle on this run's test period, computed on the
        workers (the champion's own priors and features)."""
        h = self.history
        # the model and priors only (not the bundle's history), sent to each worker once;
        # hash=False, here and below: a key of their own. A content-hashed key equal to that
        # of an earlier scatter being released (equal priors: a champion trained on the same
        # calls) can be deleted on the workers under the new one ("lost dependencies")
        model, priors = h.client.scatter([bundle.model, bundle.priors], broadcast=True,
                                         hash=False)
        parts = h.client.gather([h.client.submit(_champion_p, p, model, priors, self.bounds)
                                 for p in h.parts])
        scored = pd.concat(parts, ignore_index=True)
        return classification_metrics(scored["y"].to_numpy(), scored["p"].to_numpy())


def fit_and_evaluate_dask(history: DistributedHistory, params: dict | None = None,
                          progress: Callable[[int, int], None] | None = None) -> DaskTraining:
    """:func:`~callback_timing.training.fit_and_evaluate` on a cluster (see the module
    docstring); the bundle's history is the clean calls gathered on the driver."""
    import dask.dataframe as dd
    import xgboost as xgb
    from xgboost import dask as dxgb

    step = progress or (lambda done, total: None)
    client = history.client
    times = pd.concat(client.gather([client.submit(_times, p) for p in history.parts]),
                      ignore_index=True)
    split = split_by_time(times)
    bounds = (pd.Timestamp(split.bounds["valid_from"]), pd.Timestamp(split.bounds["test_from"]))
    del times
    step(1, 6)

    counted = client.gather([client.submit(_prior_counts, p, bounds[0]) for p in history.parts])
    counts = pd.concat([c[0] for c in counted], ignore_index=True)
    counts = counts.groupby(["industry", "weekday", "band"], observed=True)[
        ["answered", "count"]].sum().reset_index()
    countries = sorted({c for _, found in counted for c in found})
    priors = Priors().fit(counts)
    priors.countries_ = countries
    step(2, 6)

    model = answer_model(**(params or {}))
    margin = model.margin_feature
    shared_priors = client.scatter(priors, broadcast=True, hash=False)
    feats = [client.submit(_features, p, shared_priors, bounds, model) for p in history.parts]
    meta = client.submit(_empty_like, feats[0]).result()
    X = dd.from_delayed(feats, meta=meta, verify_meta=False)
    columns = model.features or [c for c in meta.columns if not c.startswith("_")]
    train, valid = X[X["_slice"] == 0], X[X["_slice"] == 1]
    # each worker's threads (``n_jobs=None``), not the single-machine default
    estimator = dxgb.DaskXGBClassifier(**{**model.classifier_kwargs(), "n_jobs": None})
    estimator.client = client
    extra = {}
    if margin:
        extra = {"base_margin": train["_margin"], "base_margin_eval_set": [valid["_margin"]]}
    with xgb.config_context(verbosity=0):  # the workers take the driver's global config
        estimator.fit(train[columns], train["_y"], eval_set=[(valid[columns], valid["_y"])],
                      verbose=False, **extra)
    model.use_booster(estimator.get_booster(), int(estimator.best_iteration), meta[columns])
    step(3, 6)

    shared_model = client.scatter(model, broadcast=True, hash=False)
    scored = pd.concat(client.gather([client.submit(_predict, f, shared_model, (1, 2))
                                      for f in feats]), ignore_index=True)
    val, test = scored[scored["slice"] == 1], scored[scored["slice"] == 2]
    model.calibrate_on(val["raw"].to_numpy(), val["y"].to_numpy())
    y_test = test["y"].to_numpy()
    p_test = {"model": model.calibrate(test["raw"].to_numpy()),
              "contact_rate": test["contact_rate"].to_numpy(),
              "rules": test["rules"].to_numpy()}
    metrics = {name: classification_metrics(y_test, p) for name, p in p_test.items()}
    step(4, 6)

    X_test = _test_example(client, feats, columns)
    calls = history.gather()
    codes = _slice_codes(calls["called_at"], bounds)
    rows = {name: int(n) for name, n in zip(_SLICES, np.bincount(codes, minlength=3),
                                            strict=True)}
    step(5, 6)
    metadata = {
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "split": split.bounds,
        "rows": rows,
        "params": model.params,
        "margin_feature": model.margin_feature,
        "best_iteration": model.best_iteration_,
        "metrics": metrics["model"],
        "truth": {},
        "libraries": library_versions(),
        "engine": {"name": "dask", "workers": len(client.scheduler_info()["workers"]),
                   "partitions": len(history.parts)},
    }
    bundle = ModelBundle(model=model, priors=priors, history=calls[list(HISTORY_COLUMNS)],
                         metadata=metadata)
    full_split = Split(train=codes == 0, valid=codes == 1, test=codes == 2, bounds=split.bounds)
    evaluation = Evaluation(bundle=bundle, split=full_split, metrics=metrics, y_test=y_test,
                            p_test=p_test, truth={}, X_test=X_test)
    step(6, 6)
    return DaskTraining(evaluation=evaluation, history=history, bounds=bounds, calls=calls)


def _empty_like(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.iloc[:0]


def _head_test(X: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return X.loc[X["_slice"] == 2, columns].head(5)


def _test_example(client, parts: list, columns: list[str]) -> pd.DataFrame:
    """Up to five test rows (the MLflow input example), from the first partition with any."""
    rows = pd.DataFrame()
    for part in parts:
        rows = client.submit(_head_test, part, columns).result()
        if len(rows):
            break
    return rows


__all__ = ["DaskTraining", "DistributedHistory", "dask_client", "fit_and_evaluate_dask",
           "read_history"]
