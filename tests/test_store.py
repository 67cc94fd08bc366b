"""The outcome store and the decision log (store.py) on real SQLite files, and on a real
PostgreSQL server (the ``pg_url`` fixture: ``CALLBACK_TIMING_TEST_PG`` or a throwaway one)."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from callback_timing.schema import CallbackTimingError, ConfigError
from callback_timing.store import (
    OUTCOME_COLUMNS,
    SCHEMA_VERSION,
    OutcomeStore,
    StoreError,
    database_url,
)
from tests.conftest import free_port

T = pd.Timestamp
RECEIVED = T("2026-06-02T08:00:00.250000Z")
PHONE = "+48601234567"
OPTIONAL = ("request_id", "attempt", "duration_s", "requested_at", "timezone", "country",
            "subdivision", "industry")


def _calls(ids, prefix: str = "", **columns) -> pd.DataFrame:
    """Clean calls with the required columns (one a minute from 2026-06-01 12:00 UTC)."""
    n = len(ids)
    base = {
        "call_id": [prefix + i for i in ids],
        "contact_id": [f"{prefix}c-{i}" for i in ids],
        "called_at": pd.date_range("2026-06-01T12:00:00Z", periods=n, freq="min"),
        "outcome": ["answered" if k % 2 == 0 else "no_answer" for k in range(n)],
    }
    return pd.DataFrame({**base, **columns})


def _full_calls(prefix: str = "") -> pd.DataFrame:
    """Two calls with every stored column filled, times given in non-UTC offsets."""
    calls = _calls(["f-1", "f-2"], prefix,
                   request_id=[f"{prefix}r-1", f"{prefix}r-2"],
                   attempt=pd.array([1, 3], dtype="Int64"),
                   duration_s=[12.5, 0.0],
                   timezone=["Europe/Warsaw", "America/New_York"],
                   country=["PL", "US"],
                   subdivision=[None, "NY"],
                   industry=["it", "retail"],
                   phone=[PHONE, PHONE])
    calls["called_at"] = pd.Series([T("2026-06-01T14:03:00.123456+02:00"),
                                    T("2026-06-01T08:30:00-04:00")], dtype=object)
    calls["requested_at"] = pd.to_datetime(
        ["2026-06-01T09:00:00Z", "2026-06-01T10:15:00Z"], utc=True
    ).tz_convert("Asia/Kolkata")
    return calls


def _sql(path: Path, query: str, *args) -> list[tuple]:
    """Rows of ``query`` read with a plain sqlite3 connection (not through the store)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(query, args).fetchall()
    finally:
        conn.close()


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "ct.db"


@pytest.fixture
def store(db):
    opened = OutcomeStore(db)
    yield opened
    opened.close()


# --- add_outcomes: stored now vs already stored ---------------------------------------------


def test_add_outcomes_returns_stored_now_and_already_stored(store):
    assert store.add_outcomes(_calls(["a", "b"])) == (["a", "b"], [])
    assert store.add_outcomes(_calls(["b", "c", "a", "d"])) == (["c", "d"], ["b", "a"])
    assert store.count_outcomes() == 4
    assert store.last_seq() == 4


def test_sending_the_same_outcomes_again_stores_nothing(store, db):
    calls = _full_calls()
    assert store.add_outcomes(calls, received_at=RECEIVED) == (["f-1", "f-2"], [])
    before = _sql(db, "SELECT * FROM outcomes ORDER BY seq")
    again = calls.assign(outcome="busy", duration_s=99.0)  # a resend never overwrites
    assert store.add_outcomes(again, received_at=RECEIVED + pd.Timedelta("1h")) == (
        [], ["f-1", "f-2"])
    assert _sql(db, "SELECT * FROM outcomes ORDER BY seq") == before
    assert store.count_outcomes() == 2


def test_an_id_repeated_in_one_batch_is_stored_once(store):
    calls = _calls(["a", "b", "a"], outcome=["answered", "busy", "voicemail"])
    new, old = store.add_outcomes(calls)
    assert new == ["a", "b"]
    assert old == ["a"]  # the repeat is reported as already stored
    stored = store.outcomes_after(0)
    assert stored["call_id"].tolist() == ["a", "b"]
    assert stored["outcome"].tolist() == ["answered", "busy"]  # the first one is kept


