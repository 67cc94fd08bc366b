import gzip
import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callback_timing import schema
from callback_timing.data import (
    LoadResult,
    apply_mapping,
    clean_history,
    load_history,
    parse_mapping,
    read_table,
)
from callback_timing.report import quality_report
from callback_timing.schema import ConfigError, SchemaError

FIXTURES = Path(__file__).parent / "fixtures"
KEY = b"test-key"


def _frame(**columns) -> pd.DataFrame:
    n = max(len(v) for v in columns.values())
    base = {"contact_id": ["c1"] * n, "called_at": ["2026-06-01T10:00:00Z"] * n,
            "outcome": ["answered"] * n}
    return pd.DataFrame({**base, **columns})


def _rejects(result: LoadResult) -> list[tuple[int, str]]:
    return list(result.rejects[["row", "column"]].itertuples(index=False, name=None))


def _assert_accounted(result: LoadResult) -> None:
    assert result.n_input_rows == result.n_clean + result.n_duplicates + result.n_rejected_rows


# --- the messy fixture: every kind of bad row, with its CSV line number ----------------------


@pytest.fixture(scope="module")
def messy() -> LoadResult:
    return load_history(FIXTURES / "messy_history.csv", key=KEY)


@pytest.mark.parametrize(
    ("row", "column", "reason"),
    [
        (4, "called_at", "unparseable timestamp"),
        (5, "called_at", "--assume-tz"),
        (6, "outcome", "unknown outcome"),
        (7, "phone", "invalid phone number and no country or timezone"),
        (8, "timezone", "unknown time zone"),
        (9, "contact_id", "empty contact_id"),
        (10, "attempt", "whole number >= 1"),
        (11, "attempt", "whole number >= 1"),
        (12, "duration_s", ">= 0"),
        (13, "duration_s", ">= 0"),
        (14, "requested_at", "unparseable timestamp"),
        (15, "call_id", "duplicate call_id"),
    ],
)
def test_each_bad_row_is_rejected_with_line_column_and_reason(messy, row, column, reason):
    hits = messy.rejects[(messy.rejects["row"] == row) & (messy.rejects["column"] == column)]
    assert len(hits) == 1
    assert reason in hits["reason"].iloc[0]


def test_messy_fixture_accounting(messy):
    assert messy.n_input_rows == 16
    assert messy.n_duplicates == 1  # line 16 repeats line 3
    assert messy.n_rejected_rows == 12
    assert messy.n_clean == 3
    _assert_accounted(messy)
    assert messy.rejects_by_reason()["duplicate call_id"] == 1


def test_invalid_phone_with_country_is_kept_with_a_warning(messy):
    kept = messy.calls.set_index("call_id").loc["k14"]
    assert (kept.country, kept.timezone, kept.tz_source) == ("DE", "Europe/Berlin", "country")
    assert pd.isna(kept.phone_hash)
    assert sum(messy.warnings.values()) == 1
    assert 17 not in messy.rejects["row"].tolist()


def test_clean_frame_has_the_contract_columns_and_dtypes(messy):
    calls = messy.calls
    assert tuple(calls.columns) == schema.CLEAN_COLUMNS
    assert str(calls["called_at"].dtype) == "datetime64[ns, UTC]"
    assert str(calls["requested_at"].dtype) == "datetime64[ns, UTC]"
    assert calls["answered"].dtype == "int8"
    assert calls["attempt"].dtype == "Int64"
    assert calls["duration_s"].dtype == "float64"
    assert calls["tz_flag"].dtype == bool
    for column in ("contact_id", "outcome", "call_id", "phone_hash", "country", "timezone",
                   "tz_source", "industry"):
        assert calls[column].dtype == "str", column
    assert calls["outcome"].tolist() == ["answered", "no_answer", "rejected"]
    assert calls["answered"].tolist() == [1, 0, 0]
    assert calls["industry"].tolist() == ["it", "it", "finance"]
    assert calls.index.equals(pd.RangeIndex(3))
    assert calls["called_at"].tolist() == sorted(calls["called_at"])  # c1 twice, then c8


