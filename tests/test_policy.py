"""The ranking policy: calling rules, urgency, windows, reasons, fallback and exploration."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from callback_timing.bundle import ModelBundle
from callback_timing.policy import ModelUnavailable, Policy, RankRequestError
from callback_timing.policy_config import load_policy_config
from callback_timing.schema import ConfigError
from tests.conftest import make_clean_calls, tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    _, folder, _ = tiny_bundle(tmp_path_factory.mktemp("policy"), n_calls=3000)
    return ModelBundle.load(folder)


@pytest.fixture(scope="module")
def policy(bundle):
    return Policy(bundle)


def _req(cid="c-0001", now="2026-05-05T06:00:00Z", **kw):
    contact = {"contact_id": cid, **kw.pop("contact", {})}
    return {"request_id": kw.pop("request_id", f"r-{cid}-{now}"), "contact": contact,
            "now": now, **kw}


def _local(ts: str, zone: str) -> pd.Timestamp:
    return pd.Timestamp(ts).tz_convert(zone)


def _check_legal(out, zone, start_h=8, end_h=21, now=None, horizon=48):
    for w in out["windows"]:
        start, end = _local(w["start"], zone), _local(w["end"], zone)
        assert start.hour * 60 + start.minute >= start_h * 60, w
        assert end.hour * 60 + end.minute <= end_h * 60 or end.hour == 0 and end_h == 24, w
        assert start.date() == (end - pd.Timedelta(minutes=1)).date()
        if now is not None:
            assert pd.Timestamp(now) <= pd.Timestamp(w["start"])
            assert pd.Timestamp(w["end"]) <= pd.Timestamp(now) + pd.Timedelta(hours=horizon)


def test_model_windows_are_legal_sorted_and_explained(policy):
    now = "2026-05-05T06:00:00Z"
    reqs = [_req(f"c-{i:04d}", now) for i in range(20)]
    outs = policy.rank(reqs)
    zones = policy.history.drop_duplicates("contact_id").set_index("contact_id")["timezone"]
    for out in outs:
        assert out["source"] == "model" and out["fallback_reason"] is None
        assert 1 <= len(out["windows"]) <= 3
        scores = [w["score"] for w in out["windows"][1 if out["explored"] else 0:]]
        assert scores == sorted(scores, reverse=True)
        _check_legal(out, zones[out["contact_id"]], now=now)
        for w in out["windows"]:
            assert 0 < w["p_answer"] < 1 and w["reasons"]
            assert w["score"] <= w["p_answer"] + 1e-9  # urgency never adds worth


@pytest.mark.parametrize("zone,country,day", [("Europe/Warsaw", "PL", "2026-03-28"),
                                              ("America/New_York", "US", "2026-03-07"),
                                              ("Europe/London", "GB", "2026-10-24")])
def test_calling_hours_hold_across_dst_changes(zone, country, day):
    out = Policy().rank([_req("new", f"{day}T00:00:00Z", top_k=20, horizon_hours=72,
                              contact={"timezone": zone, "country": country,
                                       "industry": "consumer"})])[0]
    assert len(out["windows"]) >= 6
    _check_legal(out, zone)


def test_stricter_hours_per_state_and_weekday():
    florida = Policy().rank([_req("fl", "2026-05-05T12:00:00Z", top_k=20, urgency="flexible",
                                  contact={
        "timezone": "America/New_York", "country": "US", "subdivision": "FL",
        "industry": "consumer"})])[0]
    _check_legal(florida, "America/New_York", end_h=20)
    assert any(_local(w["end"], "America/New_York").hour == 20 for w in florida["windows"])
    texas = Policy().rank([_req("tx", "2026-05-09T12:00:00Z", top_k=20, horizon_hours=36,
                                contact={"timezone": "America/Chicago", "country": "US",
                                         "subdivision": "TX", "industry": "consumer"})])[0]
    sundays = [w for w in texas["windows"] if _local(w["start"], "America/Chicago").weekday() == 6]
    assert sundays and all(_local(w["start"], "America/Chicago").hour >= 12 for w in sundays)
    _check_legal(texas, "America/Chicago", start_h=9)


def test_the_desk_keeps_stricter_regional_hours():
    """The control arm and the campaign's desk open Mon-Fri 08:00-18:00, but never outside a
    region's legal hours (Texas from 09:00)."""
    from callback_timing.policy_config import desk_config

    desk = Policy(config=desk_config(load_policy_config(None)))
    texas = desk.rank([_req("tx", "2026-11-30T13:00:00Z", top_k=20, urgency="flexible",
                            contact={"timezone": "America/Chicago", "country": "US",
                                     "subdivision": "TX"})])[0]
    assert texas["windows"]
    _check_legal(texas, "America/Chicago", start_h=9, end_h=18)
    assert min(_local(w["start"], "America/Chicago") for w in texas["windows"]).hour == 9
    poland = desk.rank([_req("pl", "2026-11-30T05:00:00Z", top_k=20, urgency="flexible",
                             contact={"timezone": "Europe/Warsaw", "country": "PL"})])[0]
    _check_legal(poland, "Europe/Warsaw", start_h=8, end_h=18)
    assert min(_local(w["start"], "Europe/Warsaw") for w in poland["windows"]).hour == 8


