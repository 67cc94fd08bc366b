"""Simulated dialer traffic through the service's API, so a dashboard has something to show.

:func:`seed_traffic` plays a dialer for some days after the model's history: each day's
callback requests are ranked with ``/rank_batch`` (at the moment of the request, with its
``request_id``), called at the start of the first window, answered as the synthetic world
says (:meth:`callback_timing.world.World.p_answer`, with fatigue), and posted to
``/outcomes``; an unanswered request is ranked again a minute after its call, up to three
attempts within 48 h. The service decides the arm (the control share) and logs each ranking,
exactly as for a real dialer.

``post(path, body)`` sends one JSON request and returns the JSON answer: :func:`http_poster`
for a running server, :func:`ranker_poster` in process.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from callback_timing.schema import ConfigError
from callback_timing.world import World

if TYPE_CHECKING:
    from callback_timing.online import OnlineRanker

MAX_ATTEMPTS = 3
_FIELDS = ("timezone", "country", "subdivision", "industry")
#: the dialer's labels of its requests (a campaign and the team that calls back), with shares
CAMPAIGNS = {"web-callback": 0.5, "webinar-follow-up": 0.3, "trade-fair": 0.2}
TEAMS = {"team-north": 0.6, "team-south": 0.4}
DEADLINE = pd.Timedelta(hours=48)


def server_url(value: str, option: str = "--server") -> str:
    """A server's base URL (``http://`` or ``https://`` and a host), or a
    :class:`ConfigError` naming ``option``."""
    parsed = urllib.parse.urlparse(str(value))
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"{option}: a URL such as http://localhost:3000 is needed, "
                          f"not {str(value)[:60]!r}")
    return str(value)


def http_poster(base_url: str, api_key: str | None = None,
                timeout: float = 120.0) -> Callable[[str, dict], dict]:
    """``post(path, body)`` against a running server at ``base_url``."""
    base_url = server_url(base_url)

    def post(path: str, body: dict) -> dict:
        request = urllib.request.Request(
            base_url.rstrip("/") + path, data=json.dumps(body).encode("utf-8"),
            headers={"Content-Type": "application/json",
                     **({"X-API-Key": api_key} if api_key else {})})
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return json.loads(response.read())
    return post


def ranker_poster(ranker: OnlineRanker) -> Callable[[str, dict], dict]:
    """``post(path, body)`` answered in this process by an
    :class:`~callback_timing.online.OnlineRanker` (what the service's endpoints call)."""
    def post(path: str, body: dict) -> dict:
        if path == "/rank_batch":
            return {"results": ranker.rank(body["requests"])}
        if path == "/outcomes":
            return ranker.outcomes(body["outcomes"])
        raise ValueError(f"path: {path} is not /rank_batch or /outcomes")
    return post


def seed_traffic(post: Callable[[str, dict], dict], world: World, contacts: list[str] | None,
                 start: pd.Timestamp, days: int = 30, per_day: int = 80, seed: int = 0,
                 progress: Callable[[int], None] | None = None,
                 profiles: pd.DataFrame | None = None) -> dict:
    """Play ``days`` days of callback requests from ``start`` (``per_day`` a day, for
    ``contacts`` of ``world``, default all) through ``post``; requests and outcomes carry the
    contact's time zone, country, subdivision and industry, and each request a campaign and a
    team (:data:`CAMPAIGNS`, :data:`TEAMS`), as a dialer's would. Returns the counts:
    requests, rankings, calls, answered, rankings with no window. ``progress(1)`` is called
    after each day. ``profiles``: what the dialer's CRM says of each contact (``contact_id``
    and the contact columns), when it is not what the world knows (default: the world's
    contacts)."""
    rng = np.random.default_rng(seed)
    labels = np.random.default_rng([seed, 1])  # its own stream: the traffic stays as it was
    crm = world.contacts if profiles is None else profiles
    table = crm.set_index(crm["contact_id"].astype(str))
    if contacts is None:
        contacts = list(table.index)
    known = {cid: {k: v for k, v in row.items() if isinstance(v, str) and v}
             for cid, row in table.reindex(columns=list(_FIELDS)).iterrows()}
    start = pd.Timestamp(start).tz_convert("UTC") if pd.Timestamp(start).tz else \
        pd.Timestamp(start).tz_localize("UTC")
    history: dict[str, list[pd.Timestamp]] = {}
    counts = {"requests": 0, "rankings": 0, "calls": 0, "answered": 0, "no_window": 0}
    for day in range(days):
        base = start.normalize() + pd.Timedelta(days=day)
        who = rng.choice(contacts, size=per_day)
        at = base + pd.to_timedelta(rng.uniform(6 * 3600, 20 * 3600, per_day), unit="s")
        campaign = labels.choice(list(CAMPAIGNS), size=per_day, p=list(CAMPAIGNS.values()))
        team = labels.choice(list(TEAMS), size=per_day, p=list(TEAMS.values()))
        open_ = [{"request_id": f"seed-{base:%Y%m%d}-{i:04d}", "contact_id": str(c),
                  "profile": known.get(str(c), {}),
                  "requested_at": t.floor("s"), "now": t.floor("s"), "attempt": 0,
                  "campaign": str(campaign[i]), "team": str(team[i])}
                 for i, (c, t) in enumerate(zip(who, at, strict=True))]
        counts["requests"] += len(open_)
        for _ in range(MAX_ATTEMPTS):
            open_ = [r for r in open_ if r["requested_at"] + DEADLINE - r["now"]
                     >= pd.Timedelta(minutes=15)]
            if not open_:
                break
            answers = post("/rank_batch", {"requests": [_rank_body(r) for r in open_]})
            counts["rankings"] += len(open_)
            calls, still = [], []
            for r, answer in zip(open_, answers["results"], strict=True):
                windows = answer.get("windows") or []
                if not windows:
                    counts["no_window"] += 1
                    continue
                first = pd.Timestamp(windows[0]["start"])
                called = first + pd.Timedelta(seconds=int(rng.integers(0, 600)))
                r["attempt"] += 1
                calls.append((r, called))
            if not calls:
                break
            ids = [r["contact_id"] for r, _ in calls]
            when = [t for _, t in calls]
            recent = [sum(1 for x in history.get(c, ()) if t - pd.Timedelta(hours=24) <= x < t)
                      for c, t in zip(ids, when, strict=True)]
            p = world.p_answer(np.array(ids, dtype=object), pd.Series(when), np.array(recent))
            answered = rng.random(len(calls)) < p
            outcomes = []
            for (r, called), yes in zip(calls, answered, strict=True):
                history.setdefault(r["contact_id"], []).append(called)
                outcomes.append({"call_id": f"{r['request_id']}#{r['attempt']}",
                                 "request_id": r["request_id"], "contact_id": r["contact_id"],
                                 "called_at": called.isoformat(), "attempt": r["attempt"],
                                 "requested_at": r["requested_at"].isoformat(),
                                 **r["profile"],
                                 "outcome": "answered" if yes else "no_answer"})
                if not yes:
                    r["now"] = called + pd.Timedelta(minutes=1)
                    still.append(r)
            post("/outcomes", {"outcomes": outcomes})
            counts["calls"] += len(outcomes)
            counts["answered"] += int(answered.sum())
            open_ = still
        if progress is not None:
            progress(1)
    return counts


def _rank_body(r: dict) -> dict:
    left = (r["requested_at"] + DEADLINE - r["now"]) / pd.Timedelta(hours=1)
    return {"request_id": r["request_id"],
            "contact": {"contact_id": r["contact_id"], **r["profile"]},
            "now": r["now"].isoformat(), "requested_at": r["requested_at"].isoformat(),
            "horizon_hours": round(min(48.0, left), 3),
            "campaign": r["campaign"], "team": r["team"]}
