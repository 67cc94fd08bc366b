"""The supervisor's ROI dashboard: one HTML page drawn with Plotly from ``/kpis``.

- :func:`dashboard_app`: a Starlette app the BentoML service mounts at ``/dashboard`` (the
  page and Plotly's script, from the ``plotly`` package: no CDN), and :func:`kpis_app` at
  ``/kpis`` (the JSON of :func:`callback_timing.kpis.kpi_payload`; query parameters
  ``start``, ``end`` (dates, end exclusive), ``industry``, ``country``, ``campaign``,
  ``team``, ``period``).
- :func:`report_html`: the same page as one self-contained file (``callback-timing roi``),
  with the figures embedded; its filters are fixed to what it was written with.

The page computes the ROI itself as the supervisor edits its inputs, with the same formula
as :func:`callback_timing.kpis.roi`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from callback_timing.isotime import parse_iso
from callback_timing.kpis import (
    DECISION_COLUMNS,
    OUTCOME_COLUMNS,
    Filters,
    KpiData,
    payload_of,
)

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse

    from callback_timing.store import OutcomeStore

logger = logging.getLogger(__name__)


def plotly_js() -> str:
    """Plotly's minified script from the installed ``plotly`` package."""
    return resources.files("plotly").joinpath("package_data/plotly.min.js").read_text("utf-8")


