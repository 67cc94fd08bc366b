"""``callback-timing retrain``: the learning loop, one turn at a time, unattended.

One :func:`retrain` call:

1. **exports** the outcome store as call history (:func:`~callback_timing.export.history_of`:
   retention and erasures honoured) and **merges** it with the original history, if given
   (a call the history already has is taken from the history);
2. **skips** when the store has fewer than ``retraining.min_new_calls`` calls after the last
   call the served model saw (nothing worth a new model yet);
3. **trains** a challenger on it (:func:`~callback_timing.workflow.train_loaded`): the last
   20 % of the calls are the test slice on which the challenger and the registry's champion
   are both scored; it is promoted only when not worse on log loss and calibration (ECE,
   :func:`~callback_timing.tracking.decide_promotion`);
4. **checks it off-policy** before promotion: on the rankings the service logged during that
   test slice, with their propensities, the challenger's answer rate at the first attempt is
   estimated (doubly robust, :func:`~callback_timing.offpolicy.challenger_estimate`) and
   logged beside the offline metrics. A challenger the estimate finds clearly worse than
   what the served policy earned (its upper 95 % bound below that by more than
   ``retraining.offpolicy_tolerance``, with an effective sample size of at least
   ``retraining.offpolicy_min_ess``) is not promoted;
5. **promotes**: the challenger's bundle replaces the served folder (atomically), and a
   running server is told to reload it (``POST /admin/reload``);
6. says what it decided in **one log line** and in an **MLflow run** (the training run, or a
   ``retrain`` run when it skipped), every time.

The challenger's bundle stays in ``<model folder>.challenger`` whatever the decision.
"""

from __future__ import annotations

import json
import logging
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from callback_timing import config
from callback_timing.schema import ConfigError, require_file
from callback_timing.traffic import server_url

log = logging.getLogger(__name__)


@dataclass
class RetrainReport:
    """What :func:`retrain` decided, and on what."""

    #: ``promoted``, ``kept`` (the champion stays) or ``skipped`` (no challenger trained)
    decision: str
    reason: str
    #: calls exported from the store, and those of them after the served model's data
    store_calls: int = 0
    new_calls: int = 0
    #: calls of the original history merged in (after leaving out the store's duplicates)
    history_calls: int = 0
    #: clean calls the challenger was trained and tested on
    calls: int = 0
    challenger_version: str | None = None
    registered_version: str | None = None
    run_id: str | None = None
    offline: dict = field(default_factory=dict)
    off_policy: dict | None = None
    #: the server's answer to the reload (``None``: no server was told)
    reload: dict | None = None
    model_dir: Path | None = None
    at: pd.Timestamp = field(default_factory=lambda: pd.Timestamp.now(tz="UTC"))

    @property
    def unreached(self) -> bool:
        """A promoted model the server was told about and did not load."""
        return self.reload is not None and not self.reload.get("reloaded")

    def line(self) -> str:
        """The decision as one log line, with its numbers (no personal data)."""
        head = f"retrain {self.at:%Y-%m-%dT%H:%M:%SZ}: "
        data = (f"{self.new_calls:,} new of {self.store_calls:,} stored "
                f"call{'' if self.store_calls == 1 else 's'}"
                + (f", {self.history_calls:,} rows of the history" if self.history_calls
                   else ""))
        if self.decision == "skipped":
            return f"{head}skipped ({self.reason}); {data}"
        who = f"model {self.challenger_version} (registered version {self.registered_version})"
        verb = "promoted" if self.decision == "promoted" else "did not promote"
        parts = [f"{head}{verb} {who}: {self.reason}", data]
        if self.off_policy is not None:
            parts.append(describe_off_policy(self.off_policy))
        if self.reload is not None:
            parts.append(f"server: {self.reload.get('detail')}" if self.unreached
                         else f"server now ranks with {self.reload.get('model_version')}")
        return "; ".join(parts)


def describe_off_policy(est: dict) -> str:
    """An off-policy estimate in words."""
    if est.get("error"):
        return f"off-policy: not estimated ({est['error']})"
    if not est.get("n"):
        return "off-policy: no logged ranking with a propensity in the test slice"
    se = f" ± {est['dr_se']:.3f}" if est.get("dr_se") is not None else ""
    text = (f"off-policy on {est['n']:,} logged rankings (effective sample {est['ess']:.0f}): "
            f"first-attempt answer rate {est['dr']:.3f}{se} (doubly robust) vs "
            f"{est['logged']:.3f} logged")
    if est.get("replayed") is not None:
        text += f", replay reproduces {est['replayed']:.0%} of the logged choices"
    return text