def test_no_calls_on_public_holidays_unless_configured(tmp_path):
    req = _req("pl", "2026-11-10T22:00:00Z", top_k=20, horizon_hours=24,
               contact={"timezone": "Europe/Warsaw", "country": "PL", "industry": "consumer"})
    out = Policy().rank([req])[0]  # 11 November: Independence Day in Poland
    assert out["windows"] == []
    assert "public holiday" in out["notes"][-1]
    rules = tmp_path / "rules.yaml"
    rules.write_text("holidays: {allow_calls: true}\n")
    allowed = Policy(config=load_policy_config(rules)).rank([req])[0]
    assert allowed["windows"]
    assert any("public holiday" in r for r in allowed["windows"][0]["reasons"])


def _history_with(calls: list[tuple[str, str, str | None]], base=None) -> pd.DataFrame:
    """A clean history for contact c-9000 (Warsaw) with (called_at, outcome, request_id)."""
    frame = make_clean_calls(n_calls=len(calls), n_contacts=1, seed=5)
    frame["contact_id"] = "c-9000"
    frame["timezone"], frame["country"], frame["subdivision"] = "Europe/Warsaw", "PL", None
    frame["industry"] = "it"
    frame["called_at"] = pd.to_datetime([c[0] for c in calls], utc=True)
    frame["outcome"] = [c[1] for c in calls]
    frame["answered"] = (frame["outcome"] == "answered").astype(np.int8)
    frame["request_id"] = [c[2] for c in calls]
    frame["call_id"] = [f"h-{i}" for i in range(len(calls))]
    return frame if base is None else pd.concat([base, frame], ignore_index=True)


def test_attempt_caps_and_minimum_gap():
    now = pd.Timestamp("2026-05-05T10:00:00Z")
    history = _history_with([(str(now - pd.Timedelta(hours=h)), "no_answer", None)
                             for h in (1, 5, 9)])
    out = Policy(history=history).rank([_req("c-9000", str(now), top_k=20)])[0]
    first_free = now - pd.Timedelta(hours=9) + pd.Timedelta(hours=24)  # 3 calls in 24 h
    assert out["windows"]
    assert all(pd.Timestamp(w["start"]) >= first_free for w in out["windows"])

    gap = _history_with([(str(now - pd.Timedelta(minutes=30)), "no_answer", None)])
    out = Policy(history=gap).rank([_req("c-9000", str(now), top_k=20, urgency="urgent")])[0]
    assert pd.Timestamp(out["windows"][0]["start"]) == now + pd.Timedelta(minutes=90)

    week = _history_with([(str(now - pd.Timedelta(hours=30 + 20 * k)), "no_answer", None)
                          for k in range(7)])
    out = Policy(history=week).rank([_req("c-9000", str(now), top_k=20)])[0]
    oldest = now - pd.Timedelta(hours=30 + 20 * 6)
    assert all(pd.Timestamp(w["start"]) >= oldest + pd.Timedelta(days=7)
               for w in out["windows"])

    done = _history_with([(str(now - pd.Timedelta(hours=30 + h)), "no_answer", "r-77")
                          for h in (0, 3, 6)])
    out = Policy(history=done).rank([_req("c-9000", str(now), request_id="r-77")])[0]
    assert out["windows"] == [] and "3 attempts made for this request" in out["notes"][-1]
    night = Policy(history=done).rank([_req("c-9000", "2026-05-05T18:00:00Z",
                                            request_id="r-77", horizon_hours=12)])[0]
    assert night["notes"][-1] == ("no allowed slot in the horizon: 3 attempts made for this "
                                  "request (cap 3)")  # not the night's calling hours


