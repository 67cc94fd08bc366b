"""Contact-local time and calendars: weekday/hour, public holidays, bridge days, seasons.

UTC inside, contact-local only here. Every function is vectorised over pandas Series and
groups by the (few) distinct time zones or (country, subdivision) pairs, so a million rows
cost a handful of numpy calls, not a million Python calls.

Examples
--------
>>> import pandas as pd
>>> utc = pd.Series(pd.to_datetime(["2026-03-27T08:00Z", "2026-03-30T07:00Z"], utc=True))
>>> tz = pd.Series(["Europe/Warsaw", "Europe/Warsaw"])
>>> local_clock(utc, tz)[["weekday", "hour"]].values.tolist()
[[4, 9], [0, 9]]
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import holidays
import numpy as np
import pandas as pd

from callback_timing import config

_DAY_NS = 86_400 * 10**9
#: Day distance reported when no holiday lies within the searched years.
FAR_DAYS = 366


def _as_series(values, index=None) -> pd.Series:
    if isinstance(values, pd.Series):
        return values
    return pd.Series(values, index=index)


def local_clock(utc: pd.Series, tz: pd.Series) -> pd.DataFrame:
    """Contact-local wall-clock parts of UTC instants.

    Parameters
    ----------
    utc : Series of tz-aware (UTC) timestamps.
    tz : Series of IANA zone names, aligned with ``utc``.

    Returns
    -------
    DataFrame with the same index and columns ``local`` (naive local wall time),
    ``weekday`` (Mon=0), ``hour``, ``minute_of_day``, ``utc_offset_h``.
    """
    utc = _as_series(utc)
    tz = _as_series(tz, utc.index)
    utc_ns = utc.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]")
    local = np.empty(len(utc), dtype="datetime64[ns]")
    tz_values = tz.to_numpy(dtype=object)
    for zone in pd.unique(tz_values):
        mask = tz_values == zone
        conv = pd.DatetimeIndex(utc_ns[mask]).tz_localize("UTC").tz_convert(zone)
        local[mask] = conv.tz_localize(None).to_numpy("datetime64[ns]")
    local_idx = pd.DatetimeIndex(local)
    offset_h = (local.astype("int64") - utc_ns.astype("int64")) / 3.6e12
    return pd.DataFrame(
        {
            "local": local_idx,
            "weekday": local_idx.day_of_week.to_numpy(np.int8),
            "hour": local_idx.hour.to_numpy(np.int8),
            "minute_of_day": (local_idx.hour * 60 + local_idx.minute).to_numpy(np.int16),
            "utc_offset_h": offset_h,
        },
        index=utc.index,
    )


def local_to_utc(local: pd.Series, tz: pd.Series) -> pd.Series:
    """Interpret naive wall-clock times in each row's zone and return UTC, DST-safe.

    A wall time that does not exist (spring forward gap) moves forward to the first valid
    instant; an ambiguous one (autumn fold) takes the first, daylight-saving, occurrence.

    >>> import pandas as pd
    >>> s = pd.Series(pd.to_datetime(["2026-03-29 02:30", "2026-10-25 02:30"]))
    >>> local_to_utc(s, pd.Series(["Europe/Berlin"] * 2)).dt.strftime("%H:%M").tolist()
    ['01:00', '00:30']
    """
    local = _as_series(local)
    tz = _as_series(tz, local.index)
    naive = local.to_numpy("datetime64[ns]")
    out = np.empty(len(local), dtype="datetime64[ns]")
    tz_values = tz.to_numpy(dtype=object)
    for zone in pd.unique(tz_values):
        mask = tz_values == zone
        idx = pd.DatetimeIndex(naive[mask]).tz_localize(
            zone, ambiguous=np.ones(int(mask.sum()), dtype=bool), nonexistent="shift_forward"
        )
        out[mask] = idx.tz_convert("UTC").tz_localize(None).to_numpy("datetime64[ns]")
    return pd.Series(pd.DatetimeIndex(out).tz_localize("UTC"), index=local.index)


@lru_cache(maxsize=512)
def holiday_days(country: str | None, subdivision: str | None, years: tuple[int, ...]):
    """Sorted public-holiday dates (``datetime64[D]``) and names for a country/subdivision.

    Unknown countries give no holidays; an unknown subdivision falls back to the country.
    """
    empty = (np.array([], dtype="datetime64[D]"), ())
    if not country or not isinstance(country, str):
        return empty
    kwargs = {"years": list(years)}
    cal = None
    for subdiv in ([subdivision] if isinstance(subdivision, str) and subdivision else []) + [None]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cal = holidays.country_holidays(country.upper(), subdiv=subdiv, **kwargs)
            break
        except (NotImplementedError, KeyError, ValueError):
            continue
    if cal is None:
        return empty
    items = sorted(cal.items())
    dates = np.array([d for d, _ in items], dtype="datetime64[D]")
    return dates, tuple(name for _, name in items)


def _is_in(days: np.ndarray, sorted_days: np.ndarray) -> np.ndarray:
    if len(sorted_days) == 0:
        return np.zeros(len(days), dtype=bool)
    pos = np.searchsorted(sorted_days, days)
    pos = np.clip(pos, 0, len(sorted_days) - 1)
    return sorted_days[pos] == days


def holiday_frame(
    local_day: pd.Series, country: pd.Series, subdivision: pd.Series | None = None
) -> pd.DataFrame:
    """Holiday features of contact-local dates.

    Returns columns ``holiday`` (bool), ``holiday_name`` (str or None), ``bridge_day`` (a
    working weekday between two days off, one of them a holiday), ``days_to_holiday`` and
    ``days_from_holiday`` (capped at :data:`FAR_DAYS`).
    """
    local_day = _as_series(local_day)
    index = local_day.index
    days = local_day.to_numpy("datetime64[D]")
    n = len(days)
    country = _as_series(country, index).astype(object).where(lambda s: s.notna(), None)
    if subdivision is None:
        subdivision = pd.Series([None] * n, index=index, dtype=object)
    subdivision = _as_series(subdivision, index).astype(object).where(lambda s: s.notna(), None)
    holiday = np.zeros(n, dtype=bool)
    bridge = np.zeros(n, dtype=bool)
    to_h = np.full(n, FAR_DAYS, dtype=np.int16)
    from_h = np.full(n, FAR_DAYS, dtype=np.int16)
    names = np.full(n, None, dtype=object)
    key = pd.MultiIndex.from_arrays([country.to_numpy(), subdivision.to_numpy()])
    codes, uniques = pd.factorize(key)
    years_all = days.astype("datetime64[Y]").astype(int) + 1970
    for code, (ctry, sub) in enumerate(uniques):
        mask = codes == code
        d = days[mask]
        yrs = years_all[mask]
        years = tuple(range(int(yrs.min()) - 1, int(yrs.max()) + 2))
        hdays, hnames = holiday_days(ctry, sub, years)
        is_h = _is_in(d, hdays)
        holiday[mask] = is_h
        if len(hdays):
            nxt = np.clip(np.searchsorted(hdays, d), 0, len(hdays) - 1)
            names[mask] = np.where(is_h, np.array(hnames, dtype=object)[nxt], None)
            dist_next = (hdays[nxt] - d).astype(int)
            to_h[mask] = np.where(dist_next >= 0, np.minimum(dist_next, FAR_DAYS), FAR_DAYS)
            pos_r = np.searchsorted(hdays, d, side="right") - 1
            prv = np.clip(pos_r, 0, len(hdays) - 1)
            dist_prev = (d - hdays[prv]).astype(int)
            from_h[mask] = np.where(
                (pos_r >= 0) & (dist_prev >= 0), np.minimum(dist_prev, FAR_DAYS), FAR_DAYS
            )

            def off(day: np.ndarray, hdays=hdays) -> np.ndarray:
                weekday = (day.astype("int64") + 3) % 7  # 1970-01-01 was a Thursday
                return (weekday >= 5) | _is_in(day, hdays)

            one = np.timedelta64(1, "D")
            bridge[mask] = ~off(d) & off(d - one) & off(d + one)
    return pd.DataFrame(
        {
            "holiday": holiday,
            "holiday_name": names,
            "bridge_day": bridge,
            "days_to_holiday": to_h,
            "days_from_holiday": from_h,
        },
        index=index,
    )


def season_flags(local: pd.Series) -> pd.DataFrame:
    """``summer`` and ``end_of_year`` season flags of naive local timestamps."""
    local = pd.DatetimeIndex(_as_series(local))
    month = local.month.to_numpy()
    day = local.day.to_numpy()
    summer = np.isin(month, config.SUMMER_MONTHS)
    eoy = ((month == 12) & (day >= config.END_OF_YEAR_FROM_DEC)) | (
        (month == 1) & (day <= config.END_OF_YEAR_TO_JAN)
    )
    return pd.DataFrame({"summer": summer, "end_of_year": eoy})


def calendar_frame(
    utc: pd.Series,
    tz: pd.Series,
    country: pd.Series | None = None,
    subdivision: pd.Series | None = None,
    clock: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """All calendar features of UTC instants in each contact's local time.

    ``clock`` is :func:`local_clock` of the same instants, when the caller has it already.

    Columns: ``weekday``, ``hour``, ``minute_of_day``, ``tod_sin``, ``tod_cos``, ``month``,
    ``week_of_year``, ``weekend``, ``holiday``, ``holiday_name``, ``bridge_day``,
    ``days_to_holiday``, ``days_from_holiday``, ``summer``, ``end_of_year``, ``utc_offset_h``,
    and ``local`` (naive local wall time, for reasons and reports).
    """
    utc = _as_series(utc)
    if clock is None:
        clock = local_clock(utc, tz)
    local = pd.DatetimeIndex(clock["local"])
    if country is None:
        country = pd.Series([None] * len(utc), index=utc.index, dtype=object)
    hol = holiday_frame(pd.Series(local.normalize(), index=utc.index), country, subdivision)
    seasons = season_flags(pd.Series(local))
    angle = 2 * np.pi * clock["minute_of_day"].to_numpy() / 1440.0
    return pd.DataFrame(
        {
            "local": clock["local"],
            "weekday": clock["weekday"],
            "hour": clock["hour"],
            "minute_of_day": clock["minute_of_day"],
            "tod_sin": np.sin(angle),
            "tod_cos": np.cos(angle),
            "month": local.month.to_numpy(np.int8),
            "week_of_year": local.isocalendar().week.to_numpy(np.int8),
            "weekend": clock["weekday"].to_numpy() >= 5,
            "holiday": hol["holiday"].to_numpy(),
            "holiday_name": hol["holiday_name"].to_numpy(),
            "bridge_day": hol["bridge_day"].to_numpy(),
            "days_to_holiday": hol["days_to_holiday"].to_numpy(),
            "days_from_holiday": hol["days_from_holiday"].to_numpy(),
            "summer": seasons["summer"].to_numpy(),
            "end_of_year": seasons["end_of_year"].to_numpy(),
            "utc_offset_h": clock["utc_offset_h"],
        },
        index=utc.index,
    )