def test_an_empty_frame_stores_nothing(store, db):
    assert store.add_outcomes(_calls([])) == ([], [])
    assert _sql(db, "SELECT count(*) FROM outcomes") == [(0,)]
    frame = store.outcomes_after(0)
    assert len(frame) == 0
    assert {"seq", "received_at", *OUTCOME_COLUMNS} <= set(frame.columns)


def test_missing_optional_columns_are_stored_as_null(store, db):
    store.add_outcomes(_calls(["a"]), received_at=RECEIVED)
    nulls = _sql(db, f"SELECT {', '.join(f'{c} IS NULL' for c in OPTIONAL)} FROM outcomes")
    assert nulls == [(1,) * len(OPTIONAL)]
    row = store.outcomes_after(0).iloc[0]
    assert all(pd.isna(row[c]) for c in OPTIONAL)
    assert row["received_at"] == RECEIVED


def test_missing_values_in_given_columns_are_stored_as_null(store, db):
    calls = _calls(["a", "b"], attempt=pd.array([2, pd.NA], dtype="Int64"),
                   duration_s=[float("nan"), 4.0], country=["PL", None],
                   requested_at=pd.to_datetime(["2026-06-01T09:00:00Z", None], utc=True))
    store.add_outcomes(calls)
    assert _sql(db, "SELECT call_id, attempt, duration_s, country, requested_at IS NULL "
                    "FROM outcomes ORDER BY seq") == [("a", 2, None, "PL", 0),
                                                     ("b", None, 4.0, None, 1)]


# --- durability ---------------------------------------------------------------------------


def test_outcomes_are_read_back_by_a_new_store_and_by_sqlite3(db):
    first = OutcomeStore(db)
    first.add_outcomes(_full_calls(), received_at=RECEIVED)
    # committed when add_outcomes returns: another connection sees it before any close
    assert _sql(db, "SELECT call_id, contact_id, outcome, answered FROM outcomes "
                    "ORDER BY seq") == [("f-1", "c-f-1", "answered", 1),
                                        ("f-2", "c-f-2", "no_answer", 0)]
    written = first.outcomes_after(0)
    first.close()

    second = OutcomeStore(db)
    try:
        read = second.outcomes_after(0)
        pd.testing.assert_frame_equal(read, written)
        assert second.add_outcomes(_full_calls()) == ([], ["f-1", "f-2"])
        assert second.add_outcomes(_calls(["g"])) == (["g"], [])
        assert second.last_seq() == 3
    finally:
        second.close()


def test_the_sqlite_file_is_in_wal_mode_with_full_sync(store, db):
    assert _sql(db, "PRAGMA journal_mode") == [("wal",)]
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_two_stores_on_one_file_share_the_outcomes(db):
    one, two = OutcomeStore(db), OutcomeStore(db)
    try:
        assert one.add_outcomes(_calls(["a"])) == (["a"], [])
        assert two.add_outcomes(_calls(["a", "b"])) == (["b"], ["a"])
        assert one.outcomes_after(1)["call_id"].tolist() == ["b"]
    finally:
        one.close()
        two.close()


# --- reading: seq, called_after, times ----------------------------------------------------


def test_outcomes_after_filters_by_seq_in_storing_order(store):
    store.add_outcomes(_calls(["z", "y"]))
    store.add_outcomes(_calls(["x", "w"]))
    frame = store.outcomes_after(0)
    assert frame["seq"].tolist() == [1, 2, 3, 4]
    assert frame["call_id"].tolist() == ["z", "y", "x", "w"]
    assert store.outcomes_after(2)["call_id"].tolist() == ["x", "w"]
    assert store.outcomes_after(1, limit=2)["seq"].tolist() == [2, 3]
    assert len(store.outcomes_after(4)) == 0