def test_write_rejects_and_read_back(messy, tmp_path):
    path = messy.write_rejects(tmp_path / "out" / "rejects.csv")
    back = pd.read_csv(path)
    assert back.columns.tolist() == ["row", "column", "reason"]
    assert back["row"].tolist() == messy.rejects["row"].tolist()
    assert back["reason"].tolist() == messy.rejects["reason"].tolist()


# --- the clear phone number never leaves the loader ------------------------------------------


def test_clear_phone_never_appears_in_outputs(tmp_path, caplog):
    frame = _frame(
        contact_id=["a", "b", "c", "d"],
        phone=["+48 512 345 678", "+48 999 888 777 666", "+49 30 901820", "+48 999 888 777 666"],
        country=[None, None, None, "PL"],
        outcome=["answered", "busy", "bogus", "busy"],
    )
    with caplog.at_level(logging.DEBUG):
        result = clean_history(frame, key=KEY)
        report = quality_report(result)
    texts = [result.calls.to_csv(), result.rejects.to_csv(), json.dumps(report), caplog.text,
             result.write_rejects(tmp_path / "r.csv").read_text()]
    for text in texts:
        for digits in ("512345678", "512 345 678", "999888777", "999 888 777", "30901820"):
            assert digits not in text
    assert result.calls["phone_hash"].notna().sum() == 1
    assert _rejects(result) == [(3, "phone"), (4, "outcome")]


# --- timestamps ------------------------------------------------------------------------------


def test_mixed_offsets_parse_to_the_same_utc_instant():
    stamps = ["2026-06-01T12:00:00+02:00", "2026-06-01T06:00:00-04:00", "2026-06-01T10:00:00Z",
              "2026-06-01T15:30:00+0530", "2026-06-01 11:00:00.000+01:00"]
    result = clean_history(_frame(contact_id=list("abcde"), called_at=stamps), key=KEY)
    assert result.n_clean == 5
    assert set(result.calls["called_at"]) == {pd.Timestamp("2026-06-01T10:00:00Z")}


def test_calls_dated_after_the_time_of_reading_are_rejected():
    frame = _frame(called_at=["2026-06-01T10:00:00Z", "2026-06-02T09:00:00Z",
                              "2026-06-02T11:00:00+00:00", "2099-01-01T10:00:00Z"])
    result = clean_history(frame, key=KEY, now=pd.Timestamp("2026-06-01T10:00:00Z"))
    assert _rejects(result) == [(4, "called_at"), (5, "called_at")]  # a day's grace
    assert set(result.rejects["reason"]) == {
        "in the future (more than a day after the time of reading)"}
    _assert_accounted(result)


def test_a_date_alone_or_no_outcome_is_named_as_such():
    frame = _frame(called_at=["2026-06-01", "2026-06-01T10:00:00Z", "2026-06-01T11:00:00Z",
                              "2026-06-01T12:00:00Z"],
                   outcome=["busy", "", "answered", "busy"], contact_id=["a", "b", "c", "x" * 257])
    result = clean_history(frame, assume_tz="Europe/Berlin", key=KEY)
    assert result.rejects[["row", "column", "reason"]].values.tolist() == [
        [2, "called_at", "a date without the time of day"], [3, "outcome", "missing outcome"],
        [5, "contact_id", "contact_id longer than 256 characters (/rank could not name it)"]]
    _assert_accounted(result)


def test_outcome_spelling_ignores_case_spaces_and_hyphens():
    spelt = ["No Answer", "no-answer", " VOICEMAIL ", "Invalid  Number", "answered", "no answer!"]
    result = clean_history(_frame(contact_id=list("abcdef"), outcome=spelt,
                                  called_at=[f"2026-06-01T1{i}:00:00Z" for i in range(6)]),
                           key=KEY)
    assert result.calls.sort_values("called_at")["outcome"].tolist() == [
        "no_answer", "no_answer", "voicemail", "invalid_number", "answered"]
    assert result.calls["answered"].tolist().count(1) == 1
    assert result.rejects[["row", "column"]].values.tolist() == [[7, "outcome"]]


