"""callback-timing: when to call a customer back.

The public API, importable from the package (loaded on first use, so the command line starts
fast):

>>> import callback_timing as ct
>>> sim = ct.simulate(contacts=30, days=7, seed=1, dirt_rate=0.0)
>>> calls = ct.clean_history(sim.history, key=b"doc").calls
>>> X, y = ct.training_frame(calls, ct.fit_priors(calls))
>>> len(X) == len(calls) == len(y)
True
"""

from __future__ import annotations

import os
from importlib import import_module
from typing import TYPE_CHECKING

# XGBoost's OpenMP threads spin while they wait; on a busy 2-core machine (CI, a tuning run next
# to a server) that made single fits up to 50x slower. Passive waiting is robust: measured on a
# 300k-row fit with 2 threads, 7.3 s instead of 5.2 s on idle cores, 9.0 s instead of 14.1 s
# next to one busy process. Set before xgboost is first loaded; the user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "LoadResult": "callback_timing.data",
    "clean_history": "callback_timing.data",
    "load_history": "callback_timing.data",
    "read_table": "callback_timing.reading",
    "quality_report": "callback_timing.report",
    "normalise_industry": "callback_timing.contacts",
    "parse_phones": "callback_timing.contacts",
    "pseudonymise": "callback_timing.contacts",
    "calendar_frame": "callback_timing.calendar",
    "local_to_utc": "callback_timing.calendar",
    "Priors": "callback_timing.priors",
    "build_features": "callback_timing.features",
    "fit_priors": "callback_timing.features",
    "training_frame": "callback_timing.features",
    "FEATURE_COLUMNS": "callback_timing.features",
    "simulate": "callback_timing.simulation",
    "SimulationResult": "callback_timing.simulation",
    "write_history": "callback_timing.simulation",
    "World": "callback_timing.world",
    "AnswerModel": "callback_timing.model",
    "ModelBundle": "callback_timing.bundle",
    "fit_and_evaluate": "callback_timing.training",
    "train": "callback_timing.workflow",
    "tune": "callback_timing.tuning",
    "CallbackTimingError": "callback_timing.schema",
    "SchemaError": "callback_timing.schema",
    "ConfigError": "callback_timing.schema",
}

__all__ = [
    "__version__",
    "LoadResult",
    "clean_history",
    "load_history",
    "read_table",
    "quality_report",
    "normalise_industry",
    "parse_phones",
    "pseudonymise",
    "calendar_frame",
    "local_to_utc",
    "Priors",
    "build_features",
    "fit_priors",
    "training_frame",
    "FEATURE_COLUMNS",
    "simulate",
    "SimulationResult",
    "write_history",
    "World",
    "AnswerModel",
    "ModelBundle",
    "fit_and_evaluate",
    "train",
    "tune",
    "CallbackTimingError",
    "SchemaError",
    "ConfigError",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from callback_timing.bundle import ModelBundle
    from callback_timing.calendar import calendar_frame, local_to_utc
    from callback_timing.contacts import normalise_industry, parse_phones, pseudonymise
    from callback_timing.data import LoadResult, clean_history, load_history
    from callback_timing.features import (
        FEATURE_COLUMNS,
        build_features,
        fit_priors,
        training_frame,
    )
    from callback_timing.model import AnswerModel
    from callback_timing.priors import Priors
    from callback_timing.reading import read_table
    from callback_timing.report import quality_report
    from callback_timing.schema import CallbackTimingError, ConfigError, SchemaError
    from callback_timing.simulation import SimulationResult, simulate, write_history
    from callback_timing.training import fit_and_evaluate
    from callback_timing.tuning import tune
    from callback_timing.workflow import train
    from callback_timing.world import World


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'callback_timing' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