def test_called_after_keeps_only_later_calls(store):
    calls = _calls(["a", "b", "c", "d"])  # 12:00, 12:01, 12:02, 12:03 UTC
    calls["called_at"] = calls["called_at"].iloc[::-1].to_numpy()  # a 12:03 ... d 12:00
    store.add_outcomes(calls)
    assert store.outcomes_after(0, called_after=T("2026-06-01T12:01:00Z"))[
        "call_id"].tolist() == ["a", "b"]  # strictly later, in storing order (not by time)
    # the same instant given in another zone
    assert store.outcomes_after(0, called_after=T("2026-06-01T14:01:00+02:00"))[
        "call_id"].tolist() == ["a", "b"]
    assert store.outcomes_after(1, called_after=T("2026-06-01T12:01:00Z"))[
        "call_id"].tolist() == ["b"]
    assert len(store.outcomes_after(0, called_after=T("2026-06-01T12:03:00Z"))) == 0


def test_times_come_back_utc_aware_and_equal_to_what_was_stored(store, db):
    calls = _full_calls()
    store.add_outcomes(calls, received_at=T("2026-06-02T10:00:00.250000+02:00"))
    frame = store.outcomes_after(0)
    for column in ("called_at", "requested_at", "received_at"):
        assert str(frame[column].dt.tz) == "UTC", column
    assert frame["called_at"].tolist() == [T("2026-06-01T12:03:00.123456Z"),
                                           T("2026-06-01T12:30:00Z")]
    assert frame["called_at"].tolist() == pd.to_datetime(calls["called_at"], utc=True).tolist()
    assert frame["requested_at"].tolist() == [T("2026-06-01T09:00:00Z"),
                                              T("2026-06-01T10:15:00Z")]
    assert frame["received_at"].tolist() == [RECEIVED, RECEIVED]
    # and the file holds UTC wall times, whatever zone the input was in
    assert [r[0][:19] for r in _sql(db, "SELECT called_at FROM outcomes ORDER BY seq")] == [
        "2026-06-01 12:03:00", "2026-06-01 12:30:00"]


def test_the_other_columns_come_back_as_stored(store):
    store.add_outcomes(_full_calls())
    frame = store.outcomes_after(0)
    assert frame[["request_id", "timezone", "country", "industry"]].to_dict("records") == [
        {"request_id": "r-1", "timezone": "Europe/Warsaw", "country": "PL", "industry": "it"},
        {"request_id": "r-2", "timezone": "America/New_York", "country": "US",
         "industry": "retail"},
    ]
    assert pd.isna(frame["subdivision"].iloc[0])
    assert frame["subdivision"].iloc[1] == "NY"
    assert frame["attempt"].tolist() == [1, 3]
    assert frame["duration_s"].tolist() == [12.5, 0.0]


def test_answered_is_derived_from_outcome(store, db):
    outcomes = ["answered", "no_answer", "busy", "voicemail"]
    calls = _calls(["a", "b", "c", "d"], outcome=outcomes,
                   answered=[0, 1, 1, 1])  # a wrong answered column in the input is ignored
    store.add_outcomes(calls)
    frame = store.outcomes_after(0)
    assert frame["answered"].tolist() == [1, 0, 0, 0]
    assert frame["answered"].dtype == "int8"
    assert _sql(db, "SELECT answered FROM outcomes ORDER BY seq") == [(1,), (0,), (0,), (0,)]


# --- no phone number is stored ------------------------------------------------------------


def test_no_phone_number_is_stored_anywhere(store, db):
    calls = _full_calls().assign(phone_hash="h" * 16, phone_e164=PHONE)
    store.add_outcomes(calls)
    store.log_decisions([_decision("r-1")])
    tables = [name for (name,) in _sql(db, "SELECT name FROM sqlite_master "
                                           "WHERE type = 'table'")]
    assert {"ct_meta", "outcomes", "decisions"} <= set(tables)
    digits = PHONE.lstrip("+")
    for table in tables:
        columns = [info[1] for info in _sql(db, f"PRAGMA table_info({table})")]
        assert not [c for c in columns if "phone" in c.lower()], table
        for row in _sql(db, f"SELECT * FROM {table}"):
            assert not [v for v in row if isinstance(v, str) and digits in v], (table, row)
    assert _sql(db, "SELECT count(*) FROM outcomes") == [(2,)]
    assert "phone" not in " ".join(store.outcomes_after(0).columns)