def test_no_further_attempt_after_an_invalid_number(tmp_path):
    now = pd.Timestamp("2026-05-05T10:00:00Z")
    history = _history_with([(str(now - pd.Timedelta(hours=5)), "invalid_number", "r-1"),
                             (str(now - pd.Timedelta(hours=30)), "no_answer", "r-0")])
    policy = Policy(history=history)
    stopped = policy.rank([_req("c-9000", str(now), request_id="r-1")])[0]
    assert stopped["windows"] == [] and "found the number invalid" in stopped["notes"][-1]
    later = str(now + pd.Timedelta(hours=3))
    check = policy.dial_check({"contact_id": "c-9000"}, later, request_id="r-1")
    assert not check["allowed"] and "invalid" in check["reasons"][0]
    # a new request (perhaps with a corrected number) and an older one are ranked as usual
    assert policy.rank([_req("c-9000", str(now), request_id="r-2")])[0]["windows"]
    assert policy.rank([_req("c-9000", str(now), request_id="r-0")])[0]["windows"]
    assert policy.dial_check({"contact_id": "c-9000"}, later, request_id="r-2")["allowed"]
    # an outcome arriving through add_calls (what /outcomes does) stops its request at once
    fresh = history.iloc[[1]].assign(call_id="h-new", request_id="r-2", answered=0,
                                     outcome="invalid_number",
                                     called_at=now - pd.Timedelta(hours=3))
    policy.add_calls(fresh)
    assert policy.rank([_req("c-9000", str(now), request_id="r-2")])[0]["windows"] == []
    # the rule can be turned off in the policy file
    rules = tmp_path / "policy.yaml"
    rules.write_text("attempts:\n  stop_after_invalid_number: false\n")
    relaxed = Policy(history=history, config=load_policy_config(rules))
    assert relaxed.rank([_req("c-9000", str(now), request_id="r-1")])[0]["windows"]
    rules.write_text("attempts:\n  stop_after_invalid_number: sometimes\n")
    with pytest.raises(ConfigError, match="stop_after_invalid_number"):
        load_policy_config(rules)


def test_zone_disagreement_allows_only_hours_legal_in_both():
    out = Policy().rank([_req("moved", "2026-05-05T00:00:00Z", top_k=20, contact={
        "timezone": "Europe/London", "country": "GB", "phone": "+48512345678",
        "industry": "consumer"})])[0]
    assert out["windows"]
    _check_legal(out, "Europe/London")
    _check_legal(out, "Europe/Warsaw")
    assert any("Europe/Warsaw" in r for r in out["windows"][0]["reasons"])


def test_opt_out_uses_rules_without_personal_history(policy):
    out = policy.rank([_req("c-0003", contact={"opt_out": True})])[0]
    assert out["source"] == "rules" and "opted out" in out["fallback_reason"]
    assert out["windows"]
    for w in out["windows"]:
        assert not any("answered" in r for r in w["reasons"])
    # ranked as a stranger with the same attributes would be: the calls the contact made
    # (its history ends days before ``now``) change nothing
    stranger = {"contact_id": "never-seen", **policy.profile("c-0003")}
    same = policy.rank([_req("never-seen", contact=stranger, policy="rules")])[0]
    fields = ("start", "end", "p_answer", "score")
    assert [[w[f] for f in fields] for w in out["windows"]] == \
        [[w[f] for f in fields] for w in same["windows"]]
    own = policy.rank([_req("c-0003", policy="rules")])[0]  # the rules with its history
    assert [w["p_answer"] for w in own["windows"]] != [w["p_answer"] for w in out["windows"]]


class _Broken:
    def __init__(self, error: bool):
        self.error = error

    def p_answer(self, X):
        if self.error:
            raise RuntimeError("boom")
        return np.full(len(X), np.nan)


@pytest.mark.parametrize("error,reason", [(True, "model failed (RuntimeError)"),
                                          (False, "model returned NaN")])
