"""The supervisor's ROI dashboard: one HTML page drawn with Plotly from ``/kpis``.

- :func:`dashboard_app`: a Starlette app the BentoML service mounts at ``/dashboard`` (the
  page and Plotly's script, from the ``plotly`` package: no CDN), and :func:`kpis_app` at
  ``/kpis`` (the JSON of :func:`callback_timing.kpis.kpi_payload`; query parameters
  ``start``, ``end`` (dates, end exclusive), ``industry``, ``country``, ``period``).
- :func:`report_html`: the same page as one self-contained file (``callback-timing roi``),
  with the figures embedded; its filters are fixed to what it was written with.

The page computes the ROI itself as the supervisor edits its inputs, with the same formula
as :func:`callback_timing.kpis.roi`.
"""

from __future__ import annotations

import json
import threading
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from callback_timing.kpis import (
    DECISION_COLUMNS,
    OUTCOME_COLUMNS,
    Filters,
    KpiData,
    payload_of,
)


def plotly_js() -> str:
    """Plotly's minified script from the installed ``plotly`` package."""
    return resources.files("plotly").joinpath("package_data/plotly.min.js").read_text("utf-8")


class KpiSource:
    """The KPIs of a store's decision log and outcomes, kept as :class:`KpiData` in memory
    and brought up to date with only the rows stored since the last look (the store is asked
    for its last sequence numbers on every page load); a page with the same filters on an
    unchanged store is answered from a cache."""

    #: rows read again behind the last sequence number seen: on PostgreSQL a row's number is
    #: taken at insert, so a transaction committed late can add rows behind it
    overlap = 5_000

    def __init__(self, store) -> None:
        """``store``: an :class:`~callback_timing.store.OutcomeStore`, or a function that
        opens one (called on first use)."""
        self._store = store
        self._lock = threading.Lock()
        self._data: KpiData | None = None
        self._seqs = {"decisions": np.zeros(0, np.int64), "outcomes": np.zeros(0, np.int64)}
        self._version: tuple[int, int] | None = None
        self._fates: pd.DataFrame | None = None
        self._pages: dict = {}

    def refresh(self) -> None:
        """Read the rows stored since the last look (all of them the first time)."""
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        if callable(self._store):
            self._store = self._store()
        version = self._store.version()
        if self._data is not None and version == self._version:
            return
        new = {}
        for table, columns in (("decisions", DECISION_COLUMNS), ("outcomes", OUTCOME_COLUMNS)):
            seen = self._seqs[table]
            floor = max(int(seen[-1]) - self.overlap, 0) if len(seen) else 0
            rows = self._store.rows_after(table, columns, floor)
            if len(seen):
                rows = rows[~np.isin(rows["seq"].to_numpy(), seen[seen > floor])]
            self._seqs[table] = np.sort(np.concatenate([seen, rows["seq"].to_numpy(np.int64)]))
            new[table] = rows
        data = self._data or KpiData()
        data.add(new["decisions"], new["outcomes"])
        self._fates, self._pages = data.fates(), {}
        self._data, self._version = data, version  # set last: a page does not wait for it

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


class StillReading(RuntimeError):
    """The store is being read for the first time by another thread."""


def parse_query(query) -> tuple[Filters, str]:
    """Filters and period from query parameters (a mapping); raises ``ValueError`` with the
    parameter's name on a bad value."""
    def day(name: str) -> pd.Timestamp | None:
        raw = (query.get(name) or "").strip()
        if not raw:
            return None
        try:
            at = pd.Timestamp(raw)
        except ValueError:
            raise ValueError(f"{name}: not a date (YYYY-MM-DD): {raw[:40]!r}") from None
        return at.tz_localize("UTC") if at.tz is None else at.tz_convert("UTC")

    period = (query.get("period") or "week").strip()
    if period not in ("day", "week"):
        raise ValueError(f"period: 'day' or 'week', not {period[:20]!r}")
    return Filters(start=day("start"), end=day("end"),
                   industry=(query.get("industry") or None),
                   country=(query.get("country") or None)), period


def kpis_app(source: KpiSource):
    """A Starlette app answering ``GET /`` with the KPIs as JSON."""
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

        try:
            payload = await anyio.to_thread.run_sync(source.payload, filters, period, False)
        except StillReading as exc:
            return JSONResponse({"error": str(exc), "retry": True}, status_code=503,
                                headers={"Retry-After": "2"})
        except SQLAlchemyError as exc:
            return JSONResponse({"error": f"the outcome store is unavailable "
                                          f"({type(exc).__name__}); try again"},
                                status_code=503)
        return JSONResponse(payload)

    return Starlette(routes=[Route("/", kpis, methods=["GET"])])


def dashboard_app():
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