# --- schema version -----------------------------------------------------------------------


def test_a_fresh_database_records_the_schema_version_and_an_id(store, db):
    assert store.schema_version == SCHEMA_VERSION
    meta = dict(_sql(db, "SELECT key, value FROM ct_meta"))
    assert set(meta) == {"schema_version", "store_id", "generation", "opt_outs"}
    assert (meta["schema_version"], meta["store_id"]) == (str(SCHEMA_VERSION), store.store_id)
    assert len(store.store_id) == 32 and store.store_id != OutcomeStore("sqlite://").store_id


def test_reopening_keeps_one_schema_version_row_and_the_id(db):
    first = OutcomeStore(db)
    first.close()
    reopened = OutcomeStore(db)
    reopened.close()
    assert reopened.schema_version == SCHEMA_VERSION
    assert reopened.store_id == first.store_id
    assert _sql(db, "SELECT count(*) FROM ct_meta") == [(4,)]


def test_a_version_1_store_is_upgraded_and_keeps_its_rows(db):
    """A store written by schema version 1 (no campaign or team in the decision log, no
    store id) opens: the columns are added, the rows kept, new rows take labels."""
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE ct_meta (key VARCHAR(64) PRIMARY KEY, value VARCHAR(256) "
                     "NOT NULL)")
        conn.execute("INSERT INTO ct_meta VALUES ('schema_version', '1')")
        conn.execute("CREATE TABLE decisions (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                     "request_id TEXT NOT NULL, contact_id TEXT NOT NULL, arm VARCHAR(16) NOT "
                     "NULL, source VARCHAR(16) NOT NULL, fallback_reason VARCHAR(256), "
                     "model_version VARCHAR(64), policy VARCHAR(16), urgency VARCHAR(16), "
                     "now DATETIME NOT NULL, requested_at DATETIME, window_start DATETIME, "
                     "window_end DATETIME, p_answer FLOAT, score FLOAT, windows INTEGER NOT "
                     "NULL, explored BOOLEAN NOT NULL, propensity FLOAT, decided_at DATETIME "
                     "NOT NULL)")
        conn.execute("INSERT INTO decisions (request_id, contact_id, arm, source, now, "
                     "windows, explored, decided_at) VALUES ('r-old', 'c-1', 'model', "
                     "'model', '2026-06-01 10:00:00.000000', 3, 0, "
                     "'2026-06-01 10:00:00.000000')")
    store = OutcomeStore(db)
    assert store.schema_version == SCHEMA_VERSION and store.store_id
    store.log_decisions([{"request_id": "r-new", "contact_id": "c-2", "arm": "control",
                          "source": "rules", "now": "2026-06-02T10:00:00Z", "windows": 1,
                          "explored": False, "decided_at": "2026-06-02T10:00:00Z",
                          "campaign": "spring-fair", "team": "north"}])
    log = store.decisions_frame()
    store.close()
    assert log["request_id"].tolist() == ["r-old", "r-new"]
    assert log["campaign"].isna().tolist() == [True, False] and log["team"].isna()[0]
    assert (log["campaign"].iloc[1], log["team"].iloc[1]) == ("spring-fair", "north")
    assert OutcomeStore(db).schema_version == SCHEMA_VERSION  # and again: nothing to do


def test_a_database_of_a_newer_schema_version_is_refused(db):
    OutcomeStore(db).close()
    newer = SCHEMA_VERSION + 1
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE ct_meta SET value = ? WHERE key = 'schema_version'", (str(newer),))
    conn.close()
    with pytest.raises(StoreError, match=rf"has schema version {newer}, newer than this "
                                         rf"callback-timing's {SCHEMA_VERSION}: upgrade"):
        OutcomeStore(db)


# --- database_url and safe_url ------------------------------------------------------------


