"""Capacity-constrained scheduling: exact optimum, greedy baseline, capacities and errors."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from callback_timing.policy import Policy
from callback_timing.schedule import (
    RESULT_COLUMNS,
    SLOT_COLUMNS,
    CapacityError,
    SlotTableError,
    assign,
    compare,
    greedy,
)
from callback_timing.schema import CallbackTimingError, ConfigError

T0 = pd.Timestamp("2026-06-01T16:00Z")
STEP = pd.Timedelta(minutes=15)


def _table(score: np.ndarray, allowed: np.ndarray | None = None) -> pd.DataFrame:
    """A slot table for ``score[request, slot]`` (slot ``j`` starts at ``T0 + j * 15 min``)."""
    n, m = score.shape
    allowed = np.ones((n, m), dtype=bool) if allowed is None else allowed
    return pd.DataFrame({
        "request_id": np.repeat([f"r{i}" for i in range(n)], m),
        "contact_id": np.repeat([f"c{i}" for i in range(n)], m),
        "at": pd.date_range(T0, periods=m, freq=STEP)[np.tile(np.arange(m), n)],
        "p_answer": score.ravel() / 1.5, "worth": 1.5, "score": score.ravel(),
        "allowed": allowed.ravel(), "why_not": None, "source": "rules",
    })


def _random(rng: np.random.Generator, n: int, m: int) -> pd.DataFrame:
    return _table(rng.uniform(0.01, 1.0, (n, m)), rng.random((n, m)) < 0.7)


def _seats(capacity, starts: pd.DatetimeIndex) -> pd.Series:
    if isinstance(capacity, int):
        return pd.Series(capacity, index=starts)
    given = pd.Series(capacity, dtype=float)
    stamps = [pd.Timestamp(k) for k in given.index]
    given.index = pd.DatetimeIndex([ts.tz_localize("UTC") if ts.tzinfo is None
                                    else ts.tz_convert("UTC") for ts in stamps])
    return given.reindex(starts, fill_value=0)


def _check_feasible(slots: pd.DataFrame, out: pd.DataFrame, capacity) -> None:
    """Capacity respected; one row per request; a chosen slot is an allowed row of the table."""
    assert out["request_id"].tolist() == list(dict.fromkeys(slots["request_id"]))
    chosen = out[out["assigned"]]
    starts = pd.DatetimeIndex(slots["at"].unique())
    used = chosen.groupby("at").size().reindex(starts, fill_value=0)
    assert (used <= _seats(capacity, starts)).all()
    rows = chosen.merge(slots, on=["request_id", "at"], suffixes=("", "_table"))
    assert len(rows) == len(chosen) and rows["allowed"].all()
    np.testing.assert_allclose(rows["score"], rows["score_table"])
    np.testing.assert_allclose(rows["p_answer"], rows["p_answer_table"])
    free = out[~out["assigned"]]
    assert free["at"].isna().all() and (free["score"] == 0).all() and (free["p_answer"] == 0).all()


def _brute_force(slots: pd.DataFrame, capacity: int) -> float:
    """Best total score over every way of giving each request one allowed slot or none."""
    options = [[None] + [(g.loc[k, "at"], g.loc[k, "score"]) for k in g.index[g["allowed"]]]
               for _, g in slots.groupby("request_id", sort=False)]
    best = 0.0
    for combo in itertools.product(*options):
        picked = [c for c in combo if c is not None]
        counts = pd.Series([at for at, _ in picked], dtype=object).value_counts()
        if (counts <= capacity).all():
            best = max(best, sum(s for _, s in picked))
    return best


@pytest.mark.parametrize("seed", range(30))
def test_a_contact_with_several_requests_is_called_once(seed):
    """Requests of one contact share it: the optimum over schedules that call each contact at
    most once (brute force), and greedy too never calls a contact twice."""
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(2, 6))
    slots = _random(rng, n=n, m=int(rng.integers(1, 4)))
    owner = {f"r{i}": f"c{int(k)}" for i, k in enumerate(rng.integers(0, 2, n))}
    slots["contact_id"] = slots["request_id"].map(owner)
    capacity = int(rng.integers(1, 3))
    options = [[None] + [(g.loc[k, "at"], g.loc[k, "score"], owner[r])
                         for k in g.index[g["allowed"]]]
               for r, g in slots.groupby("request_id", sort=False)]
    best = 0.0
    for combo in itertools.product(*options):
        picked = [c for c in combo if c is not None]
        people = [who for _, _, who in picked]
        counts = pd.Series([at for at, _, _ in picked], dtype=object).value_counts()
        if len(set(people)) == len(people) and (counts <= capacity).all():
            best = max(best, sum(sc for _, sc, _ in picked))
    out = assign(slots, capacity)
    _check_feasible(slots, out, capacity)
    assert out["score"].sum() == pytest.approx(best, abs=1e-9)
    for result in (out, greedy(slots, capacity), greedy(slots, capacity, order="request")):
        assert result.loc[result["assigned"], "contact_id"].is_unique


def test_repeated_requests_of_one_contact_get_one_call():
    slots = _table(np.array([[0.5, 0.4], [0.5, 0.4], [0.5, 0.4], [0.3, 0.2]]))
    slots.loc[slots["request_id"] != "r3", "contact_id"] = "c-same"
    out = assign(slots, capacity=5)
    assert out["assigned"].tolist().count(True) == 2  # c-same once, c3 once
    assert out.loc[out["assigned"], "contact_id"].tolist() == ["c-same", "c3"]
    assert out.loc[out["contact_id"] == "c-same", "score"].max() == 0.5


@pytest.mark.parametrize("seed", range(40))
def test_optimum_equals_brute_force_and_beats_greedy(seed):
    rng = np.random.default_rng(seed)
    slots = _random(rng, n=int(rng.integers(1, 6)), m=int(rng.integers(1, 4)))
    capacity = int(rng.integers(0, 3))
    out = assign(slots, capacity)
    _check_feasible(slots, out, capacity)
    assert out["score"].sum() == pytest.approx(_brute_force(slots, capacity), abs=1e-9)
    for order in ("score", "request"):
        base = greedy(slots, capacity, order=order)
        _check_feasible(slots, base, capacity)
        assert out["score"].sum() >= base["score"].sum() - 1e-9


@pytest.mark.parametrize("seed", range(15))
def test_optimum_with_ample_capacity_equals_brute_force(seed):
    # capacity near the number of requests: the solver then drops each request's worse slots
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.integers(2, 6))
    slots = _random(rng, n=n, m=4)
    capacity = int(rng.integers(max(1, n // 2), n + 1))
    out = assign(slots, capacity)
    _check_feasible(slots, out, capacity)
    assert out["score"].sum() == pytest.approx(_brute_force(slots, capacity), abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_capacity_and_allowed_respected_on_larger_instances(seed):
    rng = np.random.default_rng(100 + seed)
    slots = _random(rng, n=300, m=24)
    starts = pd.date_range(T0, periods=24, freq=STEP)
    capacity = {ts: int(c) for ts, c in zip(starts, rng.integers(0, 8, 24), strict=True)}
    for out in (assign(slots, capacity), greedy(slots, capacity)):
        _check_feasible(slots, out, capacity)
    assert (assign(slots, capacity)["score"].sum()
            >= greedy(slots, capacity)["score"].sum() - 1e-9)


def test_optimal_strictly_beats_myopic_greedy():
    # r0 prefers slot 0 but slot 1 is nearly as good; r1 can only use slot 0; one seat each
    slots = _table(np.array([[0.50, 0.49], [0.45, 0.01]]), np.array([[1, 1], [1, 0]], bool))
    best = assign(slots, 1).set_index("request_id")
    assert best.loc["r0", "at"] == T0 + STEP and best.loc["r1", "at"] == T0
    for order in ("score", "request"):
        base = greedy(slots, 1, order=order).set_index("request_id")
        assert base.loc["r0", "at"] == T0 and not base.loc["r1", "assigned"]
    report = compare(slots, 1)
    assert report["optimal"]["value"] > report["greedy"]["value"]
    assert report["optimal"]["assigned"] == 2 and report["greedy"]["assigned"] == 1
    assert report["uplift"]["expected_answers"] == pytest.approx(
        report["optimal"]["expected_answers"] - report["greedy"]["expected_answers"])
    assert report["uplift"]["expected_answers"] > 0


def test_greedy_order_request_is_first_come_first_served():
    # r0 comes first but r1 has the higher best score: the two orders give slot 0 to different
    # requests, and the loser falls back to its next best free slot
    slots = _table(np.array([[0.3, 0.2], [0.9, 0.1]]))
    by_request = greedy(slots, 1, order="request").set_index("request_id")["at"]
    by_score = greedy(slots, 1, order="score").set_index("request_id")["at"]
    assert (by_request["r0"], by_request["r1"]) == (T0, T0 + STEP)
    assert (by_score["r0"], by_score["r1"]) == (T0 + STEP, T0)


@pytest.mark.parametrize("capacity", [0, {}, pd.Series(dtype=int)])
def test_no_capacity_assigns_nothing(capacity):
    slots = _random(np.random.default_rng(7), n=5, m=3)
    for out in (assign(slots, capacity), greedy(slots, capacity)):
        assert not out["assigned"].any() and out["at"].isna().all()
        assert len(out) == 5 and out["score"].sum() == 0
    assert compare(slots, capacity)["uplift"]["value_pct"] is None


def test_mapping_capacity_missing_slots_are_closed():
    slots = _table(np.array([[0.9, 0.5, 0.4], [0.8, 0.6, 0.3], [0.7, 0.1, 0.2]]))
    capacity = {"2026-06-01 16:15": 1, (T0 + 2 * STEP).isoformat(): 1}   # 16:00 is missing
    out = assign(slots, capacity)
    _check_feasible(slots, out, capacity)
    assert T0 not in set(out["at"]) and out["assigned"].sum() == 2
    assert out["score"].sum() == pytest.approx(0.6 + 0.4)
    series = pd.Series([1, 1], index=pd.DatetimeIndex([T0 + STEP, T0 + 2 * STEP]))
    assert assign(slots, series)["score"].sum() == pytest.approx(1.0)


def test_requests_without_allowed_slot_and_zero_scores_stay_unassigned():
    slots = _table(np.array([[0.5, 0.0], [0.4, 0.3]]), np.array([[0, 1], [1, 1]], bool))
    out = assign(slots, 5).set_index("request_id")
    assert not out.loc["r0", "assigned"] and pd.isna(out.loc["r0", "at"])
    assert out.loc["r1", "at"] == T0


def test_objective_p_answer_maximises_expected_answers():
    slots = _table(np.array([[0.5, 0.49], [0.45, 0.01]]))
    slots["p_answer"] = [0.1, 0.4, 0.45, 0.3]   # answers and value disagree
    out = assign(slots, 1, objective="p_answer")
    assert out["p_answer"].sum() == pytest.approx(0.85)
    assert compare(slots, 1, objective="p_answer")["uplift"]["expected_answers"] >= 0


def test_policy_slot_table_end_to_end():
    requests = [{"request_id": f"r-{i}",
                 "contact": {"contact_id": f"c-{i}", "industry": "consumer", "country": "PL",
                             "timezone": "Europe/Warsaw"},
                 "requested_at": (pd.Timestamp("2026-06-01T06:00Z")
                                  - pd.Timedelta(hours=int(i % 7) * 3)).isoformat(),
                 "now": "2026-06-01T06:00:00Z", "horizon_hours": 48} for i in range(50)]
    slots = Policy().slot_table(requests)
    free_for_all = greedy(slots, 50)    # enough agents: everybody takes their own best slot
    assert free_for_all.groupby("at").size().max() > 2   # the crowding capacity is about
    out = assign(slots, 2)
    _check_feasible(slots, out, 2)
    for order in ("score", "request"):
        _check_feasible(slots, greedy(slots, 2, order=order), 2)
        report = compare(slots, 2, order=order)
        assert report["optimal"]["value"] >= report["greedy"]["value"] - 1e-9
    assert report["optimal"]["value"] == pytest.approx(out["score"].sum())
    assert report["requests"] == 50 and report["optimal"]["assigned"] == 50


@pytest.mark.parametrize("column", SLOT_COLUMNS)
def test_missing_column_is_named(column):
    slots = _table(np.array([[0.5]])).drop(columns=column)
    with pytest.raises(SlotTableError, match=f"missing column '{column}'"):
        assign(slots, 1)


@pytest.mark.parametrize(("capacity", "message"), [
    (-1, "must be >= 0, got -1"),
    ({T0: -2}, "capacity at 2026-06-01T16:00:00\\+00:00: must be >= 0"),
    ({T0: 1.5}, "expected a whole number"),
    ({T0 + pd.Timedelta(minutes=5): 1}, "not a slot start"),
    ("ten", "expected a whole number or a mapping"),
    (True, "expected a whole number or a mapping"),
])
def test_bad_capacity_is_a_one_line_error(capacity, message):
    with pytest.raises(CapacityError, match=message) as info:
        greedy(_table(np.array([[0.5]])), capacity)
    assert isinstance(info.value, CallbackTimingError) and isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


def test_duplicate_slot_rows_and_missing_ids_are_rejected():
    slots = _table(np.array([[0.5, 0.4]]))
    with pytest.raises(SlotTableError, match="more than once"):
        assign(pd.concat([slots, slots.iloc[:1]]), 1)
    with pytest.raises(SlotTableError, match="'request_id' has missing values"):
        assign(slots.assign(request_id=[None, "r0"]), 1)


def test_capacity_key_that_is_not_a_time_is_named():
    with pytest.raises(CapacityError, match="key 'noon' is not a slot start"):
        assign(_table(np.array([[0.5]])), {"noon": 1})


def test_empty_slot_table():
    out = assign(Policy().slot_table([]), 3)
    assert out.empty and list(out.columns) == RESULT_COLUMNS
    assert compare(Policy().slot_table([]), 3)["optimal"]["assigned"] == 0


def test_bad_objective_and_order_are_config_errors():
    slots = _table(np.array([[0.5]]))
    with pytest.raises(ConfigError, match="objective: must be"):
        assign(slots, 1, objective="worth")
    with pytest.raises(ConfigError, match="order: must be one of"):
        greedy(slots, 1, order="random")
