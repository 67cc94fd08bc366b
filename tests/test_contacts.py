import os
import stat

import pandas as pd
import pytest

from callback_timing import config, schema
from callback_timing.contacts import (
    INDUSTRY_SYNONYMS,
    canonical_zone,
    country_main_timezone,
    load_key,
    normalise_country,
    normalise_industry,
    parse_phones,
    pseudonymise,
)
from callback_timing.schema import ConfigError


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("IT", "it"),
        ("  it   services ", "it"),
        ("Information Technology", "it"),
        ("software", "it"),
        ("Tech", "it"),
        ("Banking", "finance"),
        ("insurance", "finance"),
        ("Financial-Services", "finance"),
        ("health care", "healthcare"),
        ("Hospital", "healthcare"),
        ("car", "automotive"),
        ("Automotive supplier", "automotive"),
        ("Government", "public_sector"),
        ("public administration", "public_sector"),
        ("PUBLIC_SECTOR", "public_sector"),
        ("private", "consumer"),
        ("B2C", "consumer"),
        ("individual", "consumer"),
        ("Retail.", "retail"),
        ("underwater basket weaving", "other"),
        ("", "other"),
        (None, "other"),
    ],
)
def test_normalise_industry_synonyms(raw, expected):
    assert normalise_industry(pd.Series([raw], dtype=object)).tolist() == [expected]


def test_industry_synonyms_only_map_into_the_taxonomy():
    assert set(INDUSTRY_SYNONYMS.values()) <= set(schema.INDUSTRIES)


def test_normalise_industry_keeps_index_and_gives_strings():
    values = pd.Series(["IT", None], index=[10, 20], name="industry")
    out = normalise_industry(values)
    assert out.index.tolist() == [10, 20]
    assert out.name == "industry"
    assert out.dtype == "str"


def _phone(phone, country=None):
    return parse_phones(pd.Series([phone], dtype=object), pd.Series([country], dtype=object))


def test_polish_mobile_in_e164():
    row = _phone("+48 512 345 678").iloc[0]
    assert (row.e164, row.country, row.timezone) == ("+48512345678", "PL", "Europe/Warsaw")
    assert row.valid and not row.tz_ambiguous


def test_us_number_with_new_york_area_code():
    row = _phone("+1 (212) 555-0100").iloc[0]
    assert (row.country, row.timezone, row.tz_ambiguous) == ("US", "America/New_York", False)


def test_us_number_with_los_angeles_area_code_is_not_new_york():
    row = _phone("+1 213 555 0100").iloc[0]
    assert row.timezone == "America/Los_Angeles"


def test_national_format_needs_the_country():
    with_country = _phone("0151 23456789", "DE").iloc[0]
    assert (with_country.e164, with_country.country) == ("+4915123456789", "DE")
    assert with_country.timezone == "Europe/Berlin"
    assert not _phone("0151 23456789").iloc[0].valid


def test_multi_zone_number_uses_the_main_zone_and_is_flagged():
    toll_free = _phone("+1 800 555 0100").iloc[0]
    assert (toll_free.country, toll_free.timezone, toll_free.tz_ambiguous) == (
        "US", "America/New_York", True)
    russian_mobile = _phone("+7 912 345 6789").iloc[0]
    assert (russian_mobile.timezone, russian_mobile.tz_ambiguous) == ("Europe/Moscow", True)


def test_e164_wins_over_a_different_country():
    row = _phone("+48 512 345 678", "DE").iloc[0]
    assert row.country == "PL"


@pytest.mark.parametrize("bad", ["12", "not a number", "+48 999 888 777 666", "", None])
def test_invalid_or_missing_numbers(bad):
    row = _phone(bad, "PL").iloc[0]
    assert not row.valid
    assert pd.isna(row.e164) and pd.isna(row.timezone) and not row.tz_ambiguous


def test_parse_phones_maps_unique_pairs_back_to_every_row():
    phones = pd.Series(["0151 23456789", "+48512345678", "0151 23456789", "0151 23456789"],
                       index=[7, 3, 5, 1])
    countries = pd.Series(["DE", None, None, "DE"], index=[7, 3, 5, 1])
    out = parse_phones(phones, countries)
    assert out.index.tolist() == [7, 3, 5, 1]
    assert out["valid"].tolist() == [True, True, False, True]
    assert out["country"].tolist()[:2] == ["DE", "PL"]


def test_parse_phones_of_nothing():
    out = parse_phones(pd.Series([], dtype="str"), pd.Series([], dtype="str"))
    assert out.columns.tolist() == ["e164", "country", "timezone", "tz_ambiguous", "valid"]
    assert len(out) == 0


@pytest.mark.parametrize(
    ("country", "zone"),
    [("US", "America/New_York"), ("DE", "Europe/Berlin"), ("PL", "Europe/Warsaw"),
     ("GB", "Europe/London"), ("gb ", "Europe/London"), ("AU", "Australia/Sydney"),
     ("BR", "America/Sao_Paulo"), ("CA", "America/Toronto"), ("FR", "Europe/Paris"),
     ("ES", "Europe/Madrid"), ("XX", None), ("", None)],
)
def test_country_main_timezone(country, zone):
    assert country_main_timezone(country) == zone


def test_canonical_zone_and_country():
    zones = canonical_zone(pd.Series(["america/new_york", "UTC", "Nowhere/Town", None]))
    assert zones[:2].tolist() == ["America/New_York", "UTC"] and zones[2:].isna().all()
    countries = normalise_country(pd.Series(["pl", " de ", "XX", "Poland", None]))
    assert countries[:2].tolist() == ["PL", "DE"] and countries[2:].isna().all()


def test_pseudonymise_is_keyed_deterministic_and_keeps_missing():
    values = pd.Series(["+48512345678", None, "+48512345678", "+48512345679"])
    a = pseudonymise(values, b"key-a")
    b = pseudonymise(values, b"key-b")
    assert a[0] == a[2] != a[3]
    assert a[0] != b[0]
    assert pd.isna(a[1])
    assert a.dropna().str.fullmatch("[0-9a-f]{20}").all()
    assert "512345678" not in a.to_csv()


def test_load_key_from_environment(monkeypatch):
    monkeypatch.setenv(config.PSEUDONYM_KEY_ENV, "secret")
    assert load_key() == b"secret"


def test_load_key_creates_a_private_key_file_once(monkeypatch, tmp_path):
    monkeypatch.delenv(config.PSEUDONYM_KEY_ENV, raising=False)
    monkeypatch.setenv("CALLBACK_TIMING_HOME", str(tmp_path / "home"))
    first = load_key()
    path = tmp_path / "home" / "pseudonym.key"
    assert path.is_file()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(first) >= 32
    assert load_key() == first


def test_empty_key_file_is_an_error(monkeypatch, tmp_path):
    monkeypatch.delenv(config.PSEUDONYM_KEY_ENV, raising=False)
    monkeypatch.setenv("CALLBACK_TIMING_HOME", str(tmp_path))
    (tmp_path / "pseudonym.key").write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_key()


def test_every_spelling_the_simulator_uses_is_understood():
    from callback_timing.sim.dirt import MESSY_INDUSTRY

    for industry, spellings in MESSY_INDUSTRY.items():
        assert normalise_industry(pd.Series(list(spellings))).tolist() == [industry] * len(
            spellings
        ), industry
