"""The synthetic world's ground truth: who answers when, and why.

``logit p = intercept + personal baseline + industry table[weekday, 15-min slot]
+ golden windows + never window + holidays / bridge days / end of year / vacation (business)
- fatigue x calls in the last 24 h``, everything in the contact's local time. A consumer on a
public holiday answers as on a Sunday.

Examples
--------
>>> world = World.generate(contacts=20, seed=1)
>>> p = world.p_answer(["c-000000", "c-000000"], ["2026-03-03T10:00Z", "2026-03-03T10:00Z"],
...                    calls_last_24h=[0, 3])
>>> bool(p[1] < p[0])
True
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from callback_timing import calendar
from callback_timing.sim.patterns import INDUSTRY_CODES, TruthParams, industry_table
from callback_timing.sim.population import draw_contacts

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

_META_KEY = b"callback_timing.world"
_NS_PER_DAY = 86_400 * 10**9
_WEEKDAYS = ("Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays",
             "Sundays", "working days")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _in_window(weekday, minute, day, start, dur) -> np.ndarray:
    on_day = (weekday == day) | ((day == 7) & (weekday < 5))
    return on_day & (minute >= start) & (minute < start + dur)


@dataclass
class World:
    """The contact population with all its hidden parameters, and the true p(answer).

    Parameters
    ----------
    contacts : DataFrame
        One row per contact, as :func:`callback_timing.sim.population.draw_contacts`
        returns it. Treat it as read-only; build a new ``World`` to change it.
    params : TruthParams
        Constants of the truth function.
    """

    contacts: pd.DataFrame
    params: TruthParams = field(default_factory=TruthParams)

    def __post_init__(self) -> None:
        c = self.contacts.reset_index(drop=True)
        self.contacts = c
        self._index = pd.Index(c["contact_id"].astype(str))
        self._industry = c["industry"].map(INDUSTRY_CODES).to_numpy(np.int64)
        self._consumer = self._industry == INDUSTRY_CODES["consumer"]
        self._tz = c["timezone"].to_numpy(object)
        place = c["country"].astype(str) + "|" + c["subdivision"].fillna("").astype(str)
        self._region, self._regions = pd.factorize(place)
        self._int = {
            col: c[col].to_numpy(np.int64)
            for col in c.columns
            if col.startswith(("gw", "never_", "vacation_"))
        }
        self._baseline = c["baseline"].to_numpy(float)

    @classmethod
    def generate(
        cls,
        contacts: int = 2000,
        seed: int | np.random.Generator = 0,
        requests_per_contact_day: float = 0.05,
        params: TruthParams | None = None,
    ) -> World:
        """Draw a new population of ``contacts`` contacts."""
        rng = np.random.default_rng(seed)
        params = params or TruthParams()
        return cls(draw_contacts(contacts, rng, requests_per_contact_day, params), params)

    # --- truth -----------------------------------------------------------------------------

    def index_of(self, contact_id: ArrayLike) -> np.ndarray:
        """Row positions of contact ids; raises ``KeyError`` naming an unknown id."""
        ids = np.atleast_1d(np.asarray(contact_id, dtype=object)).astype(str)
        pos = self._index.get_indexer(ids)
        if (pos < 0).any():
            raise KeyError(f"unknown contact_id {ids[pos < 0][0]!r}")
        return pos

    def _holidays(self, idx: np.ndarray, day: np.ndarray) -> pd.DataFrame:
        """Holiday flags per (region, local day), computed once per distinct pair."""
        key = self._region[idx].astype(np.int64) * 1_000_000 + day.astype(np.int64)
        uniq, inverse = np.unique(key, return_inverse=True)
        places = self._regions[uniq // 1_000_000].str.split("|")
        hol = calendar.holiday_frame(
            pd.Series((uniq % 1_000_000).astype("datetime64[D]")),
            pd.Series([p[0] for p in places], dtype=object),
            pd.Series([p[1] or None for p in places], dtype=object),
        )
        return hol[["holiday", "bridge_day"]].iloc[inverse].reset_index(drop=True)

    def logit(self, idx: np.ndarray, utc_ns: np.ndarray, calls_last_24h: ArrayLike = 0
              ) -> np.ndarray:
        """Logit of the true answer probability; ``idx`` are row positions in ``contacts``.

        ``utc_ns`` are UTC instants as ``datetime64[ns]`` (or int64 nanoseconds).
        """
        idx = np.asarray(idx, dtype=np.int64)
        prm = self.params
        utc = pd.Series(pd.DatetimeIndex(np.asarray(utc_ns).view("datetime64[ns]"), tz="UTC"))
        clock = calendar.local_clock(utc, pd.Series(self._tz[idx], dtype=object))
        local = clock["local"].to_numpy("datetime64[ns]")
        weekday = clock["weekday"].to_numpy(np.int64)
        minute = clock["minute_of_day"].to_numpy(np.int64)
        day = local.astype("datetime64[D]")
        hol = self._holidays(idx, day)
        holiday, bridge = hol["holiday"].to_numpy(), hol["bridge_day"].to_numpy()
        consumer = self._consumer[idx]
        ind = self._industry[idx]
        out = prm.intercept + self._baseline[idx]
        out += industry_table()[ind, np.where(consumer & holiday, 6, weekday), minute // 15]
        g = {k: v[idx] for k, v in self._int.items()}
        for k in (1, 2):
            hit = _in_window(weekday, minute, g[f"gw{k}_day"], g[f"gw{k}_start"], g[f"gw{k}_dur"])
            out += prm.golden_boost * hit
        never = _in_window(weekday, minute, g["never_day"], g["never_start"], g["never_dur"])
        out += prm.never_penalty * never
        doy = (day - day.astype("datetime64[Y]")).astype(np.int64)
        vacation = (doy - g["vacation_doy"]) % 365 < g["vacation_days"]
        month_day = (local.astype("datetime64[M]").astype(np.int64) % 12 + 1) * 100 + (
            (day - local.astype("datetime64[M]")).astype(np.int64) + 1
        )
        year_end = (month_day >= 1220) | (month_day <= 106)
        business = prm.holiday_business * holiday + prm.bridge_business * bridge
        business += prm.vacation_penalty * vacation + prm.end_of_year_business * year_end
        out += np.where(consumer, 0.0, business)
        calls = np.minimum(np.asarray(calls_last_24h), prm.fatigue_cap)
        return out - prm.fatigue_per_call * calls

    def p_answer(self, contact_id: ArrayLike, at: ArrayLike | pd.Timestamp,
                 calls_last_24h: ArrayLike = 0) -> np.ndarray:
        """True probability that a call to ``contact_id`` at UTC instant ``at`` is answered.

        Parameters
        ----------
        contact_id : str or array-like of str
        at : timestamp(s)
            tz-aware values or ISO strings with an offset or ``Z``, aligned with
            ``contact_id``; naive values are read as UTC.
        calls_last_24h : int or array-like
            Calls already made to the contact in the 24 h before ``at`` (fatigue).

        Returns
        -------
        ndarray of float, broadcast over the three arguments.
        """
        values = at if isinstance(at, pd.Series | pd.DatetimeIndex) else np.atleast_1d(at)
        utc = pd.to_datetime(pd.Series(values), utc=True).dt.tz_localize(None)
        utc_ns = utc.to_numpy("datetime64[ns]").astype(np.int64)
        idx, utc_ns, calls = np.broadcast_arrays(
            self.index_of(contact_id), utc_ns, np.asarray(calls_last_24h)
        )
        return _sigmoid(self.logit(idx.ravel(), utc_ns.ravel(), calls.ravel()))

    # --- persistence -----------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the world (contacts and truth constants) to one Parquet file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(self.contacts, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[_META_KEY] = json.dumps({"params": asdict(self.params)}).encode()
        pq.write_table(table.replace_schema_metadata(meta), path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> World:
        """Read a world written by :meth:`save`."""
        table = pq.read_table(Path(path))
        meta = json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}"))
        return cls(table.to_pandas(), TruthParams(**meta.get("params", {})))

    # --- words -----------------------------------------------------------------------------

    def describe(self, contact_id: str) -> str:
        """The contact's true answering pattern in words."""
        i = int(self.index_of(contact_id)[0])
        row = self.contacts.iloc[i]
        prm = self.params
        table = industry_table()[self._industry[i]]
        base = prm.intercept + self._baseline[i]
        place = row["country"] + (f"-{row['subdivision']}" if isinstance(
            row["subdivision"], str) and row["subdivision"] else "")
        parts = [
            f"{row['contact_id']}: {row['industry']}, {place} ({row['timezone']}); "
            f"p {_sigmoid(base + table.max()):.2f} at the industry's best hour"
        ]

        def span(day: int, start: int, dur: int) -> str:
            return f"{_WEEKDAYS[day]} {_hhmm(start)}-{_hhmm(start + dur)}"

        for k in (1, 2):
            day, start, dur = (int(row[f"gw{k}_{x}"]) for x in ("day", "start", "dur"))
            if day >= 0:
                cell = table[day, start // 15 : (start + dur) // 15].mean()
                parts.append(f"answers {span(day, start, dur)} "
                             f"(p {_sigmoid(base + cell + prm.golden_boost):.2f})")
        if row["never_day"] >= 0:
            never = (int(row[f"never_{x}"]) for x in ("day", "start", "dur"))
            parts.append(f"never {span(*never)}")
        if row["vacation_days"] > 0:
            first = np.datetime64("2026-01-01") + int(row["vacation_doy"])
            parts.append(f"on vacation {int(row['vacation_days'])} days from "
                         f"{pd.Timestamp(first):%d %b} each year")
        parts.append(f"each call in the last 24 h multiplies the odds by "
                     f"{np.exp(-prm.fatigue_per_call):.2f}")
        return "; ".join(parts)
