"""Request and response models of the HTTP API (contract section 3), for BentoML and OpenAPI.

Types and ranges are checked here (a 400 naming the field); what needs the calling rules
(a time zone that exists, ``requested_at`` before ``now``, ...) is checked by the policy, also
as a 400 naming the field. Outcomes are deliberately loose: a bad outcome is rejected alone
(reported by index) and the others are stored.

Examples
--------
>>> RankRequest.model_validate({"contact": {"contact_id": "c-42"}}).to_policy()
{'contact': {'contact_id': 'c-42', 'opt_out': False, 'do_not_call': False}, 'horizon_hours': 48.0, \
'top_k': 3, 'policy': 'auto', 'urgency': 'standard'}
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

_ID = {"min_length": 1, "max_length": 256, "pattern": r"^[^\x00]*$"}  # no NUL: PostgreSQL
#: An outcome's field as sent: checked per outcome by the history's validation, not here.
Loose = str | int | float | bool | None


class ContactIn(BaseModel):
    """The contact of a ranking or a check; only ``contact_id`` is required."""

    model_config = ConfigDict(extra="ignore")

    contact_id: str = Field(**_ID, examples=["c-42"],
                            description="pseudonymous id of the person or company called")
    phone: str | None = Field(None, max_length=64, examples=["+48512345678"],
                              description="E.164 or national with country; never stored")
    industry: str | None = Field(None, max_length=128, examples=["it"])
    country: str | None = Field(None, pattern=r"^[A-Za-z]{2}$", examples=["PL"],
                                description="ISO 3166-1 alpha-2")
    subdivision: str | None = Field(None, max_length=16, examples=[None])
    timezone: str | None = Field(None, max_length=64, examples=["Europe/Warsaw"],
                                 description="IANA name")
    opt_out: bool = Field(False, strict=True,
                          description="opted out of AI timing: a traditional callback")
    do_not_call: bool = Field(False, strict=True,
                              description="objected to being called: no slot allowed")

    @field_validator("opt_out", "do_not_call", mode="before")
    @classmethod
    def _null_is_false(cls, value: Any) -> Any:
        return False if value is None else value


class RankRequest(BaseModel):
    """``POST /rank``: when to call one contact back."""

    model_config = ConfigDict(extra="ignore")

    request_id: str | None = Field(None, max_length=256, pattern=r"^[^\x00]*$",
                                   examples=["r-1"])
    contact: ContactIn
    now: datetime | None = Field(None, examples=["2026-06-01T10:00:00Z"],
                                 description="default: the server clock")
    requested_at: datetime | None = Field(None, examples=["2026-06-01T09:55:00Z"],
                                          description="default: now")
    horizon_hours: float = Field(48.0, ge=0.25, le=336, strict=True,
                                 description="hours ahead to look (one 15-minute slot at least)")
    top_k: int = Field(3, ge=1, le=20, strict=True)
    policy: Literal["auto", "model", "rules"] = "auto"
    urgency: Literal["standard", "urgent", "flexible"] = "standard"
    campaign: str | None = Field(None, max_length=128, pattern=r"^[^\x00]*$",
                                 examples=["spring-webinar"],
                                 description="the dialer's campaign (free text): kept in the "
                                             "decision log, a filter of the dashboard")
    team: str | None = Field(None, max_length=128, pattern=r"^[^\x00]*$",
                             examples=["inside-sales-north"],
                             description="the team that calls back (free text): as campaign")

    @field_validator("horizon_hours", "top_k", "policy", "urgency", mode="before")
    @classmethod
    def _null_is_the_default(cls, value: Any, info) -> Any:
        """``null`` is the default, as for ``now`` (dialers serialise unset fields so)."""
        return cls.model_fields[info.field_name].default if value is None else value

    @field_validator("now", "requested_at", mode="before")
    @classmethod
    def _text_timestamp(cls, value: Any) -> Any:
        return iso_text(value)

    def to_policy(self) -> dict:
        """The request as :meth:`callback_timing.policy.Policy.rank` reads it."""
        return self.model_dump(exclude_none=True)


def iso_text(value: Any) -> Any:
    """A timestamp field as sent, if it is ISO 8601 text (or ``None``): pydantic alone would
    read a number, or digits such as "1234567890", as seconds (or milliseconds) since 1970."""
    from callback_timing.isotime import parse_iso

    if value is None or isinstance(value, datetime):
        return value
    try:
        parse_iso(value if isinstance(value, str) else "")
    except ValueError:
        raise ValueError("expected an ISO 8601 timestamp with offset, e.g. "
                         "2026-06-01T10:00:00Z") from None
    return value


class RankBatchRequest(BaseModel):
    """``POST /rank_batch``: several rankings at once. A request that does not validate is
    answered in its place (:func:`batch_item`), like one the policy cannot rank: one bad
    record of a dialer's batch does not cost the others their answers."""

    requests: list[Annotated[RankRequest | Any, Field(union_mode="left_to_right")]] = Field(
        max_length=10_000)


