"""The ranking service's state, without HTTP: what ``serving`` answers ``/rank``,
``/rank_batch``, ``/outcomes``, ``/check``, ``/info`` and ``/admin/reload`` with.

:class:`OnlineRanker` holds the :class:`~callback_timing.policy.Policy` (model or rules), the
control arm's traditional desk, and the :class:`~callback_timing.store.OutcomeStore`:

- **Outcomes** are validated like a history file (:func:`~callback_timing.data.clean_history`),
  stored (durable before the answer; idempotent by ``call_id``) and added to the policy at
  once, so the next ranking of the contact sees them. Other server instances sharing the
  database pick them up within ``sync_seconds``.
- **Control arm**: a share of ``policy: auto`` requests (stable hash of ``request_id``, else of
  the contact) is answered as a traditional callback desk would (earliest allowed slot in
  desk hours), ``arm: control``, so the uplift can be measured.
- **Decision log**: every answer is logged (request, contact, arm, source, fallback reason,
  model version, the chosen window) by a background writer, off the request path.
- **Reload**: a new model bundle replaces the current one only if it loads and answers.

Examples
--------
>>> ranker = OnlineRanker(ServeSettings(model_dir=None, db="sqlite://", control_share=0))
>>> ranker.info()["source"], ranker.info()["degraded"]
('rules', True)
>>> out = ranker.rank([{"request_id": "r-1", "contact": {"contact_id": "c-1",
...     "timezone": "Europe/Warsaw"}, "now": "2026-06-01T06:00:00Z"}])[0]
>>> out["arm"], out["source"], out["windows"][0]["local_start"] >= "2026-06-01T08:00"
('rules', 'rules', True)
>>> ranker.outcomes([{"call_id": "x-1", "contact_id": "c-1", "called_at":
...     "2026-06-01T06:05:00Z", "outcome": "no_answer", "timezone": "Europe/Warsaw"}])
{'accepted': 1, 'duplicates': 0, 'rejected': []}
>>> ranker.close()
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd
from sqlalchemy import exc as sa_exc

from callback_timing import config as defaults
from callback_timing.bundle import read_metadata
from callback_timing.contacts import load_keys
from callback_timing.data import REASON_NAIVE, clean_history
from callback_timing.policy import Policy, load_bundle, smoke_test
from callback_timing.policy_config import desk_config, load_policy_config
from callback_timing.privacy import contact_hash, is_forgotten, lawful_history
from callback_timing.rules import RuleModel
from callback_timing.schema import CallbackTimingError, ConfigError
from callback_timing.store import OutcomeStore

logger = logging.getLogger(__name__)

#: Columns of an outcome the policy keeps (the clean history's, no phone pseudonym).
_CALL_COLUMNS = ["call_id", "contact_id", "called_at", "outcome", "answered", "timezone",
                 "country", "subdivision", "industry", "request_id"]
_PROFILE = ("timezone", "country", "subdivision", "industry")
#: How many contacts' /rank attributes an instance keeps for their outcomes.
_GIVEN_MAX = 200_000
CONTROL_REASON = "control arm: answered as a traditional callback desk"


@dataclass
class ServeSettings:
    """How the service runs; :meth:`from_env` reads the ``CALLBACK_TIMING_*`` variables that
    ``callback-timing serve`` sets from its options."""

    model_dir: Path | None = field(default_factory=defaults.model_dir)
    db: str = field(default_factory=lambda: str(defaults.db_path()))
    control_share: float = 0.10
    rules_path: Path | None = None
    rules_table_path: Path | None = None
    #: how often to look for outcomes stored by other instances (a server database; a SQLite
    #: file's other workers ring a beacon instead, unless this is 0: look before every answer)
    sync_seconds: float = 1.0
    #: how far back each sync looks again (received time), for transactions that committed
    #: late and for clock skew between instances
    sync_overlap_seconds: float = 30.0
    watch_seconds: float = 5.0
    #: apply the retention (``policy.yaml`` ``retention``): purge the store as the service
    #: starts and daily, keep no older call in memory. Off only to replay old data (tests on
    #: a synthetic world of fixed dates): ``CALLBACK_TIMING_PURGE=0``
    purge: bool = field(default_factory=defaults.retention_on)

    def __post_init__(self) -> None:
        if not 0.0 <= self.control_share < 1.0:
            raise ConfigError(f"--control-share: must be from 0 to below 1, "
                              f"got {self.control_share:g}")

    @classmethod
    def from_env(cls) -> ServeSettings:
        """Settings from ``CALLBACK_TIMING_MODEL_DIR``, ``CALLBACK_TIMING_DB``,
        ``CALLBACK_TIMING_CONTROL_SHARE``, ``CALLBACK_TIMING_RULES``,
        ``CALLBACK_TIMING_RULES_TABLE``, ``CALLBACK_TIMING_WATCH_SECONDS`` and
        ``CALLBACK_TIMING_PURGE`` (``0``: no retention purge)."""
        env = os.environ

        def path(name: str) -> Path | None:
            return Path(env[name]) if env.get(name) else None

        def number(name: str, default: float) -> float:
            try:
                return float(env.get(name, default))
            except ValueError:
                raise ConfigError(f"{name}: expected a number, got {env[name]!r}") from None

        return cls(model_dir=defaults.model_dir(), db=str(defaults.db_path()),
                   control_share=number("CALLBACK_TIMING_CONTROL_SHARE", 0.10),
                   rules_path=path("CALLBACK_TIMING_RULES"),
                   rules_table_path=path("CALLBACK_TIMING_RULES_TABLE"),
                   watch_seconds=number("CALLBACK_TIMING_WATCH_SECONDS", 5.0))



def in_control(key: str, share: float) -> bool:
    """Whether ``key`` (a request or contact id) falls in the control share: a stable hash,
    the same in every process and release.

    >>> in_control("r-1", 0.0), in_control("r-1", 0.999999)
    (False, True)
    """
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 < share


class Beacon:
    """A file whose modification time says "something changed" to the other server workers
    on this machine (one ``stat`` per request: a few microseconds).

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> a, b = Beacon(folder / "x.changes"), Beacon(folder / "x.changes")
    >>> b.changed(), a.ring(), b.changed(), b.changed()
    (False, None, True, False)
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._seen = self._stamp()

    def _stamp(self) -> int | None:
        if self.path is None:
            return None
        try:
            return os.stat(self.path).st_mtime_ns
        except OSError:
            return None

    def ring(self, text: str = "") -> None:
        """Tell the others (and remember it as seen here)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(text, encoding="utf-8")
        stamp = time.time_ns()
        os.utime(self.path, ns=(stamp, stamp))
        self._seen = self._stamp()

    def pending(self) -> bool:
        """Whether it rang since this instance last looked (without looking)."""
        return self._stamp() != self._seen

    def changed(self) -> bool:
        """Whether it rang since this instance last looked (or rang)."""
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        self._seen = stamp
        return True

    def read(self) -> str:
        """What the last ring said."""
        try:
            return self.path.read_text(encoding="utf-8") if self.path else ""
        except OSError:
            return ""


def beacon_path(store: OutcomeStore, kind: str) -> Path | None:
    """Where the workers sharing ``store`` on this machine signal ``kind`` changes."""
    url = store.url
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = Path(url[len("sqlite:///"):])
        return path.with_name(f"{path.name}.{kind}")
    if url.startswith("sqlite"):
        return None  # in memory: one process
    key = hashlib.blake2b(url.encode(), digest_size=6).hexdigest()
    return defaults.home_dir() / f"serve-{key}.{kind}"


class OnlineRanker:
    """The service's state and answers (see the module docstring); thread-safe.

    Several workers (processes) on one machine share the outcome store: a worker that
    stores outcomes or reloads a model rings a :class:`Beacon`, and the others catch up
    before their next answer.
    """

    def __init__(self, settings: ServeSettings | None = None) -> None:
        self.settings = settings or ServeSettings()
        self.store = OutcomeStore(self.settings.db)
        self._schema_version = self.store.schema_version
        # a SQLite file has writers on this machine only, and they ring the beacon: no need
        # to look at the store on a timer (a server database is shared by other machines)
        self._sync_every = (float("inf") if self.store.dialect == "sqlite"
                            and self.settings.sync_seconds > 0 else self.settings.sync_seconds)
        self.config = load_policy_config(self.settings.rules_path)
        self.rules = RuleModel.from_file(self.settings.rules_table_path)
        self._lock = threading.RLock()  # the policies and what was added to them
        self._reload_lock = threading.Lock()
        self._noted: dict[str, tuple[int, float]] = {}  # what -> (count, last logged)
        self.started_at = pd.Timestamp.now(tz="UTC")
        self._outcome_beacon = Beacon(beacon_path(self.store, "outcomes"))
        self._model_beacon = Beacon(beacon_path(self.store, "model"))
        self._privacy_beacon = Beacon(beacon_path(self.store, "privacy"))
        self._opted_out: set[str] = self.store.opted_out()
        self._forgotten: set[str] = self.store.forgotten_hashes()
        #: the zone, country, subdivision and industry /rank was last given per contact (the
        #: most recent ``_GIVEN_MAX``): what an outcome without them is stored with
        self._given: OrderedDict[str, dict] = OrderedDict()
        self._keys: list[bytes] | None = None
        self._cutoff: pd.Timestamp | None = None
        self.last_purge: dict | None = None
        if self.settings.purge:  # before the state is built: nothing past retention in it
            try:
                self.last_purge = self._purge_store()
            except sa_exc.SQLAlchemyError as exc:  # busy or away: the daily purge retries
                self._cutoff = self.config.retention_cutoff()  # memory is kept within it
                logger.warning("retention: the purge at start failed (%s); retried daily",
                               type(exc).__name__)
        # deletions (purges, erasures) and opt-outs seen: instances on other machines are
        # followed through these tokens at each sync, workers on this one by the beacon
        self._tokens = self.store.privacy_tokens()
        self._generation = self._tokens[0]
        self._rebuild_lock = threading.Lock()
        self._rebuild_queued = False
        #: called after rows were deleted (the service lets its dashboard follow at once)
        self.after_deletion: Callable[[], None] | None = None
        self._keys = load_keys()  # a key problem shows at start, not in a ranking
        #: called with the model version whenever a bundle is installed (metrics)
        self.on_model: Callable[[str | None], None] | None = None
        shared = self._shared_model()
        if shared is not None:  # a worker of this server reloaded from another folder
            self.settings.model_dir = shared
        bundle, self.model_note = load_bundle(self.settings.model_dir)
        self._install(bundle)
        self._log: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._wake = threading.Event()  # the decision writer writes now (flush, close)
        self._writer = threading.Thread(target=self._write_decisions, daemon=True,
                                        name="callback-timing-decisions")
        self._writer.start()
        self._watched = self._bundle_stamp()
        self._watcher: threading.Thread | None = None
        if self.settings.watch_seconds > 0 and self.settings.model_dir is not None:
            self._watcher = threading.Thread(target=self._watch, daemon=True,
                                             name="callback-timing-watch")
            self._watcher.start()
        if self.settings.purge:
            threading.Thread(target=self._purge_daily, daemon=True,
                             name="callback-timing-purge").start()
        logger.info("ranking with %s; outcome store %s", self.model_note, self.store.safe_url)
        if bundle is not None and bundle.metadata.get("decision") == "challenger":
            logger.warning("model %s was not promoted (a challenger in %s): served because "
                           "the folder holds it", bundle.version, self.settings.model_dir)

    # --- state -----------------------------------------------------------------------------

    def _policies(self, bundle) -> tuple[Policy, Policy, pd.DataFrame]:
        """The policy of ``bundle``, the control arm's desk, both with every stored outcome
        after the bundle's history added, and those outcomes."""
        own = bundle.history if bundle is not None else None
        history = (lawful_history(own, self._cutoff, self._forgotten, self._keys)
                   if own is not None else None)
        policy = Policy(bundle, config=self.config, rules=self.rules, history=history)
        desk = Policy(None, config=desk_config(self.config), rules=self.rules,
                      history=policy.history, priors=policy.priors)
        known = own["called_at"].max() if own is not None and len(own) else None
        calls = self.store.outcomes_after(0, called_after=known)
        if len(calls) and self._cutoff is not None:  # a purge that failed: not in memory
            calls = calls[calls["called_at"] >= self._cutoff]
        if len(calls):
            for p in (policy, desk):
                p.add_calls(calls[_CALL_COLUMNS])
        return policy, desk, calls

    def _install(self, bundle) -> None:
        since = pd.Timestamp.now(tz="UTC")
        policy, desk, calls = self._policies(bundle)
        with self._lock:
            self.policy, self.desk = policy, desk
            #: call ids added lately (received within the sync overlap) -> received time
            self._seen: dict[str, pd.Timestamp] = {}
            self._remember(calls)
            self._synced = time.monotonic()
            self._sync_from = since - pd.Timedelta(seconds=self.settings.sync_overlap_seconds)
            self._sync(force=True)  # outcomes stored while the new policy was built
        if self.on_model is not None:
            self.on_model(bundle.version if bundle is not None else None)

    def _remember(self, calls: pd.DataFrame) -> None:
        """Note the call ids of ``calls`` as added (and forget those out of the overlap)."""
        horizon = pd.Timestamp.now(tz="UTC") - pd.Timedelta(
            seconds=2 * self.settings.sync_overlap_seconds)
        if len(calls):
            recent = calls[calls["received_at"] >= horizon]
            self._seen.update(zip(recent["call_id"], recent["received_at"], strict=True))
        if len(self._seen) > 10_000:
            self._seen = {k: v for k, v in self._seen.items() if v >= horizon}

    def _behind(self) -> bool:
        """Whether an answer now must first catch up (:meth:`_catch_up`): another worker
        stored outcomes, reloaded or met a contact's right, or the periodic sync is due."""
        return (self._outcome_beacon.pending() or self._model_beacon.pending()
                or self._privacy_beacon.pending()
                or time.monotonic() - self._synced >= self._sync_every)

    def _catch_up(self) -> None:
        """Before an answer: the outcomes stored since (by other workers at once, by other
        instances every ``sync_seconds``); another worker's new model is loaded in the
        background (this answer is not held up by it)."""
        if self._model_beacon.changed():
            folder = self._shared_model()
            if folder is not None and folder != self.settings.model_dir:
                threading.Thread(target=self.reload, args=(folder,), kwargs={"ring": False},
                                 daemon=True, name="callback-timing-reload").start()
        if self._privacy_beacon.changed():  # an opt-out, an erasure or a purge elsewhere
            self._privacy_changed()
        force = self._outcome_beacon.changed()
        with self._lock:
            self._sync(force)

    def _sync(self, force: bool = False) -> None:
        """Add the outcomes other instances stored lately (every ``sync_seconds``, or now if
        ``force``): those received since the last sync, minus the overlap, not added yet.
        Call with the lock held. A database that does not answer is logged (once a minute)
        and the ranking goes on with what it has."""
        if not force and time.monotonic() - self._synced < self._sync_every:
            return
        now = pd.Timestamp.now(tz="UTC")
        self._synced = time.monotonic()
        try:
            calls = self.store.outcomes_after(0, received_since=self._sync_from)
        except sa_exc.SQLAlchemyError as exc:
            self._note("store", f"outcome store unreachable ({type(exc).__name__}): ranking "
                                "with the state already held")
            return
        self._sync_from = now - pd.Timedelta(seconds=self.settings.sync_overlap_seconds)
        theirs = calls[~calls["call_id"].isin(self._seen.keys())] if len(calls) else calls
        self._remember(calls)
        if len(theirs):
            for p in (self.policy, self.desk):
                p.add_calls(theirs[_CALL_COLUMNS])
        try:
            moved = self.store.privacy_tokens() != self._tokens  # another machine met a right
        except sa_exc.SQLAlchemyError:
            return
        if moved:
            self._privacy_changed()

    @property
    def model_version(self) -> str | None:
        """Version of the model that answers, ``None`` when the rules do."""
        return self.policy.model_version

    def info(self) -> dict:
        """What answers, and how the service is set up (``/info``)."""
        source = "model" if self.policy.bundle is not None else "rules"
        return {"model_version": self.model_version, "source": source,
                "degraded": source == "rules", "detail": self.model_note,
                "control_share": self.settings.control_share,
                "outcome_store": self.store.safe_url,
                "schema_version": self._schema_version,
                "started_at": self.started_at.isoformat()}

    # --- ranking ---------------------------------------------------------------------------

    def rank(self, requests: list[dict], errors: str = "return") -> list[dict]:
        """``/rank`` answers for ``requests`` in order (see :meth:`Policy.rank` for
        ``errors``); a share of ``policy: auto`` requests goes to the control arm."""
        self._catch_up()
        with self._lock:
            return self._rank(requests, errors)

    def try_rank(self, requests: list[dict], errors: str = "return") -> list[dict] | None:
        """:meth:`rank` if it can answer at once (nothing to catch up on, no other call
        holding the state), else ``None``: for callers that must not block (an event loop).
        """
        if self._behind() or not self._lock.acquire(blocking=False):
            return None
        try:
            return self._rank(requests, errors)
        finally:
            self._lock.release()

    def _rank(self, requests: list[dict], errors: str) -> list[dict]:
        """Both arms' answers, in order, logged (call with the lock held)."""
        if self._opted_out or self._forgotten:
            requests = [self._objected(r) for r in requests]
        self._remember_given(requests)
        share = self.settings.control_share
        control = [share > 0 and isinstance(r, dict) and (r.get("policy") or "auto") == "auto"
                   and in_control(_arm_key(r), share) for r in requests]
        now = pd.Timestamp.now(tz="UTC")
        main = self.policy.rank([r for r, c in zip(requests, control, strict=True) if not c],
                                now=now, errors=errors)
        desk = self.desk.rank([{**r, "policy": "rules", "urgency": "urgent"}
                               for r, c in zip(requests, control, strict=True) if c],
                              now=now, errors=errors)
        for answer in desk:
            if "error" not in answer:
                answer.update(arm="control", source="rules", fallback_reason=CONTROL_REASON,
                              model_version=None)
        self._note_fallbacks(main)
        main_it, desk_it = iter(main), iter(desk)
        out = [next(desk_it) if c else next(main_it) for c in control]
        self._log.put((out, requests, now))
        return out

    # --- data protection -------------------------------------------------------------------

    def _objected(self, request):
        """The request as ranked: an opted-out or erased contact gets a traditional callback
        without its history (``contact.opt_out``)."""
        contact = request.get("contact") if isinstance(request, dict) else None
        if not isinstance(contact, dict) or contact.get("opt_out"):
            return request
        cid = str(contact.get("contact_id"))
        if cid in self._opted_out or is_forgotten(cid, self._forgotten, self._keys):
            return {**request, "contact": {**contact, "opt_out": True}}
        return request

    def opt_out(self, contact_id: str, opted_out: bool = True) -> bool:
        """Record a contact's objection to AI timing (or its return); its next rankings
        are a traditional callback. Returns whether that changed anything."""
        changed = self.store.set_opt_out(contact_id, opted_out)
        with self._lock:
            (self._opted_out.add if opted_out else self._opted_out.discard)(contact_id)
            if opted_out:
                self._given.pop(contact_id, None)
            self._tokens = self.store.privacy_tokens()
        self._privacy_beacon.ring()
        return changed

    def erase(self, contact_id: str) -> dict:
        """Erase a contact: its outcomes, rankings and opt-out deleted from the store, its
        pseudonym on the forget list (never profiled again, left out of ``train``), its calls
        taken out of the service's memory (rebuilt in the background: seconds). Returns the
        rows deleted per table."""
        digest = contact_hash(contact_id, self._keys[0])
        self.flush()  # rankings of it still queued go to the log first, then are deleted
        counts = self.store.erase_contact(contact_id, digest)
        with self._lock:
            self._forgotten.add(digest)
            self._opted_out.discard(contact_id)
            self._given.pop(contact_id, None)
            self._tokens = self.store.privacy_tokens()
            self._generation = self._tokens[0]
        self._privacy_beacon.ring()
        self._rebuild_soon()
        self._deleted()
        return counts

    def _deleted(self) -> None:
        if self.after_deletion is not None:
            try:
                self.after_deletion()
            except Exception:  # noqa: BLE001 - a follower must not fail the erasure
                logger.exception("after a deletion: the follower failed")

    def purge(self, now: pd.Timestamp | None = None) -> dict:
        """Apply the retention as of ``now`` (default: the clock): the store's call-level
        data past ``retention.call_times_months`` deleted (aggregates kept) and the service's
        memory rebuilt without it."""
        done = self._purge_store(now)
        with self._lock:
            self._tokens = self.store.privacy_tokens()
            self._generation = self._tokens[0]
        if done["outcomes"] or done["decisions"] or self._memory_holds_older():
            self._privacy_beacon.ring()
            self._rebuild_soon(wait=True)
        if done["outcomes"] or done["decisions"]:
            self._deleted()
        return done

    def _purge_store(self, now: pd.Timestamp | None = None) -> dict:
        self._cutoff = self.config.retention_cutoff(now)
        self.last_purge = self.store.purge(self._cutoff)
        if self.last_purge["outcomes"] or self.last_purge["decisions"]:
            logger.info("retention: purged %d calls and %d rankings older than %s",
                        self.last_purge["outcomes"], self.last_purge["decisions"],
                        f"{self._cutoff:%Y-%m-%d %H:%M} UTC")
        return self.last_purge

    def _memory_holds_older(self) -> bool:
        h = self.policy.history
        return bool(len(h)) and self._cutoff is not None and bool(
            (pd.to_datetime(h["called_at"], utc=True) < self._cutoff).any())

    def _purge_daily(self) -> None:
        """Purge once a day at ``retention.daily_purge_hour_utc``."""
        while True:
            now = pd.Timestamp.now(tz="UTC")
            due = now.normalize() + pd.Timedelta(hours=self.config.purge_hour_utc)
            if due <= now:
                due += pd.Timedelta(days=1)
            if self._stop.wait((due - now).total_seconds()):
                return
            try:
                self.purge()
            except Exception:  # noqa: BLE001 - a failed purge is retried the next day
                logger.exception("retention: the daily purge failed")

    def _privacy_changed(self) -> None:
        """Another worker met a contact's right or purged: read the lists again, and build
        the state again when rows were deleted since this worker last looked."""
        with self._lock:  # read and set together: a local change is not overwritten
            self._tokens = self.store.privacy_tokens()
            self._opted_out = self.store.opted_out()
            self._forgotten = self.store.forgotten_hashes()
            deleted = self._tokens[0] != self._generation
            self._generation = self._tokens[0]
        if deleted:
            if self.settings.purge:
                self._cutoff = self.config.retention_cutoff()
            self._rebuild_soon()
            self._deleted()

    def _rebuild_soon(self, wait: bool = False) -> None:
        """Build the state again from the current bundle and the store (what a reload does)
        in the background, or now when ``wait``."""
        def rebuild() -> None:
            with self._reload_lock:
                with self._rebuild_lock:  # a change from now on needs another rebuild
                    self._rebuild_queued = False
                try:
                    self._install(self.policy.bundle)
                    return
                except Exception as exc:  # noqa: BLE001 - e.g. the store busy: try again
                    logger.warning("rebuild after a deletion failed (%s): again in 30 s",
                                   type(exc).__name__)
            if not wait and not self._stop.wait(30):
                self._rebuild_soon()

        if wait:
            rebuild()
            return
        with self._rebuild_lock:  # several erasures in a row: one rebuild waiting is enough
            if self._rebuild_queued:
                return
            self._rebuild_queued = True
        threading.Thread(target=rebuild, daemon=True, name="callback-timing-rebuild").start()

    def contact_record(self, contact_id: str) -> dict:
        """Everything stored about a contact (the right of access) and how its best time is
        found, in plain words."""
        data = self.store.contact_data(contact_id)
        opted = contact_id in self._opted_out
        forgotten = is_forgotten(contact_id, self._forgotten, self._keys)
        with self._lock:
            answer = self.policy.rank([{"contact": {"contact_id": contact_id,
                                                    "opt_out": opted or forgotten},
                                        "policy": "auto", "top_k": 3}], errors="return")[0]
            profile = self.policy.history
            in_memory = int((profile["contact_id"].astype(str) == contact_id).sum()) \
                if len(profile) else 0
        return {"contact_id": contact_id, "opted_out": opted, "erased": forgotten,
                "stored": {k: _records(v) for k, v in data.items()},
                "calls_in_model_history": in_memory,
                "explanation": _explanation(answer, opted, self.config, forgotten),
                "best_windows": answer.get("windows", [])}

    #: a recurring problem (a model failure, per reason; the store) is logged at most this
    #: often, with how often it happened since
    log_every_s = 60.0

    def _note(self, what: str, message: str) -> None:
        """Count ``what`` and log ``message`` (``{count}``: the times since the last line) at
        most every :attr:`log_every_s`."""
        count, since = self._noted.get(what, (0, -1e9))
        count += 1
        if time.monotonic() - since >= self.log_every_s:
            logger.warning("%s", message.replace("{count}", str(count)))
            self._noted[what] = (0, time.monotonic())
        else:
            self._noted[what] = (count, since)

    def _note_fallbacks(self, answers: list[dict]) -> None:
        """Note why the rules answered instead of a loaded model (failure, NaN, budget);
        the reasons hold no personal data."""
        for answer in answers:
            reason = answer.get("fallback_reason") or ""
            if answer.get("source") == "rules" and reason.startswith("model "):
                self._note(reason, "the rules answered {count} ranking(s): " + reason)

    def check(self, contact: dict, at: str | datetime | None = None,
              request_id: str | None = None) -> dict:
        """The dial-time check (``/check``): :meth:`Policy.dial_check`."""
        self._catch_up()
        with self._lock:
            return self.policy.dial_check(contact, at, request_id)

    # --- outcomes --------------------------------------------------------------------------

    def outcomes(self, rows: list[dict]) -> dict:
        """Validate, store and apply call outcomes (``/outcomes``).

        Returns ``{"accepted": n, "duplicates": n, "rejected": [{"index", "call_id",
        "field", "reason"}]}``: ``index`` is the outcome's position in ``rows``. Accepted
        outcomes are durable when this returns.
        """
        if not rows:
            return {"accepted": 0, "duplicates": 0, "rejected": []}
        # as sent: text, numbers, booleans (each checked per outcome by clean_history)
        raw = pd.DataFrame([r if isinstance(r, dict) else {} for r in rows], dtype=object)
        # no database stores a NUL character in text: those outcomes are rejected here
        rejected = [{"index": i, "call_id": None, "field": k,
                     "reason": "contains a NUL character"} for i, r in enumerate(rows)
                    if isinstance(r, dict) for k, v in r.items()
                    if isinstance(v, str) and "\x00" in v]
        raw = raw.drop(index=sorted({r["index"] for r in rejected}))
        for column in ("contact_id", "called_at", "outcome"):
            if column not in raw:
                raw[column] = None
        raw.index = raw.index.rename("row")
        if raw.empty:
            return {"accepted": 0, "duplicates": 0, "rejected": rejected}
        with self._lock:
            raw = self._with_profiles(raw)
        result = clean_history(raw.astype(object).where(raw.notna(), None),
                               default_tz=self.config.default_timezone)
        rejected += [{"index": int(r.row), "call_id": _text(rows[int(r.row)], "call_id"),
                      "field": r.column, "reason": _HTTP_REASONS.get(r.reason, r.reason)}
                     for r in result.rejects.itertuples(index=False)]
        rejected.sort(key=lambda r: r["index"])
        calls = result.calls
        missing = calls["call_id"].isna().to_numpy()
        if missing.any():  # the contract's key without a call_id: (contact_id, called_at)
            calls.loc[missing, "call_id"] = [
                _keyed_id(cid, at) for cid, at in
                zip(calls["contact_id"][missing], calls["called_at"][missing], strict=True)]
        late: list[tuple[str, str, str]] = []  # (call_id, field, reason) found after cleaning
        if self.settings.purge and len(calls):  # a call past the retention is not kept
            old_call = (calls["called_at"] < self.config.retention_cutoff()).to_numpy()
            months = self.config.retention_call_months
            late += [(cid, "called_at", f"older than the retention ({months} months): not kept")
                     for cid in calls["call_id"][old_call]]
            calls = calls[~old_call]
        received = pd.Timestamp.now(tz="UTC")
        with self._lock:  # stored and added together: a sync in between would add them twice
            new, old = self.store.add_outcomes(calls, received_at=received)
            fresh = calls[calls["call_id"].isin(set(new))][_CALL_COLUMNS]
            self._remember(fresh.assign(received_at=received))
            for p in (self.policy, self.desk):
                p.add_calls(fresh)
        if new:
            self._outcome_beacon.ring()
        conflicts = self._conflicts(calls, old)  # a re-sent call_id saying something else
        late += [(cid, field, f"call_id already stored with another {field}: the stored call "
                              "is kept (give a correction a new call_id)")
                 for cid, field in conflicts.items()]
        if late:  # reported by their position in the request, as the others
            index_of = {_call_key(r): i for i, r in enumerate(rows)}
            rejected += [{"index": index_of.get(cid, -1), "call_id": cid, "field": field,
                          "reason": reason} for cid, field, reason in late]
            rejected.sort(key=lambda r: r["index"])
        duplicates = len(old) + result.n_duplicates - len(conflicts)
        logger.debug("outcomes: %d accepted, %d duplicates, %d rejected", len(new),
                     duplicates, len(rejected))
        return {"accepted": len(new), "duplicates": duplicates, "rejected": rejected}

    def _conflicts(self, calls: pd.DataFrame, old: list[str]) -> dict[str, str]:
        """``call_id`` -> the first field (``contact_id``, ``called_at``, ``outcome``) in which
        a re-sent call differs from the stored one."""
        if not old:
            return {}
        stored = self.store.stored_calls(sorted(set(old)))
        sent = calls.drop_duplicates("call_id").set_index("call_id")
        out = {}
        for cid, (contact, at, outcome) in stored.items():
            if cid not in sent.index:
                continue
            mine = sent.loc[cid]
            for name, theirs in (("contact_id", contact), ("called_at", at),
                                 ("outcome", outcome)):
                if mine[name] != theirs:
                    out[cid] = name
                    break
        return out

    def _remember_given(self, requests: list) -> None:
        """Keep what each ranked contact was given as (zone, country, subdivision, industry;
        no phone number), unless it opted out (call with the lock held)."""
        for r in requests:
            contact = r.get("contact") if isinstance(r, dict) else None
            if not isinstance(contact, dict) or contact.get("opt_out"):
                continue
            cid = contact.get("contact_id")
            given = {c: contact[c] for c in _PROFILE
                     if isinstance(contact.get(c), str) and contact[c].strip()}
            if isinstance(cid, str) and ("timezone" in given or "country" in given):
                self._given[cid] = given
                self._given.move_to_end(cid)
                if len(self._given) > _GIVEN_MAX:
                    self._given.popitem(last=False)

    def _profile(self, contact_id: str) -> dict:
        """A contact's zone, country, subdivision and industry: the history's, overridden by
        what /rank was last given."""
        given = self._given.get(contact_id)
        known = self.policy.profile(contact_id)
        return {**known, **given} if given else known

    def _with_profiles(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Fill a known contact's zone, country, subdivision and industry (:meth:`_profile`)
        into outcomes that give neither a zone, a country nor a phone number."""
        profile = self._profile
        given = [raw[c].notna() if c in raw else pd.Series(False, index=raw.index)
                 for c in ("timezone", "country", "phone")]
        bare = ~(given[0] | given[1] | given[2])
        raw = raw.copy()
        for column in _PROFILE:
            if column not in raw:
                raw[column] = None
        known = {cid: profile(cid) for cid in raw["contact_id"].unique() if isinstance(cid, str)}

        def fill(rows: pd.Series, column: str) -> None:
            if rows.any():
                have = raw.loc[rows, "contact_id"].map(
                    lambda cid: known.get(cid, {}).get(column))
                raw.loc[rows, column] = raw.loc[rows, column].where(
                    raw.loc[rows, column].notna(), have)

        for column in _PROFILE:
            fill(bare, column)  # nothing about where: all the contact is known as
        # a phone or a zone says where, not what the contact does nor (in its own country)
        # which region it is in: an outcome with a phone number keeps the rest of the profile
        fill(~bare, "industry")
        home = raw["contact_id"].map(lambda cid: known.get(cid, {}).get("country"))
        same = ~bare & raw["country"].notna() & (raw["country"].astype(str).str.upper() == home)
        fill(same, "subdivision")
        return raw

    # --- decision log ----------------------------------------------------------------------

    #: the decision writer commits at most this often (one transaction per batch)
    decision_interval_s = 0.5

    def _write_decisions(self) -> None:
        """Background writer of the decision log: batches what :meth:`rank` queued, one
        transaction at most every :attr:`decision_interval_s` (a commit costs an fsync)."""
        while not self._stop.is_set() or not self._log.empty():
            # sleep, then take what is queued: waiting on the queue itself would wake this
            # thread (and take the GIL) once per answer
            self._wake.wait(self.decision_interval_s)
            self._wake.clear()
            items = []
            while len(items) < 5000:  # whatever is queued
                try:
                    items.append(self._log.get_nowait())
                except queue.Empty:
                    break
            if not items:
                continue
            rows = [row for answers, requests, now in items
                    for row in _decisions(answers, requests, now)]
            try:
                self.store.log_decisions(rows)
            except Exception:  # noqa: BLE001 - the log must never stop the ranking
                logger.exception("decision log: %d decisions could not be written", len(rows))
            for _ in items:
                self._log.task_done()

    def flush(self, timeout: float = 10.0) -> None:
        """Write the queued decisions now and wait (at most ``timeout`` seconds) until they
        are in the log: what this ranker answered is then in the store for a reader (the
        dashboard's ``/kpis``, ``/monitor``)."""
        if not self._log.unfinished_tasks:
            return
        self._wake.set()
        deadline = time.monotonic() + timeout
        while self._log.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    # --- reload ----------------------------------------------------------------------------

    @property
    def _answering(self) -> str:
        """Who answers now, in words: ``model v1`` or ``the rules``."""
        return f"model {self.model_version}" if self.model_version is not None else "the rules"

    def reload(self, model_dir: str | Path | None = None, ring: bool = True) -> dict:
        """See :meth:`_reload`; one reload at a time."""
        with self._reload_lock:
            return self._reload(model_dir, ring)

    def _reload(self, model_dir: str | Path | None = None, ring: bool = True) -> dict:
        """Load the bundle at ``model_dir`` (default: the served folder) and serve it if it
        loads and answers; a bad bundle never replaces a working model.

        Returns ``{"reloaded": bool, "model_version": ..., "detail": ...}``.
        """
        folder = Path(model_dir) if model_dir is not None else self.settings.model_dir
        bundle, note = load_bundle(folder)
        if bundle is None:  # nothing changes: say what still answers, not the loader's note
            logger.warning("reload refused: %s", note.removesuffix(": the rules answer"))
            return {"reloaded": False, "model_version": self.model_version,
                    "detail": f"not reloaded: {note.removesuffix(': the rules answer')}; "
                              f"{self._answering} still answers"}
        problem = _smoke_test(bundle, self.config, self.rules)
        if problem is not None:
            logger.warning("reload refused: model %s %s", bundle.version, problem)
            return {"reloaded": False, "model_version": self.model_version,
                    "detail": f"model {bundle.version} from {folder} refused: {problem}"}
        self._install(bundle)
        self.model_note = note
        if model_dir is not None:
            self.settings.model_dir = folder
        if ring:  # the other workers of this server serve it too
            self._model_beacon.ring(json.dumps({"server": os.getppid(),
                                                "model_dir": str(Path(folder).resolve())}))
        self._watched = self._bundle_stamp()
        logger.info("now ranking with %s", note)
        return {"reloaded": True, "model_version": bundle.version, "detail": note}

    def _shared_model(self) -> Path | None:
        """The folder another worker of this server reloaded from, if any."""
        try:
            said = json.loads(self._model_beacon.read() or "{}")
        except ValueError:
            return None
        if said.get("server") != os.getppid() or not said.get("model_dir"):
            return None  # none, or a beacon of an earlier server
        return Path(said["model_dir"])

    def _bundle_stamp(self) -> float | None:
        folder = self.settings.model_dir
        try:
            return (Path(folder) / "metadata.json").stat().st_mtime if folder else None
        except OSError:
            return None

    def _watch(self) -> None:
        """Reload when the served folder's ``metadata.json`` changes (a new champion). A
        bundle that was not promoted (``"decision": "challenger"``, or none: trained with
        ``--no-track``, never compared with the champion) is not served by itself: a warning
        says so, and ``POST /admin/reload`` serves it if asked."""
        while not self._stop.wait(self.settings.watch_seconds):
            stamp = self._bundle_stamp()
            if stamp is not None and stamp != self._watched:
                self._watched = stamp
                decision = _decision_of(self.settings.model_dir)
                if decision != "champion":
                    what = ("a challenger (not promoted)" if decision == "challenger" else
                            "a bundle never compared with the champion (trained without "
                            "tracking)")
                    logger.warning("%s now holds %s: %s still answers; POST /admin/reload "
                                   "serves it anyway", self.settings.model_dir, what,
                                   self._answering)
                    continue
                try:
                    self.reload()
                except Exception:  # noqa: BLE001 - a bad bundle must not stop the server
                    logger.exception("reload of the watched model folder failed")

    @property
    def stopped(self) -> threading.Event:
        """Set when the ranker closes (background loops wait on it)."""
        return self._stop

    def close(self) -> None:
        """Write the queued decisions and release the database."""
        self._stop.set()
        self._wake.set()
        self._writer.join(timeout=10)
        self.store.close()


#: reasons of the history loader that name command-line options, as an HTTP client reads them
_HTTP_REASONS = {REASON_NAIVE: "timestamp without UTC offset (give one, e.g. "
                               "2026-06-01T10:00:00Z or 2026-06-01T12:00:00+02:00)"}


def _decision_of(folder: Path) -> str | None:
    """The registry decision recorded in the bundle at ``folder`` (``champion``,
    ``challenger``), ``None`` when there is none or it cannot be read."""
    try:
        return read_metadata(folder).get("decision")
    except (OSError, ValueError):
        return None


def _smoke_test(bundle, config, rules) -> str | None:
    """Why ``bundle`` cannot serve (``None``: it ranks with the model), see
    :func:`~callback_timing.policy.smoke_test`."""
    try:
        policy = Policy(bundle, config=config, rules=rules)
    except CallbackTimingError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - any failure disqualifies the bundle
        return f"{type(exc).__name__} while loading"
    return smoke_test(policy)


def _arm_key(request: dict) -> str:
    rid = request.get("request_id")
    if rid:
        return f"request:{rid}"
    contact = request.get("contact")
    cid = contact.get("contact_id") if isinstance(contact, dict) else None
    return f"contact:{cid}"


def _records(frame: pd.DataFrame) -> list[dict]:
    """JSON-ready rows (times ISO 8601, missing as ``None``)."""
    out = frame.astype(object).where(frame.notna(), None)
    rows = out.to_dict("records")
    for row in rows:
        for key, value in row.items():
            if isinstance(value, pd.Timestamp | datetime):
                row[key] = pd.Timestamp(value).isoformat()
    return rows


def _explanation(answer: dict, objected: bool, config, erased: bool = False) -> list[str]:
    """How a contact's best time is found, in plain words (Art. 15: meaningful information
    about the logic involved)."""
    day = next((d for d in config.hours_for(None, None) if d is not None), (480, 1260))
    hours = f"{day[0] // 60:02d}:{day[0] % 60:02d}-{day[1] // 60:02d}:{day[1] % 60:02d}"
    lines = [
        "We call back inside legal calling hours in your local time zone "
        f"(by default {hours}), not on public holidays, at most "
        f"{config.max_attempts_per_request} times per request and "
        f"{config.max_calls_24h} times in 24 hours.",
    ]
    if erased:
        lines.append("Your call history was erased at your request: we propose the times a "
                     "traditional callback desk would, from general answer rates; new calls "
                     "are not used for timing either.")
    elif objected:
        lines.append("You objected to AI timing: we propose the times a traditional "
                     "callback desk would, from general answer rates, without your history.")
    else:
        lines.append("Among the allowed times we rank those when people like you (same "
                     "industry and country), and you yourself in your past calls, most often "
                     "answered, and we prefer sooner times because a callback loses value "
                     "as hours pass.")
    reasons = [r for w in answer.get("windows", [])[:1] for r in w.get("reasons", [])]
    if reasons:
        lines.append("Right now the best time is chosen because: " + "; ".join(reasons) + ".")
    if not erased:
        lines.append("Call times are kept for "
                     f"{config.retention_call_months} months; you may ask us to erase them or "
                     "to stop using them for timing at any time.")
    return lines


def _keyed_id(contact_id: str, at: pd.Timestamp) -> str:
    """The ``call_id`` of an outcome sent without one: the contract's key, contact and time."""
    return f"{contact_id}@{at.tz_convert('UTC').isoformat()}"


def _call_key(row) -> str | None:
    """An outcome's ``call_id`` as stored: the given one, else :func:`_keyed_id`."""
    if not isinstance(row, dict):
        return None
    if row.get("call_id") is not None:
        return str(row["call_id"]).strip()
    try:
        at = pd.Timestamp(str(row.get("called_at")))
        return _keyed_id(str(row.get("contact_id")).strip(), at)
    except (ValueError, TypeError):
        return None


def _text(row, key: str) -> str | None:
    value = row.get(key) if isinstance(row, dict) else None
    return None if value is None else str(value)


def _label(request, key: str) -> str | None:
    """A request's ``campaign`` or ``team`` as the decision log keeps it (text, at most 128
    characters; none when empty)."""
    value = request.get(key) if isinstance(request, dict) else None
    return (str(value)[:128] or None) if value is not None else None


def _horizon(request) -> float | None:
    """The request's ``horizon_hours`` as asked (``None``: the default applied)."""
    value = request.get("horizon_hours") if isinstance(request, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def _decisions(answers: list[dict], requests: list[dict], now: pd.Timestamp) -> list[dict]:
    """Decision-log rows of ranked answers (errors are not decisions)."""
    rows = []
    for answer, request in zip(answers, requests, strict=True):
        if "error" in answer:
            continue
        first = answer["windows"][0] if answer["windows"] else {}
        rows.append({
            "request_id": answer["request_id"], "contact_id": answer["contact_id"],
            "arm": answer["arm"], "source": answer["source"],
            "fallback_reason": answer["fallback_reason"],
            "model_version": answer["model_version"],
            "policy": request.get("policy") or "auto",
            "urgency": request.get("urgency") or "standard",
            "now": request.get("now") or now,
            "requested_at": request.get("requested_at") or request.get("now") or now,
            "window_start": first.get("start"), "window_end": first.get("end"),
            "p_answer": first.get("p_answer"), "score": first.get("score"),
            "windows": len(answer["windows"]), "explored": bool(answer.get("explored")),
            "propensity": answer.get("propensity"), "decided_at": now,
            "campaign": _label(request, "campaign"), "team": _label(request, "team"),
            "horizon_hours": _horizon(request),
        })
    return rows