def test_time_format_reads_other_layouts_beside_iso():
    stamps = ["04.05.2026 10:00", "2026-05-04T10:00:00+02:00", "05/04/2026 10:00 +0200",
              "29.03.2026 02:30", "25.10.2026 02:30", "31.02.2026 10:00"]
    frame = _frame(contact_id=list("abcdef"), called_at=stamps, timezone=["Europe/Berlin"] * 6)
    naive = clean_history(frame, assume_tz="Europe/Berlin", key=KEY,
                          time_format="%d.%m.%Y %H:%M")
    got = naive.calls.set_index("contact_id")["called_at"]
    assert got["a"] == got["b"] == pd.Timestamp("2026-05-04T08:00Z")
    assert got["e"] == pd.Timestamp("2026-10-25T00:30Z")  # the autumn fold: summer time
    assert _rejects(naive) == [(4, "called_at"), (5, "called_at"), (7, "called_at")]
    assert "does not exist" in naive.rejects.set_index("row").at[5, "reason"]  # spring gap
    with_offset = clean_history(frame, key=KEY, time_format="%m/%d/%Y %H:%M %z")
    assert with_offset.calls.set_index("contact_id").at["c", "called_at"] == pd.Timestamp(
        "2026-05-04T08:00Z")  # month first, as the layout says
    assert len(with_offset.calls) == 2  # and the ISO row; naive rows need --assume-tz
    assert naive.rejects.set_index("row").at[7, "reason"] == (
        "unparseable timestamp (neither ISO-8601 nor --time-format '%d.%m.%Y %H:%M')")
    for layout, problem in [("dd.mm.yyyy", "a strftime layout"),
                            ("%d.%m.%Y %H:%i", "bad directive"), ("%d.%m.%Y %", "stray %"),
                            ("%d.%m.%Y %H:%M", "--assume-tz")]:
        with pytest.raises(ConfigError, match=problem):
            clean_history(frame, time_format=layout)


def test_naive_timestamps_need_assume_tz():
    frame = _frame(contact_id=list("abcd"), called_at=[
        "2026-06-01 12:00:00", "2026-03-29 02:30:00", "2026-10-25 02:30:00", "2026-06-01"])
    without = clean_history(frame, key=KEY)
    assert without.n_clean == 0
    assert without.rejects["reason"].iloc[:3].str.contains("--assume-tz").all()
    with_tz = clean_history(frame, assume_tz="europe/berlin", key=KEY)
    by_contact = with_tz.calls.set_index("contact_id")["called_at"]
    assert by_contact["a"] == pd.Timestamp("2026-06-01T10:00Z")
    assert by_contact["c"] == pd.Timestamp("2026-10-25T00:30Z")  # fold: first (summer) instant
    # 02:30 on 29 March does not exist; a date alone is no time of a call (not midnight)
    assert _rejects(with_tz) == [(3, "called_at"), (5, "called_at")]
    assert "daylight-saving gap" in with_tz.rejects["reason"].iloc[0]


def test_unknown_assume_tz_is_a_config_error():
    with pytest.raises(ConfigError, match="Mars/Base"):
        clean_history(_frame(contact_id=["a"]), assume_tz="Mars/Base", key=KEY)


def test_typed_parquet_columns(tmp_path):
    frame = pd.DataFrame({
        "contact_id": ["a", "b"],
        "called_at": pd.to_datetime(["2026-06-01T12:00:00+02:00", "2026-06-01T10:00:00Z"],
                                    utc=True),
        "outcome": ["answered", "busy"],
        "attempt": [1, 2],
        "duration_s": [12.5, 0.0],
    })
    frame.to_parquet(tmp_path / "h.parquet")
    result = load_history(tmp_path / "h.parquet", key=KEY)
    assert result.n_clean == 2
    assert result.calls["attempt"].tolist() == [1, 2]
    assert (result.calls["called_at"] == pd.Timestamp("2026-06-01T10:00Z")).all()


# --- time zone and country resolution --------------------------------------------------------


