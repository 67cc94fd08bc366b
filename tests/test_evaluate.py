"""The information bound: the best answer probabilities a contact's own history allows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import integrate, stats
from sklearn.metrics import roc_auc_score

import callback_timing as ct
from callback_timing.evaluate import information_bound
from callback_timing.sim.patterns import TruthParams


@pytest.fixture(scope="module")
def small():
    sim = ct.simulate(contacts=60, days=60, seed=3, dirt_rate=0.0, requests_per_contact_day=0.3)
    return sim, information_bound(sim.truth, sim.world)


def _known_logits(sim, rows):
    """Truth logit minus the contact's baseline: what the bound is told."""
    truth = sim.truth.loc[rows]
    p = truth["p_true"].to_numpy()
    idx = sim.world.index_of(truth["contact_id"].to_numpy())
    return np.log(p / (1 - p)) - sim.world.contacts["baseline"].to_numpy()[idx]


def _posterior_predictive(known_history, answered_history, known_now, sd):
    """Reference by numerical integration: E[sigmoid(b + known_now) | earlier calls]."""

    def weight(b):
        s = 1 / (1 + np.exp(-(b + known_history)))
        return np.prod(np.where(answered_history, s, 1 - s)) * stats.norm.pdf(b, 0, sd)

    num = integrate.quad(lambda b: weight(b) / (1 + np.exp(-(b + known_now))), -8 * sd, 8 * sd)
    den = integrate.quad(weight, -8 * sd, 8 * sd)
    return num[0] / den[0]


def test_bound_matches_bayes_rule_by_numerical_integration(small):
    sim, bound = small
    sd = sim.world.params.baseline_sd
    truth = sim.truth.reset_index(drop=True)
    for contact in truth["contact_id"].drop_duplicates().iloc[:4]:
        rows = truth.index[truth["contact_id"] == contact]
        rows = rows[np.argsort(truth.loc[rows, "called_at"].to_numpy(), kind="stable")]
        known = _known_logits(sim, rows)
        answered = truth.loc[rows, "answered"].to_numpy(bool)
        for k in (0, 1, len(rows) - 1):
            expected = _posterior_predictive(known[:k], answered[:k], known[k], sd)
            assert bound[rows[k]] == pytest.approx(expected, abs=1e-4)


def test_bound_is_point_in_time(small):
    sim, bound = small
    truth = sim.truth.copy()
    last = truth.sort_values("called_at").groupby("contact_id").tail(1).index
    truth.loc[last, "answered"] = ~truth.loc[last, "answered"]
    again = information_bound(truth, sim.world)
    np.testing.assert_allclose(again, bound)  # no call sees its own or a later outcome
    first = truth.sort_values("called_at").groupby("contact_id").head(1).index
    truth.loc[first, "answered"] = ~truth.loc[first, "answered"]
    changed = information_bound(truth, sim.world)
    later = ~truth.index.isin(first)
    assert np.abs(changed[later] - bound[later]).max() > 1e-3


def test_without_personal_reachability_the_bound_is_the_truth():
    params = dataclasses.replace(TruthParams(), baseline_sd=0.0)
    sim = ct.simulate(contacts=30, days=30, seed=4, dirt_rate=0.0, params=params)
    np.testing.assert_allclose(information_bound(sim.truth, sim.world), sim.truth["p_true"])


def test_bound_nears_the_ceiling_only_with_rich_histories():
    def bound_vs_ceiling(contacts, rate):
        sim = ct.simulate(contacts=contacts, days=120, seed=6, dirt_rate=0.0,
                          requests_per_contact_day=rate)
        truth = sim.truth
        test = (truth["called_at"] >= truth["called_at"].quantile(0.8)).to_numpy()
        y = truth["answered"].to_numpy()[test]
        bound = information_bound(truth, sim.world, chunk_rows=2_000)[test]
        return roc_auc_score(y, bound) / roc_auc_score(y, truth["p_true"].to_numpy()[test])

    # ~15 calls per contact: reachability alone, learnt from them, costs about 3% of the
    # ceiling's AUC; with ~300 calls per contact it is all but known.
    sparse, dense = bound_vs_ceiling(1500, 0.05), bound_vs_ceiling(100, 1.0)
    assert sparse < 0.98 and dense > 0.99


def test_ece_does_not_depend_on_the_order_of_equal_predictions():
    from callback_timing.evaluate import expected_calibration_error

    # 10 rows of 0.2 (3 answered) and 10 of 0.6 (6 answered), in 4 bins of 5: the edges cut
    # through each group of equal predictions, which count with their group's rate
    p = np.repeat([0.2, 0.6], 10)
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    # half the rows 0.1 off (0.2 said, 0.3 seen), the other half exact
    assert expected_calibration_error(y, p, n_bins=4) == pytest.approx(0.05)
    rng = np.random.default_rng(0)
    for _ in range(5):
        order = rng.permutation(len(p))
        assert expected_calibration_error(y[order], p[order], n_bins=4) == pytest.approx(0.05)
    # distinct predictions: the plain ten-bin definition
    p = np.linspace(0.05, 0.95, 100)
    y = (np.arange(100) % 2).astype(float)
    want = np.mean([abs(y[i:i + 10].mean() - p[i:i + 10].mean()) for i in range(0, 100, 10)])
    assert expected_calibration_error(y, p) == pytest.approx(want, abs=1e-6)
