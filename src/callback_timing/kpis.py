"""Supervisor KPIs and ROI from what the service did: the decision log and the outcome store.

A *callback request* is a ``request_id`` the service ranked (``/rank``); its arm is the arm
of its first ranking: ``model`` or ``rules`` (who answered) or ``control`` (the traditional
desk's answer, :mod:`callback_timing.online`). Its calls are the outcomes posted with its
``request_id``. Per request (:func:`request_fates`):

- ``attempts``: calls made; ``first_answered``: the first call was answered;
- ``reached``: a call was answered within the deadline (default 48 h after ``requested_at``,
  or after the first ranking when the request did not say when it was made);
- ``hours_to_contact``: from the request to the first answered call; ``reached_4h``;
- ``illegal_calls``: calls outside the calling hours of the contact's zone and region, checked
  afresh with the policy config (must be 0);
- ``fallback``: the rules answered a ranking that was not in the control arm or asked for
  ``policy: rules`` (the model failed, was missing or too slow, or the contact opted out).

The experiment (:func:`roi`) compares the requests ranked with ``policy: auto`` outside the
control arm (the AI arm: model, with the rules as its fallback) against the control arm, per
request, with a 95 % confidence interval, exactly as the seed defines it::

    ROI = (saved costs + additional revenue - investment) / investment x 100
    saved costs = requests x (control attempts - AI attempts per request) x cost per attempt
    additional revenue = requests x (AI reach - control reach) x value of a reached callback

>>> import pandas as pd
>>> stats = {"ai": {"n": 400, "reached": 0.72, "attempts": 1.8, "var_reached": 0.2,
...                 "var_attempts": 0.6, "cov": -0.2},
...          "control": {"n": 400, "reached": 0.45, "attempts": 3.2, "var_reached": 0.25,
...                      "var_attempts": 0.5, "cov": -0.1}}
>>> out = roi(stats, cost_per_attempt=2.0, value_per_reached=50.0, investment=2000.0)
>>> round(out["roi_pct"], 1), out["conclusive"]
(226.0, True)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from callback_timing import calendar
from callback_timing import fastpath as fp
from callback_timing.policy_config import PolicyConfig, load_policy_config

ARMS = ("model", "rules", "control")
DEADLINE_HOURS = 48.0
FAST_HOURS = 4.0
#: The seed's before/after reference table (a traditional desk against AI timing).
REFERENCE = [
    {"kpi": "first-attempt answer rate", "before": "23%", "after": "38%"},
    {"kpi": "success rate", "before": "45%", "after": "72%"},
    {"kpi": "attempts per callback", "before": "3.2", "after": "1.8"},
    {"kpi": "time to contact", "before": "18 h", "after": "6 h"},
]
#: Default ROI inputs (the supervisor edits them in the page).
ROI_DEFAULTS = {"cost_per_attempt": 2.5, "conversion_rate": 0.2, "deal_value": 250.0,
                "investment": 1000.0}
_Z95 = 1.959963984540054


@dataclass
class Filters:
    """Which requests count: requested in ``[start, end)`` (UTC dates), of an industry, a
    country, a campaign and a team (``None``: all)."""

    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    industry: str | None = None
    country: str | None = None
    campaign: str | None = None
    team: str | None = None


#: the decision-log and outcome columns :class:`KpiData` reads
DECISION_COLUMNS = ("seq", "request_id", "arm", "source", "fallback_reason", "policy", "now",
                    "requested_at", "campaign", "team")
OUTCOME_COLUMNS = ("seq", "request_id", "called_at", "answered", "timezone", "country",
                   "subdivision", "industry")
_ARM_CODE = {a: i for i, a in enumerate(ARMS)}


def _seq_of(frame: pd.DataFrame) -> np.ndarray:
    """A frame's store sequence numbers (-1 for rows that have none)."""
    if "seq" in frame:
        return frame["seq"].fillna(-1).to_numpy(np.int64)
    return np.full(len(frame), -1, dtype=np.int64)


def _ns(values) -> np.ndarray:
    """Nanoseconds since the epoch of UTC timestamps (``NaT``: the int64 minimum)."""
    return calendar.utc_ns_of(pd.to_datetime(pd.Series(values), utc=True))


