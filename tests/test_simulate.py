"""The synthetic call world: calibration, determinism, export format, truth, dirt."""

from __future__ import annotations

import re
import zoneinfo

import numpy as np
import pandas as pd
import phonenumbers
import pytest
from phonenumbers import timezone as pn_timezone

from callback_timing import calendar
from callback_timing.schema import ALL_COLUMNS, INDUSTRIES, OUTCOMES, ConfigError
from callback_timing.sim.dirt import KINDS
from callback_timing.simulation import SimulationResult, simulate, write_history
from callback_timing.world import World

ISO_WITH_OFFSET = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$")


@pytest.fixture(scope="module")
def default_run() -> SimulationResult:
    """A default-sized run (2000 contacts, 120 days, default dirt)."""
    return simulate(seed=0)


@pytest.fixture(scope="module")
def clean_run() -> SimulationResult:
    return simulate(contacts=400, days=45, seed=11, dirt_rate=0.0)


@pytest.fixture(scope="module")
def world() -> World:
    return World.generate(contacts=3000, seed=5)


def _p_local(world: World, ids, local: str, calls=0) -> np.ndarray:
    """True p for contacts at the same local wall time, each in its own zone."""
    ids = list(ids)
    tz = world.contacts.set_index("contact_id").loc[ids, "timezone"].to_numpy(object)
    utc = calendar.local_to_utc(pd.Series([pd.Timestamp(local)] * len(ids)), pd.Series(tz))
    return world.p_answer(ids, utc, calls)


def _ids(world: World, **where) -> list[str]:
    c = world.contacts
    mask = np.ones(len(c), dtype=bool)
    for column, value in where.items():
        mask &= (c[column] == value).to_numpy()
    return c.loc[mask, "contact_id"].tolist()


# --- calibration and determinism -------------------------------------------------------------


def test_desk_matches_the_industry_before_figures(default_run):
    truth = default_run.truth
    desk = truth[truth["arm"] == "desk"]
    first = desk.loc[desk["attempt"] == 1, "answered"].mean()
    reached = desk.groupby("request_id")["answered"].any().mean()
    assert first == pytest.approx(0.23, abs=0.03)
    assert reached == pytest.approx(0.45, abs=0.05)
    assert desk["attempt"].max() == 3


def test_explore_share_is_respected(default_run):
    arms = default_run.truth.drop_duplicates("request_id")["arm"]
    assert (arms == "explore").mean() == pytest.approx(0.15, abs=0.02)


def test_same_seed_same_output_other_seed_other_output():
    a = simulate(contacts=150, days=20, seed=7)
    b = simulate(contacts=150, days=20, seed=7)
    pd.testing.assert_frame_equal(a.history, b.history)
    pd.testing.assert_frame_equal(a.truth, b.truth)
    pd.testing.assert_frame_equal(a.world.contacts, b.world.contacts)
    c = simulate(contacts=150, days=20, seed=8)
    assert not a.history["called_at"].equals(c.history["called_at"])


def test_progress_is_reported():
    seen: list[tuple[int, int]] = []
    simulate(contacts=20, days=5, seed=1, progress=lambda done, total: seen.append((done, total)))
    assert len(seen) >= 3
    assert seen[-1][0] == seen[-1][1]
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"contacts": 0}, "contacts"), ({"dirt_rate": 1.5}, "dirt_rate"),
     ({"explore_share": -0.1}, "explore_share"), ({"requests_per_contact_day": 0}, "requests")],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        simulate(**kwargs)


# --- export format ---------------------------------------------------------------------------


def test_clean_export_follows_the_contract(clean_run):
    h = clean_run.history
    assert list(h.columns) == list(ALL_COLUMNS)
    assert h["call_id"].is_unique
    assert h["call_id"].str.fullmatch(r"x-\d{7}").all()
    assert h["contact_id"].str.fullmatch(r"c-\d{6}").all()
    assert h["request_id"].str.fullmatch(r"r-\d{6}").all()
    for column in ("called_at", "requested_at"):
        assert h[column].str.match(ISO_WITH_OFFSET).all(), column
    assert set(h["outcome"]) <= set(OUTCOMES)
    assert h[["country", "timezone", "industry", "phone"]].notna().all().all()
    assert set(h["industry"]) <= set(INDUSTRIES)
    assert set(h["timezone"]) <= zoneinfo.available_timezones()
    assert h["attempt"].between(1, 3).all() and (h["duration_s"] >= 0).all()
    has_sub = h["country"].isin(["DE", "GB", "US"])
    assert h.loc[has_sub, "subdivision"].notna().all()
    assert h.loc[~has_sub, "subdivision"].isna().all()
    assert not h.duplicated().any()
    assert len(clean_run.dirt) == 0