def off_policy_veto(est: dict, min_ess: float, tolerance: float) -> str | None:
    """Why the estimate ``est`` forbids a promotion (``None``: it does not): its upper 95 %
    bound is more than ``tolerance`` below what the logging policy earned, on an effective
    sample of at least ``min_ess``.

    >>> off_policy_veto({"n": 900, "ess": 300, "dr": 0.20, "dr_se": 0.01, "logged": 0.25},
    ...                 100, 0.02)
    'off-policy estimate 0.200 + 1.96 x 0.010 < logged 0.250 - 0.02'
    >>> off_policy_veto({"n": 900, "ess": 30, "dr": 0.10, "dr_se": 0.01, "logged": 0.25},
    ...                 100, 0.02) is None
    True
    """
    if not est.get("n") or est.get("dr") is None or est.get("dr_se") is None:
        return None
    if est["ess"] < min_ess:
        return None
    upper = est["dr"] + 1.96 * est["dr_se"]
    if upper < est["logged"] - tolerance:
        return (f"off-policy estimate {est['dr']:.3f} + 1.96 x {est['dr_se']:.3f} < logged "
                f"{est['logged']:.3f} - {tolerance:g}")
    return None


def _merge(history, mapping, reading: dict, exported: pd.DataFrame):
    """The original history's rows and the store's (minus the calls the history has), as
    one cleaned :class:`~callback_timing.data.LoadResult`; and how many rows came from the
    history. ``reading``: ``clean_history``'s options (``assume_tz``, ...)."""
    from callback_timing.data import clean_history
    from callback_timing.reading import apply_mapping, read_table

    store_rows = exported.drop(columns=["arm", "propensity"])
    if history is None:
        return clean_history(store_rows, **reading), 0
    original = apply_mapping(read_table(history), mapping)
    known = set(original["call_id"].astype(str)) if "call_id" in original else set()
    store_rows = store_rows[~store_rows["call_id"].astype(str).isin(known)]
    merged = pd.concat([original.astype(object), store_rows.astype(object)],
                       ignore_index=True)
    return clean_history(merged, **reading), len(original)


def _served_until(bundle) -> pd.Timestamp | None:
    """The last call the served model's data held (``None``: no model)."""
    if bundle is None:
        return None
    until = (bundle.metadata.get("split") or {}).get("test_to")
    return pd.Timestamp(until) if until else None


def _check_reachable(server: str, timeout: float = 10.0) -> None:
    """``ConfigError`` unless the server answers its readiness probe: a promotion it could not
    be told of would change the served folder and the registry behind its back."""
    url = server.rstrip("/") + "/readyz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - http(s)
            answer.read()
    except urllib.error.HTTPError as exc:
        raise ConfigError(f"--server: {server} is not ready (/readyz answered {exc.code}): "
                          "nothing was trained") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(f"--server: {server} cannot be reached ({reason}): nothing was "
                          "trained") from None


def tell_server(server: str, model_dir: Path, api_key: str | None = None,
                timeout: float = 120.0) -> dict:
    """``POST /admin/reload`` to a running server with the served folder; its answer (or
    ``{"reloaded": False, "detail": why}`` when it cannot be reached)."""
    from callback_timing.traffic import http_poster

    post = http_poster(server, api_key, timeout)
    try:
        return post("/admin/reload", {"model_dir": str(Path(model_dir).resolve())})
    except urllib.error.HTTPError as exc:
        try:
            said = json.loads(exc.read()).get("error", "")
        except ValueError:
            said = ""
        return {"reloaded": False, "detail": f"{server} answered {exc.code} {said}".strip()}
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return {"reloaded": False, "detail": f"{server} cannot be reached ({reason})"}


