"""Reading ``/rank`` requests: validation, the contract's defaults and the contact's attributes.

:class:`RequestReader` turns one request into the normalised dict the ranking policy works on,
or raises :class:`RankRequestError` naming the field. A contact's zone, country, subdivision and
industry come from the request, else from the contact's last call in the history (its
*profile*), else from the phone number, else from the configured default (with a note).

Examples
--------
>>> from callback_timing.policy_config import load_policy_config
>>> reader = RequestReader(load_policy_config(), profiles={})
>>> req = reader.normalise({"contact": {"contact_id": "c-1", "phone": "+48 22 123 45 67"},
...                         "now": "2026-06-01T06:00:00Z"})
>>> req["contact"].timezone, req["contact"].country, req["horizon_hours"], req["top_k"]
('Europe/Warsaw', 'PL', 48.0, 3)
>>> reader.normalise({"contact": {"contact_id": "c-1"}, "horizon_hours": 0})
Traceback (most recent call last):
...
callback_timing.rank_requests.RankRequestError: horizon_hours: must be > 0 and <= 336, got 0
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from callback_timing.contacts import (
    industry_of,
    is_valid_zone,
    known_country,
    parse_phones,
    region_zones,
    spans_several_offsets,
    subdivision_code,
)
from callback_timing.isotime import parse_iso
from callback_timing.policy_config import PolicyConfig
from callback_timing.schema import CallbackTimingError

POLICIES = ("auto", "model", "rules")
URGENCIES = ("standard", "urgent", "flexible")

#: Request contact fields a contact depends on (the key of the contact cache), and its size.
_CONTACT_FIELDS = ("contact_id", "country", "phone", "timezone", "subdivision", "industry",
                   "opt_out", "do_not_call")
_CONTACT_CACHE = 100_000


class RankRequestError(CallbackTimingError):
    """A rank request the policy cannot answer as given (names the field)."""


def _timestamp(value, field: str, default: pd.Timestamp | None = None) -> pd.Timestamp:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        if default is None:
            raise RankRequestError(f"{field}: required")
        return default
    try:  # text must be ISO 8601: pandas would read 04.05.2026 as 5 April
        ts = parse_iso(value) if isinstance(value, str) else pd.Timestamp(value)
    except (ValueError, TypeError):
        raise RankRequestError(f"{field}: not a timestamp: {value!r}") from None
    if ts is pd.NaT:
        raise RankRequestError(f"{field}: not a timestamp: {value!r}")
    if not 1970 <= ts.year <= 2200:
        shown = value if isinstance(value, str) else ts.isoformat()  # not datetime(9999, ...)
        raise RankRequestError(f"{field}: out of range (years 1970 to 2200): {shown!r}")
    if ts.tzinfo is None:  # a dialer's local time read as UTC would shift every window
        raise RankRequestError(f"{field}: give the UTC offset (e.g. {ts:%Y-%m-%dT%H:%M:%S}Z "
                               f"or {ts:%Y-%m-%dT%H:%M:%S}+02:00)")
    return ts.as_unit("ns").tz_convert("UTC")


#: How far a dialer's clock may run ahead of the server's: a ``requested_at`` this much after
#: the server's clock (``now`` not given) is read as now
CLOCK_SKEW = pd.Timedelta(minutes=5)


@dataclass
class Contact:
    """A request's contact, resolved from its fields and the history's profile."""

    contact_id: str
    timezone: str
    country: str | None
    subdivision: str | None
    industry: str
    phone_zone: str | None
    opt_out: bool
    notes: list[str]
    #: the contact objected to being called at all: no slot is allowed
    do_not_call: bool = False
    #: why ``phone_zone`` (a second zone whose calling hours must hold too) applies
    second_zone_why: str = "the phone number's zone"


class RequestReader:
    """Validates ``/rank`` requests and resolves their contacts (cached per distinct contact).

    Parameters
    ----------
    config : the calling rules (defaults for horizon, ``top_k`` and the time zone).
    profiles : ``contact_id`` -> the last known ``timezone``, ``country``, ``subdivision`` and
        ``industry`` of the contact in the call history.
    """

    def __init__(self, config: PolicyConfig, profiles: dict) -> None:
        self.config = config
        self.profiles = profiles
        self._contacts: dict[tuple, Contact] = {}

    def normalise(self, request: dict, now: pd.Timestamp | None = None) -> dict:
        """Validate one ``/rank`` request and fill the contract's defaults.

        Raises :class:`RankRequestError` naming the field for anything it cannot use.
        """
        if not isinstance(request, dict):
            raise RankRequestError("request: expected a JSON object")
        contact = request.get("contact")
        if not isinstance(contact, dict) or not str(contact.get("contact_id") or "").strip():
            raise RankRequestError("contact.contact_id: required")
        cfg = self.config
        clock_now = now if now is not None else pd.Timestamp.now(tz="UTC")
        now_ts = _timestamp(request.get("now"), "now", clock_now)
        requested = _timestamp(request.get("requested_at"), "requested_at", now_ts)
        if requested > now_ts and request.get("now") is None and requested - now_ts <= CLOCK_SKEW:
            requested = now_ts  # the dialer's clock a little ahead of ours
        if requested > now_ts:
            raise RankRequestError("requested_at: must not be after now")
        horizon = request.get("horizon_hours", cfg.default_horizon_hours)
        if horizon is None:
            horizon = cfg.default_horizon_hours
        if isinstance(horizon, bool) or not isinstance(horizon, int | float):
            raise RankRequestError(f"horizon_hours: expected a number, got {horizon!r}")
        if not 0 < horizon <= cfg.max_horizon_hours:
            raise RankRequestError(
                f"horizon_hours: must be > 0 and <= {cfg.max_horizon_hours:g}, got {horizon:g}")
        top_k = request.get("top_k", cfg.top_k)
        top_k = cfg.top_k if top_k is None else top_k
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 20:
            raise RankRequestError(f"top_k: expected a whole number from 1 to 20, got {top_k!r}")
        policy = request.get("policy") or "auto"
        if policy not in POLICIES:
            raise RankRequestError(f"policy: must be one of {', '.join(POLICIES)}, got {policy!r}")
        urgency = request.get("urgency") or "standard"
        if urgency not in URGENCIES:
            raise RankRequestError(
                f"urgency: must be one of {', '.join(URGENCIES)}, got {urgency!r}")
        for key in ("campaign", "team"):
            label = request.get(key)
            if label is not None and (not isinstance(label, str) or len(label) > 128
                                      or "\x00" in label):
                raise RankRequestError(f"{key}: expected text of at most 128 characters")
        request_id = str(request.get("request_id")
                         or f"{contact['contact_id']}@{now_ts.isoformat()}")
        return {"request_id": request_id, "contact": self.contact(contact), "now": now_ts,
                "requested_at": requested, "horizon_hours": float(horizon), "top_k": top_k,
                "policy": policy, "urgency": urgency}

    def contact(self, raw: dict) -> Contact:
        """The contact of a request, from its fields and the history's profile (cached)."""
        key = tuple(raw.get(k) for k in _CONTACT_FIELDS)
        try:
            cached = self._contacts.get(key)
        except TypeError:  # an unhashable field: not cached
            return self._new_contact(raw)
        if cached is None:
            if len(self._contacts) >= _CONTACT_CACHE:
                self._contacts.clear()
            cached = self._contacts[key] = self._new_contact(raw)
        return cached

    def _new_contact(self, raw: dict) -> Contact:
        cid = str(raw["contact_id"]).strip()
        profile = self.profiles.get(cid)
        notes: list[str] = []

        def given(key: str):
            value = raw.get(key)
            return value.strip() if isinstance(value, str) and value.strip() else None

        country = given("country")
        if country is not None:
            if len(country) != 2 or not country.isalpha() or not known_country(country):
                raise RankRequestError(f"contact.country: expected an ISO 3166 alpha-2 code, "
                                       f"got {country!r}")
            country = country.upper()
        phone = given("phone")
        phone_zone = phone_country = None
        if phone:
            parsed = parse_phones(pd.Series([phone]), pd.Series([country])).iloc[0]
            if parsed["valid"]:
                phone_country = parsed["country"]
                if not parsed["tz_ambiguous"]:
                    phone_zone = parsed["timezone"]
            elif country is None and given("timezone") is None and profile is None:
                raise RankRequestError("contact.phone: invalid phone number and no country or "
                                       "timezone to fall back on")
            else:
                notes.append("invalid phone number: not used for the time zone")
        zone = given("timezone")
        if zone is not None:
            if not is_valid_zone(zone):
                raise RankRequestError(f"contact.timezone: unknown time zone {zone!r}")
        elif profile is not None and isinstance(profile["timezone"], str):
            zone = profile["timezone"]
        elif phone_zone is not None:
            zone = phone_zone
        if country is None:
            country = (profile["country"] if profile is not None
                       and isinstance(profile["country"], str) else phone_country)
        subdivision = given("subdivision")
        if subdivision is not None:
            code = subdivision_code(country, subdivision)
            if code is None:
                raise RankRequestError(f"contact.subdivision: {country} has no subdivision "
                                       f"{subdivision!r} (an ISO 3166-2 code such as US-FL or FL)")
            subdivision = code
        elif profile is not None and isinstance(profile["subdivision"], str):
            subdivision = profile["subdivision"]
        second_why = "the phone number's zone"
        if zone is None:
            zones = region_zones(country, subdivision)
            if zones:
                zone = zones[0]
                if len(zones) > 1:  # legal in both, as with a phone's zone
                    phone_zone, second_why = zones[1], f"{country}-{subdivision} spans both"
                elif spans_several_offsets(country) and not (country == "US" and subdivision):
                    notes.append(f"time zone taken from the country: {zone} (the country has "
                                 "several; give contact.timezone or phone)")
            else:
                zone = self.config.default_timezone
                notes.append(f"time zone unknown: calling hours applied in {zone}")
        industry = given("industry")
        if industry is not None:
            industry = industry_of(industry)
        elif profile is not None and isinstance(profile["industry"], str):
            industry = profile["industry"]
        industry = industry if isinstance(industry, str) else "other"
        if phone_zone == zone:
            phone_zone = None
        if phone_zone is not None:
            notes.append(f"only hours legal in both {zone} and {phone_zone} ({second_why})")
        opt_out = bool(raw.get("opt_out", False))
        return Contact(cid, zone, country, subdivision, industry, phone_zone, opt_out, notes,
                       do_not_call=bool(raw.get("do_not_call", False)),
                       second_zone_why=second_why)
