"""The policy's calling rules, read from one documented YAML file (``policy.yaml``).

:func:`load_policy_config` reads the packaged defaults and, optionally, a user file whose keys
override them. Mistakes are :class:`~callback_timing.schema.ConfigError` naming the key.

Examples
--------
>>> cfg = load_policy_config()
>>> cfg.hours_for("US", "FL")[0], cfg.hours_for("PL", None)[6]   # minutes of the local day
((480, 1200), (480, 1260))
>>> cfg.hours_for("US", "TX")[6]
(720, 1260)
>>> round(float(cfg.urgency_worth(36.0)), 3)
0.224
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from callback_timing.schema import ConfigError, read_config_text

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")

#: Hours per weekday (Mon=0): ``(start, end)`` in minutes of the local day, or ``None``.
WeekHours = tuple[tuple[int, int] | None, ...]


def parse_span(value: object, where: str) -> tuple[int, int] | None:
    """Minutes ``(start, end)`` of the local day for ``"HH:MM-HH:MM"``; ``None`` for "none"."""
    if isinstance(value, str) and value.strip().lower() == "none":
        return None
    m = _SPAN.match(str(value))
    if not m:
        raise ConfigError(f"{where}: expected 'HH:MM-HH:MM' or 'none', got {value!r}")
    h1, m1, h2, m2 = (int(x) for x in m.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if not (0 <= start < end <= 24 * 60) or m1 >= 60 or m2 >= 60:
        raise ConfigError(f"{where}: {value!r} is not a span within one day")
    return start, end


def parse_days(key: object, where: str) -> tuple[int, ...]:
    """Weekdays (Mon=0) of a key such as ``all``, ``mon-fri``, ``sat`` or ``mon,wed``.

    >>> parse_days("tue-thu", "x"), parse_days("sat,sun", "x")
    ((1, 2, 3), (5, 6))
    """
    text = str(key).strip().lower()
    if text == "all":
        return tuple(range(7))
    days: list[int] = []
    for part in text.split(","):
        ends = [p.strip() for p in part.split("-")]
        if len(ends) > 2 or any(e not in _DAYS for e in ends):
            raise ConfigError(f"{where}: unknown days {key!r} (use all, mon-fri, sat, mon,wed)")
        first, last = _DAYS.index(ends[0]), _DAYS.index(ends[-1])
        if last < first:
            raise ConfigError(f"{where}: day range {part!r} runs backwards")
        days.extend(range(first, last + 1))
    return tuple(sorted(set(days)))


def _week(spec: object, where: str) -> WeekHours:
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(f"{where}: expected a mapping of days to 'HH:MM-HH:MM'")
    week: list[tuple[int, int] | None] = [None] * 7
    for key, value in spec.items():
        for d in parse_days(key, where):
            week[d] = parse_span(value, f"{where}.{key}")
    return tuple(week)


def _positive(value: object, where: str, integer: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if number < 0 or (integer and number != int(number)):
        raise ConfigError(f"{where}: expected a non-negative {'whole ' if integer else ''}number")
    return number


def _flag(value, where: str) -> bool:
    """A yes/no setting (YAML ``true``/``false``), or a :class:`ConfigError` naming it."""
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    return value


@dataclass(frozen=True)
class PolicyConfig:
    """Calling rules, urgency curve, window shaping and exploration (see ``policy.yaml``)."""

    calling_hours: dict[str, WeekHours] = field(default_factory=dict)
    allow_holiday_calls: bool = False
    max_attempts_per_request: int = 3
    stop_after_invalid_number: bool = True
    max_calls_24h: int = 3
    max_calls_7d: int = 7
    min_gap_hours: float = 2.0
    urgency_points: tuple[tuple[float, float], ...] = ((0, 1.0), (24, 0.42), (48, 0.12))
    wait_half_life_hours: float = 12.0
    top_k: int = 3
    keep_ratio: float = 0.85
    max_window_minutes: int = 120
    min_separation_minutes: int = 60
    default_horizon_hours: float = 48.0
    max_horizon_hours: float = 336.0
    exploration_share: float = 0.05
    default_timezone: str = "UTC"
    model_budget_ms: float = 50.0
    model_budget_ms_per_request: float = 1.0
    retention_call_months: int = 12
    retention_phone_months: int = 24
    purge_hour_utc: int = 3
    monitor_days: float = 14.0
    monitor_ece_alert: float = 0.05
    monitor_psi_alert: float = 0.25
    monitor_min_sample: int = 200
    retrain_min_new_calls: int = 200
    retrain_offpolicy_min_ess: float = 100.0
    retrain_offpolicy_tolerance: float = 0.02

    def active_cutoff(self) -> pd.Timestamp | None:
        """:meth:`retention_cutoff` as of now, or ``None`` when ``CALLBACK_TIMING_PURGE=0``
        turns the retention off (replays of old data)."""
        from callback_timing import config

        return self.retention_cutoff() if config.retention_on() else None

    def retention_cutoff(self, now: pd.Timestamp | None = None) -> pd.Timestamp:
        """The instant before which call-level data is deleted: ``now`` (UTC) minus
        ``retention.call_times_months`` calendar months (a month end stays a month end).

        >>> cfg = PolicyConfig()
        >>> str(cfg.retention_cutoff(pd.Timestamp("2028-02-29T10:00:00+05:00")))
        '2027-02-28 05:00:00+00:00'
        """
        now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
        now = now.tz_localize("UTC") if now.tz is None else now.tz_convert("UTC")
        return now - pd.DateOffset(months=self.retention_call_months)

    def model_budget_s(self, requests: int) -> float | None:
        """Seconds the model may take to score ``requests`` requests before the rules answer
        (``None``: no budget, when ``model.latency_budget_ms`` is 0)."""
        if self.model_budget_ms <= 0:
            return None
        return (self.model_budget_ms + self.model_budget_ms_per_request * requests) / 1000.0

    def hours_for(self, country: str | None, subdivision: str | None) -> WeekHours:
        """Calling hours of a country/subdivision: the most specific entry wins."""
        keys = []
        if isinstance(country, str) and country:
            if isinstance(subdivision, str) and subdivision:
                sub = subdivision.upper().removeprefix(f"{country.upper()}-")  # US-FL or FL
                keys.append(f"{country.upper()}-{sub}")
            keys.append(country.upper())
        for key in [*keys, "default"]:
            if key in self.calling_hours:
                return self.calling_hours[key]
        return ((8 * 60, 21 * 60),) * 7

    def wait_discount(self, hours_from_now: np.ndarray | float) -> np.ndarray:
        """The policy's extra discount of waiting (``urgency.wait_half_life_hours``; 1 if off)."""
        h = np.maximum(np.asarray(hours_from_now, dtype=float), 0.0)  # np.clip costs more
        if self.wait_half_life_hours <= 0:
            return np.ones_like(h)
        return 0.5 ** (h / self.wait_half_life_hours)

    def slot_factors(self, flexible: np.ndarray | bool, hours_since_request: np.ndarray,
                     hours_from_now: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(worth, wait)`` of slots: the urgency worth and the wait discount, both 1 for a
        ``flexible`` request; a slot's score is ``p_answer x worth x wait``."""
        flexible = np.asarray(flexible, dtype=bool)
        worth = np.where(flexible, 1.0, self.urgency_worth(hours_since_request))
        return worth, np.where(flexible, 1.0, self.wait_discount(hours_from_now))

    def urgency_worth(self, hours_since_request: np.ndarray | float) -> np.ndarray:
        """Worth of a callback ``hours`` after the request (log-linear between the points)."""
        x, log_worth = self._urgency_knots
        h = np.maximum(np.asarray(hours_since_request, dtype=float), 0.0)
        return np.exp(np.interp(h, x, log_worth))

    @functools.cached_property
    def _urgency_knots(self) -> tuple[np.ndarray, np.ndarray]:
        """The urgency curve's hours and log worths (read once per ranking otherwise)."""
        x, worth = np.array(self.urgency_points, dtype=float).T
        return x, np.log(worth)


def desk_config(config: PolicyConfig) -> PolicyConfig:
    """The calling rules with a traditional callback desk's opening hours (Mon-Fri
    08:00-18:00 local) and no exploration: what the control arm and the campaign's desk use."""
    desk = ((8 * 60, 18 * 60),) * 5 + (None, None)
    default = config.hours_for(None, None)  # the legal hours stay the limit: a stricter
    hours = {key: _within(desk, week)      # region (US-TX opens at 09:00) keeps its own
             for key, week in {**config.calling_hours, "default": default}.items()}
    return dataclasses.replace(config, calling_hours=hours, exploration_share=0.0)


def _within(a: WeekHours, b: WeekHours) -> WeekHours:
    """The hours of each weekday inside both ``a`` and ``b`` (``None``: no calls that day)."""
    days = []
    for x, y in zip(a, b, strict=True):
        start, end = (max(x[0], y[0]), min(x[1], y[1])) if x and y else (0, 0)
        days.append((start, end) if start < end else None)
    return tuple(days)


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "calling_hours":
            out[key] = _merge(out[key], value)
        elif key == "calling_hours" and isinstance(value, dict):
            out[key] = {**out.get(key, {}), **value}
        else:
            out[key] = value
    return out


def _read_yaml(text: str, where: str) -> dict:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    return data


def default_policy_text() -> str:
    """The packaged ``policy.yaml`` (documented defaults)."""
    return resources.files("callback_timing").joinpath("policy.yaml").read_text("utf-8")


def load_policy_config(path: str | Path | None = None) -> PolicyConfig:
    """Defaults from the packaged ``policy.yaml``, overridden by the keys of ``path``."""
    data = _read_yaml(default_policy_text(), "policy.yaml")
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"rules file not found: {path}")
        data = _merge(data, _read_yaml(read_config_text(path), str(path)))
    known = {"calling_hours", "holidays", "attempts", "urgency", "windows", "horizon",
             "exploration", "model", "default_timezone", "retention", "monitoring",
             "retraining"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in the rules "
                          f"(known: {', '.join(sorted(known))})")
    return _build(data)