def test_a_plain_path_becomes_an_absolute_sqlite_url_and_its_folder_is_made(tmp_path,
                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = database_url("state/deep/ct.db")
    assert url == f"sqlite:///{tmp_path.resolve()}/state/deep/ct.db"
    assert (tmp_path / "state" / "deep").is_dir()
    assert not (tmp_path / "state" / "deep" / "ct.db").exists()  # only the folder
    assert database_url(tmp_path / "x.db") == f"sqlite:///{tmp_path.resolve()}/x.db"


def test_a_home_relative_path_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert database_url("~/ct/ct.db") == f"sqlite:///{tmp_path.resolve()}/ct/ct.db"
    assert (tmp_path / "ct").is_dir()


def test_a_store_opened_by_path_makes_its_folder(tmp_path):
    store = OutcomeStore(tmp_path / "new" / "ct.db")
    store.close()
    assert store.url == f"sqlite:///{tmp_path.resolve()}/new/ct.db"
    assert (tmp_path / "new" / "ct.db").is_file()


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u:pw@h:5433/db", "postgresql+psycopg://u:pw@h:5433/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2://u@h/db"),
        ("sqlite:///relative.db", "sqlite:///relative.db"),
        ("sqlite://", "sqlite://"),
    ],
)
def test_urls_are_kept_and_postgresql_uses_psycopg3(given, url):
    assert database_url(given) == url


def test_safe_url_hides_the_password():
    store = OutcomeStore.__new__(OutcomeStore)  # safe_url only reads .url
    store.url = database_url("postgresql://ct:s3cret@db.example:5432/ct")
    assert "s3cret" not in store.safe_url
    assert store.safe_url == "postgresql+psycopg://ct:***@db.example:5432/ct"


def test_an_unreachable_postgresql_names_it_without_the_password():
    port = free_port()  # nothing listens there: refused at once
    with pytest.raises(StoreError) as caught:
        OutcomeStore(f"postgresql://ct:s3cret@127.0.0.1:{port}/ct?connect_timeout=5")
    message = str(caught.value)
    assert message.startswith(f"--db: cannot open the outcome store postgresql+psycopg://"
                              f"ct:***@127.0.0.1:{port}/ct")
    assert "s3cret" not in message
    assert "\n" not in message


# --- a bad --db ---------------------------------------------------------------------------


def test_an_unknown_driver_is_a_config_error():
    with pytest.raises(ConfigError) as caught:
        OutcomeStore("nosuchdriver://x")
    message = str(caught.value)  # the project's words, then SQLAlchemy's (its own wording)
    assert message.startswith("--db: cannot use nosuchdriver://x: ") and "\n" not in message
    assert "nosuchdriver" in message.removeprefix("--db: cannot use nosuchdriver://x: ")


def test_a_folder_as_db_is_a_store_error(tmp_path):
    with pytest.raises(StoreError) as caught:
        OutcomeStore(tmp_path)
    assert str(caught.value) == (f"--db: cannot open the outcome store "
                                 f"sqlite:///{tmp_path.resolve()}: unable to open database file")


def test_a_sqlite_url_inside_a_regular_file_is_a_store_error(tmp_path):
    (tmp_path / "plain").write_text("text\n")
    url = f"sqlite:///{tmp_path}/plain/ct.db"
    with pytest.raises(StoreError) as caught:
        OutcomeStore(url)
    assert str(caught.value) == (f"--db: cannot open the outcome store {url}: "
                                 f"unable to open database file")


@pytest.mark.parametrize("inside", ["ct.db", "sub/ct.db"])  # FileExistsError, NotADirectory
def test_a_path_inside_a_regular_file_is_a_clean_error(tmp_path, inside):
    (tmp_path / "plain").write_text("text\n")
    with pytest.raises(CallbackTimingError, match=r"^--db: [^\n]*$"):
        OutcomeStore(tmp_path / "plain" / inside)


def test_a_file_that_is_not_a_database_is_a_clean_error(tmp_path):
    (tmp_path / "notes.txt").write_text("these are notes, not a SQLite database\n" * 4)
    with pytest.raises(CallbackTimingError, match=r"^--db: [^\n]*not a database[^\n]*$"):
        OutcomeStore(tmp_path / "notes.txt")


def test_an_unloadable_driver_error_hides_the_password():
    with pytest.raises(ConfigError, match=r"^--db: cannot use ") as caught:
        OutcomeStore("nosuchdriver://ct:s3cret@db.example/ct")
    assert "s3cret" not in str(caught.value)