def retrain(
    db: str,
    history: str | Path | None = None,
    model_dir: str | Path | None = None,
    server: str | None = None,
    api_key: str | None = None,
    params: dict | None = None,
    mapping: dict[str, str] | None = None,
    assume_tz: str | None = None,
    default_tz: str = "UTC",
    rules_path: str | Path | None = None,
    rules_table_path: str | Path | None = None,
    min_new_calls: int | None = None,
    bentoml: bool = True,
    progress: Callable[[int, int], None] | None = None,
    time_format: str | None = None,
) -> RetrainReport:
    """One turn of the learning loop (see the module docstring); never raises for a
    decision, only for a mistake (a missing store or history: ``ConfigError``).

    Parameters
    ----------
    db : the outcome store (a SQLite path or a SQLAlchemy URL).
    history : the original call history to merge with the store's calls.
    model_dir : the served model folder (default :func:`config.model_dir`).
    server : base URL of a running server to tell about a promotion.
    api_key : the server's API key, if it has one.
    params : XGBoost parameters for the challenger.
    rules_path : the policy file (calling rules, retention, ``retraining`` thresholds).
    rules_table_path : the server's rule table (``serve --rules-table``), for the replay of
        the rankings the rules made.
    min_new_calls : overrides ``retraining.min_new_calls``.
    mapping, assume_tz, default_tz, time_format : how ``history`` is read
        (:func:`~callback_timing.data.clean_history`).
    """
    from callback_timing import tracking
    from callback_timing.contacts import load_keys
    from callback_timing.export import history_of
    from callback_timing.offpolicy import challenger_estimate
    from callback_timing.policy import load_bundle
    from callback_timing.policy_config import load_policy_config
    from callback_timing.rules import RuleModel
    from callback_timing.store import open_store
    from callback_timing.training import TrainingDataError
    from callback_timing.workflow import (
        check_model_folder,
        leave_out_expired,
        leave_out_forgotten,
        staged_folder,
        train_loaded,
    )

    cfg = load_policy_config(rules_path)
    rule_table = RuleModel.from_file(rules_table_path)
    needed = cfg.retrain_min_new_calls if min_new_calls is None else min_new_calls
    model_dir = check_model_folder(model_dir if model_dir is not None else config.model_dir())
    if history is not None:
        require_file(history, "--history")
    if server:  # found wrong now, not after training a model it cannot tell about
        server_url(server)
        _check_reachable(server)
    cutoff = cfg.active_cutoff()
    store = open_store(db)
    try:
        forgotten = store.forgotten_hashes()
        exported, _, _ = history_of(store, cutoff,
                                    load_keys(create=False) if forgotten else None)
        served, _ = load_bundle(model_dir)
        until = _served_until(served)
        at = pd.to_datetime(exported["called_at"], utc=True)
        new = int((at > until).sum()) if until is not None else len(exported)
        report = RetrainReport(decision="skipped", reason="", store_calls=len(exported),
                               new_calls=new, model_dir=model_dir)
        if new < needed:
            report.reason = (f"{new:,} calls after the served model's data, "
                             f"{needed:,} needed (retraining.min_new_calls)")
            return _skipped(report, tracking)
        reading = {"assume_tz": assume_tz, "default_tz": default_tz,
                   "time_format": time_format}
        result, report.history_calls = _merge(history, mapping, reading, exported)
        leave_out_forgotten(result, forgotten)
        try:
            leave_out_expired(result, cutoff)  # nothing to do without a cutoff
        except ConfigError as exc:
            report.reason = str(exc)
            return _skipped(report, tracking)
        report.calls = len(result.calls)

        def veto(bundle):
            since = pd.Timestamp(bundle.metadata["split"]["test_from"])
            try:
                est = challenger_estimate(store, result.calls, bundle, logging=served,
                                          since=since, config=cfg, rules=rule_table)
            except Exception as exc:  # noqa: BLE001 - the offline comparison still decides
                log.warning("retrain: no off-policy estimate (%s: %s)", type(exc).__name__,
                            str(exc)[:200])
                report.off_policy = {"n": 0, "error": type(exc).__name__}
                return {}, None
            report.off_policy = est
            metrics = {f"offpolicy.{k}": v for k, v in est.items()
                       if k not in ("by_arm", "since")}
            return metrics, off_policy_veto(est, cfg.retrain_offpolicy_min_ess,
                                            cfg.retrain_offpolicy_tolerance)

        challenger_dir = model_dir.with_name(model_dir.name + ".challenger")
        try:
            trained = train_loaded(result, "outcome store" + (
                f" + {Path(history).name}" if history is not None else ""),
                challenger_dir, params=params, track=True, bentoml=bentoml,
                progress=progress, veto=veto, incumbent=served)
        except TrainingDataError as exc:
            report.reason = str(exc)
            return _skipped(report, tracking)
    finally:
        store.close()
    report.run_id, report.registered_version = trained.run_id, trained.model_version
    report.challenger_version = trained.evaluation.bundle.version
    report.offline = dict(trained.evaluation.metrics["model"])
    report.reason = trained.decision or ""
    report.decision = "promoted" if trained.promoted else "kept"
    if trained.promoted:
        with staged_folder(model_dir) as staging:  # replaced with one rename
            shutil.copytree(challenger_dir, staging, dirs_exist_ok=True)
        if server:
            report.reload = tell_server(server, model_dir, api_key)
    tracking.log_to_run(report.run_id, {"retrain.new_calls": report.new_calls,
                                        "retrain.store_calls": report.store_calls,
                                        "retrain.history_calls": report.history_calls},
                        {"kind": "retrain", "retrain.decision": report.decision,
                         "retrain.line": report.line()})
    _say(report)
    return report


def _skipped(report: RetrainReport, tracking) -> RetrainReport:
    """Record a retrain that trained nothing: its MLflow run and its log line."""
    with tracking.start_run("retrain (skipped)", tags={"kind": "retrain",
                                                       "retrain.decision": "skipped"}) as run:
        report.run_id = run.info.run_id
        tracking.log_metrics({"retrain.new_calls": report.new_calls,
                              "retrain.store_calls": report.store_calls})
        tracking.set_tags({"retrain.reason": report.reason, "retrain.line": report.line()})
    _say(report)
    return report


def _say(report: RetrainReport) -> None:
    log.log(logging.WARNING if report.unreached else logging.INFO, "%s", report.line())
