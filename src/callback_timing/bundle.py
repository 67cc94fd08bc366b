"""The model bundle: everything serving needs to score (contact, slot) pairs, in one folder.

Layout (format 1)::

    DIR/
      metadata.json      training window, metrics, parameters, library versions, format
      model/             booster.json + answer_model.json (AnswerModel, plain JSON)
      priors.json        industry x weekday x hour-band priors as of training
      history.parquet    the contacts' pseudonymised call history as of training (profiles)

No pickles: every file is JSON or Parquet, readable without this library.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import pandas as pd

from callback_timing.features import build_features
from callback_timing.model import AnswerModel
from callback_timing.priors import Priors
from callback_timing.schema import SchemaError

BUNDLE_FORMAT = 1
#: Columns of the call history kept in a bundle (no phone pseudonym: minimisation).
HISTORY_COLUMNS = (
    "contact_id", "called_at", "outcome", "answered", "timezone", "country", "subdivision",
    "industry",
)
_VERSIONED = ("callback-timing", "xgboost", "scikit-learn", "pandas", "numpy", "holidays",
              "phonenumbers")


def installed(name: str) -> tuple[str, str] | None:
    """``(distribution, version)`` providing package ``name`` (e.g. xgboost from xgboost-cpu).

    >>> installed("pandas")[0]
    'pandas'
    """
    try:
        return name, importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        pass
    for dist in importlib_metadata.packages_distributions().get(name.replace("-", "_"), []):
        return dist, importlib_metadata.version(dist)
    return None


def library_versions() -> dict[str, str]:
    """Versions of the libraries a bundle depends on (for its metadata)."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        found = installed(name)
        versions[name] = f"{found[1]} ({found[0]})" if found and found[0] != name else (
            found[1] if found else "not installed"
        )
    return versions


@dataclass
class ModelBundle:
    """A trained model with the state it needs to score new (contact, time) pairs.

    Attributes
    ----------
    model : the calibrated :class:`~callback_timing.model.AnswerModel`.
    priors : :class:`~callback_timing.priors.Priors` fitted on the training period.
    history : clean calls (:data:`HISTORY_COLUMNS`) as of training: the contact profiles.
    metadata : JSON-serialisable facts about the training run.
    """

    model: AnswerModel
    priors: Priors
    history: pd.DataFrame
    metadata: dict = field(default_factory=dict)

    def features(self, targets: pd.DataFrame, calls: pd.DataFrame | None = None) -> pd.DataFrame:
        """Feature rows of ``targets``, from the bundle's history plus newer ``calls``."""
        history = self.history
        if calls is not None and len(calls):
            history = pd.concat([history, calls[list(HISTORY_COLUMNS)]], ignore_index=True)
        return build_features(history, targets, self.priors)

    def p_answer(self, targets: pd.DataFrame, calls: pd.DataFrame | None = None) -> np.ndarray:
        """Calibrated answer probability of each target (see :meth:`features`)."""
        if len(targets) == 0:
            return np.zeros(0)
        return self.model.p_answer(self.features(targets, calls))

    @property
    def version(self) -> str:
        """A short identifier of this bundle (training run id or creation time)."""
        return str(self.metadata.get("version", "unversioned"))

    def save(self, folder: str | Path) -> Path:
        """Write the bundle into ``folder`` (created; existing bundle files replaced)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save(folder / "model")
        (folder / "priors.json").write_text(json.dumps(self.priors.to_dict()))
        self.history[list(HISTORY_COLUMNS)].to_parquet(folder / "history.parquet", index=False)
        return self.save_metadata(folder)

    def save_metadata(self, folder: str | Path) -> Path:
        """Write ``metadata.json`` into ``folder`` (a bundle's folder) from :attr:`metadata`."""
        folder = Path(folder)
        meta = {**self.metadata, "bundle_format": BUNDLE_FORMAT}
        (folder / "metadata.json").write_text(json.dumps(meta, indent=2, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> ModelBundle:
        """Read a bundle written by :meth:`save`; a missing or broken one raises SchemaError."""
        folder = Path(folder)
        try:
            meta = read_metadata(folder)
            if meta.get("bundle_format") != BUNDLE_FORMAT:
                raise ValueError(f"unsupported bundle format {meta.get('bundle_format')!r}")
            model = AnswerModel.load(folder / "model")
            priors = Priors.from_dict(json.loads((folder / "priors.json").read_text()))
            history = pd.read_parquet(folder / "history.parquet")
        except (OSError, ValueError, KeyError) as exc:
            what = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if type(exc).__name__ == "XGBoostError":  # its text is a C++ stack trace
                what = "model/booster.json is not a readable XGBoost model (damaged?)"
            raise SchemaError(f"cannot load model bundle {folder}: {what}") from None
        return cls(model=model, priors=priors, history=history, metadata=meta)


def read_metadata(folder: str | Path) -> dict:
    """The ``metadata.json`` of the bundle in ``folder`` (``OSError`` or ``ValueError`` when
    it is missing or not JSON)."""
    meta = json.loads((Path(folder) / "metadata.json").read_text())
    if not isinstance(meta, dict):
        raise ValueError("metadata.json is not a JSON object")
    return meta
