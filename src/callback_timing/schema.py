"""The contract's call-history schema: column names, outcome vocabulary, typed errors.

See ``docs/contract.md`` section 1. Everything that names a column of the call history
imports it from here, so a rename happens in one place.
"""

from __future__ import annotations

from pathlib import Path

#: Columns a call-history file must have.
REQUIRED_COLUMNS: tuple[str, ...] = ("contact_id", "called_at", "outcome")

#: Columns the contract allows besides the required ones.
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "call_id",
    "phone",
    "country",
    "subdivision",
    "timezone",
    "industry",
    "requested_at",
    "request_id",
    "attempt",
    "duration_s",
)

ALL_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

#: The outcome vocabulary (lower case); ``answered`` is the positive label.
OUTCOMES: tuple[str, ...] = (
    "answered",
    "no_answer",
    "busy",
    "voicemail",
    "rejected",
    "invalid_number",
)
POSITIVE_OUTCOME = "answered"

#: Columns of a *clean* call frame, as :func:`callback_timing.data.load_history` returns it.
#: Timestamps are tz-aware UTC; ``timezone`` is always a valid IANA name; the clear phone
#: number is replaced by ``phone_hash`` (keyed pseudonym) and never leaves the loader.
CLEAN_COLUMNS: tuple[str, ...] = (
    "contact_id",  # str
    "called_at",  # datetime64[ns, UTC]
    "outcome",  # str, one of OUTCOMES
    "answered",  # int8 0/1
    "call_id",  # str or missing
    "phone_hash",  # str or missing
    "country",  # ISO alpha-2 or missing
    "subdivision",  # str or missing
    "timezone",  # IANA name, never missing
    "tz_source",  # given | phone | country | default
    "tz_flag",  # True when the phone's region spans several zones (main zone used)
    "industry",  # normalised taxonomy value, "other" when unknown
    "requested_at",  # datetime64[ns, UTC] or NaT
    "request_id",  # str or missing
    "attempt",  # Int64 or missing
    "duration_s",  # float or NaN
)


class CallbackTimingError(Exception):
    """Base class of errors a user can cause; the CLI prints them as one line."""


class SchemaError(CallbackTimingError):
    """The input as a whole cannot be used (missing required column, unreadable file...)."""


class ConfigError(CallbackTimingError):
    """A configuration value or option is invalid."""


def require_file(path: str | Path, option: str) -> Path:
    """``path`` as a :class:`~pathlib.Path`; :class:`ConfigError` naming ``option`` when it
    is not a file (missing, or a folder)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{option}: no file {path}" + (" (a folder)" if path.is_dir() else ""))
    return path


def read_config_text(path: str | Path) -> str:
    """The text of a configuration file the user named (YAML, JSON); :class:`ConfigError`
    when it is not UTF-8 text (a binary or spreadsheet file given by mistake)."""
    try:
        return Path(path).read_text("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (UTF-8)") from None


#: The industry taxonomy (see ``contacts.normalise_industry``); unknown values map to "other".
INDUSTRIES: tuple[str, ...] = (
    "it",
    "manufacturing",
    "automotive",
    "retail",
    "finance",
    "healthcare",
    "logistics",
    "construction",
    "public_sector",
    "hospitality",
    "consumer",
    "other",
)
