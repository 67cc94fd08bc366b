"""The service's own Prometheus metrics, served with BentoML's at ``GET /metrics``.

BentoML runs its workers in Prometheus' multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), so
metrics made with ``prometheus_client`` in a worker are summed (counters) or taken at their
maximum over the live workers (gauges) by its ``/metrics``. Names and labels hold no personal
data:

- ``callback_timing_rankings_total{arm, source}``: rankings answered (model, rules, control);
- ``callback_timing_explored_rankings_total``: rankings whose first window was explored;
- ``callback_timing_fallbacks_total{reason}``: rankings the rules answered in the model's
  place, by reason (no model, a failure, the latency budget, an opt-out, ``policy: rules``);
- ``callback_timing_outcomes_total{status}``: posted outcomes accepted, duplicate, rejected;
- ``callback_timing_model_loaded{model_version}``: 1 for the served model's version (0 after
  it was replaced); no series while the rules answer alone;
- from the monitoring report (:func:`callback_timing.monitor.monitor_report`, refreshed every
  few minutes by the first worker, the most recent value): ``callback_timing_calibration_ece``,
  ``callback_timing_calibration_rankings``, ``callback_timing_fallback_share``,
  ``callback_timing_psi{feature}`` and ``callback_timing_monitor_alerts`` (alerts now).
"""

from __future__ import annotations

import functools
import logging
import re
import threading

from prometheus_client import Counter, Gauge

logger = logging.getLogger(__name__)

#: a fallback reason is cut to this length in a label (a model failure names its error type)
_REASON_CHARS = 80
_BUDGET = re.compile(r"\s*\(\d+ ms\)$")


@functools.cache
def _families() -> dict:
    """The metric families, made once per process (Prometheus' registry refuses a name
    twice; a process may build the service more than once, e.g. in tests)."""
    return {
        "rankings": Counter("callback_timing_rankings", "Rankings answered, by arm and by "
                            "who answered", ["arm", "source"]),
        "explored": Counter("callback_timing_explored_rankings",
                            "Rankings whose first window was an exploration"),
        "fallbacks": Counter("callback_timing_fallbacks", "Rankings the rules answered in "
                             "the model's place, by reason", ["reason"]),
        "outcomes": Counter("callback_timing_outcomes", "Posted call outcomes, by what the "
                            "store did with them", ["status"]),
        "model": Gauge("callback_timing_model_loaded", "1 for the model version served",
                       ["model_version"], multiprocess_mode="livemax"),
        "ece": Gauge("callback_timing_calibration_ece", "Expected calibration error of the "
                     "model's rankings against their outcomes (monitoring period)",
                     multiprocess_mode="livemostrecent"),
        "calibrated": Gauge("callback_timing_calibration_rankings", "Model rankings with an "
                            "outcome in the monitoring period", multiprocess_mode="livemostrecent"),
        "fallback_share": Gauge("callback_timing_fallback_share", "Share of rankings meant "
                                "for the model that the rules answered (monitoring period)",
                                multiprocess_mode="livemostrecent"),
        "psi": Gauge("callback_timing_psi", "Population stability index of an input "
                     "(monitoring period against its reference)", ["feature"],
                     multiprocess_mode="livemostrecent"),
        "alerts": Gauge("callback_timing_monitor_alerts", "Monitoring alerts now "
                        "(calibration, drift)", multiprocess_mode="livemostrecent"),
    }


def reason_label(reason: str) -> str:
    """A fallback reason as a label value of a bounded set: the latency budget's figure
    (it grows with the batch) is left out.

    >>> reason_label("model exceeded its latency budget (57 ms)")
    'model exceeded its latency budget'
    >>> reason_label("model failed (ValueError)")
    'model failed (ValueError)'
    """
    return _BUDGET.sub("", reason)[:_REASON_CHARS]


class ServiceMetrics:
    """The metrics of one service worker (see the module docstring)."""

    def __init__(self) -> None:
        f = _families()
        self.rankings, self.explored, self.fallbacks = f["rankings"], f["explored"], \
            f["fallbacks"]
        self.outcomes, self.model, self.ece = f["outcomes"], f["model"], f["ece"]
        self.calibrated, self.fallback_share = f["calibrated"], f["fallback_share"]
        self.psi, self.alerts = f["psi"], f["alerts"]
        self._version: str | None = None
        self._lock = threading.Lock()

    def monitoring(self) -> None:
        """This worker refreshes the monitoring gauges: unknown (NaN) until its first
        report (the others never write them: each gauge is the most recent write)."""
        for gauge in (self.ece, self.fallback_share):
            gauge.set(float("nan"))

    def observe_rankings(self, answers: list[dict]) -> None:
        """Count ranked answers (errors are not rankings)."""
        for a in answers:
            if "error" in a:
                continue
            arm, source = str(a.get("arm")), str(a.get("source"))
            self.rankings.labels(arm=arm, source=source).inc()
            if a.get("explored"):
                self.explored.inc()
            reason = a.get("fallback_reason")
            if reason and arm != "control":
                self.fallbacks.labels(reason=reason_label(str(reason))).inc()

    def observe_outcomes(self, result: dict) -> None:
        """Count an ``/outcomes`` answer's accepted, duplicate and rejected outcomes."""
        for status, value in (("accepted", result.get("accepted", 0)),
                              ("duplicate", result.get("duplicates", 0)),
                              ("rejected", len(result.get("rejected") or ()))):
            if value:
                self.outcomes.labels(status=status).inc(value)

    def observe_model(self, version: str | None) -> None:
        """The served model is now ``version`` (``None``: the rules alone)."""
        with self._lock:
            if self._version is not None and self._version != version:
                self.model.labels(model_version=self._version).set(0)
            if version is not None:
                self.model.labels(model_version=version).set(1)
            self._version = version

    def observe_monitor(self, report: dict) -> None:
        """Set the gauges of a monitoring report."""
        calibration = report.get("calibration") or {}
        ece = calibration.get("ece")
        self.ece.set(float("nan") if ece is None else ece)
        self.calibrated.set(calibration.get("n") or 0)
        share = (report.get("fallbacks") or {}).get("share")
        self.fallback_share.set(float("nan") if share is None else share)
        for feature, value in (report.get("psi") or {}).items():
            self.psi.labels(feature=feature).set(value)
        self.alerts.set(len(report.get("alerts") or ()))