def test_model_failure_falls_back_to_rules(bundle, error, reason):
    broken = dataclasses.replace(bundle, model=_Broken(error))
    out = Policy(broken).rank([_req()])[0]
    assert out["source"] == "rules" and out["fallback_reason"] == reason
    assert out["windows"] and out["model_version"] is None


def test_explicit_policies(policy):
    assert policy.rank([_req(policy="rules")])[0]["fallback_reason"] == "policy=rules"
    with pytest.raises(ModelUnavailable, match="no model is loaded"):
        Policy().rank([_req(policy="model")])


def test_urgency_modes(policy):
    urgent = policy.rank([_req(urgency="urgent", top_k=3)])[0]
    starts = [pd.Timestamp(w["start"]) for w in urgent["windows"]]
    assert starts == sorted(starts)
    full = policy.rank([_req(urgency="flexible", top_k=20)])[0]
    earliest = min(pd.Timestamp(w["start"]) for w in full["windows"])
    assert starts[0] == earliest
    assert all(w["score"] == pytest.approx(w["p_answer"], abs=1e-4) for w in full["windows"])
    late = policy.rank([_req(urgency="standard", requested_at="2026-05-04T06:00:00Z")])[0]
    cfg = policy.config
    # the seed's curve, log-linear between its points: 1 at once, 0.42 at 24 h, 0.12 at 48 h
    assert [float(cfg.urgency_worth(h)) for h in (0, 12, 24, 36, 48)] == pytest.approx(
        [1.0, 0.42 ** 0.5, 0.42, (0.42 * 0.12) ** 0.5, 0.12])
    assert late["windows"] and urgent["windows"]
    for w in late["windows"]:
        start = pd.Timestamp(w["start"])
        since_request = (start - pd.Timestamp("2026-05-04T06:00:00Z")).total_seconds() / 3600
        waited = (start - pd.Timestamp("2026-05-05T06:00:00Z")).total_seconds() / 3600
        assert w["score"] / w["p_answer"] == pytest.approx(
            float(cfg.urgency_worth(since_request) * cfg.wait_discount(waited)), rel=2e-3)
        assert w["score"] / w["p_answer"] < 0.42 + 1e-3
    assert float(cfg.wait_discount(cfg.wait_half_life_hours)) == pytest.approx(0.5)
    patient = Policy(policy.bundle, config=dataclasses.replace(cfg, wait_half_life_hours=0))
    for w in patient.rank([_req(urgency="standard")])[0]["windows"]:
        since = (pd.Timestamp(w["start"]) - pd.Timestamp("2026-05-05T06:00:00Z")).total_seconds()
        assert w["score"] / w["p_answer"] == pytest.approx(
            float(cfg.urgency_worth(since / 3600)), rel=2e-3)


def test_a_failed_attempt_changes_the_next_ranking(bundle):
    now = pd.Timestamp("2026-05-05T06:00:00Z")
    before = Policy(bundle).rank([_req("c-0005", str(now))])[0]
    called = pd.Timestamp(before["windows"][0]["start"])
    history = bundle.history.copy()
    extra = history[history["contact_id"] == "c-0005"].tail(1).copy()
    extra["called_at"], extra["outcome"], extra["answered"] = called, "no_answer", 0
    extra["call_id"] = "fresh"
    after = Policy(bundle, history=pd.concat([history, extra], ignore_index=True)).rank(
        [_req("c-0005", str(called + pd.Timedelta(minutes=5)))])[0]
    assert after["windows"] != before["windows"]
    assert all(pd.Timestamp(w["start"]) >= called + pd.Timedelta(hours=2)
               for w in after["windows"])
    assert any("called 1 time in the last 24 h" in r for w in after["windows"]
               for r in w["reasons"])


def test_exploration_share_and_propensity(bundle):
    cfg = load_policy_config()
    reqs = [_req(f"c-{i % 60:04d}", request_id=f"q-{i}") for i in range(400)]
    outs = Policy(bundle, config=cfg).rank(reqs)
    explored = [o for o in outs if o["explored"]]
    assert 0.02 * 400 <= len(explored) <= 0.09 * 400
    assert all(0 < o["propensity"] <= 1 for o in outs)
    assert all(o["propensity"] < 0.2 for o in explored)  # a random pick is rarely likely
    assert all(o["propensity"] > 0.9 for o in outs if not o["explored"])
    always = Policy(bundle, config=dataclasses.replace(cfg, exploration_share=1.0))
    out = always.rank([_req()])[0]
    assert out["explored"] and "exploration" in out["windows"][0]["reasons"][-1]
    never = Policy(bundle, config=dataclasses.replace(cfg, exploration_share=0.0))
    assert {o["explored"] for o in never.rank(reqs[:50])} == {False}


