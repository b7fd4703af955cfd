"""The HTTP API's own shapes, around the scoring requests and answers of `nextbest.scoring.schemas`:
the /rank_batch envelope, the error body of every 4xx, and the /metadata answer."""

from __future__ import annotations

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
    """Why a request was refused: the body of every 4xx answer (400, 401, 413, 422)."""

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
