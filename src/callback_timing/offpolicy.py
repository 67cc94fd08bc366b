"""Off-policy evaluation (issue 11): what a challenger policy would have earned on the live
traffic the champion served, from the decision log's logged propensities (exploration).

Each logged ranking chose its first window ``a`` with probability ``propensity`` (the logging
policy's, ``p0``) and earned ``reward`` (e.g. the request reached in time). A new policy would
have chosen that same window with probability ``p1``. Then (Dudík et al., 2011):

- ``ips``: inverse propensity scoring, mean(r · p1 / p0): unbiased when ``p0`` > 0 wherever
  ``p1`` > 0, with a variance that grows with the weights;
- ``snips``: self-normalised, sum(r · w) / sum(w): a little biased, far steadier;
- ``dr``: doubly robust, mean(q1 + w · (r − q0)) with a reward model's estimate ``q0`` of
  the logged window and ``q1`` of the new policy's expected reward: unbiased if either the
  propensities or the reward model are right.

Each comes with its standard error (of the mean, or the delta method for ``snips``), and the
effective sample size of the weights says how much of the log the estimate really uses.

>>> import numpy as np
>>> r = np.array([1.0, 0.0, 1.0, 0.0]); p0 = np.full(4, 0.5); p1 = np.array([1.0, 1, 0, 0])
>>> round(off_policy_value(r, p0, p1)["ips"], 3)
0.5
"""

from __future__ import annotations

import numpy as np


def off_policy_value(reward: np.ndarray, p0: np.ndarray, p1: np.ndarray,
                     q0: np.ndarray | None = None, q1: np.ndarray | None = None,
                     clip: float | None = None) -> dict:
    """Estimates of the new policy's mean reward per logged decision (see the module
    docstring). ``clip``: cap the weights p1/p0 (less variance, some bias). ``q0``/``q1``
    (reward-model estimates) add the doubly robust estimate. Rows with ``p0`` <= 0 or
    missing are left out (they cannot be reweighted) and counted in ``left_out``."""
    r, p0, p1 = (np.asarray(x, dtype=float) for x in (reward, p0, p1))
    ok = np.isfinite(p0) & (p0 > 0) & np.isfinite(p1) & np.isfinite(r)
    out: dict = {"n": int(ok.sum()), "left_out": int((~ok).sum())}
    r, p0, p1 = r[ok], p0[ok], p1[ok]
    n = len(r)
    if n == 0:
        return {**out, "ips": None, "ips_se": None, "snips": None, "snips_se": None,
                "dr": None, "dr_se": None, "ess": 0.0, "logged": None}
    w = p1 / p0
    if clip is not None:
        w = np.minimum(w, clip)
    ips_terms = r * w
    out["ips"] = float(ips_terms.mean())
    out["ips_se"] = float(ips_terms.std(ddof=1) / np.sqrt(n)) if n > 1 else None
    if w.sum() > 0:
        snips = float(ips_terms.sum() / w.sum())
        # delta method: the ratio of two means
        resid = w * (r - snips)
        out["snips"] = snips
        out["snips_se"] = (float(np.sqrt(np.sum(resid**2)) / w.sum()) if n > 1 else None)
    else:
        out["snips"] = out["snips_se"] = None
    out["ess"] = float(w.sum() ** 2 / np.sum(w**2)) if np.sum(w**2) > 0 else 0.0
    out["logged"] = float(r.mean())  # what the logging policy earned on the same rows
    if q0 is not None and q1 is not None:
        q0, q1 = np.asarray(q0, dtype=float)[ok], np.asarray(q1, dtype=float)[ok]
        dr_terms = q1 + w * (r - q0)
        out["dr"] = float(dr_terms.mean())
        out["dr_se"] = float(dr_terms.std(ddof=1) / np.sqrt(n)) if n > 1 else None
    else:
        out["dr"] = out["dr_se"] = None
    return out
