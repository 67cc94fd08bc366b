"""The synthetic call world: a call history with a known answer-probability function.

No real call data is available offline, so demos, tests and benchmarks run on this world.
Contacts (:class:`~callback_timing.world.World`) request callbacks; a traditional desk
(and, for a share of requests, random exploration) calls them back
(:mod:`callback_timing.sim.schedule`); every planned call is played forward in time with
fatigue (:mod:`callback_timing.sim.outcomes`); the result is exported as a CRM would, as
text with contact-local offsets, and optionally dirtied (:mod:`callback_timing.sim.dirt`).

Examples
--------
>>> result = simulate(contacts=30, days=14, seed=1, dirt_rate=0.0)
>>> list(result.history.columns) == list(ALL_COLUMNS)
True
>>> bool(result.truth["p_true"].between(0, 1).all())
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from callback_timing import calendar
from callback_timing.schema import ALL_COLUMNS, ConfigError
from callback_timing.sim.dirt import inject_dirt
from callback_timing.sim.format import iso_local, numbered_ids
from callback_timing.sim.outcomes import outcomes_and_durations, resolve
from callback_timing.sim.patterns import TruthParams
from callback_timing.sim.schedule import (
    MAX_ATTEMPTS,
    desk_attempts,
    explore_attempts,
    request_times,
)
from callback_timing.world import World

#: Callback requests per contact per day (a request about every three weeks on average).
DEFAULT_REQUEST_RATE = 0.05
_STEPS = 6


@dataclass
class SimulationResult:
    """What :func:`simulate` returns.

    Attributes
    ----------
    history : the export, text columns of the call-history schema (with dirt, if any).
    truth : one row per real call: ``call_id``, ``contact_id``, ``called_at`` (UTC),
        ``p_true``, ``answered``, ``arm`` (``desk`` or ``explore``), ``request_id``,
        ``attempt`` and ``calls_last_24h`` (the fatigue count behind ``p_true``).
    world : the contact population and the truth function.
    dirt : log of injected dirt (``row`` in ``history``, ``call_id``, ``kind``, ``value``).
    """

    history: pd.DataFrame
    truth: pd.DataFrame
    world: World
    dirt: pd.DataFrame = field(default_factory=pd.DataFrame)


def _to_utc(local_ns: np.ndarray, tz: np.ndarray) -> np.ndarray:
    utc = calendar.local_to_utc(pd.Series(local_ns.view("datetime64[ns]")), pd.Series(tz))
    return utc.dt.tz_localize(None).to_numpy("datetime64[ns]").view(np.int64)


def _iso(utc_ns: np.ndarray, tz: np.ndarray) -> pd.Series:
    utc = pd.Series(pd.DatetimeIndex(utc_ns.view("datetime64[ns]"), tz="UTC"))
    clock = calendar.local_clock(utc, pd.Series(tz, dtype=object))
    offset = np.round(clock["utc_offset_h"].to_numpy() * 60).astype(np.int64)
    return iso_local(clock["local"].to_numpy("datetime64[ns]"), offset)


def _check(contacts: int, days: int, dirt_rate: float, explore_share: float, rate: float):
    if contacts < 1 or days < 1:
        raise ConfigError(f"contacts and days must be at least 1, got {contacts} and {days}")
    for name, value in (("dirt_rate", dirt_rate), ("explore_share", explore_share)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name} must be between 0 and 1, got {value}")
    if rate <= 0:
        raise ConfigError(f"requests_per_contact_day must be positive, got {rate}")


def simulate(
    contacts: int = 2000,
    days: int = 120,
    seed: int = 0,
    start: str | date = "2026-03-02",
    dirt_rate: float = 0.03,
    explore_share: float = 0.15,
    requests_per_contact_day: float = DEFAULT_REQUEST_RATE,
    progress: Callable[[int, int], None] | None = None,
    params: TruthParams | None = None,
) -> SimulationResult:
    """Simulate ``days`` days of callback requests and calls for ``contacts`` contacts.

    Parameters
    ----------
    contacts : number of contacts in the world.
    days : length of the period in which requests arrive (calls may run up to ~3 days on).
    seed : same seed, same output.
    start : first day of the period (contact-local).
    dirt_rate : share of exported rows made dirty; 0 gives a clean file.
    explore_share : share of requests called at random allowed times instead of by the desk.
    requests_per_contact_day : mean callback requests per contact per day.
    progress : called as ``progress(done, total)`` after each stage.
    params : constants of the truth function (default: the calibrated ones).

    Returns
    -------
    SimulationResult
    """
    _check(contacts, days, dirt_rate, explore_share, requests_per_contact_day)
    try:
        first_day = pd.Timestamp(start).date()
    except (ValueError, TypeError):
        raise ConfigError(f"start: not a date (YYYY-MM-DD): {str(start)[:40]!r}") from None
    report = progress or (lambda done, total: None)
    rng_world, rng_req, rng_plan, rng_play, rng_out, rng_dirt = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)
    )
    world = World.generate(contacts, rng_world, requests_per_contact_day, params)
    c = world.contacts
    tz = c["timezone"].to_numpy(object)
    report(1, _STEPS)

    per_contact = rng_req.poisson(c["request_rate"].to_numpy() * days)
    req_contact = np.repeat(np.arange(contacts), per_contact)
    start_day = np.datetime64(first_day, "D").astype(np.int64)
    consumer = (c["industry"] == "consumer").to_numpy()
    req_local = request_times(consumer[req_contact], start_day, days, rng_req)
    req_utc = _to_utc(req_local, tz[req_contact])
    order = np.argsort(req_utc, kind="stable")  # request ids follow time
    req_contact, req_local, req_utc = req_contact[order], req_local[order], req_utc[order]
    n_req = len(req_contact)
    explore = rng_req.random(n_req) < explore_share
    plan = np.where(explore, explore_attempts(req_local, rng_plan),
                    desk_attempts(req_local, rng_plan))
    report(2, _STEPS)

    request = np.tile(np.arange(n_req), MAX_ATTEMPTS)
    attempt = np.repeat(np.arange(1, MAX_ATTEMPTS + 1), n_req)
    planned = plan.ravel() >= 0
    request, attempt = request[planned], attempt[planned]
    contact = req_contact[request]
    utc = _to_utc(plan.ravel()[planned], tz[contact])
    base = world.logit(contact, utc)
    report(3, _STEPS)

    prm = world.params
    res = resolve(contact, request, utc, base, prm.fatigue_per_call, prm.fatigue_cap, rng_play)
    keep = np.flatnonzero(res["happened"])
    keep = keep[np.lexsort((attempt[keep], request[keep], utc[keep]))]  # export in time order
    report(4, _STEPS)

    contact, request, attempt, utc = contact[keep], request[keep], attempt[keep], utc[keep]
    answered = res["answered"][keep]
    labels, duration = outcomes_and_durations(answered, rng_out)
    call_id = numbered_ids("x-", np.arange(1, len(keep) + 1), 7)
    request_id = numbered_ids("r-", request + 1, 6)
    contact_id = c["contact_id"].iloc[contact].reset_index(drop=True)
    truth = pd.DataFrame(
        {
            "call_id": call_id,
            "contact_id": contact_id,
            "called_at": pd.DatetimeIndex(utc.view("datetime64[ns]"), tz="UTC"),
            "p_true": res["p_true"][keep],
            "answered": answered,
            "arm": np.where(explore[request], "explore", "desk"),
            "request_id": request_id,
            "attempt": attempt,
            "calls_last_24h": res["calls_last_24h"][keep],
        }
    )
    truth["arm"] = truth["arm"].astype("str")
    history = pd.DataFrame(
        {
            "contact_id": contact_id,
            "called_at": _iso(utc, tz[contact]),
            "outcome": pd.Series(labels, dtype="str"),
            "call_id": call_id,
            **{col: c[col].iloc[contact].reset_index(drop=True)
               for col in ("phone", "country", "subdivision", "timezone", "industry")},
            "requested_at": _iso(req_utc[request], tz[contact]),
            "request_id": request_id,
            "attempt": attempt.astype(np.int64),
            "duration_s": duration,
        }
    )[list(ALL_COLUMNS)]
    report(5, _STEPS)

    history, dirt = inject_dirt(history, dirt_rate, rng_dirt)
    report(6, _STEPS)
    return SimulationResult(history=history, truth=truth, world=world, dirt=dirt)


def recent_start(days: int, today: date | None = None) -> date:
    """A start for ``days`` days of history that end recently: the Monday on or before
    ``today - days``, so the period (like the 12-month retention) is measured from today.

    >>> recent_start(120, date(2026, 11, 25))  # a Wednesday: 120 days back, then to Monday
    datetime.date(2026, 7, 27)
    """
    first = (today or pd.Timestamp.now(tz="UTC").date()) - timedelta(days=days)
    return first - timedelta(days=first.weekday())


def check_history_path(path: str | Path) -> Path:
    """``path`` as a :class:`Path` when :func:`write_history` can write it (``.csv`` or
    ``.parquet``), else :class:`ConfigError`; check it before the work that fills it."""
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise ConfigError(f"unsupported history file type {path.suffix!r}: use .csv or .parquet")
    return path


def write_history(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a history frame to ``.csv`` or ``.parquet`` (by suffix), creating parent dirs."""
    path = check_history_path(path)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def ground_truth_paths(history: str | Path) -> tuple[Path, Path]:
    """Where the truth and world of a simulated history live: beside it, as
    ``<stem>.truth.parquet`` and ``<stem>.world.parquet``."""
    history = Path(history)
    return (history.with_name(f"{history.stem}.truth.parquet"),
            history.with_name(f"{history.stem}.world.parquet"))


def save_ground_truth(result: SimulationResult, history: str | Path) -> tuple[Path, Path]:
    """Write ``result.truth`` and ``result.world`` beside the history file ``history``."""
    truth_path, world_path = ground_truth_paths(history)
    result.truth.to_parquet(truth_path, index=False)
    return truth_path, result.world.save(world_path)


def load_ground_truth(history: str | Path) -> tuple[pd.DataFrame | None, World | None]:
    """The truth frame and world beside ``history`` if it came from :func:`simulate`."""
    truth_path, world_path = ground_truth_paths(history)
    if not (truth_path.is_file() and world_path.is_file()):
        return None, None
    return pd.read_parquet(truth_path), World.load(world_path)
