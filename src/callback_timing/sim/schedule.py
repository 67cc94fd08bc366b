"""When the synthetic world's callback requests arrive and when they are called.

Two logging policies produce the history:

* the traditional **desk** (Mon-Fri 08:00-18:00 contact-local): first attempt a few minutes
  after the request (or when the desk opens, behind the overnight backlog), retry two hours
  later, then one day later, each moved to the next desk-hours slot;
* **exploration**: attempts at random allowed times (08:00-21:00 local, any day) within 48 h
  of the request, at least two hours apart.

Times here are contact-local wall clock as int64 nanoseconds ("local ns"); the simulator
turns them into UTC with :func:`callback_timing.calendar.local_to_utc`.

Examples
--------
>>> friday_evening = np.array([np.datetime64("2026-03-06T19:00", "ns").astype(np.int64)])
>>> slot_, moved = next_desk_slot(friday_evening)
>>> str(slot_.astype("datetime64[ns]")[0])[:16], bool(moved[0])
('2026-03-09T08:00', True)
"""

from __future__ import annotations

import numpy as np

MINUTE = 60 * 10**9
HOUR = 60 * MINUTE
DAY = 24 * HOUR
DESK_OPEN, DESK_CLOSE = 8 * HOUR, 18 * HOUR
CALL_OPEN, CALL_CLOSE = 8 * HOUR, 21 * HOUR
MAX_ATTEMPTS = 3
RETRY_GAP = 2 * HOUR
EXPLORE_HORIZON = 48 * HOUR
NONE = np.int64(-1)  # "no attempt" marker in local-ns arrays


def _weekday(day: np.ndarray) -> np.ndarray:
    return (day + 3) % 7  # 1970-01-01 was a Thursday


def next_desk_slot(local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first desk-hours instant at or after each local time, and whether it moved."""
    day = local // DAY
    tod = local - day * DAY
    workday = _weekday(day) < 5
    inside = workday & (tod >= DESK_OPEN) & (tod < DESK_CLOSE)
    target = np.where(workday & (tod < DESK_OPEN), day, day + 1)
    wd = _weekday(target)
    target = target + np.where(wd == 5, 2, np.where(wd == 6, 1, 0))
    return np.where(inside, local, target * DAY + DESK_OPEN), ~inside


def _backlog(n: int, rng: np.random.Generator) -> np.ndarray:
    """Delay behind the queue when the desk opens (minutes, up to 2.5 h)."""
    return (np.minimum(rng.exponential(40.0, n), 150.0) * MINUTE).astype(np.int64)


def desk_attempts(request_local: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Local times of the desk's three attempts, shape ``(3, n)``."""
    n = len(request_local)
    out = np.empty((MAX_ATTEMPTS, n), dtype=np.int64)
    delay = ((2.0 + rng.exponential(8.0, n)) * MINUTE).astype(np.int64)
    t = request_local + delay
    for k in range(MAX_ATTEMPTS):
        if k == 1:
            t = out[0] + RETRY_GAP + rng.integers(0, 15 * MINUTE, n)
        elif k == 2:
            t = out[1] + DAY + rng.integers(-15 * MINUTE, 15 * MINUTE, n)
        slot_, moved = next_desk_slot(t)
        out[k] = slot_ + moved * _backlog(n, rng)
    return out - out % 10**9


def _allowed_clock(local: np.ndarray) -> np.ndarray:
    """Map local time onto a clock that only runs during calling hours (08:00-21:00)."""
    day = local // DAY
    tod = np.clip(local - day * DAY - CALL_OPEN, 0, CALL_CLOSE - CALL_OPEN)
    return day * (CALL_CLOSE - CALL_OPEN) + tod


def _from_allowed_clock(value: np.ndarray) -> np.ndarray:
    span = CALL_CLOSE - CALL_OPEN
    return (value // span) * DAY + CALL_OPEN + value % span


def uniform_allowed(lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A uniform random calling-hours instant in ``[lo, hi)``; ``-1`` where there is none."""
    a, b = _allowed_clock(lo), _allowed_clock(hi)
    ok = (lo >= 0) & (b > a)
    draw = a + (rng.random(len(lo)) * np.maximum(b - a, 0)).astype(np.int64)
    return np.where(ok, _from_allowed_clock(draw), NONE)


def explore_attempts(request_local: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Local times of up to three exploration attempts, shape ``(3, n)``; ``-1`` = none."""
    n = len(request_local)
    out = np.full((MAX_ATTEMPTS, n), NONE, dtype=np.int64)
    end = request_local + EXPLORE_HORIZON
    out[0] = uniform_allowed(request_local + 5 * MINUTE, request_local + DAY, rng)
    for k in range(1, MAX_ATTEMPTS):
        prev = out[k - 1]
        lo = np.where(prev >= 0, prev + RETRY_GAP, NONE)
        out[k] = uniform_allowed(lo, np.minimum(prev + DAY, end), rng)
    return np.where(out >= 0, out - out % 10**9, NONE)


def request_times(
    consumer: np.ndarray, start_day: np.ndarray, days: int, rng: np.random.Generator
) -> np.ndarray:
    """Local times of callback requests made by contacts with the given consumer flags.

    Business contacts ask on working days (95%), mostly 08:00-18:00, some evenings;
    consumers any day, on weekdays mostly after work.
    """
    n = len(consumer)
    all_days = start_day + np.arange(days)
    work_days = all_days[_weekday(all_days) < 5]
    if len(work_days) == 0:
        work_days = all_days
    on_workday = ~consumer & (rng.random(n) < 0.95)
    day = np.where(
        on_workday,
        work_days[rng.integers(0, len(work_days), n)],
        all_days[rng.integers(0, days, n)],
    )
    weekend = _weekday(day) >= 5
    minute = np.select(
        [~consumer & (rng.random(n) < 0.9), ~consumer, weekend, rng.random(n) < 0.4],
        [rng.uniform(8 * 60, 18 * 60, n), rng.uniform(18 * 60, 21 * 60, n),
         rng.uniform(9 * 60, 21 * 60, n), rng.uniform(8 * 60, 17 * 60, n)],
        rng.uniform(17 * 60, 22 * 60, n),
    )
    return day * DAY + (minute * 60).astype(np.int64) * 10**9
