"""Pictures people would rather look at than read: answer-rate heatmaps, reliability diagrams,
feature importance.

Matplotlib with the non-interactive Agg backend, so plots render on a server without a screen.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from callback_timing.calendar import local_clock  # noqa: E402
from callback_timing.evaluate import expected_calibration_error  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.figure import Figure

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG (parent folders created), close it, return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def weekday_hour_table(calls: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Calls and answer rate per contact-local (weekday, hour): two 7 x 24 arrays.

    >>> import pandas as pd
    >>> calls = pd.DataFrame({"called_at": pd.to_datetime(["2026-06-02T12:00Z"] * 2, utc=True),
    ...                       "timezone": ["Europe/Warsaw"] * 2, "answered": [1, 0]})
    >>> counts, rates = weekday_hour_table(calls)
    >>> int(counts[1, 14]), float(rates[1, 14])
    (2, 0.5)
    """
    clock = local_clock(calls["called_at"], calls["timezone"])
    cell = clock["weekday"].to_numpy(np.int64) * 24 + clock["hour"].to_numpy(np.int64)
    counts = np.bincount(cell, minlength=7 * 24).astype(float)
    answers = np.bincount(cell, weights=calls["answered"].to_numpy(float), minlength=7 * 24)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(counts > 0, answers / counts, np.nan)
    return counts.reshape(7, 24), rates.reshape(7, 24)


def answer_heatmap(
    calls: pd.DataFrame, path: str | Path, title: str = "Call history", min_calls: int = 10
) -> Path:
    """Write a PNG: answer rate and call volume by contact-local weekday x hour.

    Cells with fewer than ``min_calls`` calls are left blank in the answer-rate panel, so
    noise does not pass for a pattern.
    """
    counts, rates = weekday_hour_table(calls)
    rates = np.where(counts >= min_calls, rates, np.nan)
    fig, axes = plt.subplots(1, 2, figsize=(15, 4.2), constrained_layout=True)
    panels = (
        (rates * 100, "answer rate (%)", "viridis", f"answer rate (cells >= {min_calls} calls)"),
        (counts, "calls", "Greys", "calls made"),
    )
    for ax, (values, label, cmap, name) in zip(axes, panels, strict=True):
        image = ax.imshow(values, aspect="auto", cmap=cmap, interpolation="nearest")
        ax.set_yticks(range(7), WEEKDAYS)
        ax.set_xticks(range(0, 24, 2), [f"{h:02d}" for h in range(0, 24, 2)])
        ax.set_xlabel("contact-local hour")
        ax.set_title(name)
        fig.colorbar(image, ax=ax, label=label)
    fig.suptitle(f"{title}: {len(calls):,} calls, {calls['answered'].mean():.1%} answered")
    return save_figure(fig, path)


def reliability_plot(curves: dict[str, tuple], path: str | Path, n_bins: int = 10) -> Path:
    """Reliability diagram: observed answer rate against predicted probability per bin.

    ``curves`` maps a label to ``(y, p)``; equal-count bins, the diagonal is perfect.
    """
    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(6, 6.5), height_ratios=(3, 1), sharex=True, constrained_layout=True
    )
    top = 0.0
    for label, (y, p) in curves.items():
        y, p = np.asarray(y, float), np.asarray(p, float)
        bins = np.array_split(np.argsort(p, kind="stable"), min(n_bins, len(p)))
        xs = [p[b].mean() for b in bins if len(b)]
        ys = [y[b].mean() for b in bins if len(b)]
        top = max(top, *xs, *ys)
        ece = expected_calibration_error(y, p, n_bins)
        ax.plot(xs, ys, "o-", label=f"{label} (ECE {ece:.3f})")
        hist.hist(p, bins=40, histtype="step", label=label)
    top = min(1.0, top * 1.1 + 0.02)
    ax.plot([0, top], [0, top], "k--", lw=1, label="perfect")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_ylabel("observed answer rate")
    ax.set_title("Reliability on the test slice")
    ax.legend(loc="upper left", fontsize=8)
    hist.set_xlabel("predicted answer probability")
    hist.set_ylabel("calls")
    return save_figure(fig, path)


def importance_plot(importance: pd.Series, path: str | Path, top: int = 20) -> Path:
    """Horizontal bar chart of the ``top`` features by total gain."""
    head = importance.head(top)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(head) + 1.2), constrained_layout=True)
    ax.barh(head.index, head.to_numpy() / max(head.sum(), 1e-12) * 100)
    ax.set_xlabel("share of total gain among the shown features (%)")
    ax.set_title("Feature importance")
    return save_figure(fig, path)


def campaign_plot(kpis: pd.DataFrame, path: str | Path) -> Path:
    """Bars per policy: first-attempt answer rate, reached within the deadline, value."""
    shown = kpis.loc[[i for i in kpis.index if "cold start" not in str(i)]]
    metrics = {"first attempt answered": "first_attempt_rate",
               "reached within 48 h": "reached_rate", "value (urgency-weighted)": "value"}
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    width = 0.8 / len(shown)
    x = np.arange(len(metrics))
    for k, (name, row) in enumerate(shown.iterrows()):
        values = [float(row[c]) for c in metrics.values()]
        bars = ax.bar(x + (k - (len(shown) - 1) / 2) * width, values, width, label=str(name))
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(x, list(metrics))
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of callback requests")
    ax.set_title("Campaign replay by policy")
    ax.legend(loc="upper left", fontsize=8, ncols=len(shown))
    fig.tight_layout()
    return save_figure(fig, path)
