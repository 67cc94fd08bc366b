"""The rule-based fallback: answer chances from an editable table, with the model's interface.

:class:`RuleModel` reads ``rules.yaml`` (industry calling patterns by contact-local weekday and
time, holidays and bridge days, and a bounded lift from the contact's own answer rate) and
answers :meth:`RuleModel.p_answer` on the same feature frame as
:class:`~callback_timing.model.AnswerModel`, so the policy never asks which one it has.

Examples
--------
>>> import pandas as pd
>>> rules = RuleModel.from_file()
>>> X = pd.DataFrame({"industry": pd.Categorical(["it", "it"]), "weekday": [0, 1],
...                   "minute_of_day": [8 * 60 + 30, 10 * 60], "holiday": [0, 0],
...                   "bridge_day": [0, 0]})
>>> p = rules.p_answer(X)
>>> bool(p[0] < p[1])        # Monday 08:30 (stand-ups) vs Tuesday 10:00
True
>>> rules.notes(X)[0]
'IT contacts rarely answer Monday 08:00-10:00 (stand-ups)'
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import yaml

from callback_timing.policy_config import parse_days, parse_span
from callback_timing.schema import INDUSTRIES, ConfigError, read_config_text

if TYPE_CHECKING:
    from callback_timing.feature_block import FeatureBlock

_SLOTS = 96
_CONSUMER = INDUSTRIES.index("consumer")
_OTHER = INDUSTRIES.index("other")
P_MIN, P_MAX = 0.005, 0.95


def default_rules_text() -> str:
    """The packaged ``rules.yaml``."""
    return resources.files("callback_timing").joinpath("rules.yaml").read_text("utf-8")


class RuleModel:
    """Answer chances by industry x contact-local weekday x 15-minute slot, from a table.

    Parameters
    ----------
    table : the parsed ``rules.yaml`` mapping (see :meth:`from_file`).
    """

    def __init__(self, table: dict) -> None:
        self.table = table
        levels = table.get("levels") or {}
        try:
            self.levels_ = {str(k): float(v) for k, v in levels.items()}
        except (TypeError, ValueError):
            raise ConfigError("rules: levels must map names to probabilities") from None
        if not self.levels_ or not all(0 < v < 1 for v in self.levels_.values()):
            raise ConfigError("rules: levels must map names to probabilities between 0 and 1")
        self.notes_: list[str | None] = [None]
        p = np.full((len(INDUSTRIES), 7, _SLOTS), self._level(table.get("default_level", "poor"),
                                                              "default_level"))
        note = np.zeros(p.shape, dtype=np.int16)
        industries = table.get("industries") or {}
        unknown = sorted(set(industries) - set(INDUSTRIES))
        if unknown:
            raise ConfigError(f"rules: unknown industry {unknown[0]!r} "
                              f"(known: {', '.join(INDUSTRIES)})")
        for i, name in enumerate(INDUSTRIES):
            entries = ([] if i == _CONSUMER else list(table.get("business") or []))
            entries += list(industries.get(name) or [])
            for k, entry in enumerate(entries):
                self._apply(p[i], note[i], entry, f"rules.{name}[{k}]")
        self.p_table_ = p
        self.note_table_ = note
        hol = table.get("holiday") or {}
        self.holiday_business_ = self._level(hol.get("business", "bad"), "holiday.business")
        self.bridge_business_ = self._level((table.get("bridge_day") or {}).get("business", "poor"),
                                            "bridge_day.business")
        hist = table.get("history") or {}
        self.min_history_ = float(hist.get("min_calls", 3))
        self.max_lift_ = float(hist.get("max_lift", 3.0))

    @classmethod
    def from_file(cls, path: str | Path | None = None) -> RuleModel:
        """Read a rules table (default: the packaged ``rules.yaml``)."""
        where = str(path) if path else "rules.yaml"
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"rules table not found: {path}")
        text = read_config_text(path) if path else default_rules_text()
        try:
            table = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a mapping at the top level")
        return cls(table)

    def _level(self, name: object, where: str) -> float:
        if str(name) not in self.levels_:
            raise ConfigError(f"rules: {where}: unknown level {name!r} "
                              f"(known: {', '.join(self.levels_)})")
        return self.levels_[str(name)]

    def _apply(self, p: np.ndarray, note: np.ndarray, entry: object, where: str) -> None:
        if not isinstance(entry, dict) or not {"days", "hours", "level"} <= set(entry):
            raise ConfigError(f"{where}: an entry needs days, hours and level")
        days = list(parse_days(entry["days"], where))
        span = parse_span(entry["hours"], f"{where}.hours")
        if span is None:
            return
        slots = slice(span[0] // 15, -(-span[1] // 15))
        p[days, slots] = self._level(entry["level"], f"{where}.level")
        why = entry.get("why")
        code = 0
        if why:
            if why not in self.notes_:
                self.notes_.append(str(why))
            code = self.notes_.index(why)
        note[days, slots] = code

    # --- prediction ------------------------------------------------------------------------

    @staticmethod
    def cells(industry: np.ndarray, weekday: np.ndarray, minute_of_day: np.ndarray,
              holiday: np.ndarray, bridge_day: np.ndarray) -> tuple[np.ndarray, ...]:
        """Table cells of rows given as arrays; ``industry`` holds codes of ``INDUSTRIES``."""
        industry = np.where(industry < 0, _OTHER, industry).astype(np.int64)
        slot = np.minimum(np.maximum(np.asarray(minute_of_day, dtype=np.int64) // 15, 0),
                          _SLOTS - 1)
        holiday, bridge = np.asarray(holiday, dtype=bool), np.asarray(bridge_day, dtype=bool)
        consumer = industry == _CONSUMER
        weekday = np.where(consumer & holiday, 6, weekday)  # consumers: a holiday is a Sunday
        return industry, weekday, slot, holiday & ~consumer, bridge & ~consumer

    def _cells(self, X) -> tuple[np.ndarray, ...]:
        """:meth:`cells` of a feature frame (or a :class:`~callback_timing.feature_block.\
FeatureBlock`, whose ``industry`` column holds codes of ``INDUSTRIES``)."""
        if isinstance(X, pd.DataFrame):
            industry = pd.Categorical(X["industry"].astype(object),
                                      categories=list(INDUSTRIES)).codes
        else:
            industry = X.codes("industry", list(INDUSTRIES))
        n = len(X)
        holiday = X["holiday"] if "holiday" in X else np.zeros(n, bool)
        bridge = X["bridge_day"] if "bridge_day" in X else np.zeros(n, bool)
        return self.cells(industry, np.asarray(X["weekday"], dtype=np.int64),
                          np.asarray(X["minute_of_day"]), np.asarray(holiday, dtype=bool),
                          np.asarray(bridge, dtype=bool))

    def cells_p(self, cells: tuple[np.ndarray, ...]) -> np.ndarray:
        """The table's chance of rows given as :meth:`cells`."""
        industry, weekday, slot, holiday, bridge = cells
        p = self.p_table_[industry, weekday, slot]
        p = np.where(bridge, np.minimum(p, self.bridge_business_), p)
        return np.where(holiday, np.minimum(p, self.holiday_business_), p)

    def table_p(self, X: pd.DataFrame | FeatureBlock) -> np.ndarray:
        """The table's chance of each row, before the contact's own history."""
        return self.cells_p(self._cells(X))

    def lifted(self, p: np.ndarray, hist_n: np.ndarray, hist_rate: np.ndarray,
               prior_industry: np.ndarray) -> np.ndarray:
        """Table chances ``p`` scaled by the contact's own answer rate (see :meth:`p_answer`)."""
        lift = np.asarray(hist_rate, dtype=float) / np.maximum(
            np.asarray(prior_industry, dtype=float), 1e-6)
        lift = np.clip(np.nan_to_num(lift, nan=1.0), 1 / self.max_lift_, self.max_lift_)
        return np.where(np.asarray(hist_n, dtype=float) >= self.min_history_, p * lift, p)

    def p_answer(self, X: pd.DataFrame | FeatureBlock) -> np.ndarray:
        """Answer chance of each row of a feature frame (the model's interface).

        With history columns (``hist_n``, ``hist_rate``, ``prior_industry``) and at least
        ``history.min_calls`` earlier calls, the contact's smoothed answer rate relative to
        its industry's scales the table's chance, bounded by ``history.max_lift``.
        """
        p = self.table_p(X)
        if all(c in X for c in ("hist_n", "hist_rate", "prior_industry")):
            p = self.lifted(p, X["hist_n"], X["hist_rate"], X["prior_industry"])
        return np.clip(p, P_MIN, P_MAX)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """``[[p(no answer), p(answer)], ...]`` like a scikit-learn classifier."""
        p = self.p_answer(X)
        return np.column_stack([1 - p, p])

    def notes(self, X: pd.DataFrame | FeatureBlock) -> list[str | None]:
        """The table's ``why`` for each row (holidays and bridge days first), or ``None``."""
        industry, weekday, slot, holiday, bridge = self._cells(X)
        codes = self.note_table_[industry, weekday, slot]
        out = [self.notes_[c] for c in codes]
        for i in np.flatnonzero(bridge):
            out[i] = "bridge day: many offices are closed"
        for i in np.flatnonzero(holiday):
            out[i] = "public holiday: offices are closed"
        return out