def test_export_offsets_are_the_contacts_local_offsets(clean_run):
    h = clean_run.history.merge(clean_run.truth[["call_id", "called_at"]], on="call_id",
                                suffixes=("", "_utc"))
    parsed = pd.to_datetime(h["called_at"], format="ISO8601", utc=True)
    assert (parsed == h["called_at_utc"]).all()
    local = calendar.local_clock(h["called_at_utc"], h["timezone"])
    expected = local["utc_offset_h"].map(lambda x: f"{'+' if x >= 0 else '-'}"
                                         f"{int(abs(x)):02d}:{int(abs(x) % 1 * 60):02d}")
    assert (h["called_at"].str[-6:] == expected).all()
    assert {"+01:00", "+02:00", "+00:00", "-05:00", "-07:00"} <= set(h["called_at"].str[-6:])


def test_write_history_csv_and_parquet(clean_run, tmp_path):
    h = clean_run.history
    for name in ("a/history.csv", "b/history.parquet"):
        path = write_history(h, tmp_path / name)
        back = pd.read_csv(path, dtype=str) if path.suffix == ".csv" else pd.read_parquet(path)
        assert list(back.columns) == list(ALL_COLUMNS)
        assert len(back) == len(h)
        assert back["called_at"].tolist() == h["called_at"].tolist()
    with pytest.raises(ConfigError, match="xlsx"):
        write_history(h, tmp_path / "history.xlsx")


# --- the calling policies ------------------------------------------------------------------


def test_desk_and_explore_follow_their_rules(clean_run):
    t = clean_run.truth.merge(
        clean_run.history[["call_id", "timezone", "requested_at"]], on="call_id"
    )
    clock = calendar.local_clock(t["called_at"], t["timezone"])
    desk = (t["arm"] == "desk").to_numpy()
    assert (clock["weekday"][desk] < 5).all()
    assert clock["hour"][desk].between(8, 17).all()
    assert clock["hour"][~desk].between(8, 20).all()
    requested = pd.to_datetime(t["requested_at"], format="ISO8601", utc=True)
    wait = t["called_at"] - requested
    assert (wait > pd.Timedelta(0)).all()
    assert (wait[~desk] <= pd.Timedelta(hours=48)).all()
    ordered = t.sort_values(["request_id", "attempt"])
    gap = ordered.groupby("request_id")["called_at"].diff().dropna()
    assert (gap >= pd.Timedelta(hours=2)).all()
    # stop once answered: only the last attempt of a request can be answered
    last = ordered.groupby("request_id")["attempt"].transform("max")
    assert not (ordered["answered"] & (ordered["attempt"] < last)).any()


def test_truth_is_the_worlds_probability(clean_run):
    t = clean_run.truth
    p = clean_run.world.p_answer(t["contact_id"], t["called_at"], t["calls_last_24h"])
    np.testing.assert_allclose(p, t["p_true"], rtol=1e-12)
    assert t["answered"].mean() == pytest.approx(t["p_true"].mean(), abs=0.03)


# --- phones ----------------------------------------------------------------------------------


def test_phones_are_valid_and_us_area_codes_match_the_zone(world):
    c = world.contacts
    assert set(c["country"]) >= {"PL", "DE", "GB", "US"}
    assert set(c.loc[c["country"] == "US", "timezone"]) == {
        "America/New_York", "America/Chicago", "America/Denver", "America/Phoenix",
        "America/Los_Angeles",
    }
    for phone, country, zone in c[["phone", "country", "timezone"]].itertuples(index=False):
        number = phonenumbers.parse(phone, None)
        assert phonenumbers.is_valid_number(number), phone
        assert phonenumbers.region_code_for_number(number) == country, phone
        zones = pn_timezone.time_zones_for_number(number)
        if country == "US":
            assert zones == (zone,), phone
        else:
            assert zone in zones, phone


# --- the truth: industries, holidays, DST, fatigue, vacations -----------------------------


