"""Weekly answering patterns of the synthetic world: one logit table per industry.

Each industry has a ``(7, 96)`` table of logit offsets: contact-local weekday (Mon=0) by
15-minute slot of the day. The synthetic truth (:mod:`callback_timing.world`) adds the
table entry to a contact's personal terms, so "IT rarely answers Monday 08:00-10:00" or
"consumers answer in the evening" is simply a low or high cell here.

Examples
--------
>>> table = industry_table()
>>> table.shape
(12, 7, 96)
>>> it, consumer = INDUSTRY_CODES["it"], INDUSTRY_CODES["consumer"]
>>> bool(table[it, 0, slot(9)] < table[it, 1, slot(11)])  # Monday stand-ups
True
>>> bool(table[consumer, 1, slot(19)] > table[consumer, 1, slot(10)])  # evening beats work
True
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from callback_timing.schema import INDUSTRIES

#: Slots per day (15-minute granularity).
SLOTS_PER_DAY = 96
#: Logit of a slot no rule mentions (night).
NIGHT = -4.0
#: Industry name -> row of :func:`industry_table`.
INDUSTRY_CODES: dict[str, int] = {name: i for i, name in enumerate(INDUSTRIES)}

MON_FRI = (0, 1, 2, 3, 4)
MON_THU = (0, 1, 2, 3)
MON_SAT = (0, 1, 2, 3, 4, 5)
WEEKEND = (5, 6)
ALL_DAYS = (0, 1, 2, 3, 4, 5, 6)

# A span is (start hour, end hour, logit offset); later spans override earlier ones.
_OFFICE = [
    (7, 8, -2.0), (8, 9, -0.6), (9, 12, 0.0), (12, 13, -0.8), (13, 16, 0.0),
    (16, 17, -0.4), (17, 18, -1.2), (18, 21, -2.6), (21, 23, -3.5),
]
_CLOSED_WEEKEND = {WEEKEND: [(8, 21, -3.0)]}

#: Rules per industry: {weekdays: [spans]}, applied in order.
PATTERNS: dict[str, dict[tuple[int, ...], list[tuple[float, float, float]]]] = {
    "it": {
        MON_FRI: [(7, 8, -2.2), (8, 9, -1.0), (9, 12, 0.0), (12, 13, -0.5), (13, 17, 0.0),
                  (17, 18, -0.5), (18, 19, -1.5), (19, 21, -2.5)],
        (0,): [(8, 10, -3.0)],  # Monday stand-ups and sprint planning
        (1, 2, 3, 4): [(9.5, 9.75, -1.2)],  # daily stand-up
        **_CLOSED_WEEKEND,
    },
    "manufacturing": {
        MON_FRI: [(6, 7, -0.4), (7, 11.5, 0.1), (11.5, 12, -0.7), (12, 15, 0.0),
                  (15, 16, -2.0), (16, 21, -3.2)],
        (4,): [(13, 15, -0.6)],
        (5,): [(7, 12, -2.0)],
    },
    "automotive": {
        MON_FRI: [(6, 7, -0.3), (7, 12, 0.0), (12, 12.5, -0.7), (12.5, 14.5, 0.0),
                  (14.5, 16, -1.0), (16, 21, -3.0)],
    },
    "retail": {
        MON_SAT: [(8, 10, 0.1), (10, 12, -0.3), (12, 14, -1.1), (14, 17, -0.2),
                  (17, 20, -0.9), (20, 21, -2.0)],
        (5,): [(8, 10, -0.4), (10, 16, -1.2), (16, 20, -1.5)],
        (6,): [(8, 21, -3.0)],
    },
    "finance": {
        MON_FRI: [(7, 8, -2.5), (8, 9, -1.0), (9, 12, 0.0), (12, 13, -0.9), (13, 17, 0.0),
                  (17, 18, -1.5), (18, 21, -3.0)],
        WEEKEND: [(8, 21, -3.5)],
    },
    "healthcare": {
        MON_FRI: [(7, 8, 0.1), (8, 12, -1.1), (12, 13, -0.3), (13, 15, 0.0), (15, 17, -0.6),
                  (17, 20, -1.8), (20, 21, -2.5)],
        WEEKEND: [(8, 20, -2.2)],
    },
    "logistics": {
        MON_FRI: [(6, 8, 0.2), (8, 12, 0.0), (12, 13, -0.4), (13, 17, -0.1), (17, 18, -0.9),
                  (18, 21, -2.2)],
        (5,): [(7, 13, -1.0)],
    },
    "construction": {
        MON_FRI: [(6, 7, 0.2), (7, 12, -0.6), (12, 13, 0.1), (13, 15, -0.6), (15, 17, -0.5),
                  (17, 21, -2.2)],
        (4,): [(13, 21, -2.5)],  # gone early on Fridays
        (5,): [(7, 12, -2.0)],
    },
    "public_sector": {
        MON_THU: [(7, 8, -1.5), (8, 12, 0.0), (12, 13, -1.0), (13, 15.5, 0.0),
                  (15.5, 16, -1.0), (16, 21, -3.8)],
        (4,): [(7, 8, -1.5), (8, 12, 0.0), (12, 13, -1.0), (13, 14, -0.3), (14, 21, -3.8)],
    },
    "hospitality": {
        ALL_DAYS: [(8, 9, -1.5), (9, 11, -0.4), (11, 14, -2.0), (14, 17, 0.0), (17, 22, -2.5)],
    },
    "consumer": {
        MON_FRI: [(7, 8, -1.0), (8, 12, -1.6), (12, 13, -1.0), (13, 17, -1.6), (17, 18, -0.6),
                  (18, 21, 0.4), (21, 22, -0.4)],
        WEEKEND: [(8, 10, -0.8), (10, 20, 0.3), (20, 21, 0.0), (21, 22, -0.6)],
    },
    "other": {MON_FRI: _OFFICE, **_CLOSED_WEEKEND},
}


@dataclass(frozen=True)
class TruthParams:
    """Constants of the answer-probability truth (logit scale), saved with a world.

    The defaults are calibrated so that the traditional callback desk of
    :func:`callback_timing.simulation.simulate` answers about 23% of first attempts and
    reaches about 45% of requests within three attempts.
    """

    intercept: float = -0.62
    baseline_sd: float = 0.9
    golden_boost: float = 2.8
    never_penalty: float = -3.5
    holiday_business: float = -3.0
    bridge_business: float = -1.5
    end_of_year_business: float = -1.0
    vacation_penalty: float = -3.5
    fatigue_per_call: float = 0.45
    fatigue_cap: int = 6


def slot(hour: float) -> int:
    """Index of the 15-minute slot that starts at ``hour`` (e.g. ``9.5`` -> 38)."""
    return int(round(hour * 4))


def _table(rules: dict[tuple[int, ...], list[tuple[float, float, float]]]) -> np.ndarray:
    out = np.full((7, SLOTS_PER_DAY), NIGHT)
    for days, spans in rules.items():
        for start, end, value in spans:
            out[np.ix_(list(days), range(slot(start), slot(end)))] = value
    return out


@lru_cache(maxsize=1)
def industry_table() -> np.ndarray:
    """Logit offsets, shape ``(len(INDUSTRIES), 7, 96)``; rows follow :data:`INDUSTRY_CODES`.

    The array is shared; treat it as read-only.
    """
    table = np.stack([_table(PATTERNS[name]) for name in INDUSTRIES])
    table.setflags(write=False)
    return table
