"""Answer-rate priors by industry, weekday and local hour band, smoothed toward the population.

A contact with three calls says little; its industry says more. :class:`Priors` holds the rates
that the history features smooth toward (in the spirit of river's ``TargetAgg``): each group's
rate is pulled toward its parent by a pseudo-count, so small groups stay near the parent.

Fit priors on the training period only: they are fitted parameters, not point-in-time features.

Examples
--------
>>> import pandas as pd
>>> calls = pd.DataFrame({"industry": ["it", "it", "retail"], "weekday": [0, 0, 1],
...                       "band": [4, 4, 5], "answered": [0, 0, 1]})
>>> p = Priors(strength=2.0).fit(calls)
>>> round(p.population_, 3)
0.333
>>> bool(p.lookup(["it"], [0], [4])["prior_wdband"].iloc[0] < p.population_)
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from callback_timing import config

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from callback_timing.rules import RuleModel


def hour_band(hour: np.ndarray | pd.Series) -> np.ndarray:
    """Local hour band index (``hour // config.HOUR_BAND_HOURS``)."""
    return (np.asarray(hour, dtype=np.int16) // config.HOUR_BAND_HOURS).astype(np.int16)


N_BANDS = 24 // config.HOUR_BAND_HOURS


@dataclass
class Priors:
    """Smoothed answer-rate tables: population → industry → industry×weekday/band → ×both.

    Parameters
    ----------
    strength : pseudo-count pulling each group toward its parent.
    """

    strength: float = config.GROUP_PRIOR_STRENGTH
    population_: float = field(default=np.nan, init=False)
    industry_: pd.Series = field(default=None, init=False, repr=False)
    wd_: pd.Series = field(default=None, init=False, repr=False)
    band_: pd.Series = field(default=None, init=False, repr=False)
    wdband_: pd.Series = field(default=None, init=False, repr=False)
    countries_: list[str] = field(default_factory=list, init=False)
    rules_: dict | None = field(default=None, init=False, repr=False)

    def fit(self, calls: pd.DataFrame, rules_table: dict | None = None) -> Priors:
        """Fit from rows with ``industry``, ``weekday``, ``band`` and ``answered`` (with a
        ``count`` column: rows of ``count`` calls and ``answered`` answers).

        ``rules_table`` is the rule-based fallback's table (parsed ``rules.yaml``) whose
        chances become the ``prior_rules`` feature; it is frozen here so training and serving
        read the same table (default: the packaged one).
        """
        m = self.strength
        self._dense = None
        self._rule_model = None
        if rules_table is None:
            import yaml

            from callback_timing.rules import default_rules_text

            rules_table = yaml.safe_load(default_rules_text())
        self.rules_ = rules_table
        frame = calls[["industry", "weekday", "band", "answered"]].copy()
        frame["industry"] = frame["industry"].astype(str).astype(object)
        frame["weekday"] = frame["weekday"].astype(np.int64)
        frame["band"] = frame["band"].astype(np.int64)
        # rows may be counts already (``answered`` answers of ``count`` calls): a cluster's
        # partitions send their group totals (:mod:`callback_timing.dask_engine`)
        frame["count"] = calls["count"].to_numpy() if "count" in calls else 1
        total = frame["count"].sum()
        self.population_ = float(frame["answered"].sum() / total) if total else 0.3
        agg = frame.groupby("industry")[["answered", "count"]].sum()
        self.industry_ = (agg["answered"] + m * self.population_) / (agg["count"] + m)
        ind = self.industry_
        self.wd_ = self._child(frame, ["industry", "weekday"], ind, m)
        self.band_ = self._child(frame, ["industry", "band"], ind, m)
        self.wdband_ = self._child(frame, ["industry", "weekday", "band"], self.band_, m)
        if "country" in calls:
            self.countries_ = sorted(calls["country"].dropna().astype(str).unique().tolist())
        return self

    def rule_model(self) -> RuleModel:
        """The :class:`~callback_timing.rules.RuleModel` of the frozen table (or the default)."""
        from callback_timing.rules import RuleModel

        if getattr(self, "_rule_model", None) is None:
            self._rule_model = RuleModel(self.rules_) if self.rules_ else RuleModel.from_file()
        return self._rule_model

    @staticmethod
    def _child(frame: pd.DataFrame, keys: list[str], parent: pd.Series, m: float) -> pd.Series:
        agg = frame.groupby(keys, observed=True)[["answered", "count"]].sum()
        parent_idx = agg.index.droplevel([k for k in keys if k not in parent.index.names])
        prior = parent.reindex(parent_idx).to_numpy()
        return (agg["answered"] + m * prior) / (agg["count"] + m)

    def lookup(self, industry: ArrayLike, weekday: ArrayLike, band: ArrayLike) -> pd.DataFrame:
        """Prior rates for aligned arrays; unseen groups fall back to their parent."""
        industry = pd.Series(industry, dtype=object).astype(str).to_numpy()
        return pd.DataFrame(self._lookup_tables(industry, np.asarray(weekday, dtype=np.int64),
                                                np.asarray(band, dtype=np.int64)))

    def _lookup_tables(self, industry: np.ndarray, weekday: np.ndarray,
                       band: np.ndarray) -> dict[str, np.ndarray]:
        """The prior rates straight from the fitted tables (any weekday and band)."""
        ind = self._get(self.industry_, [industry], np.full(len(industry), self.population_))
        wd = self._get(self.wd_, [industry, weekday], ind)
        bd = self._get(self.band_, [industry, band], ind)
        wdb = self._get(self.wdband_, [industry, weekday, band], bd)
        return {"prior_industry": ind, "prior_wd": wd, "prior_band": bd, "prior_wdband": wdb}

    def dense(self) -> PriorTable:
        """The fitted rates as dense arrays indexed by industry code, weekday and band (cached).

        Every cell holds what :meth:`_lookup_tables` gives for it, fallbacks included.
        """
        if getattr(self, "_dense", None) is None:
            names = [] if self.industry_ is None else [str(k) for k in self.industry_.index]
            for table in (self.wd_, self.band_, self.wdband_):
                if table is not None and len(table):
                    names += [str(k) for k in table.index.get_level_values(0).unique()]
            names = list(dict.fromkeys(names))
            unknown = "\x00unknown"
            while unknown in names:
                unknown += "_"
            grid = np.array(np.meshgrid(np.arange(len(names) + 1), np.arange(7),
                                        np.arange(N_BANDS), indexing="ij")).reshape(3, -1)
            industry = np.array([*names, unknown], dtype=object)[grid[0]]
            values = self._lookup_tables(industry, grid[1], grid[2])
            shape = (len(names) + 1, 7, N_BANDS)
            self._dense = PriorTable(
                pd.Index(names, dtype=object),
                {k: v.reshape(shape) for k, v in values.items()},
            )
        return self._dense

    @staticmethod
    def _get(table: pd.Series, keys: list[np.ndarray], fallback: np.ndarray) -> np.ndarray:
        if table is None or len(table) == 0:
            return np.asarray(fallback, dtype=float)
        idx = pd.MultiIndex.from_arrays(keys) if len(keys) > 1 else pd.Index(keys[0])
        values = table.reindex(idx).to_numpy(dtype=float)
        return np.where(np.isnan(values), fallback, values)

    # --- persistence ----------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Plain JSON-serialisable form (see :meth:`from_dict`)."""

        def records(table: pd.Series) -> list:
            return [[*(k if isinstance(k, tuple) else (k,)), float(v)] for k, v in table.items()]

        return {
            "strength": self.strength,
            "population": self.population_,
            "industry": records(self.industry_),
            "wd": records(self.wd_),
            "band": records(self.band_),
            "wdband": records(self.wdband_),
            "countries": list(self.countries_),
            "rules": self.rules_,
        }

    @classmethod
    def from_dict(cls, state: dict) -> Priors:
        """Rebuild fitted priors from :meth:`to_dict` output."""

        def table(rows: list, names: list[str]) -> pd.Series:
            if len(names) == 1:
                return pd.Series({r[0]: r[1] for r in rows}, dtype=float, name="answered")
            index = pd.MultiIndex.from_tuples(
                [(r[0], *(int(x) for x in r[1:-1])) for r in rows], names=names
            )
            return pd.Series([r[-1] for r in rows], index=index, dtype=float)

        priors = cls(strength=state["strength"])
        priors.population_ = state["population"]
        priors.industry_ = table(state["industry"], ["industry"])
        priors.wd_ = table(state["wd"], ["industry", "weekday"])
        priors.band_ = table(state["band"], ["industry", "band"])
        priors.wdband_ = table(state["wdband"], ["industry", "weekday", "band"])
        priors.countries_ = list(state["countries"])
        priors.rules_ = state.get("rules")  # bundles before the rules prior: the default table
        priors._dense = None
        return priors


@dataclass
class PriorTable:
    """:class:`Priors` rates as dense arrays (:meth:`Priors.dense`).

    ``rates[name][code, weekday, band]`` for each prior feature name; the last industry code
    stands for every industry the priors never saw.
    """

    industries: pd.Index  #: industry names of codes 0 .. n-1
    rates: dict[str, np.ndarray]

    def codes(self, industry: np.ndarray) -> np.ndarray:
        """Industry codes of industry names (already ``str``); unseen ones get the last code."""
        codes = self.industries.get_indexer(np.asarray(industry, dtype=object))
        return np.where(codes < 0, len(self.industries), codes)

    def lookup(self, code: np.ndarray, weekday: np.ndarray, band: np.ndarray
               ) -> dict[str, np.ndarray]:
        """The prior features of rows with industry ``code``, ``weekday`` and hour ``band``."""
        return {name: table[code, weekday, band] for name, table in self.rates.items()}
