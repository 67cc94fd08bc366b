"""The policy's array fast path equals the pandas reference (build_features) exactly."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pandas as pd
import pytest

from callback_timing import calendar, fastpath, tzclock
from callback_timing.bundle import ModelBundle
from callback_timing.fastpath import dense_predict, iso_local, iso_utc, local_parts, predict_answer
from callback_timing.feature_block import FeatureBlock
from callback_timing.features import fit_priors, training_frame
from callback_timing.model import AnswerModel
from callback_timing.policy import Policy
from tests.conftest import make_clean_calls, tiny_bundle

ZONES = ["Europe/Warsaw", "Europe/Berlin", "Europe/London", "America/New_York",
         "America/Phoenix", "America/Los_Angeles", "Australia/Sydney", "Asia/Kathmandu",
         "America/St_Johns", "Pacific/Chatham", "UTC"]

#: Instants around DST changes, public holidays, bridge days and the turn of the year.
SPECIAL_NOWS = [
    "2026-03-28T06:00:00Z", "2026-03-29T00:30:00Z", "2026-10-24T22:00:00Z",  # Europe DST
    "2026-03-07T12:00:00Z", "2026-10-31T15:07:00Z", "2026-11-01T04:00:00Z",  # America DST
    "2026-04-30T05:00:00Z", "2026-05-01T09:00:00Z", "2026-05-02T10:00:00Z",  # PL 1 & 3 May
    "2026-11-25T13:00:00Z", "2026-11-26T20:00:00Z",  # Thanksgiving and the bridge day
    "2026-12-23T08:00:00Z", "2026-12-30T22:00:00Z", "2026-12-31T23:59:59Z",  # year end
    "2026-08-14T10:00:00Z",  # Assumption day in Bavaria
]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    _, folder, _ = tiny_bundle(tmp_path_factory.mktemp("fast"), n_calls=3000)
    return ModelBundle.load(folder)


def _pair(bundle, **kw) -> tuple[Policy, Policy]:
    fast, slow = Policy(bundle, **kw), Policy(bundle, **kw)
    slow._slow_features = True
    return fast, slow


def _contacts(rng: np.random.Generator, n: int) -> list[dict]:
    """Known and unknown contacts, with and without given or derivable attributes."""
    kinds = [
        lambda i: {"contact_id": f"c-{i % 60:04d}"},  # known: profile from the history
        lambda i: {"contact_id": f"c-{i % 60:04d}", "industry": "public sector"},
        lambda i: {"contact_id": f"new-{i}", "country": "PL", "timezone": "Europe/Warsaw",
                   "industry": "it"},  # no history
        lambda i: {"contact_id": f"new-{i}", "country": "DE", "subdivision": "BY",
                   "industry": "astrology"},  # unknown industry, zone from the country
        lambda i: {"contact_id": f"new-{i}", "country": "JP", "timezone": "Asia/Tokyo"},
        lambda i: {"contact_id": f"new-{i}", "country": "US", "subdivision": "NY",
                   "timezone": "America/New_York", "industry": "retail"},
        lambda i: {"contact_id": f"new-{i}"},  # nothing known at all
        lambda i: {"contact_id": f"c-{i % 60:04d}", "opt_out": True},
        lambda i: {"contact_id": f"c-{i % 60:04d}", "timezone": "America/Phoenix",
                   "country": "US", "subdivision": "AZ"},
        lambda i: {"contact_id": f"c-{i % 60:04d}", "phone": "+1 212 555 0100",
                   "country": "US"},
    ]
    return [kinds[int(rng.integers(len(kinds)))](i) for i in range(n)]


def _requests(seed: int, n: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-03-01", tz="UTC").value
    out = []
    for i, contact in enumerate(_contacts(rng, n)):
        if i % 3 == 0:
            now = pd.Timestamp(SPECIAL_NOWS[int(rng.integers(len(SPECIAL_NOWS)))])
        else:
            now = pd.Timestamp(int(start + rng.integers(0, 300 * 86400) * 10**9), tz="UTC")
        out.append({
            "request_id": f"r-{seed}-{i}", "contact": contact, "now": now.isoformat(),
            "requested_at": (now - pd.Timedelta(minutes=int(rng.integers(0, 900)))).isoformat(),
            "horizon_hours": float(rng.choice([1, 6.5, 24, 48, 72])),
            "urgency": str(rng.choice(["standard", "urgent", "flexible"])),
            "policy": str(rng.choice(["auto", "auto", "rules"])),
            "top_k": int(rng.integers(1, 5)),
        })
    return out


@pytest.mark.parametrize("zone", ZONES)
def test_zone_offsets_equal_pandas_around_every_change(zone):
    years = pd.date_range("2020-01-01", "2031-01-01", freq="7D", tz="UTC").as_unit("ns")
    table = tzclock.zone_table(zone)
    table.cover(2020, 2031)
    changes = table.starts[(table.starts > years.asi8[0]) & (table.starts < years.asi8[-1])]
    at = np.concatenate([years.asi8, changes - 1, changes, changes + 1, changes - 10**9 + 1,
                         changes + 3_600 * 10**9 - 1])
    expected = (pd.DatetimeIndex(at.view("datetime64[ns]")).tz_localize("UTC").tz_convert(zone)
                .tz_localize(None).as_unit("ns").asi8)
    np.testing.assert_array_equal(tzclock.local_ns(at, np.full(len(at), zone, dtype=object)),
                                  expected)


def test_local_clock_and_parts_equal_pandas():
    rng = np.random.default_rng(1)
    at = pd.Timestamp("2025-01-01", tz="UTC").value + rng.integers(0, 2 * 365 * 86400, 5000)
    at = at * 10**9 + rng.integers(0, 10**9, 5000)
    zones = np.array(ZONES, dtype=object)[rng.integers(0, len(ZONES), 5000)]
    local = np.empty(len(at), dtype=np.int64)
    for zone in ZONES:
        mask = zones == zone
        local[mask] = (pd.DatetimeIndex(at[mask].view("datetime64[ns]")).tz_localize("UTC")
                       .tz_convert(zone).tz_localize(None).as_unit("ns").asi8)
    utc = pd.Series(pd.DatetimeIndex(at.view("datetime64[ns]")).tz_localize("UTC"))
    clock = calendar.local_clock(utc, pd.Series(zones))
    idx = pd.DatetimeIndex(local.view("datetime64[ns]"))
    np.testing.assert_array_equal(clock["local"].to_numpy("datetime64[ns]").view(np.int64), local)
    np.testing.assert_array_equal(clock["weekday"], idx.day_of_week)
    np.testing.assert_array_equal(clock["minute_of_day"], idx.hour * 60 + idx.minute)
    minute, weekday = local_parts(at, zones)
    np.testing.assert_array_equal(minute, idx.hour * 60 + idx.minute)
    np.testing.assert_array_equal(weekday, idx.day_of_week)


def test_iso_strings_equal_pandas():
    rng = np.random.default_rng(3)
    grid = pd.Timestamp("2025-01-01", tz="UTC").value + rng.integers(0, 4 * 35_040, 3000) * (
        15 * 60 * 10**9)
    odd = grid[:50] + rng.integers(1, 10**9, 50)  # not whole seconds: through pandas
    for at in [*grid.tolist(), *odd.tolist()]:
        stamp = pd.Timestamp(at, tz="UTC")
        assert iso_utc(at) == stamp.isoformat().replace("+00:00", "Z")
        for zone in ZONES:
            assert iso_local(at, zone) == stamp.tz_convert(zone).isoformat()
    old = pd.Timestamp("1890-06-01T12:00:00Z").value  # local mean time: seconds in the offset
    assert iso_local(old, "Europe/Amsterdam") == pd.Timestamp(old, tz="UTC").tz_convert(
        "Europe/Amsterdam").isoformat()


def test_dense_priors_equal_table_lookup(clean_calls):
    priors = fit_priors(clean_calls)
    rng = np.random.default_rng(2)
    industry = rng.choice(["it", "retail", "consumer", "manufacturing", "astrology", "other"],
                          3000).astype(object)
    industry[:5] = None
    weekday, band = rng.integers(0, 7, 3000), rng.integers(0, 12, 3000)
    industry_str = pd.Series(industry, dtype=object).astype(str).to_numpy()
    table = priors.dense()
    dense = table.lookup(table.codes(industry_str), weekday, band)
    tables = priors._lookup_tables(industry_str, weekday, band)
    for name, values in tables.items():
        np.testing.assert_array_equal(np.asarray(dense[name]), values)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_features_equal_build_features(bundle, seed):
    fast, slow = _pair(bundle)
    reqs = _requests(seed, 60)
    singles = reqs[:20]
    for batch in [reqs, *([r] for r in singles)]:
        for every_slot in (False, True):
            b_fast = fast._scored([fast.check(r) for r in batch], every_slot)
            b_slow = slow._scored([slow.check(r) for r in batch], every_slot)
            assert (b_fast.X is None) == (b_slow.frame is None)
            if b_fast.X is not None:
                pd.testing.assert_frame_equal(b_fast.X.to_frame(), b_slow.frame.reset_index(
                    drop=True))
            np.testing.assert_array_equal(b_fast.p, b_slow.p)
            np.testing.assert_array_equal(b_fast.why, b_slow.why)


@pytest.mark.parametrize("seed", [3, 4])
def test_rank_responses_equal_slow_path(bundle, seed):
    fast, slow = _pair(bundle)
    reqs = _requests(seed, 80)
    assert fast.rank(reqs) == slow.rank(reqs)
    for r in reqs[:25]:
        assert fast.rank([r]) == slow.rank([r])
    pd.testing.assert_frame_equal(fast.slot_table(reqs[:20]), slow.slot_table(reqs[:20]))


def test_rules_only_and_holiday_calls_equal_slow_path(bundle, tmp_path):
    rules_only = Policy(), Policy()
    rules_only[1]._slow_features = True
    reqs = _requests(5, 60)
    for r in reqs:
        r["policy"] = "auto"
    assert rules_only[0].rank(reqs) == rules_only[1].rank(reqs)
    config = tmp_path / "policy.yaml"
    config.write_text("holidays:\n  allow_calls: true\n")
    from callback_timing.policy_config import load_policy_config

    fast, slow = _pair(bundle, config=load_policy_config(config))
    assert fast.rank(reqs) == slow.rank(reqs)


def test_margin_feature_model_equals_slow_path(bundle):
    calls = make_clean_calls(n_calls=1500, seed=3)
    train = (calls["called_at"] < calls["called_at"].quantile(0.7)).to_numpy()
    priors = fit_priors(calls[train])
    X, y = training_frame(calls, priors)
    model = AnswerModel(n_estimators=30, margin_feature="prior_rules").fit(
        X[train], y[train], X[~train], y[~train])
    block = FeatureBlock.from_frame(X[~train])
    np.testing.assert_allclose(predict_answer(model, block), model.p_answer(X[~train]),
                               rtol=1e-6)
    with_margin = dataclasses.replace(bundle, model=model, priors=priors, history=calls)
    fast, slow = _pair(with_margin)
    reqs = _requests(6, 40)
    assert fast.rank(reqs) == slow.rank(reqs)
    assert any(o["source"] == "model" for o in fast.rank(reqs))


def test_dense_predict_equals_inplace_predict(bundle):
    """The C-API prediction gives XGBoost's own numbers: missing values, both output kinds,
    one row and many, from several threads at once (each thread has its own output buffer)."""
    from concurrent.futures import ThreadPoolExecutor

    booster = bundle.model.booster_.copy()
    trees = (0, bundle.model.best_iteration_ + 1)
    rng = np.random.default_rng(0)
    width = booster.num_features()
    mats = [rng.normal(size=(rows, width)).astype(np.float32) for rows in (1, 104, 3000)]
    mats[1][::3, 1] = np.nan
    for margin in (True, False):
        kind = "margin" if margin else "value"
        for X in mats:
            mine = dense_predict(booster, X, trees, margin=margin)
            assert np.array_equal(mine, booster.inplace_predict(
                X, iteration_range=trees, predict_type=kind))
    assert isinstance(fastpath._DIRECT[booster], fastpath._DirectPredict)  # it was used
    # a copy predicts with its own handle, and a booster with a predictor still pickles
    assert fastpath._DIRECT.get(booster.copy()) is None
    assert np.array_equal(pickle.loads(pickle.dumps(booster)).inplace_predict(mats[0]),
                          booster.inplace_predict(mats[0]))
    # a non-contiguous float64 view gives the same as its float32 copy
    wide = rng.normal(size=(50, 2 * width))[:, ::2]
    assert np.array_equal(dense_predict(booster, wide, trees, margin=True),
                          booster.inplace_predict(wide.astype(np.float32),
                                                  iteration_range=trees, predict_type="margin"))
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda k: dense_predict(booster, mats[k % 3], trees, True),
                                range(64)))
    for k, answer in enumerate(answers):
        assert np.array_equal(answer, dense_predict(booster, mats[k % 3], trees, True))


def test_dense_predict_keeps_inplace_predict_when_the_check_fails(bundle, monkeypatch):
    booster = bundle.model.booster_.copy()
    trees = (0, bundle.model.best_iteration_ + 1)
    X = np.random.default_rng(1).normal(size=(20, booster.num_features())).astype(np.float32)
    monkeypatch.setattr(fastpath._DirectPredict, "__call__",
                        lambda self, matrix, margin: np.zeros(len(matrix), np.float32))
    got = dense_predict(booster, X, trees, margin=True)
    assert fastpath._DIRECT[booster] is False
    assert np.array_equal(got, booster.inplace_predict(X, iteration_range=trees,
                                                       predict_type="margin"))
    assert got.std() > 0  # the zeros of the broken path were not returned