def test_industry_patterns_are_visible(world):
    it = _ids(world, industry="it")
    assert _p_local(world, it, "2026-03-09 09:00").mean() < 0.3 * _p_local(
        world, it, "2026-03-10 11:00").mean()
    consumer = _ids(world, industry="consumer")
    assert _p_local(world, consumer, "2026-03-10 19:30").mean() > 2 * _p_local(
        world, consumer, "2026-03-10 10:00").mean()
    assert _p_local(world, consumer, "2026-03-14 15:00").mean() > 2 * _p_local(
        world, consumer, "2026-03-10 15:00").mean()
    factory = _ids(world, industry="manufacturing")
    assert _p_local(world, factory, "2026-03-10 16:30").mean() < 0.2 * _p_local(
        world, factory, "2026-03-10 07:30").mean()
    office = _ids(world, industry="public_sector")
    assert _p_local(world, office, "2026-03-10 12:30").mean() < 0.6 * _p_local(
        world, office, "2026-03-10 10:30").mean()


def _off_duty(world: World, ids: list[str], days: list[str]) -> list[str]:
    """The ids whose yearly vacation covers none of the given days."""
    c = world.contacts.set_index("contact_id").loc[ids]
    doy = np.array([pd.Timestamp(d).day_of_year - 1 for d in days])
    covered = ((doy[None, :] - c["vacation_doy"].to_numpy()[:, None]) % 365
               < c["vacation_days"].to_numpy()[:, None]).any(axis=1)
    return [i for i, hit in zip(ids, covered, strict=True) if not hit]


def test_public_holidays_and_bridge_days_lower_p_for_business(world):
    c = world.contacts
    business = c.loc[(c["country"] == "PL") & (c["industry"] != "consumer"), "contact_id"]
    days = ["2026-05-01", "2026-05-08", "2026-06-05", "2026-06-12"]
    ids = _off_duty(world, business.tolist(), days)
    assert len(ids) > 100
    holiday = _p_local(world, ids, "2026-05-01 10:00")  # Labour Day, a Friday
    normal = _p_local(world, ids, "2026-05-08 10:00")  # the next Friday
    assert (holiday < normal).all()
    assert holiday.mean() < 0.2 * normal.mean()
    bridge = _p_local(world, ids, "2026-06-05 10:00")  # Friday after Corpus Christi
    assert (bridge < _p_local(world, ids, "2026-06-12 10:00")).all()
    assert bridge.mean() < 0.5 * _p_local(world, ids, "2026-06-12 10:00").mean()
    consumer = _ids(world, country="PL", industry="consumer")  # at home, as on a Sunday
    assert _p_local(world, consumer, "2026-05-01 11:00").mean() > 1.5 * _p_local(
        world, consumer, "2026-05-08 11:00").mean()


def _one_contact_world(world: World, contact_id: str, **hidden) -> World:
    contacts = world.contacts.copy()
    row = contacts["contact_id"] == contact_id
    defaults = {"baseline": 0.0, "gw2_day": -1, "gw2_start": -1, "gw2_dur": 0,
                "never_day": -1, "never_start": -1, "never_dur": 0, "vacation_days": 0}
    for column, value in {**defaults, **hidden}.items():
        contacts.loc[row, column] = value
    return World(contacts, world.params)


@pytest.mark.parametrize(
    ("country", "before", "after"),
    [("PL", "2026-03-24", "2026-03-31"), ("DE", "2026-03-24", "2026-03-31"),
     ("US", "2026-03-03", "2026-03-10")],
)
def test_golden_window_stays_at_local_time_across_dst(world, country, before, after):
    cid = _ids(world, country=country, industry="automotive")[0]
    w = _one_contact_world(world, cid, gw1_day=1, gw1_start=14 * 60, gw1_dur=90)
    p_before = _p_local(w, [cid], f"{before} 14:30")[0]
    p_after = _p_local(w, [cid], f"{after} 14:30")[0]
    assert p_before == pytest.approx(p_after, rel=1e-12)
    assert p_after > 0.6
    assert _p_local(w, [cid], f"{after} 16:00")[0] < 0.25
    # the same UTC instant one week apart is no longer inside the window in summer time
    utc_before = calendar.local_to_utc(pd.Series([pd.Timestamp(f"{before} 15:15")]),
                                       pd.Series([w.contacts.set_index("contact_id").loc[
                                           cid, "timezone"]]))[0]
    p_same_utc = w.p_answer(cid, utc_before + pd.Timedelta(days=7))[0]
    assert p_same_utc < 0.5 * p_after
    assert "Tuesdays 14:00-15:30" in w.describe(cid)


