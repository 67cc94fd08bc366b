"""The outcome store and the decision log: the only module that talks to the database.

SQLAlchemy Core on SQLite in WAL mode by default (one file, ``synchronous=FULL``: a commit is
on disk before the server answers) or on PostgreSQL when given a URL such as
``postgresql://user@host/db`` (several server instances share it). The schema is versioned
in the ``ct_meta`` table, which also holds the store's random ``store_id`` (what a cache of
figures derived from the store, such as the dashboard's, is tied to). Rows are only appended;
a reader that keeps what it read can count them to see whether any went.

- ``outcomes``: one row per call, unique by ``call_id`` (``contact_id@called_at`` when a
  call has none), so sending an outcome twice stores it once. No phone number is stored:
  only the country and time zone derived from it.
- ``decisions``: one row per ``/rank`` answer (request, contact, arm, source, fallback reason,
  model version, the chosen window), what the ROI dashboard measures.

Examples
--------
>>> store = OutcomeStore("sqlite://")           # in memory
>>> store.schema_version == SCHEMA_VERSION
True
>>> import pandas as pd
>>> calls = pd.DataFrame({"call_id": ["x-1"], "contact_id": ["c-1"],
...     "called_at": pd.to_datetime(["2026-06-01T12:03:00Z"]), "outcome": ["no_answer"]})
>>> store.add_outcomes(calls)                  # (stored now, already stored)
(['x-1'], [])
>>> store.add_outcomes(calls)
([], ['x-1'])
>>> store.outcomes_after(0)[["call_id", "contact_id", "answered"]].to_dict("records")
[{'call_id': 'x-1', 'contact_id': 'c-1', 'answered': 0}]
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from callback_timing.schema import CallbackTimingError, ConfigError

logger = logging.getLogger(__name__)

#: Version of the tables below; a database written by a newer version is refused, an older
#: one is brought up to date as it is opened (:data:`ADDED_COLUMNS`).
SCHEMA_VERSION = 3

metadata = sa.MetaData()


def _seq() -> sa.Column:
    """A table's sequence number (SQLite's rowid alias, a bigint elsewhere)."""
    return sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                     primary_key=True, autoincrement=True)


meta = sa.Table(
    "ct_meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)

outcomes = sa.Table(
    "outcomes", metadata,
    _seq(),
    sa.Column("call_id", sa.Text, nullable=False, unique=True),
    sa.Column("contact_id", sa.Text, nullable=False, index=True),
    sa.Column("request_id", sa.Text, index=True),
    sa.Column("attempt", sa.Integer),
    sa.Column("called_at", sa.DateTime, nullable=False, index=True),  # UTC
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("answered", sa.SmallInteger, nullable=False),
    sa.Column("duration_s", sa.Float),
    sa.Column("requested_at", sa.DateTime),  # UTC
    sa.Column("timezone", sa.String(64)),
    sa.Column("country", sa.String(2)),
    sa.Column("subdivision", sa.String(16)),
    sa.Column("industry", sa.String(64)),
    sa.Column("received_at", sa.DateTime, nullable=False, index=True),  # UTC
)

decisions = sa.Table(
    "decisions", metadata,
    _seq(),
    sa.Column("request_id", sa.Text, nullable=False, index=True),
    sa.Column("contact_id", sa.Text, nullable=False, index=True),
    sa.Column("arm", sa.String(16), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("fallback_reason", sa.String(256)),
    sa.Column("model_version", sa.String(64)),
    sa.Column("policy", sa.String(16)),
    sa.Column("urgency", sa.String(16)),
    sa.Column("now", sa.DateTime, nullable=False),  # UTC
    sa.Column("requested_at", sa.DateTime),  # UTC
    sa.Column("window_start", sa.DateTime),  # UTC; the chosen (first) window
    sa.Column("window_end", sa.DateTime),
    sa.Column("p_answer", sa.Float),
    sa.Column("score", sa.Float),
    sa.Column("windows", sa.Integer, nullable=False),
    sa.Column("explored", sa.Boolean, nullable=False),
    sa.Column("propensity", sa.Float),
    sa.Column("decided_at", sa.DateTime, nullable=False),  # UTC
    sa.Column("campaign", sa.String(128)),  # the dialer's labels, for the dashboard's filters
    sa.Column("team", sa.String(128)),
    sa.Column("horizon_hours", sa.Float),  # the request's horizon: an off-policy replay's
)

#: Contacts erased (``DELETE /contacts/{id}``, :meth:`OutcomeStore.erase_contact`), as keyed
#: pseudonyms of their ``contact_id`` (the id itself is not kept): what ``train`` leaves out.
forgotten = sa.Table(
    "forgotten", metadata,
    sa.Column("contact_hash", sa.String(64), primary_key=True),
    sa.Column("forgotten_at", sa.DateTime, nullable=False),  # UTC
)

#: Contacts who opted out of AI timing: ranked as a traditional callback, without their
#: history.
opt_outs = sa.Table(
    "opt_outs", metadata,
    sa.Column("contact_id", sa.Text, primary_key=True),
    sa.Column("since", sa.DateTime, nullable=False),  # UTC
)

#: Anonymised aggregates of purged calls, kept without limit: calls and answers per month
#: (UTC), industry, country and contact-local weekday (Mon=0) and hour. No contact, request
#: or call id.
answer_patterns = sa.Table(
    "answer_patterns", metadata,
    sa.Column("month", sa.String(7), nullable=False),
    sa.Column("industry", sa.String(64), nullable=False),
    sa.Column("country", sa.String(2), nullable=False),
    sa.Column("weekday", sa.SmallInteger, nullable=False),
    sa.Column("hour", sa.SmallInteger, nullable=False),
    sa.Column("calls", sa.BigInteger, nullable=False),
    sa.Column("answered", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("month", "industry", "country", "weekday", "hour"),
)

#: Columns added since schema version 1, per version: (table, column).
ADDED_COLUMNS = {2: (("decisions", "campaign"), ("decisions", "team")),
                 3: (("decisions", "horizon_hours"),)}

#: Columns of a clean call history (:mod:`callback_timing.data`) the store keeps.
OUTCOME_COLUMNS = ("call_id", "contact_id", "request_id", "attempt", "called_at", "outcome",
                   "answered", "duration_s", "requested_at", "timezone", "country",
                   "subdivision", "industry")
_TIMES = ("called_at", "requested_at")


class StoreError(CallbackTimingError):
    """The database cannot be opened or is of an unknown schema version."""


def database_url(db: str | Path) -> str:
    """The SQLAlchemy URL of ``--db``: a URL as given (``postgresql://`` uses psycopg 3),
    anything else a SQLite file path (its folder is created)."""
    text = str(db)
    if "://" not in text:
        path = Path(text).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path.resolve()}"
    if text.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + text.split("://", 1)[1]
    return text


def _hide_password(url: str) -> str:
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url.split("@")[-1] if "@" in url else url


def _naive_utc_one(value) -> datetime | None:
    """One instant as a naive UTC ``datetime`` (the stored form); fast, no pandas."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return pd.Timestamp(value).to_pydatetime() if isinstance(value, pd.Timestamp) else value
    utc = value.astimezone(UTC).replace(tzinfo=None)
    return utc.to_pydatetime() if isinstance(utc, pd.Timestamp) else utc


def _naive_utc(values: pd.Series) -> list:
    """UTC timestamps as naive ``datetime`` objects (``None`` for missing)."""
    utc = pd.to_datetime(values, utc=True).dt.tz_localize(None)
    return [None if pd.isna(v) else v.to_pydatetime() for v in utc]


def _utc(values) -> pd.Series:
    return pd.to_datetime(pd.Series(values, dtype="datetime64[us]"), utc=True)


class OutcomeStore:
    """Outcomes of calls and the decision log in one database (see the module docstring).

    Parameters
    ----------
    db : a SQLite file path or a SQLAlchemy URL (``sqlite://`` alone: in memory).
    """

    def __init__(self, db: str | Path) -> None:
        try:
            self.url = database_url(db)
        except OSError as exc:
            raise StoreError(f"--db: cannot create the folder of {db!s}: "
                             f"{exc.strerror or exc}") from None
        memory = self.url in ("sqlite://", "sqlite:///:memory:")
        options = ({"poolclass": sa.pool.StaticPool,  # one database for every thread
                    "connect_args": {"check_same_thread": False}} if memory else
                   {"pool_pre_ping": True})
        options["hide_parameters"] = True  # errors must not carry contact ids into logs
        try:
            self.engine = sa.create_engine(self.url, **options)
        except (sa.exc.ArgumentError, ModuleNotFoundError) as exc:
            shown = _hide_password(self.url)
            raise ConfigError(f"--db: cannot use {shown}: "
                              f"{str(exc).replace(self.url, shown)}") from None
        self.dialect = self.engine.dialect.name
        file = (Path(self.url[len("sqlite:///"):]) if self.url.startswith("sqlite:///")
                and not memory else None)
        new = file is not None and not file.exists()
        if self.dialect == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        if new:  # personal data: the owner's alone (SQLite gives its -wal/-shm the same mode)
            with contextlib.suppress(OSError):
                file.touch(mode=0o600)
        try:
            self._create()
        except sa.exc.DBAPIError as exc:  # unreachable, not a database, no permission, ...
            self.engine.dispose()
            reason = str(exc.orig).splitlines()[0] if exc.orig else str(exc)
            raise StoreError(f"--db: cannot open the outcome store {self.safe_url}: "
                             f"{reason}") from None

    @property
    def safe_url(self) -> str:
        """The database URL without its password (for logs and ``/info``)."""
        return sa.make_url(self.url).render_as_string(hide_password=True)

    def _create(self) -> None:
        metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version"))
            found = row.scalar()
            if found is None:
                conn.execute(meta.insert().values(key="schema_version",
                                                  value=str(SCHEMA_VERSION)))
            elif int(found) > SCHEMA_VERSION:
                raise StoreError(f"the outcome store {self.safe_url} has schema version "
                                 f"{found}, newer than this callback-timing's "
                                 f"{SCHEMA_VERSION}: upgrade callback-timing")
            elif int(found) < SCHEMA_VERSION:
                self._upgrade(conn, int(found))
        with self.engine.begin() as conn:  # a store made before these rows gets them now
            for key in ("store_id", "generation", "opt_outs"):
                if conn.execute(sa.select(meta.c.value).where(meta.c.key == key)
                                ).scalar() is None:
                    conn.execute(self._insert(meta).on_conflict_do_nothing(
                        index_elements=["key"]) if self.dialect in ("sqlite", "postgresql")
                        else meta.insert(), {"key": key, "value": uuid.uuid4().hex})
            self.store_id = conn.execute(sa.select(meta.c.value)
                                         .where(meta.c.key == "store_id")).scalar_one()

    def _upgrade(self, conn, found: int) -> None:
        """Bring a store of an older schema version up to date (in the opening transaction;
        rows are kept)."""
        present = {t: {c["name"] for c in sa.inspect(conn).get_columns(t)}
                   for t in ("decisions", "outcomes")}
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for table, column in ADDED_COLUMNS.get(version, ()):
                if column in present[table]:
                    continue
                col = metadata.tables[table].c[column]
                kind = col.type.compile(dialect=self.engine.dialect)
                guard = "IF NOT EXISTS " if self.dialect == "postgresql" else ""  # two servers
                try:
                    conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {guard}{column} "
                                         f"{kind}")
                except sa.exc.OperationalError as exc:  # SQLite: another server was first
                    if "duplicate column" not in str(exc.orig):
                        raise
        conn.execute(meta.update().where(meta.c.key == "schema_version")
                     .values(value=str(SCHEMA_VERSION)))
        logger.info("outcome store: schema version %d -> %d", found, SCHEMA_VERSION)

    @property
    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(meta.c.value)
                                    .where(meta.c.key == "schema_version")).scalar())

    def _insert(self, table: sa.Table):
        return (sqlite.insert(table) if self.dialect == "sqlite"
                else postgresql.insert(table) if self.dialect == "postgresql"
                else sa.insert(table))

    # --- outcomes --------------------------------------------------------------------------

    def add_outcomes(self, calls: pd.DataFrame, received_at: pd.Timestamp | None = None
                     ) -> tuple[list[str], list[str]]:
        """Store clean calls; returns the ``call_id`` of those stored now and of those already
        stored (or repeated in ``calls``). Committed (durable) when this returns.

        ``calls`` has the clean history's columns (:data:`OUTCOME_COLUMNS`; the missing
        ones are stored empty) and a ``call_id`` on every row.
        """
        if not len(calls):
            return [], []
        received = _naive_utc_one(received_at or pd.Timestamp.now(tz="UTC"))
        frame = calls.reindex(columns=list(OUTCOME_COLUMNS))
        frame["answered"] = (frame["outcome"] == "answered").astype(int)
        repeated = frame["call_id"].duplicated().to_numpy()
        frame = frame.loc[~repeated]
        rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
        for row, *times in zip(rows, *(_naive_utc(frame[c]) for c in _TIMES), strict=True):
            row.update(zip(_TIMES, times, strict=True), received_at=received)
            if row["attempt"] is not None:
                row["attempt"] = int(row["attempt"])
        stmt = (self._insert(outcomes).on_conflict_do_nothing(index_elements=["call_id"])
                if self.dialect in ("sqlite", "postgresql") else outcomes.insert())
        with self.engine.begin() as conn:
            stored = {r[0] for r in conn.execute(stmt.returning(outcomes.c.call_id), rows)}
        ids = frame["call_id"].tolist()
        new = [c for c in ids if c in stored]
        old = [c for c in ids if c not in stored] + calls["call_id"][repeated].tolist()
        return new, old

    def outcomes_after(self, seq: int = 0, limit: int | None = None,
                       called_after: pd.Timestamp | None = None,
                       received_since: pd.Timestamp | None = None) -> pd.DataFrame:
        """Stored outcomes with a sequence number above ``seq`` (and, if given, called after
        ``called_after`` and received at or after ``received_since``) in storing order, as
        clean call-history columns plus ``seq`` and ``received_at``; times are UTC.

        On PostgreSQL a sequence number is taken when a row is inserted, not when it is
        committed: a reader that has seen ``seq`` N can later find a smaller one. Readers
        that follow the store (another server instance) read an overlapping window of
        ``received_since`` instead and drop the ``call_id`` they have.
        """
        query = sa.select(outcomes).where(outcomes.c.seq > seq).order_by(outcomes.c.seq)
        if called_after is not None:
            query = query.where(outcomes.c.called_at > _naive_utc_one(called_after))
        if received_since is not None:
            query = query.where(outcomes.c.received_at >= _naive_utc_one(received_since))
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            result = conn.execute(query)
            # the driver's rows as they are (no per-row work in SQLAlchemy); times are
            # converted below, per column
            frame = pd.DataFrame.from_records(result.cursor.fetchall(),
                                              columns=list(result.keys()))
        for column in (*_TIMES, "received_at"):
            frame[column] = _utc(frame[column])
        frame["answered"] = frame["answered"].astype(np.int8)
        return frame

    def stored_calls(self, call_ids: list[str]) -> dict[str, tuple[str, pd.Timestamp, str]]:
        """``call_id`` -> ``(contact_id, called_at (UTC), outcome)`` of the stored ones."""
        found: dict[str, tuple[str, pd.Timestamp, str]] = {}
        cols = (outcomes.c.call_id, outcomes.c.contact_id, outcomes.c.called_at,
                outcomes.c.outcome)
        with self.engine.connect() as conn:
            for start in range(0, len(call_ids), 500):
                part = call_ids[start:start + 500]
                for cid, contact, at, outcome in conn.execute(
                        sa.select(*cols).where(outcomes.c.call_id.in_(part))):
                    found[cid] = (contact, _utc(pd.Series([at])).iloc[0], outcome)
        return found

    def last_seq(self) -> int:
        """The highest outcome sequence number (0 when empty)."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(outcomes.c.seq))).scalar() or 0)

    def count_outcomes(self) -> int:
        """Outcomes stored."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(outcomes)).scalar())

    # --- decisions -------------------------------------------------------------------------

    def log_decisions(self, rows: list[dict]) -> None:
        """Append ``/rank`` decisions (keys: the ``decisions`` columns but ``seq``; times are
        ``datetime`` / ``pandas.Timestamp`` / ISO-8601 text with an offset (without one: UTC)
        or ``None``)."""
        if not rows:
            return
        clean = []
        for row in rows:
            item = dict(row)
            for key in ("now", "requested_at", "window_start", "window_end", "decided_at"):
                item[key] = _naive_utc_one(item.get(key))
            clean.append(item)
        try:
            with self.engine.begin() as conn:
                conn.execute(decisions.insert(), clean)
        except sa.exc.DataError:  # one row the database refuses must not lose the others
            for item in clean:
                try:
                    with self.engine.begin() as conn:
                        conn.execute(decisions.insert(), [item])
                except sa.exc.DataError:
                    logger.warning("decision log: a decision the database refuses was dropped")

    def version(self) -> tuple[int, int, str]:
        """The last sequence numbers of the decision log and the outcomes (0 when empty), and
        the deletion generation (:meth:`generation`): a reader that has seen them has seen
        everything."""
        with self.engine.connect() as conn:
            seqs = tuple(int(conn.execute(sa.select(sa.func.max(t.c.seq))).scalar() or 0)
                         for t in (decisions, outcomes))
            return (*seqs, self._generation(conn))

    @staticmethod
    def _generation(conn) -> str:
        return conn.execute(sa.select(meta.c.value).where(meta.c.key == "generation")
                            ).scalar() or ""

    def generation(self) -> str:
        """A token that changes whenever rows are deleted (retention purge, erasure): a
        reader that keeps what it read looks again at what is left when it changes."""
        with self.engine.connect() as conn:
            return self._generation(conn)

    @staticmethod
    def _new_token(conn, key: str = "generation") -> None:
        conn.execute(meta.update().where(meta.c.key == key).values(value=uuid.uuid4().hex))

    _new_generation = _new_token

    def privacy_tokens(self) -> tuple[str, str]:
        """The deletion generation and a token that changes with every opt-out or opt-in:
        what instances on other machines compare to follow them."""
        with self.engine.connect() as conn:
            rows = dict(conn.execute(sa.select(meta.c.key, meta.c.value).where(
                meta.c.key.in_(("generation", "opt_outs")))).all())
        return rows.get("generation", ""), rows.get("opt_outs", "")

    # --- data protection: retention, erasure, opt-out --------------------------------------

    #: rows deleted per transaction by :meth:`purge` (short locks: writers go on meanwhile)
    purge_batch = 20_000

    def purge(self, cutoff: pd.Timestamp) -> dict:
        """Delete the call-level data older than ``cutoff`` (UTC): outcomes called before it,
        rankings the service made before it (``decided_at``: its own clock), in transactions
        of :attr:`purge_batch` rows. The calls a transaction deletes (``RETURNING``: what it
        really deleted, whoever else purges at the same time) are added to
        :data:`answer_patterns` (anonymised, kept) in it. Returns the counts (``patterns``:
        aggregate rows written, per batch)."""
        cut = _naive_utc_one(pd.Timestamp(cutoff))
        counts = {"outcomes": 0, "decisions": 0, "patterns": 0}
        for name, table, when in (("outcomes", outcomes, outcomes.c.called_at),
                                  ("decisions", decisions, decisions.c.decided_at)):
            batch = (sa.select(table.c.seq).where(when < cut).order_by(table.c.seq)
                     .limit(self.purge_batch).scalar_subquery())
            kept = ((outcomes.c.called_at, outcomes.c.timezone, outcomes.c.country,
                     outcomes.c.industry, outcomes.c.answered) if name == "outcomes"
                    else (table.c.seq,))
            while True:
                with self.engine.begin() as conn:
                    rows = conn.execute(sa.delete(table).where(table.c.seq.in_(batch))
                                        .returning(*kept)).fetchall()
                    if not rows:
                        break
                    if name == "outcomes":
                        groups = _patterns(pd.DataFrame(rows, columns=[
                            "called_at", "timezone", "country", "industry", "answered"]))
                        conn.execute(self._add_patterns(), groups)
                        counts["patterns"] += len(groups)
                    self._new_generation(conn)
                    counts[name] += len(rows)
        return {"cutoff": pd.Timestamp(cut, tz="UTC"), **counts}

    def _add_patterns(self):
        stmt = self._insert(answer_patterns)
        if self.dialect in ("sqlite", "postgresql"):
            stmt = stmt.on_conflict_do_update(
                index_elements=["month", "industry", "country", "weekday", "hour"],
                set_={"calls": answer_patterns.c.calls + stmt.excluded.calls,
                      "answered": answer_patterns.c.answered + stmt.excluded.answered})
        return stmt

    def erase_contact(self, contact_id: str, contact_hash: str) -> dict:
        """Delete everything stored about a contact (outcomes, rankings, opt-out) and add
        ``contact_hash`` (its keyed pseudonym) to the forget list. Returns the counts."""
        now = _naive_utc_one(pd.Timestamp.now(tz="UTC"))
        with self.engine.begin() as conn:
            counts = {name: conn.execute(sa.delete(t).where(t.c.contact_id == contact_id)
                                         ).rowcount
                      for name, t in (("outcomes", outcomes), ("decisions", decisions),
                                      ("opt_outs", opt_outs))}
            stmt = self._insert(forgotten)
            if self.dialect in ("sqlite", "postgresql"):
                stmt = stmt.on_conflict_do_nothing(index_elements=["contact_hash"])
            conn.execute(stmt, {"contact_hash": contact_hash, "forgotten_at": now})
            self._new_generation(conn)  # readers rebuild: a model's history may hold it too
        return counts

    def forgotten_hashes(self) -> set[str]:
        """The keyed pseudonyms of the erased contacts."""
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(sa.select(forgotten.c.contact_hash))}

    def set_opt_out(self, contact_id: str, opted_out: bool) -> bool:
        """Record that a contact opted out of AI timing (or back in); returns whether that
        changed anything."""
        with self.engine.begin() as conn:
            if not opted_out:
                changed = conn.execute(sa.delete(opt_outs).where(
                    opt_outs.c.contact_id == contact_id)).rowcount > 0
            else:
                stmt = self._insert(opt_outs)
                if self.dialect in ("sqlite", "postgresql"):
                    stmt = stmt.on_conflict_do_nothing(index_elements=["contact_id"])
                # what was inserted, from RETURNING: a driver's rowcount is not reliable here
                changed = conn.execute(stmt.returning(opt_outs.c.contact_id), {
                    "contact_id": contact_id,
                    "since": _naive_utc_one(pd.Timestamp.now(tz="UTC"))}).first() is not None
            if changed:
                self._new_token(conn, "opt_outs")
            return changed

    def opted_out(self) -> set[str]:
        """The contact ids that opted out of AI timing."""
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(sa.select(opt_outs.c.contact_id))}

    def contact_data(self, contact_id: str) -> dict[str, pd.DataFrame]:
        """Everything stored about a contact: its outcomes, its rankings and its opt-out
        (frames; times UTC)."""
        out = {}
        with self.engine.connect() as conn:
            for name, t in (("outcomes", outcomes), ("decisions", decisions),
                            ("opt_out", opt_outs)):
                result = conn.execute(sa.select(t).where(t.c.contact_id == contact_id)
                                      .order_by(*(t.c.seq,) if "seq" in t.c else ()))
                frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
                for column in frame.columns:
                    if isinstance(t.c[column].type, sa.DateTime):
                        frame[column] = _utc(frame[column])
                out[name] = frame
        return out

    def patterns(self) -> pd.DataFrame:
        """The anonymised aggregates of purged calls (:data:`answer_patterns`)."""
        with self.engine.connect() as conn:
            result = conn.execute(sa.select(answer_patterns).order_by(
                *answer_patterns.primary_key.columns))
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))

    def decision_count(self) -> int:
        """How many rankings the decision log holds."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(decisions))
                       .scalar_one())

    def decisions_frame(self, seq: int = 0) -> pd.DataFrame:
        """The decision log (rows with a sequence number above ``seq``), oldest first; times
        are UTC."""
        query = sa.select(decisions).where(decisions.c.seq > seq).order_by(decisions.c.seq)
        with self.engine.connect() as conn:
            result = conn.execute(query)
            frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
        for column in ("now", "requested_at", "window_start", "window_end", "decided_at"):
            frame[column] = _utc(frame[column])
        return frame

    def rows_after(self, table: str, columns: tuple[str, ...], seq: int = 0,
                   since: tuple[str, pd.Timestamp] | None = None) -> pd.DataFrame:
        """``columns`` of the ``outcomes`` or ``decisions`` rows with a sequence number above
        ``seq`` (and, with ``since=(column, instant)``, that time column at or after the
        instant), in order, read straight through the database driver (no per-row work in
        SQLAlchemy: ~10x faster for a whole log, what the dashboard reads); times are UTC."""
        t = {"outcomes": outcomes, "decisions": decisions}[table]
        names = [t.c[c].name for c in columns]  # a KeyError for a column that is not there
        mark = "?" if self.engine.dialect.paramstyle in ("qmark", "numeric") else "%s"
        where, params = f"seq > {mark}", [int(seq)]
        if since is not None:
            column, at = since
            if not isinstance(t.c[column].type, sa.DateTime):
                raise ValueError(f"since: {column} is not a time column of {table}")
            at = _naive_utc_one(at)
            # SQLite compares the text SQLAlchemy wrote: the same format
            params.append(f"{at:%Y-%m-%d %H:%M:%S.%f}" if self.dialect == "sqlite" else at)
            where += f" AND {t.c[column].name} >= {mark}"
        sql = f"SELECT {', '.join(names)} FROM {t.name} WHERE {where} ORDER BY seq"
        with self.engine.connect() as conn:
            cursor = conn.connection.dbapi_connection.cursor()
            try:
                cursor.execute(sql, tuple(params))
                rows = cursor.fetchall()
            finally:
                cursor.close()
        frame = pd.DataFrame.from_records(rows, columns=names, nrows=len(rows))
        for name in names:
            if isinstance(t.c[name].type, sa.DateTime):
                frame[name] = pd.to_datetime(frame[name], utc=True, format="ISO8601")
        return frame

    def close(self) -> None:
        """Close the connection pool."""
        self.engine.dispose()


def store_file(db: str) -> Path | None:
    """The file of a SQLite outcome store given as a path or a ``sqlite:///`` URL (``None``
    for another database): what an output option must not name."""
    if "://" not in db:
        return Path(db)
    if db.startswith("sqlite:///") and len(db) > len("sqlite:///"):
        return Path(db[len("sqlite:///"):])
    return None


def open_store(db: str) -> OutcomeStore:
    """The existing outcome store ``db`` (a SQLite file that is not there is a mistake,
    not a new store: ``ConfigError`` naming ``--db``)."""
    if "://" not in db and not Path(db).is_file():
        raise ConfigError(f"--db: no outcome store at {db}")
    return OutcomeStore(db)


def _patterns(calls: pd.DataFrame) -> list[dict]:
    """Calls and answers per month, industry, country, contact-local weekday and hour."""
    if not len(calls):
        return []
    from callback_timing import fastpath as fp
    from callback_timing.calendar import utc_ns_of

    at = _utc(calls["called_at"])
    minute, weekday = fp.local_parts(utc_ns_of(at),
                                     calls["timezone"].fillna("UTC").to_numpy(object))
    frame = pd.DataFrame({
        "month": at.dt.strftime("%Y-%m"),
        "industry": calls["industry"].fillna("unknown").astype(str).str[:64],
        "country": calls["country"].fillna("").astype(str).str[:2],
        "weekday": weekday.astype(int), "hour": (minute // 60).astype(int),
        "answered": calls["answered"].astype(int)})
    keys = ["month", "industry", "country", "weekday", "hour"]
    table = frame.groupby(keys).agg(calls=("answered", "size"),
                                    answered=("answered", "sum")).reset_index()
    return table.to_dict("records")  # Python ints already: what the driver binds


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()
