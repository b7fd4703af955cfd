"""The HTTP API's own shapes, around the scoring requests and answers of `nextbest.scoring.schemas`:
the /rank_batch envelope, the error body of every 4xx and 503, the /metadata answer, and the customer
store's requests and answers (DESIGN §4a)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nextbest.scoring.schemas import RankResponse, ServedScoringRequest


class RankBatchRequest(BaseModel):
    """Many customers' contexts, ranked in one call."""

    model_config = ConfigDict(extra="forbid")  # as /rank: an unknown field is a typo, said so

    requests: list[ServedScoringRequest] = Field(description="scored in this order")


class RankBatchResponse(BaseModel):
    results: list[RankResponse] = Field(description="the answers, in the order of the requests")


class FieldProblem(BaseModel):
    """One way the body breaks the request's schema (pydantic's error, as BentoML reports it)."""

    model_config = ConfigDict(extra="forbid")

    loc: list[str | int] = Field(description='where, e.g. ["requests", 3, "events"]')
    msg: str
    type: str
    url: str | None = None


class ErrorResponse(BaseModel):
    """Why a request was refused: the body of every 4xx answer (400, 401, 404, 413, 422) and of 503."""

    model_config = ConfigDict(extra="forbid")

    error: str = Field(description="what is wrong, naming the field (and request index in /rank_batch)")
    detail: list[FieldProblem] | None = Field(
        default=None, description="with 400: each problem with the request's schema"
    )


class Limits(BaseModel):
    max_events: int = Field(description="most events in one request's history")
    max_batch: int = Field(description="most requests in one /rank_batch call")
    max_body_bytes: int = Field(description="largest request body")
    deadline_ms: float = Field(description="per-request deadline before the fallback ranking")


class MetadataResponse(BaseModel):
    """The model being served, and the limits requests must keep."""

    model_config = ConfigDict(protected_namespaces=())  # `model_*` are this answer's own fields

    model_name: str | None = Field(description="its registered name; None for a URI outside the registry")
    model_uri: str
    model_version: str = Field(description="the version every answer names")
    run_id: str | None = Field(description="the training run")
    actions: list[str] = Field(description="the model's actions")
    catalog: dict[str, Any] = Field(description="the action catalog, as its YAML")
    limits: Limits
    nextbest_version: str


class EventsRequest(BaseModel):
    """Customers' events for the store. Each row is checked against the data contract on its own, so
    the rows are free-form here: a bad one is named in the answer, not refused with the batch."""

    model_config = ConfigDict(extra="forbid")

    events: list[dict[str, Any]] = Field(
        description="customer_id, timestamp, event_type, and optionally channel, action, value, event_id "
        "(the caller's id: an event sent again with it is stored once) and decision_id (the decision it "
        "carries out: not counted as a second contact)"
    )


class RejectedRow(BaseModel):
    index: int = Field(description="the row's position in the batch")
    field: str | None = Field(description="the field at fault; None when the row as a whole is")
    problem: str


class EventsResponse(BaseModel):
    accepted: int = Field(description="events stored")
    duplicates: int = Field(description="events stored before (same event_id, or the same in every field)")
    rejected: list[RejectedRow] = Field(description="each bad row, by index and field; nothing of it stored")


class CustomersRequest(BaseModel):
    """Profile attributes for the store: each row sets the attributes it gives (null removes one)."""

    model_config = ConfigDict(extra="forbid")

    customers: list[dict[str, Any]] = Field(description="customer_id and the attributes to set")


class CustomersResponse(BaseModel):
    accepted: int = Field(description="rows upserted")
    rejected: list[RejectedRow]


class StoredContact(BaseModel):
    """An action the service served, as its store recorded it."""

    decision_id: str
    timestamp: datetime
    action: str
    channel: str | None
    probability: float | None = Field(description="the probability it was served with")


class CustomerAnswer(BaseModel):
    """Everything the store holds about a customer."""

    customer_id: str
    profile: dict[str, Any]
    events: list[dict[str, Any]] = Field(description="in event-time order")
    contacts: list[StoredContact] = Field(description="the actions served, in time order")


class ErasedResponse(BaseModel):
    """What the erasure of a customer removed (all zero when nothing was stored)."""

    customer_id: str
    events: int
    contacts: int
    profile: bool