def test_fatigue_lowers_p(world, clean_run):
    ids = _ids(world, industry="finance")[:50]
    p = [_p_local(world, ids, "2026-03-10 10:00", calls=n) for n in (0, 1, 3)]
    assert (p[0] > p[1]).all() and (p[1] > p[2]).all()
    t = clean_run.truth
    first = t[t["attempt"] == 1].set_index("request_id")["called_at"]
    second = t[t["attempt"] == 2]
    soon = (second["called_at"] - second["request_id"].map(first)) < pd.Timedelta(hours=24)
    assert soon.mean() > 0.5
    assert (second.loc[soon, "calls_last_24h"] >= 1).all()


def test_vacation_lowers_p(world):
    cid = _ids(world, country="DE", industry="it")[0]
    w = _one_contact_world(world, cid, gw1_day=-1, gw1_start=-1, gw1_dur=0,
                           vacation_doy=188, vacation_days=14)  # 8-21 July
    on_leave = _p_local(w, [cid], "2026-07-14 11:00")[0]
    back = _p_local(w, [cid], "2026-07-28 11:00")[0]
    assert on_leave < 0.1 * back
    assert "vacation 14 days from 08 Jul" in w.describe(cid)


def test_world_save_load_roundtrip(world, tmp_path):
    path = world.save(tmp_path / "w" / "world.parquet")
    back = World.load(path)
    assert back.params == world.params
    ids = world.contacts["contact_id"].tolist()[:200]
    at = pd.Timestamp("2026-04-14T09:00Z")
    np.testing.assert_allclose(back.p_answer(ids, at), world.p_answer(ids, at))
    assert back.describe(ids[0]) == world.describe(ids[0])


def test_unknown_contact_is_named(world):
    with pytest.raises(KeyError, match="c-999999"):
        world.p_answer("c-999999", "2026-03-10T10:00Z")


# --- dirt ------------------------------------------------------------------------------------


def test_default_run_contains_every_kind_of_dirt(default_run):
    h, log = default_run.history, default_run.dirt
    assert set(log["kind"]) == set(KINDS)
    assert len(log) == pytest.approx(0.03 * len(default_run.truth), rel=0.05)
    rows = {kind: log.loc[log["kind"] == kind, "row"].to_numpy() for kind in KINDS}
    stamps = h.loc[rows["bad_timestamp"], "called_at"]
    assert not stamps.str.match(ISO_WITH_OFFSET).any()
    assert {"", "yesterday", "2026-13-45T25:00"} <= set(stamps)
    assert stamps.str.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}").any()  # naive
    assert not h.loc[rows["bad_outcome"], "outcome"].str.lower().isin(OUTCOMES).any()
    mixed = h.loc[rows["mixed_case_outcome"], "outcome"]
    assert mixed.str.lower().isin(OUTCOMES).all() and not mixed.isin(OUTCOMES).any()
    missing = h.loc[rows["missing_tz_country"]]
    assert missing[["country", "timezone"]].isna().all().all() and missing["phone"].notna().all()
    invalid = h.loc[rows["invalid_phone"]]
    assert invalid[["country", "timezone"]].isna().all().all()
    assert not any(_valid_phone(p) for p in invalid["phone"])
    assert not set(h.loc[rows["unknown_timezone"], "timezone"]) & zoneinfo.available_timezones()
    assert (h.loc[rows["empty_contact_id"], "contact_id"] == "").all()
    assert not h.loc[rows["messy_industry"], "industry"].isin(INDUSTRIES).any()
    assert {"IT", " it services ", "Banking"} & set(h.loc[rows["messy_industry"], "industry"])
    assert h.duplicated().sum() == len(rows["duplicate"])
    assert h.loc[rows["duplicate"]].equals(h.loc[rows["duplicate"] - 1].set_axis(
        rows["duplicate"]))
    # every other row is clean
    dirty = np.concatenate(list(rows.values()))
    rest = h.drop(index=dirty)
    assert rest["called_at"].str.match(ISO_WITH_OFFSET).all()
    assert rest["outcome"].isin(OUTCOMES).all()


def _valid_phone(text: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(text, None))
    except phonenumbers.NumberParseException:
        return False
