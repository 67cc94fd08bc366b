"""The simulator's dirt and the loader's rejects agree row for row."""

from __future__ import annotations

import numpy as np
import pytest

import callback_timing as ct

REJECT_KINDS = {"bad_timestamp", "bad_outcome", "invalid_phone", "unknown_timezone",
                "empty_contact_id"}


@pytest.fixture(scope="module")
def dirty():
    sim = ct.simulate(contacts=400, days=30, seed=11, dirt_rate=0.06)
    return sim, ct.clean_history(sim.history, key=b"pipeline")


def test_rejected_rows_are_exactly_the_injected_bad_rows(dirty):
    sim, result = dirty
    expected = set(sim.dirt.loc[sim.dirt.kind.isin(REJECT_KINDS), "row"] + 2)  # CSV line numbers
    assert set(result.rejects["row"]) == expected
    assert result.n_duplicates == int((sim.dirt.kind == "duplicate").sum())
    assert result.warnings == {}


def test_repairable_dirt_is_repaired(dirty):
    sim, result = dirty
    calls = result.calls.set_index("call_id")
    for kind in ("messy_industry", "mixed_case_outcome", "missing_tz_country"):
        ids = sim.dirt.loc[sim.dirt.kind == kind, "call_id"]
        assert ids.isin(calls.index).all(), kind
    fixed_zone = calls.loc[sim.dirt.loc[sim.dirt.kind == "missing_tz_country", "call_id"]]
    assert (fixed_zone.tz_source == "phone").all()
    world = sim.world.contacts.set_index("contact_id")
    assert (fixed_zone.timezone.to_numpy()
            == world.loc[fixed_zone.contact_id, "timezone"].to_numpy()).all()
    messy = calls.loc[sim.dirt.loc[sim.dirt.kind == "messy_industry", "call_id"]]
    assert (messy.industry.to_numpy() == world.loc[messy.contact_id, "industry"].to_numpy()).all()


def test_clean_calls_keep_the_truths_instants_and_labels(dirty):
    sim, result = dirty
    truth = sim.truth.set_index("call_id")
    calls = result.calls.set_index("call_id")
    common = calls.index.intersection(truth.index)
    assert len(common) == len(calls)
    assert (calls.loc[common, "called_at"] == truth.loc[common, "called_at"]).all()
    assert np.array_equal(calls.loc[common, "answered"].to_numpy(),
                          truth.loc[common, "answered"].astype(int).to_numpy())
