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
from collections.abc import Callable
from functools import lru_cache

import holidays
import numpy as np
import pandas as pd

from callback_timing import config, tzclock

_DAY_NS = 86_400 * 10**9
_HOUR_NS = 3_600 * 10**9
_MINUTE_NS = 60 * 10**9
#: Day distance reported when no holiday lies within the searched years.
FAR_DAYS = 366


def _as_series(values, index=None) -> pd.Series:
    if isinstance(values, pd.Series):
        return values
    return pd.Series(values, index=index)


def clock_arrays(utc_ns: np.ndarray, local_ns: np.ndarray) -> dict[str, np.ndarray]:
    """Wall-clock parts of local times ``local_ns`` (naive int64 ns) of instants ``utc_ns``.

    Returns ``weekday`` (Mon=0, int8), ``hour`` (int8), ``minute_of_day`` (int16) and
    ``utc_offset_h`` (float). The kernel behind :func:`local_clock` and the serving path.
    """
    local_ns = np.asarray(local_ns, dtype=np.int64)
    return {
        "weekday": ((local_ns // _DAY_NS + 3) % 7).astype(np.int8),  # 1970-01-01: a Thursday
        "hour": ((local_ns // _HOUR_NS) % 24).astype(np.int8),
        "minute_of_day": ((local_ns // _MINUTE_NS) % 1440).astype(np.int16),
        "utc_offset_h": (local_ns - np.asarray(utc_ns, dtype=np.int64)) / 3.6e12,
    }


def utc_ns_of(utc: pd.Series) -> np.ndarray:
    """Nanoseconds since the epoch (int64) of tz-aware timestamps."""
    return utc.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]").view(np.int64)


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
    utc_ns = utc_ns_of(utc)
    local = tzclock.local_ns(utc_ns, tz.to_numpy(dtype=object))
    return pd.DataFrame(
        {"local": pd.DatetimeIndex(local.view("datetime64[ns]")), **clock_arrays(utc_ns, local)},
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
def holiday_days(country: str | None, subdivision: str | None, years: tuple[int, ...]
                 ) -> tuple[np.ndarray, tuple[str, ...]]:
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


def holiday_arrays(days: np.ndarray, hdays: np.ndarray, hnames: tuple) -> dict[str, np.ndarray]:
    """Holiday features of dates ``days`` (``datetime64[D]``) given sorted holiday dates.

    Returns ``holiday``, ``holiday_name``, ``bridge_day``, ``days_to_holiday`` and
    ``days_from_holiday`` (see :func:`holiday_frame`).
    """
    n = len(days)
    out = {"holiday": _is_in(days, hdays), "holiday_name": np.full(n, None, dtype=object),
           "bridge_day": np.zeros(n, dtype=bool),
           "days_to_holiday": np.full(n, FAR_DAYS, dtype=np.int16),
           "days_from_holiday": np.full(n, FAR_DAYS, dtype=np.int16)}
    if not len(hdays):
        return out
    nxt = np.clip(np.searchsorted(hdays, days), 0, len(hdays) - 1)
    out["holiday_name"] = np.where(out["holiday"], np.array(hnames, dtype=object)[nxt], None)
    dist_next = (hdays[nxt] - days).astype(int)
    out["days_to_holiday"] = np.where(
        dist_next >= 0, np.minimum(dist_next, FAR_DAYS), FAR_DAYS).astype(np.int16)
    pos_r = np.searchsorted(hdays, days, side="right") - 1
    dist_prev = (days - hdays[np.clip(pos_r, 0, len(hdays) - 1)]).astype(int)
    out["days_from_holiday"] = np.where(
        (pos_r >= 0) & (dist_prev >= 0), np.minimum(dist_prev, FAR_DAYS), FAR_DAYS
    ).astype(np.int16)

    def off(day: np.ndarray) -> np.ndarray:
        weekday = (day.astype("int64") + 3) % 7  # 1970-01-01 was a Thursday
        return (weekday >= 5) | _is_in(day, hdays)

    one = np.timedelta64(1, "D")
    out["bridge_day"] = ~off(days) & off(days - one) & off(days + one)
    return out


def _place_groups(country, subdivision, n: int) -> tuple[np.ndarray, list]:
    """Codes and uniques (in order of appearance) of (country, subdivision) pairs; missing
    values as ``None``."""
    cc, cu = pd.factorize(pd.Series(country, dtype=object))  # missing: -1
    if subdivision is None:
        sc, su = np.full(n, -1, dtype=np.int64), np.array([], dtype=object)
    else:
        sc, su = pd.factorize(pd.Series(subdivision, dtype=object))
    width = len(su) + 1
    codes, keys = pd.factorize((cc + 1) * width + (sc + 1))
    countries, subdivisions = np.append(None, np.asarray(cu, dtype=object)), np.append(None, su)
    return codes, [(countries[k // width], subdivisions[k % width]) for k in keys]


def year_span(days: np.ndarray) -> tuple[int, ...]:
    """The years holidays are read for around dates ``days``: one before to one after."""
    years = days.astype("datetime64[Y]").astype(int) + 1970
    return tuple(range(int(years.min()) - 1, int(years.max()) + 2))


def holiday_frame(
    local_day: pd.Series, country: pd.Series, subdivision: pd.Series | None = None
) -> pd.DataFrame:
    """Holiday features of contact-local dates.

    Returns columns ``holiday`` (bool), ``holiday_name`` (str or None), ``bridge_day`` (a
    working weekday between two days off, one of them a holiday), ``days_to_holiday`` and
    ``days_from_holiday`` (capped at :data:`FAR_DAYS`).
    """
    local_day = _as_series(local_day)
    days = local_day.to_numpy("datetime64[D]")
    codes, uniques = _place_groups(_as_series(country, local_day.index).to_numpy(object),
                                   None if subdivision is None else
                                   _as_series(subdivision, local_day.index).to_numpy(object),
                                   len(days))
    out = holiday_arrays(days, np.array([], dtype="datetime64[D]"), ())
    for code, (ctry, sub) in enumerate(uniques):
        mask = codes == code
        d = days[mask]
        for name, values in holiday_arrays(d, *holiday_days(ctry, sub, year_span(d))).items():
            out[name][mask] = values
    return pd.DataFrame(out, index=local_day.index)


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


#: Calendar features that depend on the local date only (see :func:`day_arrays`).
DAY_COLUMNS = ("month", "week_of_year", "holiday", "holiday_name", "bridge_day",
               "days_to_holiday", "days_from_holiday", "summer", "end_of_year")


def day_arrays(days: np.ndarray, country: str | None, subdivision: str | None,
               years: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The :data:`DAY_COLUMNS` of local dates ``days`` in one country/subdivision.

    ``years`` are the years whose holidays are read (:func:`year_span` of the dates).
    """
    days = np.asarray(days, dtype="datetime64[D]")
    idx = pd.DatetimeIndex(days.astype("datetime64[ns]"))
    seasons = season_flags(pd.Series(idx))
    return {
        "month": idx.month.to_numpy(np.int8),
        "week_of_year": idx.isocalendar().week.to_numpy(np.int8),
        **holiday_arrays(days, *holiday_days(country, subdivision, years)),
        "summer": seasons["summer"].to_numpy(),
        "end_of_year": seasons["end_of_year"].to_numpy(),
    }


def _days_by_group(day: np.ndarray, country, subdivision) -> dict[str, np.ndarray]:
    """:func:`day_arrays` of each row's local day (int days since the epoch), per place."""
    codes, uniques = _place_groups(country, subdivision, len(day))
    out: dict[str, np.ndarray] = {}
    for code, (ctry, sub) in enumerate(uniques):
        mask = codes == code
        unique, inverse = np.unique(day[mask], return_inverse=True)
        unique = unique.astype("datetime64[D]")
        for name, values in day_arrays(unique, ctry, sub, year_span(unique)).items():
            if name not in out:
                out[name] = np.empty(len(day), dtype=values.dtype)
            out[name][mask] = values[inverse]
    if not out:
        out = day_arrays(np.array([], dtype="datetime64[D]"), None, None, ())
    return out


def calendar_arrays(utc_ns: np.ndarray, local_ns: np.ndarray,
                    country: np.ndarray | None = None, subdivision: np.ndarray | None = None,
                    days_of: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None
                    ) -> dict[str, np.ndarray]:
    """Every column of :func:`calendar_frame` but ``local``, as arrays (the shared kernel).

    ``days_of(day)`` may give the :data:`DAY_COLUMNS` of each row's local day (int days since
    the epoch) from a cache; by default they are computed per country/subdivision.
    """
    clock = clock_arrays(utc_ns, local_ns)
    day = np.asarray(local_ns, dtype=np.int64) // _DAY_NS
    if days_of is None:
        if country is None:
            country = np.full(len(day), None, dtype=object)
        days = _days_by_group(day, country, subdivision)
    else:
        days = days_of(day)
    angle = 2 * np.pi * clock["minute_of_day"] / 1440.0
    return {
        "weekday": clock["weekday"], "hour": clock["hour"],
        "minute_of_day": clock["minute_of_day"], "tod_sin": np.sin(angle),
        "tod_cos": np.cos(angle), "month": days["month"], "week_of_year": days["week_of_year"],
        "weekend": clock["weekday"] >= 5, "holiday": days["holiday"],
        "holiday_name": days["holiday_name"], "bridge_day": days["bridge_day"],
        "days_to_holiday": days["days_to_holiday"],
        "days_from_holiday": days["days_from_holiday"], "summer": days["summer"],
        "end_of_year": days["end_of_year"], "utc_offset_h": clock["utc_offset_h"],
    }


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
    local_ns = clock["local"].to_numpy("datetime64[ns]").view(np.int64)

    def to_array(values) -> np.ndarray | None:
        return None if values is None else _as_series(values, utc.index).to_numpy(object)

    arrays = calendar_arrays(utc_ns_of(utc), local_ns, to_array(country), to_array(subdivision))
    return pd.DataFrame({"local": clock["local"], **arrays}, index=utc.index)
