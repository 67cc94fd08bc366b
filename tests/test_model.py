"""AnswerModel: calibration options, persistence, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from callback_timing.model import P_FLOOR, AnswerModel


def _data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "z": rng.normal(size=n),
            "c": pd.Categorical(rng.choice(["a", "b", "c"], n), categories=["a", "b", "c"]),
        }
    )
    logit = -1.5 + 1.2 * X.x + 0.8 * (X.c == "b") + 0.5 * X.z**2
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


@pytest.mark.parametrize("calibration", ["sigmoid", "isotonic", "none"])
def test_calibrated_probabilities_match_observed_rates(calibration, tmp_path):
    X, y = _data(12000, 0)
    model = AnswerModel(calibration=calibration, n_estimators=200).fit(
        X[:6000], y[:6000], X[6000:9000], y[6000:9000]
    )
    p = model.p_answer(X[9000:])
    assert abs(p.mean() - y[9000:].mean()) < 0.02
    if calibration == "isotonic":
        assert p.min() >= P_FLOOR - 1e-6 and p.max() <= 1 - P_FLOOR + 1e-6
    assert p.min() > 0 and p.max() < 1
    loaded = AnswerModel.load(model.save(tmp_path / "m"))
    np.testing.assert_allclose(loaded.p_answer(X[9000:]), p)
    assert loaded.best_iteration_ == model.best_iteration_ < 200


def test_feature_importance_finds_the_signal():
    X, y = _data(8000, 1)
    model = AnswerModel(n_estimators=100).fit(X[:5000], y[:5000], X[5000:], y[5000:])
    assert set(model.feature_importance().index) == {"x", "z", "c"}
    assert model.feature_importance().index[0] == "x"


def test_unknown_calibration_is_named():
    X, y = _data(500, 2)
    with pytest.raises(ValueError, match="'platt'"):
        AnswerModel(calibration="platt", n_estimators=5).fit(X[:300], y[:300], X[300:], y[300:])
