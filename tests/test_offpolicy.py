"""Off-policy estimates (offpolicy.py) against a simulated bandit with a known truth."""

from __future__ import annotations

import numpy as np
import pytest

from callback_timing.offpolicy import off_policy_value


def _bandit(n: int, seed: int):
    """Contexts with 5 windows each, true answer probabilities ``mu``; the logging policy
    explores 20 % of the time (uniformly) and otherwise takes its own best guess; the new
    policy takes the truly best window 80 % of the time, else the second best."""
    rng = np.random.default_rng(seed)
    mu = rng.uniform(0.05, 0.6, size=(n, 5))
    guess = mu + rng.normal(0, 0.2, size=mu.shape)  # the champion's noisy view
    p_log = np.full((n, 5), 0.2 / 5)
    p_log[np.arange(n), guess.argmax(1)] += 0.8
    order = np.argsort(-mu, axis=1)
    p_new = np.zeros((n, 5))
    p_new[np.arange(n), order[:, 0]] = 0.8
    p_new[np.arange(n), order[:, 1]] = 0.2
    chosen = np.array([rng.choice(5, p=p) for p in p_log])
    reward = (rng.random(n) < mu[np.arange(n), chosen]).astype(float)
    rows = np.arange(n)
    truth = float((p_new * mu).sum(1).mean())
    logged_truth = float((p_log * mu).sum(1).mean())
    model = np.clip(mu + rng.normal(0, 0.05, size=mu.shape), 0, 1)  # a decent reward model
    return {"reward": reward, "p0": p_log[rows, chosen], "p1": p_new[rows, chosen],
            "q0": model[rows, chosen], "q1": (p_new * model).sum(1), "truth": truth,
            "logged_truth": logged_truth}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_estimates_find_the_new_policys_true_value(seed):
    b = _bandit(20_000, seed)
    out = off_policy_value(b["reward"], b["p0"], b["p1"], b["q0"], b["q1"])
    assert out["n"] == 20_000 and out["left_out"] == 0
    for name in ("ips", "snips", "dr"):
        assert abs(out[name] - b["truth"]) < 4 * out[f"{name}_se"], name
    # the new policy is better than the champion here, and the estimate says so
    assert out["snips"] > out["logged"] + 3 * out["snips_se"]
    assert b["truth"] > b["logged_truth"]
    # a good reward model makes the doubly robust estimate steadier than IPS
    assert out["dr_se"] < out["ips_se"]
    assert 0 < out["ess"] < out["n"]


def test_clipping_and_unusable_rows():
    b = _bandit(5_000, 3)
    full = off_policy_value(b["reward"], b["p0"], b["p1"])
    clipped = off_policy_value(b["reward"], b["p0"], b["p1"], clip=2.0)
    assert clipped["ips_se"] < full["ips_se"]
    p0 = b["p0"].copy()
    p0[:100] = 0.0  # no propensity logged (e.g. rules or control): cannot be reweighted
    p0[100:110] = np.nan
    out = off_policy_value(b["reward"], p0, b["p1"])
    assert (out["n"], out["left_out"]) == (4_890, 110) and out["dr"] is None
    empty = off_policy_value(np.array([]), np.array([]), np.array([]))
    assert empty["n"] == 0 and empty["ips"] is None