class KpiSource:
    """The KPIs of a store's decision log and outcomes, kept as :class:`KpiData` in memory
    and brought up to date with only the rows stored since the last look (the store is asked
    for its last sequence numbers on every page load); a page with the same filters on an
    unchanged store is answered from a cache.

    The arrays are also saved now and then to a snapshot file (:func:`snapshot_path_of`), so
    that after a restart only the rows stored since are read: on a million outcomes the first
    page then takes about a second instead of the ~12 s of reading the whole store. A
    snapshot of another store, of other calling hours, or of a store that lost rows since, is
    not used (the store is read whole, as without one)."""

    #: rows read again behind the last sequence number seen: on PostgreSQL a row's number is
    #: taken at insert, so a transaction committed late can add rows behind it
    overlap = 5_000
    #: a snapshot is saved once this many rows were read since the last one, or once any
    #: were and this many seconds went by
    snapshot_rows = 20_000
    snapshot_seconds = 300.0

    def __init__(self, store, snapshot: str | Path | None = "auto") -> None:
        """``store``: an :class:`~callback_timing.store.OutcomeStore`, or a function that
        opens one (called on first use). ``snapshot``: the snapshot file, ``"auto"`` for
        :func:`snapshot_path_of` the store, ``None`` for none."""
        self._store = store
        self._snapshot = snapshot
        self.snapshot_path: Path | None = None
        #: whether the first read started from a snapshot
        self.restored = False
        self._lock = threading.Lock()
        self._data: KpiData | None = None
        self._seqs = {"decisions": np.zeros(0, np.int64), "outcomes": np.zeros(0, np.int64)}
        self._version: tuple[int, int, str] | None = None
        self._fates: pd.DataFrame | None = None
        self._pages: dict = {}
        self._unsaved = 0
        self._saved_at = -float("inf")  # the first read is saved at once
        self._writer: threading.Thread | None = None
        self._again = False  # a save came due while one was being written
        self._opened = False
        self._unchecked = False
        self._generation: str | None = None

    def refresh(self) -> None:
        """Read the rows stored since the last look (all of them the first time)."""
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        if not self._opened:
            if callable(self._store):
                self._store = self._store()
            self.snapshot_path = (snapshot_path_of(self._store) if self._snapshot == "auto"
                                  else Path(self._snapshot) if self._snapshot else None)
            self._restore()
            self._opened = True
        version = self._store.version()
        if self._data is not None and version == self._version:
            return
        if self._data is not None and version[2] != self._generation:
            self._drop_removed()  # a retention purge or an erasure since the last look
        self._generation = version[2]
        new = self._read_new()
        if self._unchecked:  # restored: did rows the snapshot holds go from the store?
            self._unchecked = False
            counts = {"decisions": self._store.decision_count(),
                      "outcomes": self._store.count_outcomes()}
            if any(counts[t] < len(seen) for t, seen in self._seqs.items()):
                logger.warning("dashboard: not using the snapshot %s (rows were removed from "
                               "the store since): reading the whole store",
                               self.snapshot_path.name)
                self._data, self.restored = None, False
                self._seqs = {t: np.zeros(0, np.int64) for t in self._seqs}
                new = self._read_new()
        data = self._data or KpiData()
        data.add(new["decisions"], new["outcomes"])
        self._fates, self._pages = data.fates(request_ids=False), {}
        self._data, self._version = data, version  # set last: a page does not wait for it
        self._unsaved += len(new["decisions"]) + len(new["outcomes"])
        self._save_now_and_then()

    def _drop_removed(self) -> None:
        """Take out the rows the store no longer has, and save the snapshot again soon (it
        must not keep what was erased)."""
        gone = {}
        for table in self._seqs:
            present = self._store.rows_after(table, ("seq",))["seq"].to_numpy(np.int64)
            seen = self._seqs[table]
            here = np.isin(seen, present)
            gone[table], self._seqs[table] = seen[~here], seen[here]
        self._data.drop(gone["decisions"], gone["outcomes"])
        self._unsaved += self.snapshot_rows + 1  # due at once

    def _read_new(self) -> dict[str, pd.DataFrame]:
        """The rows of each table not seen yet (with an overlap, see :attr:`overlap`)."""
        new = {}
        for table, columns in (("decisions", DECISION_COLUMNS), ("outcomes", OUTCOME_COLUMNS)):
            seen = self._seqs[table]
            floor = max(int(seen[-1]) - self.overlap, 0) if len(seen) else 0
            rows = self._store.rows_after(table, columns, floor)
            if len(seen):
                rows = rows[~np.isin(rows["seq"].to_numpy(), seen[seen > floor])]
            self._seqs[table] = np.sort(np.concatenate([seen, rows["seq"].to_numpy(np.int64)]))
            new[table] = rows
        return new

    def _restore(self) -> None:
        """Start from the snapshot file when there is a usable one (checked against the
        store after the first read, see :meth:`_refresh`)."""
        path = self.snapshot_path
        if path is None or not path.is_file():
            return
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            if str(arrays.get("store_id")) != self._store.store_id:
                raise ValueError("it is of another store")
            data = KpiData.from_snapshot(arrays)
            seqs = {t: np.asarray(arrays[f"seq.{t}"], dtype=np.int64) for t in self._seqs}
            if any((np.diff(seen) <= 0).any() for seen in seqs.values()):
                raise ValueError("damaged (sequence numbers out of order)")
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            logger.warning("dashboard: not using the snapshot %s (%s): reading the whole "
                           "store", path.name, str(exc).splitlines()[0][:200])
            return
        self._data, self._seqs, self.restored, self._unchecked = data, seqs, True, True
        self._generation = str(arrays.get("generation", ""))
        self._saved_at = time.monotonic()

    def _save_now_and_then(self) -> None:
        """Save a snapshot when due (call with the lock held); while one is being written,
        the writer saves again when it is done."""
        if self.snapshot_path is None or not self._unsaved:
            return
        due = (self._unsaved >= self.snapshot_rows
               or time.monotonic() - self._saved_at >= self.snapshot_seconds)
        if not due:
            return
        if self._writer is not None and self._writer.is_alive():
            self._again = True
            return
        self._writer = threading.Thread(target=self._write, args=(self._snapshot_arrays(),),
                                        name="kpis-snapshot", daemon=True)
        self._writer.start()

    def _snapshot_arrays(self) -> dict[str, np.ndarray]:
        arrays = self._data.snapshot()
        arrays["store_id"] = np.array(self._store.store_id)
        arrays["generation"] = np.array(self._generation or "")
        arrays.update({f"seq.{t}": seen for t, seen in self._seqs.items()})
        self._unsaved, self._saved_at, self._again = 0, time.monotonic(), False
        return arrays

    def _write(self, arrays: dict[str, np.ndarray]) -> None:
        """The writer thread: the snapshot, then again while a save came due meanwhile (what
        an erasure needs: no erased id left in the file)."""
        while arrays is not None:
            _write_snapshot(self.snapshot_path, arrays)
            with self._lock:
                arrays = self._snapshot_arrays() if self._again else None

    def wait_snapshot(self, timeout: float | None = None) -> None:
        """Wait for a snapshot being written (tests, benchmarks, a clean stop)."""
        if self._writer is not None:
            self._writer.join(timeout)

    def payload(self, filters: Filters | None = None, period: str = "week",
                wait: bool = True) -> dict:
        """:func:`~callback_timing.kpis.kpi_payload` of the store. ``wait=False``: raise
        :class:`StillReading` instead of waiting while another thread reads the whole store
        for the first time (a page then says so and asks again)."""
        if not self._lock.acquire(blocking=wait or self._data is not None):
            raise StillReading("the dashboard is reading the outcome store for the first "
                               "time (a million outcomes take about 12 s): it asks again "
                               "in a moment")
        try:
            self._refresh()
            key = (repr(filters), period)
            if key not in self._pages:
                self._pages[key] = payload_of(self._data, self._fates, filters, period)
            return self._pages[key]
        finally:
            self._lock.release()


