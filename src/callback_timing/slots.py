"""Candidate call slots: a 15-minute grid over the horizon, in legal contact-local hours.

The grid is built in UTC (so it is DST-safe: every slot is a real instant) and filtered by the
contact's local wall clock. The policy milestone adds the remaining calling rules on top.

Examples
--------
>>> import pandas as pd
>>> req = pd.DataFrame({"request_id": ["r1"], "contact_id": ["c1"],
...                     "now": [pd.Timestamp("2026-06-01T17:50Z")],
...                     "timezone": ["Europe/Warsaw"], "country": ["PL"],
...                     "subdivision": [None], "industry": ["it"]})
>>> s = candidate_slots(req, horizon_hours=4)
>>> s["at"].iloc[0].isoformat(), s["at"].iloc[-1].isoformat()   # 20:00 and 20:45 local
('2026-06-01T18:00:00+00:00', '2026-06-01T18:45:00+00:00')
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from callback_timing.calendar import local_clock

SLOT_MINUTES = 15
#: Default legal calling hours, contact-local: a slot may start from 08:00 until 20:45.
CALLING_HOURS = (8, 21)


def candidate_slots(
    requests: pd.DataFrame,
    horizon_hours: float = 48,
    step_minutes: int = SLOT_MINUTES,
    calling_hours: tuple[int, int] = CALLING_HOURS,
) -> pd.DataFrame:
    """All slot starts in ``[now, now + horizon]`` inside the contact's local calling hours.

    Parameters
    ----------
    requests : one row per request with ``request_id``, ``contact_id``, ``now`` (UTC) and the
        contact columns (``timezone``, ``country``, ``subdivision``, ``industry``).

    Returns
    -------
    A targets frame for :func:`callback_timing.features.build_features`: the request's columns,
    ``at`` (slot start, UTC) and ``asof`` (= ``now``: the history cut-off).
    """
    step = pd.Timedelta(minutes=step_minutes)
    now = pd.to_datetime(requests["now"], utc=True)
    first = now.dt.ceil(step)
    n_steps = int(horizon_hours * 60 // step_minutes) + 1
    reps = np.repeat(np.arange(len(requests)), n_steps)
    offsets = np.tile(np.arange(n_steps), len(requests)) * step
    slots = requests.iloc[reps].reset_index(drop=True)
    slots["at"] = first.iloc[reps].reset_index(drop=True) + pd.to_timedelta(offsets)
    slots["asof"] = now.iloc[reps].reset_index(drop=True)
    horizon_end = slots["asof"] + pd.Timedelta(hours=horizon_hours)
    clock = local_clock(slots["at"], slots["timezone"])
    start_min, end_min = calling_hours[0] * 60, calling_hours[1] * 60
    legal = (clock["minute_of_day"] >= start_min) & (
        clock["minute_of_day"] + step_minutes <= end_min
    )
    keep = legal & (slots["at"] <= horizon_end)
    return slots.loc[keep.to_numpy()].drop(columns=["now"]).reset_index(drop=True)