def test_explored_windows_keep_their_distance(bundle):
    """The explored slot comes first; the others neither overlap it nor start within the
    minimum separation of it, and stay best first."""
    always = Policy(bundle, config=dataclasses.replace(load_policy_config(),
                                                       exploration_share=1.0))
    outs = always.rank([_req(f"c-{i:04d}", request_id=f"x-{i}", top_k=10, horizon_hours=24)
                        for i in range(60)])
    for out in outs:
        spans = [(pd.Timestamp(w["start"]), pd.Timestamp(w["end"])) for w in out["windows"]]
        for a, (start, end) in enumerate(spans):
            for other_start, other_end in spans[a + 1:]:
                assert abs(other_start - start) >= pd.Timedelta(minutes=60), out["windows"]
                assert other_end <= start or end <= other_start, out["windows"]
        scores = [w["score"] for w in out["windows"][1:]]
        assert scores == sorted(scores, reverse=True)


def test_a_contact_known_by_country_or_state_gets_that_zones_hours():
    """No timezone or phone: the zone comes from the country (then the US state), as the
    contract says; a state spanning two zones allows only hours legal in both."""
    policy = Policy()
    poland = policy.rank([_req("pl", "2026-12-02T10:00:00Z", top_k=20,
                               contact={"country": "pl"})])[0]
    _check_legal(poland, "Europe/Warsaw")
    assert not poland["notes"] and poland["windows"][0]["local_start"].endswith("+01:00")
    evening = policy.dial_check({"contact_id": "pl", "country": "PL"},
                                "2026-12-02T20:30:00Z")  # 21:30 in Warsaw
    assert evening == {"allowed": False,
                       "reasons": ["outside calling hours 08:00-21:00 Europe/Warsaw"]}
    california = {"contact_id": "ca", "country": "US", "subdivision": "us-ca"}
    assert not policy.dial_check(california, "2026-12-02T15:00:00Z")["allowed"]  # 07:00 LA
    assert policy.dial_check(california, "2026-12-02T17:00:00Z")["allowed"]  # 09:00 LA
    texas = policy.rank([_req("tx", "2026-12-02T12:00:00Z", top_k=20, urgency="flexible",
                              contact={"country": "US", "subdivision": "Texas"})])[0]
    _check_legal(texas, "America/Chicago", start_h=9)
    _check_legal(texas, "America/Denver", start_h=9)  # El Paso keeps Mountain time
    assert texas["notes"] == ["only hours legal in both America/Chicago and America/Denver "
                              "(US-TX spans both)"]
    us = policy.rank([_req("us", "2026-12-02T12:00:00Z", contact={"country": "US"})])[0]
    assert us["notes"] == ["time zone taken from the country: America/New_York (the country "
                           "has several; give contact.timezone or phone)"]


def test_the_dial_check_names_every_rule_that_forbids_the_call():
    night = Policy().dial_check({"contact_id": "xmas", "timezone": "Europe/Warsaw",
                                 "country": "PL"}, "2026-12-25T02:00:00Z")
    assert night == {"allowed": False, "reasons": [
        "outside calling hours 08:00-21:00 Europe/Warsaw", "public holiday"]}
    day = Policy().dial_check({"contact_id": "xmas", "timezone": "Europe/Warsaw",
                               "country": "PL"}, "2026-12-25T10:00:00Z")
    assert day == {"allowed": False, "reasons": ["public holiday"]}