def snapshot_path_of(store: OutcomeStore) -> Path | None:
    """Where the dashboard keeps the snapshot of ``store``'s figures: beside a SQLite file
    (``outcomes.db`` -> ``outcomes.db.kpis.npz``), in the user's cache folder for a database
    server (``~/.cache/callback-timing/kpis-<store id>.npz``), nowhere for a store in
    memory."""
    if store.dialect == "sqlite":
        database = store.engine.url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        db = Path(database)
        return db.with_name(db.name + ".kpis.npz")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "callback-timing" / f"kpis-{store.store_id}.npz"


def _write_snapshot(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write a snapshot atomically (a reader sees the old file or the new one), readable by
    its owner only; a failure is logged, never raised (the snapshot only saves time)."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        with os.fdopen(fd, "wb") as out:
            np.savez(out, **arrays)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        logger.warning("dashboard: could not save the snapshot %s (%s)", path.name,
                       exc.strerror or type(exc).__name__)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


class StillReading(RuntimeError):
    """The store is being read for the first time by another thread."""


def parse_query(query: Mapping[str, str | None]) -> tuple[Filters, str]:
    """Filters and period from query parameters (a mapping); raises ``ValueError`` with the
    parameter's name on a bad value."""
    def day(name: str) -> pd.Timestamp | None:
        raw = (query.get(name) or "").strip()
        if not raw:
            return None
        try:
            at = parse_iso(raw)
        except ValueError:
            raise ValueError(f"{name}: not a date (YYYY-MM-DD): {raw[:40]!r}") from None
        return at.tz_localize("UTC") if at.tz is None else at.tz_convert("UTC")

    period = (query.get("period") or "week").strip()
    if period not in ("day", "week"):
        raise ValueError(f"period: 'day' or 'week', not {period[:20]!r}")
    start, end = day("start"), day("end")
    if start is not None and end is not None and end <= start:
        raise ValueError(f"end: must be after start ({start:%Y-%m-%d}), got {end:%Y-%m-%d}")
    return Filters(start=start, end=end,
                   **{k: (query.get(k) or None) for k in ("industry", "country", "campaign",
                                                           "team")}), period


def store_unavailable(exc: Exception) -> JSONResponse:
    """The 503 a page or report answers when the outcome store does not (it names the
    error's type only: a database error's text can carry parameters)."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": f"the outcome store is unavailable "
                                  f"({type(exc).__name__}); try again"}, status_code=503)


def kpis_app(source: KpiSource, before: Callable[[], None] | None = None) -> Starlette:
    """A Starlette app answering ``GET /`` with the KPIs as JSON; ``before()`` is called
    first (in a worker thread): the service writes the rankings it has queued for the
    decision log, so that a page asked right after a ranking counts it."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def kpis(request):
        try:
            filters, period = parse_query(request.query_params)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        import anyio
        from sqlalchemy.exc import SQLAlchemyError

        def answer() -> dict:
            if before is not None:
                before()
            return source.payload(filters, period, False)

        try:
            payload = await anyio.to_thread.run_sync(answer)
        except StillReading as exc:
            return JSONResponse({"error": str(exc), "retry": True}, status_code=503,
                                headers={"Retry-After": "2"})
        except SQLAlchemyError as exc:
            return store_unavailable(exc)
        return JSONResponse(payload)

    return Starlette(routes=[Route("/", kpis, methods=["GET"])])


def dashboard_app() -> Starlette:
    """A Starlette app serving the page (``/``) and Plotly's script (``/plotly.min.js``)."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, Response
    from starlette.routing import Route

    script = plotly_js()

    async def page(request):
        return HTMLResponse(page_html(None))

    async def plotly(request):
        return Response(script, media_type="application/javascript",
                        headers={"Cache-Control": "max-age=86400"})

    return Starlette(routes=[Route("/", page), Route("/plotly.min.js", plotly)])


def report_html(payload: dict) -> str:
    """The dashboard as one self-contained HTML file with ``payload`` embedded."""
    return page_html(payload, inline_js=plotly_js())


def write_report(payload: dict, out: Path) -> Path:
    """Write :func:`report_html` to ``out`` (folders made); returns the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report_html(payload), encoding="utf-8")
    return out


def page_html(payload: dict | None, inline_js: str | None = None) -> str:
    """The page; with ``payload`` it draws that and does not fetch (a report file)."""
    data = "null" if payload is None else json.dumps(payload).replace("</", "<\\/")
    plotly = (f"<script>{inline_js}</script>" if inline_js is not None
              else '<script src="plotly.min.js"></script>')
    page = resources.files("callback_timing").joinpath("dashboard.html").read_text("utf-8")
    return page.replace("{{PLOTLY}}", plotly).replace("{{DATA}}", data)