# --- decision log -------------------------------------------------------------------------


def _decision(request_id: str, **fields) -> dict:
    row = {
        "request_id": request_id, "contact_id": "c-1", "arm": "model", "source": "model",
        "fallback_reason": None, "model_version": "v7", "policy": "auto",
        "urgency": "standard", "now": T("2026-06-01T09:00:00Z"),
        "requested_at": T("2026-06-01T11:00:00+02:00"),
        "window_start": T("2026-06-01T10:00:00Z"), "window_end": T("2026-06-01T11:00:00Z"),
        "p_answer": 0.42, "score": 0.4, "windows": 3, "explored": False, "propensity": 0.9,
        "decided_at": T("2026-06-01T09:00:00.123456Z"),
    }
    return {**row, **fields}


def test_decisions_round_trip(store):
    assert len(store.decisions_frame()) == 0
    store.log_decisions([])
    store.log_decisions([
        _decision("r-1", window_start=T("2026-06-01T12:00:00+02:00"),
                  window_end=T("2026-06-01T08:00:00-05:00")),
        _decision("r-2", arm="control", source="desk", fallback_reason="no model",
                  window_start=None, window_end=None, p_answer=None, score=None, windows=0,
                  explored=True, propensity=None),
    ])
    store.log_decisions([_decision("r-3", contact_id="c-2")])
    frame = store.decisions_frame()
    assert frame["seq"].tolist() == [1, 2, 3]
    assert frame["request_id"].tolist() == ["r-1", "r-2", "r-3"]
    for column in ("now", "requested_at", "window_start", "window_end", "decided_at"):
        assert str(frame[column].dt.tz) == "UTC", column
    first, second = frame.iloc[0], frame.iloc[1]
    assert first["window_start"] == T("2026-06-01T10:00:00Z")
    assert first["window_end"] == T("2026-06-01T13:00:00Z")
    assert first["requested_at"] == T("2026-06-01T09:00:00Z")
    assert first["decided_at"] == T("2026-06-01T09:00:00.123456Z")
    assert (first["arm"], first["windows"], bool(first["explored"])) == ("model", 3, False)
    assert (first["p_answer"], first["score"], first["propensity"]) == (0.42, 0.4, 0.9)
    assert pd.isna(second["window_start"]) and pd.isna(second["window_end"])
    assert pd.isna(second["p_answer"]) and pd.isna(second["propensity"])
    assert (second["arm"], second["source"], second["fallback_reason"]) == (
        "control", "desk", "no model")
    assert (second["windows"], bool(second["explored"])) == (0, True)


def test_decisions_are_read_back_by_a_new_store(db):
    first = OutcomeStore(db)
    first.log_decisions([_decision("r-1"), _decision("r-2", window_start=None,
                                                     window_end=None)])
    first.close()
    second = OutcomeStore(db)
    try:
        frame = second.decisions_frame()
    finally:
        second.close()
    assert frame["request_id"].tolist() == ["r-1", "r-2"]
    assert frame["window_start"].tolist()[0] == T("2026-06-01T10:00:00Z")
    assert pd.isna(frame["window_start"].iloc[1])
    assert _sql(db, "SELECT request_id, window_start IS NULL FROM decisions ORDER BY seq") == [
        ("r-1", 0), ("r-2", 1)]


# --- PostgreSQL ---------------------------------------------------------------------------

