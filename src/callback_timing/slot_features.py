"""Features of candidate slots for the ranking policy: the training kernels, with caches.

:class:`SlotFeatures` answers what :func:`callback_timing.features.build_features` answers for
a batch of slot grids, through the same kernels (:func:`~callback_timing.features.\
feature_block`, :func:`~callback_timing.calendar.calendar_arrays`), but without pandas per
request: it keeps

- the whole call history as :class:`~callback_timing.history_kernel.PreparedCalls` (the
  calls side of the history kernel: sorted by contact and by each grouping, once), so a
  request only runs the targets side;
- the date features (:func:`~callback_timing.calendar.day_arrays`: holidays, bridge days,
  seasons, ISO week) of every day of a year, per (country, subdivision, year);
- each industry's and country's codes (:func:`~callback_timing.features.context_codes`
  maps values one by one), learnt for every value the history and priors know at once.

Local time comes from :mod:`callback_timing.tzclock` (zoneinfo's transitions, vectorised).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from callback_timing import calendar
from callback_timing.feature_block import FeatureBlock
from callback_timing.features import context_codes, feature_block
from callback_timing.history_kernel import CallArrays, PreparedCalls, seconds_of_ns
from callback_timing.priors import Priors
from callback_timing.schema import INDUSTRIES


class SlotFeatures:
    """Feature blocks of slot grids from one call history and fitted priors (cached).

    Parameters
    ----------
    history : clean call history (the policy's).
    priors : fitted priors the features are smoothed toward.
    calendar_of : an earlier instance whose calendar tables and context codes (they do not
        depend on the history) this one shares, e.g. when the history grows during a campaign.
    """

    def __init__(self, history: pd.DataFrame, priors: Priors,
                 calendar_of: SlotFeatures | None = None) -> None:
        self.history, self.priors = history, priors
        self._calls: PreparedCalls | None = None
        self._code_of: dict = {}
        self._years: dict[tuple, dict[str, np.ndarray]] = (
            {} if calendar_of is None else calendar_of._years)
        #: per place: the year table used last
        self._last_year: dict[tuple, tuple] = {} if calendar_of is None else calendar_of._last_year
        self._industry: dict = {}  #: industry -> (industry code, prior code)
        self._country: dict = {}  #: country -> country code
        self._code_types: tuple = (np.int8, np.int8)
        if calendar_of is not None and calendar_of.priors is priors:  # codes follow the priors
            self._industry, self._country = calendar_of._industry, calendar_of._country
            self._code_types = calendar_of._code_types

    def _history(self) -> tuple[PreparedCalls, dict]:
        """The prepared history and each contact's code in it (built on first use).

        Contacts without calls share the code after the last one: no call has it.
        """
        if self._calls is None:
            h = self.history
            codes, uniques = pd.factorize(h["contact_id"], use_na_sentinel=False)
            self._code_of = {cid: i for i, cid in enumerate(uniques)}
            self._calls = PreparedCalls(CallArrays.of(h, codes), len(uniques) + 1)
        return self._calls, self._code_of

    def with_calls(self, contacts: list, added: dict[str, CallArrays]) -> SlotFeatures:
        """Features for ``contacts`` only, from their calls in this history and the calls
        ``added`` since (per contact id, :meth:`CallArrays.of` with any contact code).

        The same features as an instance built on a history that holds the added calls, but
        only these contacts' calls are prepared (a few arrays, no pandas): the cost of
        ranking a contact with a fresh outcome. Calendar tables and codes are shared.
        """
        calls, code_of = self._history()
        parts, codes = [], {}
        for i, cid in enumerate(contacts):
            codes[cid] = i
            code = code_of.get(cid)
            if code is not None:
                parts.append(calls.calls.take(calls.rows_of(code), contact=i))
            extra = added.get(cid)
            if extra is not None:
                parts.append(extra.take(np.arange(len(extra.sec)), contact=i))
        out = SlotFeatures(self.history, self.priors, calendar_of=self)
        out._calls = PreparedCalls(CallArrays.concat(parts), len(contacts) + 1)
        out._code_of = codes
        return out

    def _year(self, place: tuple, year: int) -> dict[str, np.ndarray]:
        """:func:`calendar.day_arrays` of every day of ``year`` in a (country, subdivision)."""
        key = (*place, year)
        table = self._years.get(key)
        if table is None:
            days = np.arange(np.datetime64(f"{year:04d}-01-01"),
                             np.datetime64(f"{year + 1:04d}-01-01"))
            table = calendar.day_arrays(days, place[0], place[1], (year - 1, year, year + 1))
            self._years[key] = table
        return table

    def _place_days(self, place: tuple, day: np.ndarray) -> dict[str, np.ndarray]:
        """The date features of local days ``day`` (int days since the epoch) in one place."""
        last = self._last_year.get(place)
        if last is not None and last[0] <= day.min() and day.max() < last[1]:
            return {k: v[day - last[0]] for k, v in last[2].items()}
        year = day.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970
        first, last = int(year.min()), int(year.max())
        if first == last:
            start = int(np.datetime64(f"{first:04d}-01-01", "D").astype(np.int64))
            table = self._year(place, first)
            self._last_year[place] = (start, start + len(table["month"]), table)
            return {k: v[day - start] for k, v in table.items()}
        out: dict[str, np.ndarray] = {}
        for y in range(first, last + 1):
            mask = year == y
            if mask.any():
                for k, v in self._place_days(place, day[mask]).items():
                    out.setdefault(k, np.empty(len(day), dtype=v.dtype))[mask] = v
        return out

    def _learn(self, industries: list, countries: list) -> None:
        """Remember the :func:`context_codes` of industries and countries (one call)."""
        c = context_codes(np.array(industries, dtype=object), np.array(countries, dtype=object),
                          self.priors)
        for i, value in enumerate(industries):
            self._industry[value] = (int(c["industry"][i]), int(c["prior"][i]))
        for i, value in enumerate(countries):
            self._country[value] = int(c["country"][i])
        self._code_types = (c["industry"].dtype, c["country"].dtype)

    def _codes(self, industry: str, country: str | None) -> tuple[int, int, int]:
        """Industry, country and prior codes of a contact's attributes (cached)."""
        if not self._industry:  # first use: every value the history and the priors know
            h = self.history
            known = [*INDUSTRIES, *self.priors.dense().industries]
            self._learn(list(dict.fromkeys([*known, *pd.unique(h["industry"])])),
                        list(dict.fromkeys([None, *self.priors.countries_,
                                            *pd.unique(h["country"])])))
        if industry not in self._industry or country not in self._country:
            self._learn([industry], [country])
        ind, prior = self._industry[industry]
        return ind, self._country[country], prior

    def block(self, contacts: list, now_ns: np.ndarray, of: np.ndarray, at: np.ndarray,
              local: np.ndarray) -> FeatureBlock:
        """Features of slots starting at ``at`` (UTC ns) of grids ``of``.

        Grid ``g`` ranks ``contacts[g]`` (with ``contact_id``, ``timezone``, ``country``,
        ``subdivision``, ``industry``) at ``now_ns[g]``, the history cut-off. ``local`` is
        the slots' local wall time (:func:`tzclock.local_ns` in the contacts' zones).
        """
        calls, code_of = self._history()
        unknown = calls.n_codes - 1
        grid_code = np.array([code_of.get(c.contact_id, unknown) for c in contacts],
                             dtype=np.int64)
        t_sec = seconds_of_ns(at)
        cut = np.minimum(t_sec, seconds_of_ns(np.asarray(now_ns, dtype=np.int64)[of]))
        places: dict[tuple, int] = {}
        grid_place = np.array([places.setdefault(_place(c), len(places)) for c in contacts])

        def days_of(day: np.ndarray) -> dict[str, np.ndarray]:
            if len(places) == 1:
                return self._place_days(next(iter(places)), day)
            row_place = grid_place[of]
            out: dict[str, np.ndarray] = {}
            for place, code in places.items():
                mask = row_place == code
                if mask.any():
                    for k, v in self._place_days(place, day[mask]).items():
                        out.setdefault(k, np.empty(len(day), dtype=v.dtype))[mask] = v
            return out

        cal = calendar.calendar_arrays(at, local, days_of=days_of)
        grid_ctx = np.array([self._codes(c.industry, c.country) for c in contacts],
                            dtype=np.int64).reshape(-1, 3)
        ctx = grid_ctx[of]
        context = {"industry": ctx[:, 0].astype(self._code_types[0]),
                   "country": ctx[:, 1].astype(self._code_types[1]), "prior": ctx[:, 2]}
        return feature_block(calls, grid_code[of], t_sec, cut, cal, context, self.priors)


def _place(contact) -> tuple:
    """A contact's (country, subdivision), missing values as ``None``."""
    def clean(value):
        return value if isinstance(value, str) else None
    return clean(contact.country), clean(contact.subdivision)