def batch_item(item: RankRequest | Any) -> dict:
    """A request of a batch as :meth:`callback_timing.policy.Policy.rank` reads it, or, for
    one that does not validate, its answer: ``{"request_id", "error": "field: problem"}``."""
    try:
        return RankRequest.model_validate(item).to_policy()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "request"
        rid = item.get("request_id") if isinstance(item, dict) else None
        keep = isinstance(rid, str) and len(rid) <= 256 and "\x00" not in rid
        problem = first["msg"].removeprefix("Value error, ")
        return {"request_id": rid if keep else None, "error": f"{where}: {problem}"}


class Window(BaseModel):
    """A call window: ``start`` is the slot to dial first."""

    start: str = Field(examples=["2026-06-01T12:00:00Z"])
    end: str = Field(examples=["2026-06-01T13:30:00Z"])
    local_start: str = Field(examples=["2026-06-01T14:00:00+02:00"])
    p_answer: float = Field(examples=[0.41])
    score: float = Field(examples=[0.37])
    reasons: list[str]


class RankResponse(BaseModel):
    """The ranked windows of one request."""

    request_id: str
    contact_id: str
    source: Literal["model", "rules"]
    arm: Literal["model", "rules", "control"]
    fallback_reason: str | None
    model_version: str | None
    windows: list[Window]
    explored: bool = False
    propensity: float | None = None
    notes: list[str] = []


class RankError(BaseModel):
    """A request of a batch that could not be ranked as given."""

    request_id: str | None
    error: str = Field(examples=["contact.timezone: unknown time zone 'Mars/Base'"])


class RankBatchResponse(BaseModel):
    """The answers of ``/rank_batch``, in the order of the requests."""

    results: list[RankResponse | RankError]


class OutcomeIn(BaseModel):
    """The outcome of one call: the fields of a call-history row (contract section 1).

    Values are checked per outcome, so one bad outcome does not lose the others.
    """

    model_config = ConfigDict(extra="ignore")

    call_id: Loose = Field(None, examples=["x-1"])
    request_id: Loose = Field(None, examples=["r-1"])
    contact_id: Loose = Field(None, examples=["c-42"])
    called_at: Loose = Field(None, examples=["2026-06-01T12:03:00Z"])
    outcome: Loose = Field(None, examples=["no_answer"])
    attempt: Loose = Field(None, examples=[1])
    duration_s: Loose = Field(None, examples=[0])
    requested_at: Loose = None
    phone: Loose = None
    country: Loose = None
    subdivision: Loose = None
    timezone: Loose = None
    industry: Loose = None


class OutcomesRequest(BaseModel):
    """``POST /outcomes``."""

    outcomes: list[OutcomeIn] = Field(max_length=10_000)


class RejectedOutcome(BaseModel):
    """Why an outcome was not stored (``index``: its position in the request)."""

    index: int
    call_id: str | None
    field: str
    reason: str


class OutcomesResponse(BaseModel):
    """How many outcomes were stored, were already stored, and which were rejected."""

    accepted: int
    duplicates: int
    rejected: list[RejectedOutcome]


class CheckRequest(BaseModel):
    """``POST /check``: may this contact be called at ``at`` (default: now)?"""

    model_config = ConfigDict(extra="ignore")

    contact: ContactIn
    at: datetime | None = Field(None, examples=["2026-06-01T12:00:00Z"])
    request_id: str | None = Field(None, max_length=256, pattern=r"^[^\x00]*$",
                                   description="the callback request (its attempt cap)")

    @field_validator("at", mode="before")
    @classmethod
    def _text_timestamp(cls, value: Any) -> Any:
        return iso_text(value)


class CheckResponse(BaseModel):
    """Allowed or not, and the calling rule that forbids it."""

    allowed: bool
    reasons: list[str] = Field(examples=[["outside calling hours 08:00-21:00 Europe/Warsaw"]])


class InfoResponse(BaseModel):
    """What answers: the model (its version) or the rules (``degraded``), and the set-up."""

    model_version: str | None
    source: Literal["model", "rules"]
    degraded: bool
    detail: str
    control_share: float
    outcome_store: str
    schema_version: int
    started_at: str


class ReloadRequest(BaseModel):
    """``POST /admin/reload``: load a model bundle (default: the served folder)."""

    model_dir: str | None = Field(None, max_length=4096)


class ReloadResponse(BaseModel):
    """Whether the new model now answers, and why not."""

    reloaded: bool
    model_version: str | None
    detail: str