def _build(data: dict) -> PolicyConfig:
    hours = {str(k).upper() if k != "default" else "default": _week(v, f"calling_hours.{k}")
             for k, v in (data.get("calling_hours") or {}).items()}
    att = data.get("attempts") or {}
    win = data.get("windows") or {}
    hor = data.get("horizon") or {}
    points = (data.get("urgency") or {}).get("standard", [[0, 1.0], [24, 0.42], [48, 0.12]])
    try:
        curve = tuple((float(h), float(w)) for h, w in points)
    except (TypeError, ValueError):
        raise ConfigError("urgency.standard: expected a list of [hours, worth] pairs") from None
    if (not curve or curve[0][0] != 0 or any(w <= 0 for _, w in curve)
            or any(b[0] <= a[0] for a, b in zip(curve, curve[1:], strict=False))):
        raise ConfigError("urgency.standard: hours must start at 0 and increase; worth must be > 0")
    share = _positive((data.get("exploration") or {}).get("share", 0.05), "exploration.share")
    if share > 1:
        raise ConfigError("exploration.share: must be between 0 and 1")
    ratio = _positive(win.get("keep_ratio", 0.85), "windows.keep_ratio")
    if not 0 < ratio <= 1:
        raise ConfigError("windows.keep_ratio: must be in (0, 1]")
    max_h = _positive(hor.get("max_hours", 336), "horizon.max_hours")
    default_h = _positive(hor.get("default_hours", 48), "horizon.default_hours")
    if not 0 < default_h <= max_h:
        raise ConfigError("horizon.default_hours: must be > 0 and <= horizon.max_hours")
    budget = data.get("model") or {}
    keep = data.get("retention") or {}
    purge_hour = int(_positive(keep.get("daily_purge_hour_utc", 3),
                               "retention.daily_purge_hour_utc", True))
    if purge_hour > 23:
        raise ConfigError("retention.daily_purge_hour_utc: an hour from 0 to 23")
    months = {k: int(_positive(keep.get(k, default), f"retention.{k}", True))
              for k, default in (("call_times_months", 12), ("phone_numbers_months", 24))}
    if min(months.values()) < 1:
        raise ConfigError("retention: keep data at least 1 month")
    watch = data.get("monitoring") or {}
    monitor_days = _positive(watch.get("days", 14), "monitoring.days")
    if not 0 < monitor_days <= 366:
        raise ConfigError("monitoring.days: from 0 to 366 days")
    loop = data.get("retraining") or {}
    zone = str(data.get("default_timezone", "UTC"))
    from callback_timing.contacts import is_valid_zone

    if not is_valid_zone(zone):
        raise ConfigError(f"default_timezone: unknown time zone {zone!r}")
    return PolicyConfig(
        calling_hours=hours,
        allow_holiday_calls=bool((data.get("holidays") or {}).get("allow_calls", False)),
        max_attempts_per_request=int(
            _positive(att.get("per_request", 3), "attempts.per_request", True)),
        stop_after_invalid_number=_flag(att.get("stop_after_invalid_number", True),
                                        "attempts.stop_after_invalid_number"),
        max_calls_24h=int(
            _positive(att.get("per_contact_24h", 3), "attempts.per_contact_24h", True)),
        max_calls_7d=int(_positive(att.get("per_contact_7d", 7), "attempts.per_contact_7d", True)),
        min_gap_hours=_positive(att.get("min_gap_hours", 2), "attempts.min_gap_hours"),
        urgency_points=curve,
        wait_half_life_hours=_positive((data.get("urgency") or {}).get("wait_half_life_hours", 12),
                                       "urgency.wait_half_life_hours"),
        top_k=int(_positive(win.get("top_k", 3), "windows.top_k", True)),
        keep_ratio=ratio,
        max_window_minutes=int(_positive(win.get("max_minutes", 120), "windows.max_minutes", True)),
        min_separation_minutes=int(_positive(win.get("min_separation_minutes", 60),
                                             "windows.min_separation_minutes", True)),
        default_horizon_hours=default_h,
        max_horizon_hours=max_h,
        exploration_share=share,
        default_timezone=zone,
        model_budget_ms=_positive(budget.get("latency_budget_ms", 50),
                                  "model.latency_budget_ms"),
        model_budget_ms_per_request=_positive(budget.get("latency_budget_ms_per_request", 1.0),
                                              "model.latency_budget_ms_per_request"),
        retention_call_months=months["call_times_months"],
        retention_phone_months=months["phone_numbers_months"],
        purge_hour_utc=purge_hour,
        monitor_days=monitor_days,
        monitor_ece_alert=_positive(watch.get("ece_alert", 0.05), "monitoring.ece_alert"),
        monitor_psi_alert=_positive(watch.get("psi_alert", 0.25), "monitoring.psi_alert"),
        monitor_min_sample=int(_positive(watch.get("min_sample", 200), "monitoring.min_sample",
                                         True)),
        retrain_min_new_calls=int(_positive(loop.get("min_new_calls", 200),
                                            "retraining.min_new_calls", True)),
        retrain_offpolicy_min_ess=_positive(loop.get("offpolicy_min_ess", 100),
                                            "retraining.offpolicy_min_ess"),
        retrain_offpolicy_tolerance=_positive(loop.get("offpolicy_tolerance", 0.02),
                                              "retraining.offpolicy_tolerance"),
    )