def test_postgresql_store_is_idempotent_and_reads_back(pg_url):
    run = f"t{uuid.uuid4().hex[:12]}-"  # this run's ids: the database may hold older runs
    first = OutcomeStore(pg_url)
    second = None
    try:
        assert first.dialect == "postgresql"
        assert first.url.startswith("postgresql+psycopg://")
        assert first.schema_version == SCHEMA_VERSION
        columns = {t: [c["name"] for c in sa.inspect(first.engine).get_columns(t)]
                   for t in ("ct_meta", "outcomes", "decisions")}
        assert not [c for cs in columns.values() for c in cs if "phone" in c.lower()]
        start = first.last_seq()

        calls = _full_calls(run)
        ids = [f"{run}f-1", f"{run}f-2"]
        assert first.add_outcomes(calls, received_at=RECEIVED) == (ids, [])
        assert first.add_outcomes(calls) == ([], ids)
        bare = _calls(["a", "b", "a"], run)
        assert first.add_outcomes(bare, received_at=RECEIVED) == (
            [f"{run}a", f"{run}b"], [f"{run}a"])

        second = OutcomeStore(pg_url)  # another server instance on the same database
        assert second.add_outcomes(calls) == ([], ids)
        read = second.outcomes_after(start)
        read = read[read["call_id"].str.startswith(run)]
        assert read["call_id"].tolist() == [*ids, f"{run}a", f"{run}b"]
        assert read["seq"].is_monotonic_increasing
        assert read["called_at"].tolist()[:2] == [T("2026-06-01T12:03:00.123456Z"),
                                                  T("2026-06-01T12:30:00Z")]
        assert read["requested_at"].tolist()[:2] == [T("2026-06-01T09:00:00Z"),
                                                     T("2026-06-01T10:15:00Z")]
        assert str(read["called_at"].dt.tz) == "UTC"
        assert (read["received_at"] == RECEIVED).all()
        assert read["answered"].tolist() == [1, 0, 1, 0]
        assert read["attempt"].tolist()[:2] == [1, 3]
        assert all(pd.isna(read.iloc[2][c]) for c in OPTIONAL)
        later = second.outcomes_after(start, called_after=T("2026-06-01T14:20:00+02:00"))
        assert later[later["call_id"].str.startswith(run)]["call_id"].tolist() == [ids[1]]

        first.log_decisions([_decision(f"{run}r-1"),
                             _decision(f"{run}r-2", window_start=None, window_end=None)])
        log = second.decisions_frame()
        log = log[log["request_id"].str.startswith(run)]
        assert log["request_id"].tolist() == [f"{run}r-1", f"{run}r-2"]
        assert log["window_start"].iloc[0] == T("2026-06-01T10:00:00Z")
        assert pd.isna(log["window_start"].iloc[1])
        assert log["decided_at"].iloc[0] == T("2026-06-01T09:00:00.123456Z")
    finally:
        first.close()
        if second is not None:
            second.close()


def test_postgresql_a_late_committing_lower_seq_is_found_by_the_received_window(pg_url):
    """seq is taken at INSERT, not at COMMIT: a reader past seq N can miss a lower seq that
    commits later. Readers that follow the store (server instances) read an overlapping
    window of received times instead, which finds it."""
    from callback_timing.store import outcomes

    run = f"t{uuid.uuid4().hex[:12]}-"
    one, two = OutcomeStore(pg_url), OutcomeStore(pg_url)
    try:
        start = two.last_seq()
        slow = _calls(["slow"], run).assign(answered=1, received_at=RECEIVED.tz_localize(None))
        slow["called_at"] = slow["called_at"].dt.tz_localize(None)
        with one.engine.connect() as conn:  # instance one is inside add_outcomes: not committed
            conn.execute(outcomes.insert(), slow.to_dict("records"))
            two.add_outcomes(_calls(["fast"], run))  # instance two stores and commits
            seen = two.outcomes_after(start)  # a third instance syncs
            seen = seen[seen["call_id"].str.startswith(run)]
            assert seen["call_id"].tolist() == [f"{run}fast"]
            conn.commit()  # instance one commits its (lower) seq
        after = two.outcomes_after(int(seen["seq"].max()))
        assert f"{run}slow" not in after["call_id"].tolist()  # by seq: missed
        window = two.outcomes_after(0, received_since=RECEIVED - pd.Timedelta(seconds=30))
        assert {f"{run}slow", f"{run}fast"} <= set(window["call_id"])  # by received time
    finally:
        one.close()
        two.close()


def test_a_new_sqlite_store_is_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "o.db"
    store = OutcomeStore(path)
    store.add_outcomes(pd.DataFrame([{
        "call_id": "m-1", "contact_id": "c-1", "called_at": pd.Timestamp("2026-06-01T10:00Z"),
        "outcome": "busy"}]))
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()
             if p.name.startswith("o.db")}
    store.close()
    assert modes["o.db"] == 0o600 and set(modes.values()) == {0o600}, modes
