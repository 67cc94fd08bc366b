"""Every default in one place: paths, calendar settings, feature settings.

Paths are relative to the working directory unless an environment variable says otherwise,
so a fresh clone works without set-up and a deployment can move things with env vars.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable that may hold the pseudonymisation key (any string).
PSEUDONYM_KEY_ENV = "CALLBACK_TIMING_PSEUDONYM_KEY"
#: Environment variable that may name a key file (a mounted secret): one key per line, the
#: current one first, earlier ones below it (rotation).
PSEUDONYM_KEY_FILE_ENV = "CALLBACK_TIMING_PSEUDONYM_KEY_FILE"


def home_dir() -> Path:
    """Folder for local state (generated data, models, key file); ``$CALLBACK_TIMING_HOME``."""
    return Path(os.environ.get("CALLBACK_TIMING_HOME", ".callback-timing"))


def data_dir() -> Path:
    """Where ``simulate`` and the demo write generated histories by default."""
    return Path(os.environ.get("CALLBACK_TIMING_DATA", "data"))


def model_dir() -> Path:
    """Default model bundle location for ``train --out`` and ``serve --model``."""
    return Path(os.environ.get("CALLBACK_TIMING_MODEL_DIR", "models/current"))


def db_path() -> str:
    """The outcome store of ``serve --db``: a SQLite file or a SQLAlchemy URL
    (``postgresql://...``); ``$CALLBACK_TIMING_DB``."""
    return os.environ.get("CALLBACK_TIMING_DB", str(home_dir() / "outcomes.db"))


def mlruns_dir() -> Path:
    """MLflow's local store (tracking database and artifacts)."""
    return Path(os.environ.get("CALLBACK_TIMING_MLRUNS", "mlruns"))


# --- calendar --------------------------------------------------------------------------------

#: Months counted as summer vacation season (contact-local), by default for every country.
SUMMER_MONTHS: tuple[int, ...] = (7, 8)
#: End-of-year season: from this day of December up to and including this day of January.
END_OF_YEAR_FROM_DEC = 20
END_OF_YEAR_TO_JAN = 6

# --- features --------------------------------------------------------------------------------

#: Width of the local hour bands used by the history features (hours).
HOUR_BAND_HOURS = 2
#: Pseudo-count used to smooth a contact's answer rates toward the prior (TargetAgg-style).
PRIOR_STRENGTH = 3.0
#: Pseudo-count used to smooth a group's prior (e.g. IT on Mondays 08-10) toward its parent.
GROUP_PRIOR_STRENGTH = 30.0
#: Recent-call windows (hours) for the "calls in the last ..." features.
RECENT_WINDOWS_H: tuple[int, ...] = (3, 24, 168)
#: A contact with fewer calls than this is reported as "too little history" by ``validate``.
MIN_HISTORY_CALLS = 5

# --- tracking and registry ---------------------------------------------------------------------

#: MLflow experiment of training and tuning runs.
EXPERIMENT_NAME = "callback-timing"
#: MLflow registered model (champion/challenger aliases) of the answer model.
REGISTERED_MODEL_NAME = "callback-timing-answer"
#: the environment variable holding the server's API key (unset: no key asked)
API_KEY_ENV = "CALLBACK_TIMING_API_KEY"


def best_params_path() -> Path:
    """Where ``tune`` persists the best XGBoost parameters (read by ``train --params best``)."""
    return home_dir() / "best_params.json"


def retention_on() -> bool:
    """Whether the retention applies (server purge, training cut): ``CALLBACK_TIMING_PURGE``,
    default on; ``0``, ``false``, ``no`` or ``off`` turn it off, only to replay old data
    (the test suite's synthetic worlds are dated 2026)."""
    return os.environ.get("CALLBACK_TIMING_PURGE", "1").strip().lower() not in (
        "0", "false", "no", "off")
