"""Monitoring of the served model (issue 11): is it still calibrated, has the traffic
drifted, how often do the rules answer instead?

:func:`monitor_report` reads the decision log and the outcome store of the last ``days``:

- ``calibration``: the model's ``p_answer`` of each ranking's first window against whether the
  request's first call after it was answered (reliability bins from scikit-learn's
  ``calibration_curve``, and the expected calibration error, ``ece``);
- ``drift``: the answer rate per industry and per country, this period against the one
  before;
- ``fallbacks``: the share of rankings meant for the model that the rules answered, and why;
- ``psi``: the population stability index of the calls' industry and country against a
  reference (the model's training history), and of the contact-local hour the callbacks
  were requested at (not the hours called at: the policy chooses those) against the period
  before;
- ``alerts``: what passed its threshold (``ece``, ``psi``), also logged as warnings.

>>> round(psi(pd.Series(["a", "a", "b"]), pd.Series(["a", "b", "b"])), 3)
0.462
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve

from callback_timing import fastpath as fp
from callback_timing.calendar import utc_ns_of

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from callback_timing.online import OnlineRanker
    from callback_timing.store import OutcomeStore

logger = logging.getLogger(__name__)

#: default alert thresholds: expected calibration error; PSI (0.1 some shift, 0.25 major)
THRESHOLDS = {"ece": 0.05, "psi": 0.25}


def psi(reference: pd.Series, recent: pd.Series, floor: float = 1e-4) -> float:
    """Population stability index of two samples of a categorical variable:
    sum((r - e) * ln(r / e)) over the categories' shares (``floor`` for empty ones)."""
    cats = pd.Index(pd.unique(pd.concat([reference, recent], ignore_index=True).dropna()))
    if not len(cats) or not len(reference) or not len(recent):
        return 0.0
    e = reference.value_counts(normalize=True).reindex(cats, fill_value=0).clip(lower=floor)
    r = recent.value_counts(normalize=True).reindex(cats, fill_value=0).clip(lower=floor)
    return float(((r - e) * np.log(r / e)).sum())


