"""From answer probabilities to ranked call windows under the calling rules.

:class:`Policy` answers ``/rank`` requests (contract section 3): a 15-minute slot grid over
``[now, now + horizon]`` in UTC (DST-safe), the calling rules of :mod:`policy_config` (legal
hours per country/subdivision in the contact's zone, and in its phone number's zone when the
two disagree; public holidays; attempt caps; minimum gap; opt-out), ``p_answer`` from the model
or the rule-based fallback (same interface), ``score = p_answer x urgency``, windows of adjacent
good slots with plain-language reasons, and a small exploration share with its propensity.

Examples
--------
>>> policy = Policy()                      # no model: the rules answer
>>> out = policy.rank([{"request_id": "r-1", "contact": {"contact_id": "c-1",
...     "industry": "it", "country": "PL", "timezone": "Europe/Warsaw"},
...     "now": "2026-06-01T06:00:00Z"}])[0]
>>> out["source"], out["fallback_reason"], len(out["windows"])
('rules', 'no model loaded', 3)
>>> out["windows"][0]["local_start"] >= "2026-06-01T08:00:00+02:00"
True
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from callback_timing import calendar
from callback_timing.contacts import (
    canonical_zone,
    is_valid_zone,
    normalise_industry,
    parse_phones,
)
from callback_timing.features import build_features
from callback_timing.policy_config import PolicyConfig, load_policy_config
from callback_timing.priors import Priors
from callback_timing.reasons import window_reasons
from callback_timing.rules import RuleModel
from callback_timing.schema import CallbackTimingError
from callback_timing.slots import SLOT_MINUTES, candidate_slots

POLICIES = ("auto", "model", "rules")
URGENCIES = ("standard", "urgent", "flexible")
_STEP = pd.Timedelta(minutes=SLOT_MINUTES)
_HISTORY_COLUMNS = ["call_id", "contact_id", "called_at", "answered", "outcome", "timezone",
                    "country", "subdivision", "industry", "request_id"]


class RankRequestError(CallbackTimingError):
    """A rank request the policy cannot answer as given (names the field)."""


class ModelUnavailable(CallbackTimingError):
    """``policy: model`` was asked for but no model is loaded."""


def _stable_unit(text: str, salt: str) -> float:
    """A number in [0, 1) that depends only on ``text`` and ``salt``."""
    digest = hashlib.sha256(f"{salt}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _timestamp(value, field: str, default: pd.Timestamp | None = None) -> pd.Timestamp:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        if default is None:
            raise RankRequestError(f"{field}: required")
        return default
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise RankRequestError(f"{field}: not a timestamp: {value!r}") from None
    if ts is pd.NaT:
        raise RankRequestError(f"{field}: not a timestamp: {value!r}")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@dataclass
class _Contact:
    contact_id: str
    timezone: str
    country: str | None
    subdivision: str | None
    industry: str
    phone_zone: str | None
    opt_out: bool
    notes: list[str]


class Policy:
    """Ranks call windows for callback requests; the rules answer when the model cannot.

    Parameters
    ----------
    bundle : a trained :class:`~callback_timing.bundle.ModelBundle` (``None``: rules only).
    config : calling rules (default: :func:`~callback_timing.policy_config.load_policy_config`).
    rules : the fallback (default: the packaged ``rules.yaml``).
    history : clean call history the history features read (default: the bundle's).
    """

    def __init__(self, bundle=None, config: PolicyConfig | None = None,
                 rules: RuleModel | None = None, history: pd.DataFrame | None = None) -> None:
        self.bundle = bundle
        self.config = config or load_policy_config()
        self.rules = rules or RuleModel.from_file()
        if history is None:
            history = bundle.history if bundle is not None else _empty_history()
        self.history = history
        self.priors = bundle.priors if bundle is not None else _empty_priors()
        last = history.sort_values("called_at", kind="stable").drop_duplicates(
            "contact_id", keep="last") if len(history) else history
        self._profiles = last.set_index("contact_id")[
            ["timezone", "country", "subdivision", "industry"]] if len(last) else None

    @property
    def model_version(self) -> str | None:
        """Version of the loaded model bundle, if any."""
        return self.bundle.version if self.bundle is not None else None

    # --- requests --------------------------------------------------------------------------

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
        request_id = str(request.get("request_id")
                         or f"{contact['contact_id']}@{now_ts.isoformat()}")
        return {"request_id": request_id, "contact": self._contact(contact), "now": now_ts,
                "requested_at": requested, "horizon_hours": float(horizon), "top_k": top_k,
                "policy": policy, "urgency": urgency}

    def _contact(self, raw: dict) -> _Contact:
        cid = str(raw["contact_id"]).strip()
        profile = (self._profiles.loc[cid] if self._profiles is not None
                   and cid in self._profiles.index else None)
        notes: list[str] = []

        def given(key: str):
            value = raw.get(key)
            return value.strip() if isinstance(value, str) and value.strip() else None

        country = given("country")
        if country is not None:
            if len(country) != 2 or not country.isalpha():
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
        zone = given("timezone")
        if zone is not None:
            if not is_valid_zone(zone):
                raise RankRequestError(f"contact.timezone: unknown time zone {zone!r}")
            zone = canonical_zone(pd.Series([zone])).iloc[0]
        elif profile is not None and isinstance(profile["timezone"], str):
            zone = profile["timezone"]
        elif phone_zone is not None:
            zone = phone_zone
        else:
            zone = self.config.default_timezone
            notes.append(f"time zone unknown: calling hours applied in {zone}")
        if country is None:
            country = (profile["country"] if profile is not None
                       and isinstance(profile["country"], str) else phone_country)
        subdivision = given("subdivision")
        if subdivision is None and profile is not None and isinstance(profile["subdivision"], str):
            subdivision = profile["subdivision"]
        industry = given("industry")
        if industry is not None:
            industry = normalise_industry(pd.Series([industry])).iloc[0]
        elif profile is not None and isinstance(profile["industry"], str):
            industry = profile["industry"]
        industry = industry if isinstance(industry, str) else "other"
        if phone_zone == zone:
            phone_zone = None
        if phone_zone is not None:
            notes.append(f"only hours legal in both {zone} and {phone_zone} (the phone "
                         "number's zone)")
        opt_out = bool(raw.get("opt_out", False))
        return _Contact(cid, zone, country, subdivision, industry, phone_zone, opt_out, notes)

    # --- ranking ---------------------------------------------------------------------------

    def rank(self, requests: list[dict], now: pd.Timestamp | None = None) -> list[dict]:
        """Responses for ``/rank`` requests, in order (contract section 3).

        Raises :class:`RankRequestError` for an invalid request and :class:`ModelUnavailable`
        for ``policy: model`` without a model; everything else falls back to the rules.
        """
        scored = self._scored(requests, now)
        if scored is None:
            return []
        reqs, slots, X, p, source, reason, allowed, why_not = scored
        return [self._respond(i, r, slots, X, p, source, reason, allowed, why_not)
                for i, r in enumerate(reqs)]

    def slot_table(self, requests: list[dict], now: pd.Timestamp | None = None) -> pd.DataFrame:
        """Every candidate slot of every request: what the windows are cut from.

        Returns one row per (request, 15-minute slot) with ``request_id``, ``contact_id``,
        ``at`` (UTC), ``p_answer``, ``worth`` (urgency), ``score``, ``allowed``, ``why_not``
        (the first calling rule that forbids the slot), ``source`` and ``calls_last_24h``
        (calls to the contact in the 24 h before the slot, as far as known at ``now``).
        """
        scored = self._scored(requests, now)
        if scored is None or scored[2] is None:
            return pd.DataFrame(columns=["request_id", "contact_id", "at", "p_answer", "worth",
                                         "score", "allowed", "why_not", "source"])
        reqs, slots, X, p, source, _, allowed, why_not = scored
        req_of = slots["_req"].to_numpy()
        requested = np.array([np.datetime64(r["requested_at"].tz_localize(None), "ns")
                              for r in reqs])[req_of]
        hours = (slots["_at"].to_numpy() - requested) / np.timedelta64(1, "h")
        flexible = np.array([r["urgency"] == "flexible" for r in reqs])[req_of]
        worth = np.where(flexible, 1.0, self.config.urgency_worth(hours))
        return pd.DataFrame({
            "request_id": slots["request_id"].to_numpy(), "contact_id": slots["contact_id"],
            "at": slots["at"], "p_answer": p, "worth": worth, "score": p * worth,
            "allowed": allowed, "why_not": why_not, "source": source[req_of],
            "calls_last_24h": X["calls_last_24h"].to_numpy(),
        })

    def _scored(self, requests: list[dict], now: pd.Timestamp | None):
        reqs = [self.normalise(r, now) for r in requests]
        if not reqs:
            return None
        if any(r["policy"] == "model" for r in reqs) and self.bundle is None:
            raise ModelUnavailable("policy 'model' asked for, but no model is loaded")
        slots = self._slots(reqs)
        history = self.history[self.history["contact_id"].isin(slots["contact_id"].unique())]
        X = build_features(history, slots, self.priors) if len(slots) else None
        p, source, reason = self._score(reqs, slots, X)
        allowed, why_not = self._allowed(reqs, slots, X, history)
        return reqs, slots, X, p, source, reason, allowed, why_not

    def _slots(self, reqs: list[dict]) -> pd.DataFrame:
        frame = pd.DataFrame({
            "request_id": [r["request_id"] for r in reqs],
            "contact_id": [r["contact"].contact_id for r in reqs],
            "now": [r["now"] for r in reqs],
            "timezone": [r["contact"].timezone for r in reqs],
            "country": [r["contact"].country for r in reqs],
            "subdivision": [r["contact"].subdivision for r in reqs],
            "industry": [r["contact"].industry for r in reqs],
        })
        parts = []
        for hours in sorted({r["horizon_hours"] for r in reqs}):
            rows = [i for i, r in enumerate(reqs) if r["horizon_hours"] == hours]
            part = candidate_slots(frame.iloc[rows].assign(_req=rows), horizon_hours=hours,
                                   calling_hours=(0, 24))
            parts.append(part)
        slots = pd.concat(parts, ignore_index=True)
        slots = slots.sort_values(["_req", "at"], kind="stable").reset_index(drop=True)
        slots["_at"] = slots["at"].dt.tz_convert("UTC").dt.tz_localize(None).astype(
            "datetime64[ns]")
        return slots

    def _score(self, reqs, slots, X):
        """p_answer per slot, the source per request and the fallback reason per request."""
        n = len(reqs)
        source = np.array(["rules"] * n, dtype=object)
        reason: list[str | None] = [None] * n
        if X is None:
            return np.zeros(0), source, ["no allowed slot"] * n
        req_of = slots["_req"].to_numpy()
        p_rules = self.rules.p_answer(X)
        p_table = self.rules.table_p(X)
        use_model = np.zeros(n, dtype=bool)
        for i, r in enumerate(reqs):
            if r["contact"].opt_out:
                reason[i] = "contact opted out of AI timing (traditional callback)"
            elif r["policy"] == "rules":
                reason[i] = "policy=rules"
            elif self.bundle is None:
                reason[i] = "no model loaded"
            else:
                use_model[i] = True
        p = np.where(np.isin(req_of, np.flatnonzero([r["contact"].opt_out for r in reqs])),
                     p_table, p_rules)
        rows = use_model[req_of]
        if rows.any():
            try:
                p_model = np.asarray(self.bundle.model.p_answer(X[rows]), dtype=float)
            except Exception as exc:  # noqa: BLE001 - any model failure means the rules answer
                p_model, failure = None, f"model failed ({type(exc).__name__})"
            else:
                failure = None if np.isfinite(p_model).all() else "model returned NaN"
            if failure is None:
                p[rows] = p_model
                source[use_model] = "model"
            else:
                for i in np.flatnonzero(use_model):
                    reason[i] = failure
        return p, source, reason

    def _allowed(self, reqs, slots, X, history):
        """Whether each slot may be called, and why not (for the first rule that forbids it)."""
        if X is None:
            return np.zeros(0, dtype=bool), np.zeros(0, dtype=object)
        cfg = self.config
        req_of = slots["_req"].to_numpy()
        minute = X["minute_of_day"].to_numpy(np.int64)
        weekday = X["weekday"].to_numpy(np.int64)
        why = np.full(len(slots), None, dtype=object)

        def forbid(mask, text):
            why[mask & pd.isna(why)] = text

        start = np.full(len(slots), 0)
        end = np.full(len(slots), 0)
        for i, r in enumerate(reqs):
            c = r["contact"]
            rows = req_of == i
            week = cfg.hours_for(c.country, c.subdivision)
            s = np.array([h[0] if h else 0 for h in week])[weekday[rows]]
            e = np.array([h[1] if h else 0 for h in week])[weekday[rows]]
            start[rows], end[rows] = s, e
        forbid((minute < start) | (minute + SLOT_MINUTES > end), "outside calling hours")
        for i, r in enumerate(reqs):
            c = r["contact"]
            if c.phone_zone is None:
                continue
            rows = np.flatnonzero(req_of == i)
            other = calendar.local_clock(slots["at"].iloc[rows],
                                         pd.Series([c.phone_zone] * len(rows),
                                                   index=slots.index[rows]))
            week = cfg.hours_for(c.country, c.subdivision)
            m2 = other["minute_of_day"].to_numpy(np.int64)
            wd2 = other["weekday"].to_numpy(np.int64)
            s = np.array([h[0] if h else 0 for h in week])[wd2]
            e = np.array([h[1] if h else 0 for h in week])[wd2]
            bad = np.zeros(len(slots), dtype=bool)
            bad[rows] = (m2 < s) | (m2 + SLOT_MINUTES > e)
            forbid(bad, f"outside calling hours in {c.phone_zone} (the phone number's zone)")
        horizon_end = slots["_req"].map(
            {i: r["now"] + pd.Timedelta(hours=r["horizon_hours"]) for i, r in enumerate(reqs)})
        forbid((slots["at"] + _STEP > horizon_end).to_numpy(), "beyond the horizon")
        if not cfg.allow_holiday_calls:
            forbid(X["holiday"].to_numpy(bool), "public holiday")
        gap = X["hours_since_last_call"].to_numpy(float)
        forbid(np.nan_to_num(gap, nan=np.inf) < cfg.min_gap_hours,
               f"less than {cfg.min_gap_hours:g} h after the last call")
        forbid(X["calls_last_24h"].to_numpy() >= cfg.max_calls_24h,
               f"{cfg.max_calls_24h} calls to this contact in 24 h already")
        forbid(X["calls_last_168h"].to_numpy() >= cfg.max_calls_7d,
               f"{cfg.max_calls_7d} calls to this contact in 7 days already")
        if len(history) and "request_id" in history:
            made = history.groupby("request_id").size()
            for i, r in enumerate(reqs):
                done = int(made.get(r["request_id"], 0))
                if done >= cfg.max_attempts_per_request:
                    forbid(req_of == i, f"{done} attempts made for this request (cap "
                           f"{cfg.max_attempts_per_request})")
        return pd.isna(why), why

    def _respond(self, i, r, slots, X, p, source, reason, allowed, why_not) -> dict:
        c = r["contact"]
        out = {"request_id": r["request_id"], "contact_id": c.contact_id,
               "source": str(source[i]), "arm": str(source[i]),
               "fallback_reason": reason[i],
               "model_version": self.model_version if source[i] == "model" else None,
               "windows": [], "explored": False, "propensity": None, "notes": list(c.notes)}
        if X is None:
            return out
        rows = np.flatnonzero((slots["_req"].to_numpy() == i) & allowed)
        if len(rows) == 0:
            mine = np.flatnonzero(slots["_req"].to_numpy() == i)
            if len(mine):
                reasons = pd.Series(why_not[mine]).value_counts()
                out["notes"].append("no allowed slot in the horizon: " + reasons.index[0])
            return out
        at = slots["_at"].to_numpy()[rows]
        requested = np.datetime64(r["requested_at"].tz_localize(None), "ns")
        hours_since = (at - requested) / np.timedelta64(1, "h")
        if r["urgency"] == "flexible":
            worth = np.ones(len(rows))
        else:
            worth = self.config.urgency_worth(hours_since)
        score = p[rows] * worth
        windows = _windows(at, score, self.config, r["top_k"], urgent=r["urgency"] == "urgent")
        explored, propensity = False, None
        share = self.config.exploration_share
        if source[i] == "model" and share > 0 and r["urgency"] != "urgent":
            total = score.sum()
            best = windows[0][0] if windows else 0
            if _stable_unit(r["request_id"], "explore") < share and total > 0:
                rng = np.random.default_rng(int(_stable_unit(r["request_id"], "pick") * 2**32))
                pick = int(rng.choice(len(rows), p=score / total))
                windows = [(pick, pick)] + [w for w in windows if w[0] != pick][: r["top_k"] - 1]
                explored = True
            chosen = windows[0][0]
            propensity = share * score[chosen] / total + (1 - share) * (chosen == best)
        out["explored"], out["propensity"] = explored, (
            None if propensity is None else round(float(propensity), 6))
        tz = c.timezone
        for k, (a, b) in enumerate(windows):
            row = rows[a]
            start = pd.Timestamp(at[a]).tz_localize("UTC")
            end = pd.Timestamp(at[b]).tz_localize("UTC") + _STEP
            win_score = (1.0 / (k + 1)) if r["urgency"] == "urgent" else float(score[a])
            out["windows"].append({
                "start": start.isoformat().replace("+00:00", "Z"),
                "end": end.isoformat().replace("+00:00", "Z"),
                "local_start": start.tz_convert(tz).isoformat(),
                "p_answer": round(float(p[row]), 4),
                "score": round(win_score, 4),
                "reasons": window_reasons(
                    X.iloc[row], source=str(source[i]),
                    rule_note=self.rules.notes(X.iloc[[row]])[0],
                    urgency=r["urgency"], worth=float(worth[a]), hours_since=float(hours_since[a]),
                    contact_notes=c.notes, explored=explored and k == 0, opt_out=c.opt_out),
            })
        if r["urgency"] != "urgent":
            # best first; an exploring ranking keeps its random pick first (explored: true)
            first = out["windows"][:1] if explored else []
            rest = sorted(out["windows"][len(first):], key=lambda w: -w["score"])
            out["windows"] = first + rest
        return out


def _windows(at: np.ndarray, score: np.ndarray, cfg: PolicyConfig, top_k: int,
             urgent: bool = False) -> list[tuple[int, int]]:
    """``(first, last)`` slot positions of up to ``top_k`` windows, best first.

    A window starts at the best remaining slot (the earliest one when ``urgent``) and runs on
    over adjacent allowed slots while each scores at least ``keep_ratio`` x its first, up to
    ``max_window_minutes``; windows start at least ``min_separation_minutes`` apart.
    """
    free = np.ones(len(at), dtype=bool)
    step = np.timedelta64(SLOT_MINUTES, "m")
    sep = np.timedelta64(cfg.min_separation_minutes, "m")
    longest = max(cfg.max_window_minutes // SLOT_MINUTES, 1)
    out = []
    while len(out) < top_k and free.any():
        candidates = np.flatnonzero(free)
        first = candidates[0] if urgent else candidates[np.argmax(score[candidates])]
        last = first
        while (last + 1 < len(at) and free[last + 1] and at[last + 1] - at[last] == step
               and last - first + 1 < longest and score[last + 1] >= cfg.keep_ratio * score[first]):
            last += 1
        out.append((int(first), int(last)))
        free &= ~((at > at[first] - sep) & (at < at[last] + sep))
    return out


def _empty_history() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in _HISTORY_COLUMNS})
    frame["called_at"] = pd.Series(dtype="datetime64[ns, UTC]")
    frame["answered"] = pd.Series(dtype=np.int8)
    return frame


def _empty_priors() -> Priors:
    priors = Priors()
    priors.population_ = 0.2
    return priors


def load_policy(model_dir=None, rules_path=None, rules_table_path=None) -> tuple[Policy, str]:
    """A :class:`Policy` with the bundle at ``model_dir`` if it loads, else rules only.

    Returns the policy and one line saying what answers (for logs and the CLI). Mistakes in
    the rules files are :class:`~callback_timing.schema.ConfigError`; a missing or broken
    model is not an error: the rules answer, and the line says why.
    """
    from pathlib import Path

    from callback_timing.bundle import ModelBundle

    config = load_policy_config(rules_path)
    rules = RuleModel.from_file(rules_table_path)
    bundle, note = None, "no model folder given: the rules answer"
    if model_dir is not None:
        folder = Path(model_dir)
        if not (folder / "metadata.json").is_file():
            note = f"no model bundle at {folder}: the rules answer"
        else:
            try:
                bundle = ModelBundle.load(folder)
                note = f"model {bundle.version} from {folder}"
            except CallbackTimingError as exc:
                note = f"model bundle at {folder} could not be loaded ({exc}): the rules answer"
    return Policy(bundle, config=config, rules=rules), note