def test_subdivisions_are_read_as_iso_codes_or_names():
    policy = Policy()  # Epiphany is a holiday in Bavaria, not in Berlin
    for given in ("BY", "by", "DE-BY", "Bayern"):
        check = policy.dial_check({"contact_id": f"by-{given}", "timezone": "Europe/Berlin",
                                   "country": "DE", "subdivision": given},
                                  "2027-01-06T09:00:00Z")
        assert check == {"allowed": False, "reasons": ["public holiday"]}, given
    assert policy.dial_check({"contact_id": "be", "timezone": "Europe/Berlin", "country": "DE",
                              "subdivision": "BE"}, "2027-01-06T09:00:00Z")["allowed"]
    florida = {"contact_id": "fl", "timezone": "America/New_York", "country": "US",
               "subdivision": "US-FL"}  # 20:30 in Miami: Florida stops at 20:00
    assert not policy.dial_check(florida, "2026-12-03T01:30:00Z")["allowed"]


def test_contact_without_attributes_gets_documented_defaults():
    out = Policy().rank([{"contact": {"contact_id": "bare"}, "now": "2026-05-05T00:00:00Z"}])[0]
    assert out["windows"] and out["request_id"].startswith("bare@")
    assert "time zone unknown" in out["notes"][0]
    _check_legal(out, "UTC")


@pytest.mark.parametrize("change,field", [
    ({"horizon_hours": 0}, "horizon_hours"), ({"horizon_hours": 400}, "horizon_hours"),
    ({"horizon_hours": "x"}, "horizon_hours"), ({"top_k": 0}, "top_k"),
    ({"policy": "magic"}, "policy"), ({"urgency": "asap"}, "urgency"),
    ({"now": "yesterday-ish"}, "now"), ({"requested_at": "2026-05-06T00:00:00Z"}, "requested_at"),
    # not ISO 8601: pandas alone would read 04.05.2026 as 5 April, 2026/05/04 as 4 May
    ({"now": "04.05.2026 10:00+02:00"}, "now"), ({"now": "2026/05/04 10:00Z"}, "now"),
    ({"requested_at": "May 4, 2026 10:00 UTC"}, "requested_at"),
    ({"contact": {"contact_id": "c", "timezone": "Mars/Olympus"}}, "contact.timezone"),
    ({"contact": {"contact_id": "c", "country": "Poland"}}, "contact.country"),
    ({"contact": {"contact_id": "c", "country": "XX"}}, "contact.country"),
    ({"contact": {"contact_id": "c", "country": "PL", "subdivision": "FL"}},
     "contact.subdivision"),
    ({"contact": {"contact_id": "c", "phone": "12345"}}, "contact.phone"),
    ({"contact": {}}, "contact.contact_id"),
    ({"campaign": 7}, "campaign"), ({"team": "t" * 129}, "team"),
])
def test_bad_requests_name_the_field(change, field):
    with pytest.raises(RankRequestError, match=f"^{field}:"):
        Policy().rank([{**_req(now="2026-05-05T00:00:00Z"), **change}])


@pytest.mark.parametrize("text,key", [
    ("calling_hours: {default: {all: '9-5'}}", "calling_hours.default.all"),
    ("calling_hours: {PL: {weekdays: '08:00-20:00'}}", "calling_hours.PL"),
    ("attempts: {per_request: -1}", "attempts.per_request"),
    ("urgency: {standard: [[5, 1.0]]}", "urgency.standard"),
    ("exploration: {share: 2}", "exploration.share"),
    ("colour: blue", "unknown key 'colour'"),
    ("default_timezone: Mars/Olympus", "default_timezone"),
    (": : :", "not valid YAML"),
])
def test_bad_rules_file_is_a_one_line_config_error(tmp_path, text, key):
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        load_policy_config(path)
    assert "\n" not in str(err.value)


def test_batch_answers_bad_requests_in_place_when_asked(policy):
    reqs = [_req(request_id="bad", horizon_hours=0), _req(request_id="ok"),
            _req(request_id="m", policy="model")]
    out = policy.rank(reqs, errors="return")
    assert out[0] == {"request_id": "bad", "error": out[0]["error"]}
    assert out[0]["error"].startswith("horizon_hours:")
    assert out[1]["request_id"] == "ok" and out[1]["windows"]
    assert out[2]["source"] == "model"
    rules_only = Policy().rank(reqs[1:], errors="return")
    assert rules_only[0]["source"] == "rules" and rules_only[1]["error"] == (
        "policy: 'model' asked for, but no model is loaded")  # the field first, as for all
    with pytest.raises(RankRequestError, match="^horizon_hours:"):
        policy.rank(reqs)
