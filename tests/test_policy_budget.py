"""The model's latency budget: a slow model gives way to the rules instead of holding the dialer."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from callback_timing.bundle import ModelBundle
from callback_timing.policy import Policy
from callback_timing.policy_config import load_policy_config
from tests.conftest import tiny_bundle

REQUEST = {"request_id": "r-1", "contact": {"contact_id": "c-0001"},
           "now": "2026-05-05T06:00:00Z"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    _, folder, _ = tiny_bundle(tmp_path_factory.mktemp("budget"), n_calls=1500)
    return ModelBundle.load(folder)


class _Slow:
    """The real model behind a dependency that hangs until released (or ``seconds`` pass)."""

    def __init__(self, model, seconds: float):
        self.model, self.seconds = model, seconds
        self.release = threading.Event()

    def p_answer(self, X):
        self.release.wait(self.seconds)
        return self.model.p_answer(X)


def _config(tmp_path, budget_ms: float):
    path = tmp_path / "policy.yaml"
    path.write_text(f"model: {{latency_budget_ms: {budget_ms}, "
                    "latency_budget_ms_per_request: 0}\n")
    return load_policy_config(path)


def test_a_hanging_model_gives_way_to_the_rules(bundle, tmp_path):
    slow = _Slow(bundle.model, seconds=30)
    policy = Policy(dataclasses.replace(bundle, model=slow), _config(tmp_path, 50))
    try:
        t0 = time.perf_counter()
        out = policy.rank([REQUEST])[0]
        waited = time.perf_counter() - t0
        assert out["source"] == "rules" and out["windows"]
        assert out["fallback_reason"] == "model exceeded its latency budget (50 ms)"
        assert waited < 10, waited  # answered long before the model would have
        # while the late prediction still runs, the next call does not queue behind it
        again = policy.rank([{**REQUEST, "request_id": "r-2"}])[0]
        assert again["source"] == "rules"
        assert again["fallback_reason"] == "model busy after exceeding its latency budget"
    finally:
        slow.release.set()
    deadline = time.time() + 10
    while time.time() < deadline:  # once the late call is over, the model answers again
        out = policy.rank([{**REQUEST, "request_id": "r-3"}])[0]
        if out["source"] == "model":
            break
        time.sleep(0.05)
    assert out["source"] == "model" and out["fallback_reason"] is None


def test_without_a_budget_the_policy_waits_for_the_model(bundle, tmp_path):
    slow = _Slow(bundle.model, seconds=0.3)
    policy = Policy(dataclasses.replace(bundle, model=slow), _config(tmp_path, 0))
    out = policy.rank([REQUEST])[0]
    assert out["source"] == "model" and out["fallback_reason"] is None


def test_the_budget_grows_with_the_batch(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("model: {latency_budget_ms: 100, latency_budget_ms_per_request: 2}\n")
    config = load_policy_config(path)
    assert config.model_budget_s(1) == pytest.approx(0.102)
    assert config.model_budget_s(1000) == pytest.approx(2.1)
    assert load_policy_config().model_budget_s(10_000) == pytest.approx(10.05)


def test_the_projects_model_predicts_a_few_rows_in_the_ranking_thread(bundle, tmp_path):
    """No hand-off for one request of an XGBoost AnswerModel (it costs more than the
    prediction); a batch beyond the inline limit goes to the budget's thread."""
    from callback_timing import policy as policy_module

    # where the prediction runs, not how fast: a budget no busy machine misses
    policy = Policy(bundle, _config(tmp_path, 10_000))
    out = policy.rank([REQUEST])[0]
    assert out["source"] == "model" and policy._executor is None  # no thread was needed
    many = [{**REQUEST, "request_id": f"r-{i}", "contact": {"contact_id": f"c-{i:04d}"}}
            for i in range(policy_module.INLINE_PREDICT_ROWS // 50)]
    assert {a["source"] for a in policy.rank(many)} == {"model"}
    assert policy._executor is not None


def test_a_model_slower_than_its_budget_in_the_ranking_thread_is_moved_out(bundle, tmp_path,
                                                                          caplog):
    policy = Policy(bundle, _config(tmp_path, 0.0001))  # 0.1 microseconds: always exceeded
    with caplog.at_level("WARNING", logger="callback_timing.policy"):
        first = policy.rank([REQUEST])[0]
    assert first["source"] == "model"  # it had answered already, late
    assert policy._inline is False
    assert any("from now on it predicts in the budget's thread" in m for m in caplog.messages)
    assert policy._executor is None
    later = policy.rank([{**REQUEST, "request_id": "r-2"}])[0]
    assert policy._executor is not None  # the prediction went to the budget's thread
    assert later["source"] in ("model", "rules")  # which one wins a 0.1 us race varies
