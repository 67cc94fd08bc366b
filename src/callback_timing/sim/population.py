"""Draw the synthetic contact population and each contact's hidden answering habits.

One row per contact: where it lives (see :mod:`callback_timing.sim.geo`), its industry, and
the hidden parameters the truth (:class:`callback_timing.world.World`) reads:

``baseline``
    personal reachability on the logit scale (normal around 0).
``gw1_day``, ``gw1_start``, ``gw1_dur``, ``gw2_*``
    up to two personal golden windows: weekday (Mon=0), start and duration in minutes of
    the contact-local day, at 15-minute granularity; ``-1`` means none.
``never_day``, ``never_start``, ``never_dur``
    a personal "never" window; day 0-6, or 7 for every working day; ``-1`` means none.
``vacation_doy``, ``vacation_days``
    yearly vacation: first day (day of year, Jan 1 = 0) and length; 0 days = none.
``request_rate``
    callback requests per day this contact makes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from callback_timing.sim.geo import REGIONS, make_phones, region_weights
from callback_timing.sim.patterns import TruthParams

#: Share of contacts per industry (the taxonomy of ``schema.INDUSTRIES``).
INDUSTRY_SHARES: dict[str, float] = {
    "consumer": 0.25, "it": 0.10, "manufacturing": 0.09, "automotive": 0.06, "retail": 0.08,
    "finance": 0.07, "healthcare": 0.06, "logistics": 0.06, "construction": 0.05,
    "public_sector": 0.06, "hospitality": 0.05, "other": 0.07,
}
GOLDEN_SHARE = 0.6  # contacts with at least one golden window
SECOND_GOLDEN_SHARE = 0.3  # of those, with a second one
NEVER_SHARE = 0.25
JULY_1_DOY = 181  # 0-based day of year of 1 July (non-leap year)
SUMMER_VACATION_SHARE = 0.8


def contact_ids(n: int) -> np.ndarray:
    """``c-000000``-style ids, zero-padded to at least six digits.

    >>> contact_ids(2).tolist()
    ['c-000000', 'c-000001']
    """
    width = max(6, len(str(max(n - 1, 0))))
    return np.array([f"c-{i:0{width}d}" for i in range(n)], dtype=object)


def _windows(
    n: int, consumer: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Golden windows: business on working days 08:00-16:30; consumers evenings/weekends."""
    weekend = consumer & (rng.random(n) < 0.4)
    day = np.where(weekend, rng.integers(5, 7, n), rng.integers(0, 5, n))
    evening = consumer & ~weekend & (rng.random(n) < 0.7)
    start_slot = np.select(
        [weekend, evening],
        [rng.integers(9 * 4, 19 * 4, n), rng.integers(17 * 4, 20 * 4 + 1, n)],
        rng.integers(8 * 4, 16 * 4 + 3, n),
    )
    dur = rng.choice([30, 45, 60, 90, 120], n, p=[0.15, 0.2, 0.3, 0.25, 0.1])
    return day.astype(np.int16), (start_slot * 15).astype(np.int16), dur.astype(np.int16)


def _vacations(n: int, consumer: np.ndarray, rng: np.random.Generator):
    days = rng.choice([7, 14, 21], n, p=[0.35, 0.45, 0.2])
    summer = rng.random(n) < SUMMER_VACATION_SHARE
    doy = np.where(
        summer,
        JULY_1_DOY + rng.integers(0, 62 - days + 1),
        rng.integers(0, 365 - days + 1),
    )
    days = np.where(consumer, 0, days)
    return doy.astype(np.int16), days.astype(np.int16)


def draw_contacts(
    n: int,
    rng: np.random.Generator,
    requests_per_contact_day: float,
    params: TruthParams | None = None,
) -> pd.DataFrame:
    """The contact population with its hidden parameters (see the module docstring).

    Examples
    --------
    >>> frame = draw_contacts(50, np.random.default_rng(0), 0.05)
    >>> frame[["contact_id", "country", "timezone"]].shape
    (50, 3)
    """
    params = params or TruthParams()
    names = np.array(list(INDUSTRY_SHARES), dtype=object)
    shares = np.array(list(INDUSTRY_SHARES.values()))
    industry = names[rng.choice(len(names), n, p=shares / shares.sum())]
    consumer = industry == "consumer"
    region = rng.choice(len(REGIONS), n, p=region_weights())
    mobile = rng.random(n) < np.where(consumer, 0.9, 0.5)
    phone = make_phones(region, mobile, rng)

    frame = pd.DataFrame(
        {
            "contact_id": contact_ids(n),
            "country": [REGIONS[r].country for r in region],
            "subdivision": [REGIONS[r].subdivision for r in region],
            "timezone": [REGIONS[r].timezone for r in region],
            "industry": industry,
            "phone": phone,
            "mobile": mobile,
            "baseline": rng.normal(0.0, params.baseline_sd, n),
        }
    )
    has_gw1 = rng.random(n) < GOLDEN_SHARE
    has_gw2 = has_gw1 & (rng.random(n) < SECOND_GOLDEN_SHARE)
    for k, has in ((1, has_gw1), (2, has_gw2)):
        day, start, dur = _windows(n, consumer, rng)
        frame[f"gw{k}_day"] = np.where(has, day, -1).astype(np.int16)
        frame[f"gw{k}_start"] = np.where(has, start, -1).astype(np.int16)
        frame[f"gw{k}_dur"] = np.where(has, dur, 0).astype(np.int16)
    has_never = rng.random(n) < NEVER_SHARE
    never_day = np.where(rng.random(n) < 0.5, 7, rng.integers(0, 5, n))
    frame["never_day"] = np.where(has_never, never_day, -1).astype(np.int16)
    frame["never_start"] = np.where(has_never, rng.integers(8 * 4, 17 * 4, n) * 15, -1).astype(
        np.int16
    )
    frame["never_dur"] = np.where(has_never, rng.choice([60, 90, 120, 180], n), 0).astype(np.int16)
    frame["vacation_doy"], frame["vacation_days"] = _vacations(n, consumer, rng)
    frame["request_rate"] = requests_per_contact_day * rng.gamma(2.0, 0.5, n)
    return frame