class _Codes:
    """Stable integer codes of values (request ids, industries, ...) as they arrive."""

    def __init__(self) -> None:
        self.values = pd.Index([], dtype=object)

    def __call__(self, values) -> np.ndarray:
        values = pd.Series(values, dtype=object).fillna("\x00none")
        if not len(self.values):  # the first batch (a whole log): one hash pass
            codes, uniques = pd.factorize(values)
            self.values = pd.Index(uniques, dtype=object)
            return codes.astype(np.int64)
        values = pd.Index(values, dtype=object)
        codes = self.values.get_indexer(values)
        fresh = codes < 0
        if fresh.any():
            new = pd.unique(values[fresh])
            self.values = self.values.append(pd.Index(new, dtype=object))
            codes[fresh] = len(self.values) - len(new) + pd.Index(new).get_indexer(
                values[fresh])
        return codes.astype(np.int64)


def _pack_strings(values: pd.Index) -> tuple[np.ndarray, np.ndarray]:
    """Strings as (offsets, utf-8 bytes), Arrow's layout: saved without pickle."""
    arr = pa.array(np.asarray(values, dtype=object), type=pa.large_string())
    _, offsets, data = arr.buffers()
    return (np.frombuffer(offsets, np.int64)[: len(arr) + 1].copy(),
            np.frombuffer(data, np.uint8).copy() if data is not None else np.zeros(0, np.uint8))


def _unpack_strings(offsets: np.ndarray, data: np.ndarray) -> pd.Index:
    arr = pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets),
                                           pa.py_buffer(data))
    arr.validate(full=True)
    return pd.Index(arr.to_numpy(zero_copy_only=False), dtype=object)


#: the coded strings of :class:`KpiData`
_CODED = ("requests", "places", "reasons", "labels")