def _request_hour(calls: pd.DataFrame) -> pd.Series:
    """The contact-local hour at which each callback was requested (one per request): an
    input the policy does not choose, unlike the hours it calls at."""
    if "requested_at" not in calls:  # a model bundle's history does not keep it
        return pd.Series([], dtype=float)
    asked = calls[calls["requested_at"].notna()]
    if "request_id" in asked:
        asked = asked[asked["request_id"].isna() | ~asked["request_id"].duplicated()]
    at = pd.to_datetime(asked["requested_at"], utc=True)
    minute, _ = fp.local_parts(utc_ns_of(at), asked["timezone"].fillna("UTC").to_numpy(object))
    return pd.Series(minute // 60, index=asked.index)


def monitor_report(store: OutcomeStore, reference: pd.DataFrame | None = None, days: float = 14.0,
                   now: pd.Timestamp | None = None, bins: int = 10,
                   thresholds: dict | None = None, min_sample: int = 200) -> dict:
    """The monitoring report of the last ``days`` before ``now`` (see the module docstring);
    ``reference``: clean calls to compare the traffic with (``None``: none for industry and
    country). A PSI is given only when both samples hold ``min_sample`` values at least (a
    small sample's PSI is noise)."""
    limits = {**THRESHOLDS, **(thresholds or {})}
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    since, before = now - pd.Timedelta(days=days), now - pd.Timedelta(days=2 * days)
    calls = store.outcomes_after(0, called_after=before)
    calls = calls[calls["called_at"] < now]
    recent, previous = calls[calls["called_at"] >= since], calls[calls["called_at"] < since]
    log = store.rows_after("decisions", ("request_id", "arm", "source", "fallback_reason",
                                         "policy", "p_answer", "decided_at"),
                           since=("decided_at", since))
    log = log[log["decided_at"] < now]  # (at or after ``since``: read so)
    report = {"since": since.isoformat(), "until": now.isoformat(), "days": days,
              "calls": len(recent), "rankings": len(log)}

    # calibration: a model ranking's p_answer against the request's first call after it
    scored = log[(log["source"] == "model") & log["p_answer"].notna()]
    scored = scored.drop_duplicates("request_id", keep="first")
    first = (recent.sort_values("called_at").dropna(subset=["request_id"])
             .drop_duplicates("request_id", keep="first").set_index("request_id"))
    pairs = scored[scored["request_id"].isin(first.index)]
    y = first.loc[pairs["request_id"], "answered"].to_numpy(float)
    p = pairs["p_answer"].to_numpy(float)
    calibration: dict = {"n": len(p), "ece": None, "bins": []}
    if len(p):
        observed, predicted = calibration_curve(y, p, n_bins=bins, strategy="uniform")
        counts = np.histogram(p, bins=np.linspace(0, 1, bins + 1))[0]
        counts = counts[counts > 0]  # calibration_curve leaves out the empty bins too
        calibration["ece"] = float(np.sum(counts * np.abs(observed - predicted)) / len(p))
        calibration["bins"] = [{"predicted": float(a), "observed": float(b), "n": int(c)}
                               for a, b, c in zip(predicted, observed, counts, strict=True)]
    report["calibration"] = calibration

    def rates(frame: pd.DataFrame, key: str) -> pd.DataFrame:
        return frame.groupby(frame[key].fillna("unknown"))["answered"].agg(["mean", "size"])

    report["drift"] = {}
    for key in ("industry", "country"):
        now_r, then_r = rates(recent, key), rates(previous, key)
        table = now_r.add_suffix("_recent").join(then_r.add_suffix("_previous"), how="outer")
        report["drift"][key] = [
            {key: str(k), "answer_rate": _num(r["mean_recent"]), "calls": int(
                r["size_recent"]) if pd.notna(r["size_recent"]) else 0,
             "previous_answer_rate": _num(r["mean_previous"]),
             "previous_calls": int(r["size_previous"]) if pd.notna(r["size_previous"]) else 0}
            for k, r in table.iterrows()]

    meant = log[(log["arm"] != "control") & (log["policy"].fillna("auto") != "rules")]
    fell = meant[meant["source"] == "rules"]
    report["fallbacks"] = {"share": (len(fell) / len(meant)) if len(meant) else None,
                           "reasons": {str(k): int(v) for k, v in
                                       fell["fallback_reason"].value_counts().items()}}

    report["psi"] = {}
    enough = min(len(recent), len(reference) if reference is not None else 0) >= min_sample
    if enough:
        for key in ("industry", "country"):
            report["psi"][key] = psi(reference[key].fillna("unknown").astype(str),
                                     recent[key].fillna("unknown").astype(str))
    # the hours callbacks are asked for: against the period before (a model's history does
    # not keep requested_at)
    hours = _request_hour(previous), _request_hour(recent)
    if min(len(h) for h in hours) >= min_sample:
        report["psi"]["request_hour"] = psi(*hours)

    alerts = []
    if calibration["ece"] is not None and calibration["ece"] > limits["ece"]:
        alerts.append(f"calibration: expected calibration error {calibration['ece']:.3f} > "
                      f"{limits['ece']:g} over {calibration['n']} rankings")
    for key, value in report["psi"].items():
        if value > limits["psi"]:
            alerts.append(f"drift: population stability index of {key} {value:.3f} > "
                          f"{limits['psi']:g}")
    for line in alerts:
        logger.warning("monitor: %s", line)
    report["alerts"] = alerts
    return report


def _num(value) -> float | None:
    return None if pd.isna(value) else float(value)


def service_report(service: OnlineRanker, days: float | None = None) -> dict:
    """:func:`monitor_report` of a running service (an
    :class:`~callback_timing.online.OnlineRanker`): its store, its model's training history
    as the reference, the thresholds and default period of its ``monitoring`` section; the
    rankings it has queued for the decision log are written first."""
    service.flush(timeout=2.0)
    cfg = service.config
    bundle = service.policy.bundle
    report = monitor_report(
        service.store, bundle.history if bundle is not None else None,
        days=cfg.monitor_days if days is None else days, min_sample=cfg.monitor_min_sample,
        thresholds={"ece": cfg.monitor_ece_alert, "psi": cfg.monitor_psi_alert})
    report["model_version"] = service.model_version
    return report


def monitor_app(ranker: Callable[[], OnlineRanker | None]) -> Starlette:
    """A Starlette app answering ``GET /`` (mounted at ``/monitor``) with
    :func:`monitor_report` of the service's store, the model's training history as the
    reference, the thresholds of ``policy.yaml``'s ``monitoring`` section; query parameter
    ``days`` (default: ``monitoring.days``)."""
    import anyio
    from sqlalchemy.exc import SQLAlchemyError
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from callback_timing.dashboard import store_unavailable

    async def monitor(request):
        service = ranker()
        if service is None:
            return JSONResponse({"error": "the service is starting: try again"},
                                status_code=503)
        cfg = service.config
        raw = request.query_params.get("days", f"{cfg.monitor_days:g}")
        try:
            days = float(raw)
        except ValueError:
            days = float("nan")
        if not 0 < days <= 366:
            return JSONResponse({"error": f"days: a number of days from 0 to 366, not "
                                          f"{raw[:20]!r}"}, status_code=400)
        try:
            report = await anyio.to_thread.run_sync(lambda: service_report(service, days))
        except SQLAlchemyError as exc:
            return store_unavailable(exc)
        return JSONResponse(report)

    return Starlette(routes=[Route("/", monitor, methods=["GET"])])