def test_zone_sources_and_flags():
    frame = _frame(
        contact_id=list("abcdef"),
        phone=["+48 512 345 678", "+1 800 555 0100", None, None, "+48 512 345 678", None],
        country=[None, None, "DE", None, "US", "pl"],
        timezone=[None, None, None, None, None, "America/Chicago"],
    )
    calls = clean_history(frame, key=KEY).calls.set_index("contact_id")
    assert calls["tz_source"].to_dict() == {"a": "phone", "b": "phone", "c": "country",
                                           "d": "default", "e": "country", "f": "given"}
    assert calls["timezone"].to_dict() == {
        "a": "Europe/Warsaw", "b": "America/New_York", "c": "Europe/Berlin", "d": "UTC",
        "e": "America/New_York", "f": "America/Chicago"}
    assert calls["tz_flag"].to_dict() == {k: k == "b" for k in "abcdef"}
    # a given country beats the phone's (people keep their numbers when they move)
    assert calls["country"].drop("d").to_dict() == {"a": "PL", "b": "US", "c": "DE", "e": "US",
                                                    "f": "PL"}
    assert pd.isna(calls["country"]["d"])
    assert calls.loc["a", "phone_hash"] == calls.loc["e", "phone_hash"]


def test_subdivisions_are_iso_codes_and_give_a_us_state_its_zone():
    frame = _frame(
        contact_id=list("abcdef"),
        country=["US", "us", "DE", "DE", "PL", None],
        subdivision=["us-ca", "Texas", "by", "DE-BE", "FL", "ny"],
    )
    result = clean_history(frame, key=KEY)
    calls = result.calls.set_index("contact_id")
    assert calls["subdivision"].fillna("-").to_dict() == {
        "a": "CA", "b": "TX", "c": "BY", "d": "BE", "e": "-", "f": "NY"}
    assert calls["timezone"].drop("f").to_dict() == {
        "a": "America/Los_Angeles", "b": "America/Chicago", "c": "Europe/Berlin",
        "d": "Europe/Berlin", "e": "Europe/Warsaw"}
    assert result.warnings == {"subdivision its country does not have (ignored)": 1,
                               "no timezone, country or valid phone (UTC used; see "
                               "--default-tz)": 1}


# --- duplicates ------------------------------------------------------------------------------


def test_duplicate_contact_and_time_without_call_id():
    frame = _frame(contact_id=["a", "a", "a"], called_at=[
        "2026-06-01T10:00:00Z", "2026-06-01T12:00:00+02:00", "2026-06-01T11:00:00Z"],
        outcome=["busy", "answered", "busy"])
    result = clean_history(frame, key=KEY)
    assert result.n_duplicates == 0
    assert _rejects(result) == [(3, "called_at")]
    assert result.rejects["reason"].iloc[0] == "duplicate (contact_id, called_at)"
    _assert_accounted(result)


def test_exact_duplicates_are_counted_not_rejected():
    frame = _frame(contact_id=["a", "a", "b", "a"], outcome=["busy", "busy", "busy", "busy"])
    result = clean_history(frame, key=KEY)
    assert (result.n_duplicates, result.n_clean, len(result.rejects)) == (2, 2, 0)


# --- reading, mapping, required columns ------------------------------------------------------