class KpiData:
    """The decision log and the outcomes as per-row arrays, grown with :meth:`add` as rows
    arrive, from which :meth:`fates` derives one row per callback request in a few numpy
    passes (what keeps a dashboard page load on a million outcomes fast)."""

    def __init__(self, config: PolicyConfig | None = None,
                 deadline_hours: float = DEADLINE_HOURS) -> None:
        self.config = config or load_policy_config()
        self.deadline_ns = int(deadline_hours * 3600 * 10**9)
        self.requests, self.places, self.reasons = _Codes(), _Codes(), _Codes()
        self.labels = _Codes()  # campaigns and teams
        empty_i, empty_b = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
        self.d = {"code": empty_i, "arm": empty_i, "auto": empty_b, "fallback": empty_b,
                  "reason": empty_i, "start": empty_i, "campaign": empty_i, "team": empty_i,
                  "seq": empty_i}
        self.o = {"code": empty_i, "ns": empty_i, "answered": empty_b, "cell": empty_i,
                  "illegal": empty_b, "industry": empty_i, "country": empty_i,
                  "seq": empty_i}

    def add(self, decisions: pd.DataFrame, outcomes: pd.DataFrame) -> None:
        """Append decision-log and outcome rows (in storing order)."""
        if len(decisions):
            d = decisions
            arm = d["arm"].map(_ARM_CODE).fillna(len(ARMS)).to_numpy(np.int64)
            policy = d["policy"].fillna("auto").to_numpy(object)
            fallback = ((arm != _ARM_CODE["control"]) & (d["source"].to_numpy(object) == "rules")
                        & (policy != "rules"))
            start = _ns(d["requested_at"])
            now = _ns(d["now"])
            start = np.where(start == np.iinfo(np.int64).min, now, start)
            labels = {k: self.labels(d[k] if k in d else [None] * len(d))
                      for k in ("campaign", "team")}
            self._grow(self.d, code=self.requests(d["request_id"]), arm=arm,
                       auto=policy == "auto", fallback=fallback,
                       reason=self.reasons(d["fallback_reason"]), start=start, **labels,
                       seq=_seq_of(d))
        if len(outcomes):
            o = outcomes[outcomes["request_id"].notna()]
            ns = _ns(o["called_at"])
            zones = o["timezone"].fillna("UTC").to_numpy(object)
            minute, weekday = fp.local_parts(ns, zones)
            places = pd.MultiIndex.from_arrays([o["country"].fillna(""),
                                                o["subdivision"].fillna("")])
            codes, uniques = pd.factorize(places)
            weeks = np.stack([fp.week_table(self.config.hours_for(c or None, s or None))
                              for c, s in uniques]) if len(uniques) else np.zeros((0, 7, 2))
            illegal = (fp.outside_hours(minute, weekday, weeks, codes, 1) if len(o)
                       else np.zeros(0, dtype=bool))
            self._grow(self.o, code=self.requests(o["request_id"]), ns=ns,
                       answered=o["answered"].to_numpy(np.int64) == 1,
                       cell=(weekday * 24 + minute // 60).astype(np.int64), illegal=illegal,
                       industry=self.places(o["industry"]), country=self.places(o["country"]),
                       seq=_seq_of(o))

    def drop(self, decision_seqs: np.ndarray, outcome_seqs: np.ndarray) -> None:
        """Remove the rows of these sequence numbers (deleted from the store: retention,
        erasure); request ids no row refers to any more are forgotten too."""
        for arrays, gone in ((self.d, decision_seqs), (self.o, outcome_seqs)):
            if len(gone):
                keep = ~np.isin(arrays["seq"], gone)
                for key in arrays:
                    arrays[key] = arrays[key][keep]
        used = np.zeros(len(self.requests.values), dtype=bool)
        used[self.d["code"]] = True
        used[self.o["code"]] = True
        if not used.all():
            new = np.cumsum(used) - 1
            self.requests.values = self.requests.values[used]
            self.d["code"], self.o["code"] = new[self.d["code"]], new[self.o["code"]]

    #: bump when the arrays below change meaning (an older snapshot is then read afresh)
    SNAPSHOT_FORMAT = 3

    def fingerprint(self) -> str:
        """What the arrays depend on beyond the rows: the format, the deadline and the
        calling hours (the ``illegal`` flags)."""
        hours = sorted(self.config.calling_hours.items())
        text = repr((self.SNAPSHOT_FORMAT, self.deadline_ns, hours))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def snapshot(self) -> dict[str, np.ndarray]:
        """The arrays as a flat mapping of numpy arrays (for ``numpy.savez``; no pickle);
        :meth:`from_snapshot` rebuilds them."""
        out = {"fingerprint": np.array(self.fingerprint())}
        out.update({f"d.{k}": v for k, v in self.d.items()})
        out.update({f"o.{k}": v for k, v in self.o.items()})
        for name in _CODED:
            out[f"{name}.offsets"], out[f"{name}.data"] = _pack_strings(
                getattr(self, name).values)
        return out

    @classmethod
    def from_snapshot(cls, arrays: Mapping[str, np.ndarray], config: PolicyConfig | None = None,
                      deadline_hours: float = DEADLINE_HOURS) -> KpiData:
        """The :class:`KpiData` of a :meth:`snapshot`; ``ValueError`` when it was taken with
        other calling hours, deadline or format, or is damaged."""
        data = cls(config, deadline_hours)
        try:
            if str(arrays["fingerprint"]) != data.fingerprint():
                raise ValueError("taken with other calling hours, deadline or format")
            for key in data.d:
                data.d[key] = np.asarray(arrays[f"d.{key}"], dtype=data.d[key].dtype)
            for key in data.o:
                data.o[key] = np.asarray(arrays[f"o.{key}"], dtype=data.o[key].dtype)
            for name in _CODED:
                getattr(data, name).values = _unpack_strings(arrays[f"{name}.offsets"],
                                                             arrays[f"{name}.data"])
        except (KeyError, TypeError, pa.ArrowException) as exc:
            raise ValueError(f"damaged ({type(exc).__name__})") from None
        n_d, n_o = len(data.d["code"]), len(data.o["code"])
        bounds = [(data.d["code"], len(data.requests.values)), (data.d["arm"], len(ARMS) + 1),
                  (data.o["code"], len(data.requests.values)),
                  (data.d["reason"], len(data.reasons.values)),
                  (data.o["industry"], len(data.places.values)),
                  (data.o["country"], len(data.places.values)), (data.o["cell"], 7 * 24),
                  (data.d["campaign"], len(data.labels.values)),
                  (data.d["team"], len(data.labels.values))]
        if (any(len(v) != n_d for v in data.d.values())
                or any(len(v) != n_o for v in data.o.values())
                or any(len(v) and (v.min() < 0 or v.max() >= n) for v, n in bounds)):
            raise ValueError("damaged (arrays out of shape)")
        return data

    @staticmethod
    def _grow(arrays: dict, **new: np.ndarray) -> None:
        for key, values in new.items():
            arrays[key] = np.concatenate([arrays[key], np.asarray(values)])

    def fates(self, request_ids: bool = True) -> pd.DataFrame:
        """One row per ranked callback request (see the module docstring), with ``code``,
        its request code (for :meth:`heatmap`); ``request_ids=False`` leaves out the
        ``request_id`` column (what the pages do not need)."""
        d, o = self.d, self.o
        n = len(self.requests.values)
        first = np.full(n, -1, dtype=np.int64)
        rows = np.arange(len(d["code"]))
        first[d["code"][::-1]] = rows[::-1]  # the first ranking of each request
        decided = np.flatnonzero(first >= 0)
        head = first[decided]
        start = d["start"][head]
        fell = np.full(n, -1, dtype=np.int64)
        fb = np.flatnonzero(d["fallback"])
        fell[d["code"][fb][::-1]] = fb[::-1]
        # the calls of ranked requests, by request and time
        keep = first[o["code"]] >= 0
        code, ns = o["code"][keep], o["ns"][keep]
        order = np.lexsort((ns, code))
        code, ns = code[order], ns[order]
        answered, illegal = o["answered"][keep][order], o["illegal"][keep][order]
        attempts = np.bincount(code, minlength=n)
        is_first = np.r_[True, code[1:] != code[:-1]] if len(code) else np.zeros(0, bool)
        first_answered = np.zeros(n, dtype=bool)
        first_answered[code[is_first]] = answered[is_first]
        last = np.full(n, -1, dtype=np.int64)
        last[code] = np.arange(len(code))  # the last call of each request
        start_of = np.zeros(n, dtype=np.int64)
        start_of[decided] = start
        hit = np.flatnonzero(answered & (ns <= start_of[code] + self.deadline_ns))
        reached_ns = np.full(n, np.iinfo(np.int64).min)
        reached_ns[code[hit][::-1]] = ns[hit][::-1]  # the first answered call in time
        reached = reached_ns[decided] != np.iinfo(np.int64).min
        hours = np.where(reached, (reached_ns[decided] - start) / 3.6e12, np.nan)
        bad = np.bincount(code, weights=illegal, minlength=n).astype(np.int64)
        at_last = last[decided]
        has_call = at_last >= 0
        where = o["industry"][keep][order], o["country"][keep][order]
        names = pd.Index(self.places.values, dtype=object)
        unknown = names.get_indexer(["unknown"])[0]
        if unknown < 0:  # "unknown" stands for a missing value and for no call at all
            names, unknown = names.append(pd.Index(["unknown"], dtype=object)), len(names)
        missing = names.get_indexer(["\x00none"])[0]

        def place(values: np.ndarray) -> pd.Categorical:
            out = np.full(len(decided), unknown, dtype=np.int64)
            out[has_call] = values[at_last[has_call]]
            out[out == missing] = unknown
            return pd.Categorical.from_codes(out, categories=names)

        fell_row = fell[decided]
        # categories built from codes: no string per request (what a million outcomes need)
        none = self.reasons.values.get_indexer(["\x00none"])[0]
        reason_code = np.full(len(decided), -1, dtype=np.int64)
        reason_code[fell_row >= 0] = d["reason"][fell_row[fell_row >= 0]]
        reason_code[reason_code == none] = -1
        reason = pd.Categorical.from_codes(reason_code,
                                           categories=pd.Index(self.reasons.values, dtype=object))
        ids = ({"request_id": np.asarray(self.requests.values, dtype=object)[decided]}
               if request_ids else {})
        labels = pd.Index(self.labels.values, dtype=object)
        no_label = labels.get_indexer(["\x00none"])[0]

        def label(codes: np.ndarray) -> pd.Categorical:  # a request's label: its first ranking's
            codes = codes[head].copy()
            codes[codes == no_label] = -1
            return pd.Categorical.from_codes(codes, categories=labels)

        return pd.DataFrame({
            **ids,
            "code": decided,
            "arm": pd.Categorical.from_codes(d["arm"][head], categories=[*ARMS, "other"]),
            "experiment": d["auto"][head],
            "requested_at": pd.DatetimeIndex(start.view("datetime64[ns]")).tz_localize("UTC"),
            "industry": place(where[0]),
            "country": place(where[1]),
            "attempts": attempts[decided],
            "first_answered": first_answered[decided],
            "reached": reached,
            "hours_to_contact": hours,
            "reached_4h": reached & (hours <= FAST_HOURS),
            "illegal_calls": bad[decided],
            "fallback": fell_row >= 0,
            "fallback_reason": reason,
            "campaign": label(d["campaign"]),
            "team": label(d["team"]),
        })

    def heatmap(self, codes: np.ndarray | None = None) -> list[dict]:
        """Calls and answers per contact-local weekday (Mon=0) and hour, of the requests
        with ``codes`` (a :meth:`fates` column; default: every ranked request's calls)."""
        o = self.o
        wanted = np.zeros(len(self.requests.values), dtype=bool)
        if codes is None:
            wanted[self.d["code"]] = True
        else:
            wanted[np.asarray(codes, dtype=np.int64)] = True
        keep = wanted[o["code"]]
        cells = o["cell"][keep]
        calls = np.bincount(cells, minlength=7 * 24)
        answers = np.bincount(cells, weights=o["answered"][keep], minlength=7 * 24)
        return [{"weekday": int(c // 24), "hour": int(c % 24), "calls": int(calls[c]),
                 "answered": int(answers[c])} for c in np.flatnonzero(calls)]


def request_fates(decisions: pd.DataFrame, outcomes: pd.DataFrame,
                  config: PolicyConfig | None = None,
                  deadline_hours: float = DEADLINE_HOURS) -> pd.DataFrame:
    """One row per ranked callback request: arm, when, where, and what became of it."""
    return _data_of(decisions, outcomes, config, deadline_hours).fates().drop(columns="code")


def _data_of(decisions: pd.DataFrame, outcomes: pd.DataFrame, config: PolicyConfig | None,
             deadline_hours: float = DEADLINE_HOURS) -> KpiData:
    """:class:`KpiData` of whole frames (in storing order when they have ``seq``)."""
    data = KpiData(config, deadline_hours)
    data.add(*(f.sort_values("seq", kind="stable") if "seq" in f else f
               for f in (decisions, outcomes)))
    return data


def apply_filters(fates: pd.DataFrame, filters: Filters | None) -> pd.DataFrame:
    """The requests ``filters`` keep."""
    if filters is None or not len(fates):
        return fates
    keep = np.ones(len(fates), dtype=bool)
    at = pd.to_datetime(fates["requested_at"], utc=True)
    if filters.start is not None:
        keep &= (at >= filters.start).to_numpy()
    if filters.end is not None:
        keep &= (at < filters.end).to_numpy()
    for name in ("industry", "country", "campaign", "team"):
        wanted = getattr(filters, name)
        if wanted:
            keep &= (fates[name] == wanted).to_numpy(dtype=bool, na_value=False)
    return fates[keep]


def kpi_table(fates: pd.DataFrame, period: str | None = "week") -> pd.DataFrame:
    """KPIs per (period, arm) (``period``: ``day``, ``week`` (from Monday) or ``None`` for
    all time).

    ``time_to_contact_h`` and ``median_time_to_contact_h`` are over reached requests;
    ``fallback_share`` is over the requests the model was meant to answer (not control).
    """
    columns = ["period", "arm", "requests", "first_attempt_rate", "success_rate", "attempts",
               "time_to_contact_h", "median_time_to_contact_h", "reached_4h_rate",
               "illegal_calls", "fallback_share"]
    if not len(fates):
        return pd.DataFrame(columns=columns)
    day = _ns(fates["requested_at"]) // (86_400 * 10**9)
    if period == "week":
        day = day - (day + 3) % 7  # 1970-01-01 was a Thursday: back to the Monday
    frame = pd.DataFrame({
        "day": day if period else np.zeros(len(fates), dtype=np.int64),
        "arm": fates["arm"].to_numpy(object),
        "first": fates["first_answered"].to_numpy(float),
        "reached": fates["reached"].to_numpy(float),
        "attempts": fates["attempts"].to_numpy(float),
        "hours": np.where(fates["reached"], fates["hours_to_contact"], np.nan),
        "fast": fates["reached_4h"].to_numpy(float),
        "illegal": fates["illegal_calls"].to_numpy(np.int64),
        "fallback": fates["fallback"].to_numpy(float)})
    g = frame.groupby(["day", "arm"], sort=True)
    table = g.agg(requests=("first", "size"), first_attempt_rate=("first", "mean"),
                  success_rate=("reached", "mean"), attempts=("attempts", "mean"),
                  time_to_contact_h=("hours", "mean"),
                  median_time_to_contact_h=("hours", "median"),
                  reached_4h_rate=("fast", "mean"), illegal_calls=("illegal", "sum"),
                  fallback_share=("fallback", "mean")).reset_index()
    table.loc[table["arm"] == "control", "fallback_share"] = np.nan
    table["period"] = (np.datetime_as_string(table["day"].to_numpy().astype("datetime64[D]"))
                       if period else "all")
    order = table["arm"].map({a: i for i, a in enumerate(ARMS)}).fillna(len(ARMS))
    table = table.assign(_order=order).sort_values(["day", "_order"], kind="stable")
    return table[columns].reset_index(drop=True)


def arm_stats(fates: pd.DataFrame) -> dict[str, dict]:
    """Per experiment arm (``ai``: ``policy: auto`` outside the control arm; ``control``):
    requests, mean reach and attempts, their variances and covariance (what :func:`roi`
    and the page's ROI panel need)."""
    out = {}
    exp = fates[fates["experiment"].astype(bool)]
    control = exp["arm"] == "control"
    for name, g in (("ai", exp[~control]), ("control", exp[control])):
        r = g["reached"].to_numpy(float)
        a = g["attempts"].to_numpy(float)
        n = len(g)
        out[name] = {
            "n": n, "reached": float(r.mean()) if n else None,
            "attempts": float(a.mean()) if n else None,
            "var_reached": float(r.var(ddof=1)) if n > 1 else None,
            "var_attempts": float(a.var(ddof=1)) if n > 1 else None,
            "cov": float(np.cov(r, a, ddof=1)[0, 1]) if n > 1 else None,
        }
    return out


def roi(stats: dict[str, dict], cost_per_attempt: float, value_per_reached: float,
        investment: float) -> dict:
    """ROI of AI timing over the control arm for the AI arm's requests, with a 95 % CI.

    The gain per request is ``value x (reach_ai - reach_control) + cost x (attempts_control
    - attempts_ai)``; its standard error comes from each arm's variance of ``value x reached
    - cost x attempts``. ``conclusive`` is false when the interval of the ROI spans 0 % or
    either arm has fewer than two requests.
    """
    ai, ctl = stats["ai"], stats["control"]
    nothing = {"roi_pct": None, "low_pct": None, "high_pct": None, "saved_costs": None,
               "additional_revenue": None, "requests": ai["n"], "conclusive": False}
    if ai["n"] < 2 or ctl["n"] < 2 or investment <= 0:
        return nothing
    v, c, n = value_per_reached, cost_per_attempt, ai["n"]
    saved = n * (ctl["attempts"] - ai["attempts"]) * c
    revenue = n * (ai["reached"] - ctl["reached"]) * v

    def var_u(s: dict) -> float:
        return max(v * v * s["var_reached"] + c * c * s["var_attempts"] - 2 * v * c * s["cov"],
                   0.0)

    se = math.sqrt(var_u(ai) / ai["n"] + var_u(ctl) / ctl["n"]) * n
    gain = saved + revenue
    pct = (gain - investment) / investment * 100

    def to_pct(x: float) -> float:
        return (x - investment) / investment * 100

    low, high = to_pct(gain - _Z95 * se), to_pct(gain + _Z95 * se)
    return {"roi_pct": pct, "low_pct": low, "high_pct": high, "saved_costs": saved,
            "additional_revenue": revenue, "requests": n,
            "conclusive": bool(low > 0 or high < 0)}


def funnel(fates: pd.DataFrame, max_attempts: int = 3) -> list[dict]:
    """Per arm: requests, requests called at least once, and reached by attempt 1..N."""
    rows = []
    for arm in ARMS:
        g = fates[fates["arm"] == arm]
        if not len(g):
            continue
        row = {"arm": arm, "requests": len(g), "called": int((g["attempts"] > 0).sum())}
        for k in range(1, max_attempts + 1):
            row[f"reached_by_{k}"] = int((g["reached"] & (g["attempts"] <= k)).sum())
        rows.append(row)
    return rows


def kpi_payload(decisions: pd.DataFrame, outcomes: pd.DataFrame,
                filters: Filters | None = None, period: str = "week",
                config: PolicyConfig | None = None) -> dict:
    """What ``/kpis`` answers and the dashboard draws (JSON-ready), from the decision log
    and the outcomes (columns :data:`DECISION_COLUMNS`, :data:`OUTCOME_COLUMNS`)."""
    data = _data_of(decisions, outcomes, config)
    return payload_of(data, data.fates(request_ids=False), filters, period)


def payload_of(data: KpiData, every: pd.DataFrame, filters: Filters | None = None,
               period: str = "week") -> dict:
    """:func:`kpi_payload` of ``data`` whose :meth:`KpiData.fates` are ``every``."""
    fates = apply_filters(every, filters)
    at = every["requested_at"]
    payload: dict = {
        "requests": len(fates),
        "empty": not len(every),
        "next_step": ("No ranked callback requests yet: send /rank requests and post their "
                      "calls to /outcomes (with the same request_id), or run "
                      "`callback-timing demo`, which seeds a store through the API."
                      if not len(every) else None),
        "period": period,
        "filters": {"start": _day(filters.start if filters else None),
                    "end": _day(filters.end if filters else None),
                    "industry": filters.industry if filters else None,
                    "country": filters.country if filters else None,
                    "campaign": filters.campaign if filters else None,
                    "team": filters.team if filters else None},
        "choices": {"industries": _present(every["industry"]),
                    "countries": _present(every["country"]),
                    # none when the dialer never labels its requests: no filter shown
                    "campaigns": _present(every["campaign"]),
                    "teams": _present(every["team"]),
                    "first_day": _day(at.min() if len(every) else None),
                    "last_day": _day(at.max() if len(every) else None)},
        "totals": _records(kpi_table(fates, None)),
        "periods": _records(kpi_table(fates, period)),
        "experiment": arm_stats(fates),
        "funnel": funnel(fates),
        "heatmap": data.heatmap(fates["code"].to_numpy()) if len(fates) else [],
        "fallback_reasons": {str(k): int(v) for k, v in
                             fates["fallback_reason"].dropna().value_counts().items() if v},
        "roi_defaults": ROI_DEFAULTS,
        "reference": REFERENCE,
    }
    d = ROI_DEFAULTS
    payload["roi"] = roi(payload["experiment"], d["cost_per_attempt"],
                         d["conversion_rate"] * d["deal_value"], d["investment"])
    return payload


def _present(values: pd.Series) -> list[str]:
    """The values a column holds, sorted (missing ones left out)."""
    return sorted(map(str, values.dropna().unique()))


def _day(at) -> str | None:
    return None if at is None or pd.isna(at) else pd.Timestamp(at).strftime("%Y-%m-%d")


def _records(table: pd.DataFrame) -> list[dict]:
    """Rows as dicts with NaN as ``None`` (valid JSON)."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in table.astype(object).to_dict("records")]