def test_missing_required_column_is_named(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("contact_id,start,outcome\nc1,2026-06-01T10:00Z,busy\n")
    with pytest.raises(SchemaError, match="missing required column 'called_at'"):
        load_history(path, key=KEY)
    with pytest.raises(SchemaError, match="'called_at', 'outcome'"):
        clean_history(pd.DataFrame({"contact_id": ["a"]}), key=KEY)


def test_mapping_renames_foreign_columns(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("contact_id,start,result\nc1,2026-06-01T10:00Z,Busy\n")
    mapping = parse_mapping(["called_at=start", "outcome=result"])
    result = load_history(path, mapping=mapping, key=KEY)
    assert result.calls["outcome"].tolist() == ["busy"]
    with pytest.raises(SchemaError, match="no column 'begin'"):
        load_history(path, mapping={"called_at": "begin"}, key=KEY)
    with pytest.raises(SchemaError, match="already has a column 'contact_id'"):
        apply_mapping(read_table(path), {"contact_id": "start"})


@pytest.mark.parametrize("item", ["called_at", "=start", "called_at=", "when=start"])
def test_parse_mapping_errors(item):
    with pytest.raises(ConfigError, match="--map"):
        parse_mapping([item])


def test_one_column_cannot_feed_two():
    with pytest.raises(ConfigError, match="^invalid --map 'called_at=start': 'start' is "
                                          "already the source of another column$"):
        parse_mapping(["requested_at=start", "called_at=start"])


def test_unreadable_files_raise_schema_error(tmp_path):
    with pytest.raises(SchemaError, match="no such file"):
        read_table(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(SchemaError, match="empty"):
        read_table(tmp_path / "empty.csv")
    (tmp_path / "twice.csv").write_text("contact_id,called_at,outcome,phone,phone\n")
    with pytest.raises(SchemaError, match="'phone' appears twice"):
        read_table(tmp_path / "twice.csv")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(SchemaError, match="bad.parquet: not a Parquet file, or a damaged one"):
        read_table(tmp_path / "bad.parquet")
    text = "contact_id\tcalled_at\toutcome\nc1\t2026-06-01T10:00Z\tbusy\n"
    (tmp_path / "unicode.txt").write_bytes(text.encode("utf-16"))  # Excel's "Unicode text"
    with pytest.raises(SchemaError, match="UTF-16 text .* save it as 'CSV UTF-8'"):
        read_table(tmp_path / "unicode.txt")
    (tmp_path / "cut.csv.gz").write_bytes(gzip.compress(text.encode())[:30])
    with pytest.raises(SchemaError, match="cut.csv.gz: a damaged or truncated compressed"):
        read_table(tmp_path / "cut.csv.gz")
    with pytest.raises(SchemaError, match="a folder, not a file"):
        read_table(tmp_path)
    (tmp_path / "crm.xlsx").write_text("contact_id,called_at,outcome\n")  # named, not made
    with pytest.raises(SchemaError, match=r"\.xlsx is not supported; save it as CSV"):
        read_table(tmp_path / "crm.xlsx")
    # a Windows-1252 export: refused, not read with "Müller" and "Mäller" both as "M?ller"
    (tmp_path / "cp1252.csv").write_bytes("contact_id,called_at,outcome\nMüller,2026-06-01T10"
                                          ":00Z,busy\n".encode("cp1252"))
    with pytest.raises(SchemaError, match="cp1252.csv: not UTF-8 text .* 'CSV UTF-8'"):
        read_table(tmp_path / "cp1252.csv")


def test_columns_outside_the_contract_are_not_read(tmp_path):
    """Excel's unnamed trailing columns, a repeated note, a list column: ignored. A contract
    column twice is still an error, in Parquet as in CSV."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "excel.csv").write_text("contact_id,called_at,outcome,,,notes,notes\n"
                                        "c1,2026-06-01T10:00Z,busy,,,a,b\n")
    assert clean_history(read_table(tmp_path / "excel.csv"), key=KEY).n_clean == 1
    base = [pa.array(["c1", "c1"]), pa.array(["2026-06-01T10:00Z", "2026-06-02T10:00Z"]),
            pa.array(["busy", "answered"])]
    names = ["contact_id", "called_at", "outcome"]
    pq.write_table(pa.table([*base, pa.array([["x", "y"], ["x", "y"]]), pa.array(["a", "b"]),
                             pa.array(["c", "d"])], names=[*names, "tags", "note", "note"]),
                   tmp_path / "extra.parquet")
    result = clean_history(read_table(tmp_path / "extra.parquet"), key=KEY)
    assert result.n_clean == 2 and result.n_rejected_rows == 0
    pq.write_table(pa.table([*base, base[2]], names=[*names, "outcome"]),
                   tmp_path / "twice.parquet")
    with pytest.raises(SchemaError, match="twice.parquet: column 'outcome' appears twice"):
        read_table(tmp_path / "twice.parquet")


def test_whole_number_ids_with_gaps_keep_their_digits(tmp_path):
    """An integer column with a null, written outside pandas, reads as floats: 7.0 is "7"."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"contact_id": pa.array([7, None, 10], pa.int64()),
                             "called_at": ["2026-06-01T10:00Z"] * 3,
                             "outcome": ["busy"] * 3}), tmp_path / "ids.parquet")
    result = clean_history(read_table(tmp_path / "ids.parquet"), key=KEY)
    assert sorted(result.calls["contact_id"]) == ["10", "7"] and result.n_rejected_rows == 1


def test_semicolons_blank_lines_quoted_breaks_and_malformed_lines(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text(
        "contact_id;called_at;outcome;industry\n"  # line 1
        'a;2026-06-01T10:00Z;busy;"IT\nservices"\n'  # lines 2-3
        "\n"  # line 4
        "b;2026-06-01T10:00Z;busy;IT;+48512345678\n"  # line 5: one field too many
        "c;2026-06-01T10:00Z\n"  # line 6: too short, outcome missing
        "d;2026-06-01T10:00Z;busy\n"  # line 7: optional field missing is fine
    )
    result = load_history(path, key=KEY)
    assert _rejects(result) == [(5, "*"), (6, "outcome")]
    assert "malformed line" in result.rejects["reason"].iloc[0]
    assert "512345678" not in result.rejects.to_csv()
    assert result.calls["contact_id"].tolist() == ["a", "d"]
    _assert_accounted(result)


def test_plain_csv_rows_are_line_numbers(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("contact_id,called_at,outcome\na,2026-06-01T10:00Z,busy\nb,x,busy\n")
    assert _rejects(load_history(path, key=KEY)) == [(3, "called_at")]


# --- the accounting invariant on messy generated data ----------------------------------------

_POOLS = {
    "contact_id": ["c1", "c2", " c3 ", "", "  "],
    "called_at": ["2026-06-01T10:00:00Z", "2026-06-01T12:00:00+02:00", "2026-06-01 10:00",
                  "garbage", "", "2026-13-40T99:00Z", "9999-01-01T00:00Z", "2026-03-29T02:30"],
    "outcome": list(schema.OUTCOMES) + ["ANSWERED", " busy ", "picked up", ""],
    "call_id": ["k1", "k2", "k3", ""],
    "phone": ["+48 512 345 678", "0151 23456789", "12", "+1 800 555 0100", "", "abc"],
    "country": ["PL", "DE", "us", "XX", "", "Germany"],
    "timezone": ["Europe/Warsaw", "Mars/Base", "", "utc"],
    "industry": ["IT", "banking", "", "?!"],
    "subdivision": ["NY", "be", ""],
    "request_id": ["r1", ""],
    "requested_at": ["2026-06-01T09:00Z", "soon", ""],
    "attempt": ["1", "2.0", "0", "-1", "x", "", "1e30"],
    "duration_s": ["0", "12.5", "-3", "nan", "inf", "abc", ""],
}


@st.composite
def messy_frames(draw):
    optional = draw(st.lists(st.sampled_from(schema.OPTIONAL_COLUMNS), unique=True))
    columns = list(schema.REQUIRED_COLUMNS) + optional
    n = draw(st.integers(0, 25))
    text = st.text(max_size=6)
    rows = [
        {c: draw(st.one_of(st.sampled_from(_POOLS[c]), text)) for c in columns} for _ in range(n)
    ]
    return pd.DataFrame(rows, columns=columns, dtype="str"), draw(
        st.sampled_from([None, "Europe/Berlin"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messy_frames())
def test_every_row_is_accounted_for(case):
    frame, assume_tz = case
    result = clean_history(frame, assume_tz=assume_tz, key=KEY)
    _assert_accounted(result)
    assert tuple(result.calls.columns) == schema.CLEAN_COLUMNS
    assert result.calls["timezone"].notna().all()
    assert result.calls["called_at"].notna().all()
    assert set(result.calls["outcome"]) <= set(schema.OUTCOMES)
    assert set(result.rejects["row"]) <= set(range(2, len(frame) + 2))
    assert quality_report(result)["rows"]["input"] == len(frame)


def test_null_tokens_are_missing_but_na_is_namibia():
    frame = _frame(contact_id=["a", "b"], duration_s=["NULL", "N/A"], country=["NA", "None"],
                   requested_at=["null", ""])
    result = clean_history(frame, key=KEY)
    assert result.n_clean == 2
    assert result.calls["duration_s"].isna().all()
    assert result.calls["requested_at"].isna().all()
    assert result.calls.set_index("contact_id")["timezone"].to_dict() == {
        "a": "Africa/Windhoek", "b": "UTC"}


def test_compressed_csv(tmp_path):
    path = tmp_path / "h.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("contact_id,called_at,outcome\na,2026-06-01T10:00Z,busy\nb,x,busy\n")
    result = load_history(path, key=KEY)
    assert (result.n_clean, _rejects(result)) == (1, [(3, "called_at")])
