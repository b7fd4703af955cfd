"""Scoring requests as records (the pyfunc's and the HTTP API's interface, DESIGN §4) and their answers.

A batch of records becomes the same contract tables the batch job reads, and is scored by the same code,
so a request ranks identically online and in bulk. Each record is keyed by its position, so two records
for one customer never mix their histories.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, NotRequired, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, with_config
from typing_extensions import TypedDict  # pydantic needs this one, not typing's, before Python 3.12

from nextbest.data.events import EventLog
from nextbest.data.io import TEXT_DICTIONARY
from nextbest.data.normalize import normalise_column
from nextbest.data.report import ValidationReport
from nextbest.data.schema import CUSTOMERS, REQUESTS, UTC_US, ColumnSpec, ColumnType
from nextbest.data.tables import load_events, load_table
from nextbest.data.text import CATEGORICAL_COLUMNS
from nextbest.decisioning.catalog import ActionCatalog
from nextbest.decisioning.policy import NOT_A_CANDIDATE
from nextbest.errors import DataContractError
from nextbest.journeys.profile import profile_rows
from nextbest.journeys.requests import epoch_micros
from nextbest.journeys.windows import history_windows
from nextbest.scoring.decide import decide
from nextbest.scoring.output import decision_rows
from nextbest.scoring.scorer import JourneyScorer

ProfileValue = str | float | None
# Arrow's %S carries the fraction of the second (microseconds here), so times round-trip exactly.
ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# Explaining costs a forward pass per history event, and a long list explains nothing.
MAX_EXPLAINED_EVENTS = 20
# The events table columns a request event carries (its customer is the request's).
EVENT_FIELDS = ("timestamp", "event_type", "channel", "action", "value")
EVENTS_DESCRIPTION = "the history; only events before as_of count"
# The low-cardinality text fields are read as dictionaries, as files are (`nextbest.data.io`): the
# conversion builds each field's distinct strings as it goes, where the log would hash every row later.
_EVENT_STRUCT = pa.struct(
    [
        ("timestamp", pa.string()),
        *((name, TEXT_DICTIONARY) for name in CATEGORICAL_COLUMNS),
        ("value", pa.float64()),
    ]
)


class RequestEvent(BaseModel):
    """One touchpoint of the customer's history."""

    # An unknown field is a typo or a contract mismatch: say so rather than drop it.
    model_config = ConfigDict(extra="forbid")

    timestamp: str = Field(description="ISO-8601 time; without an offset it is UTC")
    event_type: str
    channel: str | None = None
    action: str | None = None
    value: float | None = None


# A `RequestEvent` as the online service validates it: a plain dict, at half the cost of a model instance
# (a /rank_batch call brings 50,000 events: 80 -> 41 ms to validate). Its JSON schema is the same (a test
# holds them equal); the pyfunc keeps `RequestEvent`, as MLflow's signature inference accepts models only.
# Its docstring is the schema's description, as users read it.
@with_config(ConfigDict(extra="forbid", title="RequestEvent"))
class ServedRequestEvent(TypedDict):
    """One touchpoint of the customer's history."""

    timestamp: Annotated[str, Field(description="ISO-8601 time; without an offset it is UTC")]
    event_type: str
    channel: NotRequired[str | None]
    action: NotRequired[str | None]
    value: NotRequired[float | None]


class BaseScoringRequest(BaseModel):
    """A scoring request but its events: `ScoringRequest` and `ServedScoringRequest` differ only there."""

    model_config = ConfigDict(
        extra="forbid",
        # One example (not `examples`: BentoML 1.4's OpenAPI writer rejects the plural at model level).
        json_schema_extra={
            "example": {
                "customer_id": "c42",
                "as_of": "2026-11-20T10:00:00Z",
                "events": [
                    {
                        "timestamp": "2026-11-12T19:02:11Z",
                        "event_type": "purchase",
                        "channel": "web",
                        "value": 42.0,
                    },
                    {"timestamp": "2026-11-19T08:00:00Z", "event_type": "page_view", "channel": "web"},
                    {"timestamp": "2026-11-19T08:03:40Z", "event_type": "add_to_cart", "channel": "web"},
                ],
                "profile": {"segment": "gold", "email_opt_in": 1.0},
                "context": {"channel": "web"},
                "top_k": 3,
            }
        },
    )

    customer_id: str
    as_of: str | None = Field(
        default=None, description="ISO-8601 decision time; default: just after the last event"
    )
    profile: dict[str, ProfileValue] | None = None
    context: dict[str, ProfileValue] | None = Field(
        default=None,
        description="the moment's context (e.g. channel), read by catalog rules as context.<key>",
    )
    candidates: list[str] | None = Field(default=None, description="actions to rank; default: all")
    top_k: int | None = Field(default=None, ge=1, description="the most actions returned; default: all")
    explain: int = Field(
        default=0,
        ge=0,
        le=MAX_EXPLAINED_EVENTS,
        description="how many of the history events that weighed most in the served action's value to "
        "return (each event of the history costs one more forward pass)",
    )


class ScoringRequest(BaseScoringRequest):
    """A customer's context at the moment of decision."""

    events: list[RequestEvent] = Field(description=EVENTS_DESCRIPTION)


# A `ScoringRequest` as the online service validates it, its events plain dicts: the same JSON.
class ServedScoringRequest(BaseScoringRequest):
    """A customer's context at the moment of decision."""

    model_config = ConfigDict(title="ScoringRequest")

    events: list[ServedRequestEvent] = Field(description=EVENTS_DESCRIPTION)


AnyScoringRequest: TypeAlias = ScoringRequest | ServedScoringRequest


class RankedAction(BaseModel):
    """An action in the ranking; its figures are None in a fallback answer, which the model did not score."""

    action: str
    rank: int
    score: float | None = Field(
        description="expected value: weight · (value · P(conversion) - churn_cost · P(churn) - cost)"
    )
    uplift: float | None = Field(description="expected value over taking no action")
    p_conversion: float | None
    p_churn: float | None


class EventEvidence(BaseModel):
    """A history event and how much it moved the served action's expected value (catalog units): the
    value with the event minus the value without it."""

    timestamp: str
    event_type: str
    channel: str | None = None
    action: str | None = None
    weight: float


class SuppressedAction(BaseModel):
    action: str
    reason: str


class ScoredRequest(BaseModel):
    """The ranked answer to a scoring request."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "customer_id": "c42",
                "as_of": "2026-11-20T10:00:00+00:00",
                "model_version": "3",
                "p_conversion": 0.12,
                "p_churn": 0.31,
                "top_action": "call_back",
                "chosen_action": "call_back",
                "chosen_probability": 1.0,
                "actions": [
                    {
                        "action": "call_back",
                        "rank": 1,
                        "score": 4.2,
                        "uplift": 1.9,
                        "p_conversion": 0.19,
                        "p_churn": 0.22,
                    }
                ],
                "suppressed": [{"action": "email_offer", "reason": "contact limit: at most 2 per 7 days"}],
            }
        }
    )

    customer_id: str
    as_of: str
    model_version: str
    p_conversion: float | None = Field(description="with no action; None in a fallback answer")
    p_churn: float | None = Field(description="with no action; None in a fallback answer")
    top_action: str | None = None
    chosen_action: str | None = Field(default=None, description="the action served (exploration may differ)")
    chosen_probability: float | None = Field(default=None, description="probability it was served with")
    actions: list[RankedAction]
    suppressed: list[SuppressedAction]
    evidence: list[EventEvidence] | None = Field(
        default=None, description="with explain: the history events that weighed most, strongest first"
    )
    fallback: str | None = Field(
        default=None,
        description="why the model did not rank this request (e.g. its deadline passed); the actions are "
        "then the catalog's default order, unscored and unchecked against the rules",
    )


class ActionProbabilities(BaseModel):
    action: str
    p_conversion: float = Field(description="P(conversion) if the action is taken")
    p_churn: float = Field(description="P(churn) if the action is taken")


class ScoredProbabilities(BaseModel):
    """The model's probabilities for a request, unranked: no catalog values, rules or limits."""

    customer_id: str
    as_of: str
    model_version: str
    p_conversion: float = Field(description="with no action")
    p_churn: float = Field(description="with no action")
    actions: list[ActionProbabilities] = Field(description="every action of the model")


def probability_records(
    scorer: JourneyScorer, records: Sequence[AnyScoringRequest], model_version: str
) -> list[ScoredProbabilities]:
    """The model's calibrated probabilities for each record, without ranking.

    Raises:
        DataContractError: an event, as_of or profile attribute cannot be used; the message names the field.
    """
    log, requests, customers = _tables(scorer, records)
    scores = scorer.score(log, requests, customers)
    as_of = pc.cast(pa.array(scores.as_of, pa.int64()), UTC_US).to_pylist()
    return [
        ScoredProbabilities(
            customer_id=record.customer_id,
            as_of=as_of[i].isoformat(),
            model_version=model_version,
            p_conversion=float(scores.p_conversion[i]),
            p_churn=float(scores.p_churn[i]),
            actions=[
                ActionProbabilities(
                    action=action,
                    p_conversion=float(scores.action_p_conversion[i, a]),
                    p_churn=float(scores.action_p_churn[i, a]),
                )
                for a, action in enumerate(scorer.actions)
            ],
        )
        for i, record in enumerate(records)
    ]


def score_records(
    scorer: JourneyScorer,
    records: Sequence[AnyScoringRequest],
    model_version: str,
    catalog: ActionCatalog | None = None,
) -> list[ScoredRequest]:
    """Scores and ranks each record with `catalog` (default: the model's packaged catalog).

    Raises:
        DataContractError: an event, as_of, profile attribute or candidate cannot be used; the message
            names the field.
    """
    log, requests, customers = _tables(scorer, records)
    catalog = catalog if catalog is not None else scorer.action_catalog
    decisions = decide(
        scorer,
        log,
        requests,
        customers,
        catalog=catalog,
        candidates=_candidates(records, catalog.ids),
        explain=max((r.explain for r in records), default=0),
    )
    rows = decision_rows(decisions, model_version)
    return [_answer(record, row) for record, row in zip(records, rows, strict=True)]


def fallback_answer(
    record: BaseScoringRequest, catalog: ActionCatalog, model_version: str, reason: str
) -> ScoredRequest:
    """The catalog's default order (its own order, narrowed to the record's candidates and top_k), for
    when the model cannot answer: unscored, and flagged with `reason`."""
    wanted = [a for a in catalog.ids if record.candidates is None or a in record.candidates][: record.top_k]
    actions = [
        RankedAction(action=a, rank=i + 1, score=None, uplift=None, p_conversion=None, p_churn=None)
        for i, a in enumerate(wanted)
    ]
    return ScoredRequest(
        customer_id=record.customer_id,
        as_of=record.as_of or datetime.now(UTC).isoformat(),
        model_version=model_version,
        p_conversion=None,
        p_churn=None,
        top_action=wanted[0] if wanted else None,
        chosen_action=wanted[0] if wanted else None,
        chosen_probability=1.0 if wanted else None,
        actions=actions,
        suppressed=[],
        fallback=reason,
    )


def _tables(
    scorer: JourneyScorer, records: Sequence[AnyScoringRequest]
) -> tuple[EventLog, pa.Table, pa.Table]:
    """The records as contract tables (events, requests with their context, profiles), each record
    keyed by its position."""
    _check_customer_ids(records)
    keys = [str(i) for i in range(len(records))]
    log = _event_log(records, keys)
    requests = pa.table(
        {
            "customer_id": pa.array(keys, pa.string()),
            "as_of": _as_of(records, log, keys),
            **_context_columns(records),
        }
    )
    return log, requests, _profiles_table(scorer, keys, records)


def _check_customer_ids(records: Sequence[BaseScoringRequest]) -> None:
    """Refuses a customer_id that a requests file could not hold either (e.g. an empty one)."""
    ids = pa.array([r.customer_id for r in records], pa.string())
    for problem, _ in normalise_column(ids, REQUESTS.column("customer_id")).rejections:
        raise DataContractError(f"customer_id: {problem}")


def _candidates(records: Sequence[BaseScoringRequest], actions: tuple[str, ...]) -> np.ndarray | None:
    """[N, K] which catalog actions each record asks for; None when no record narrows them."""
    if all(r.candidates is None for r in records):
        return None
    known = set(actions)
    for r in records:
        unknown = sorted(set(r.candidates or ()) - known)
        if unknown:
            raise DataContractError(
                f"candidates: unknown action(s) {unknown}; the catalog has {list(actions)}"
            )
    return np.array(
        [[r.candidates is None or a in r.candidates for a in actions] for r in records], dtype=bool
    )


def _context_columns(records: Sequence[BaseScoringRequest]) -> dict[str, pa.Array]:
    keys = sorted({key for r in records for key in (r.context or {})})
    return {key: _column([(r.context or {}).get(key) for r in records]) for key in keys}


def _profiles_table(
    scorer: JourneyScorer, keys: list[str], records: Sequence[BaseScoringRequest]
) -> pa.Table:
    """The profile as the encoder reads it, plus every other attribute given (rules may read them), held
    to the data contract as a customers file is."""
    table = scorer.encoder.profile.records_table(keys, [r.profile for r in records])
    extra = sorted({key for r in records for key in (r.profile or {})} - set(table.column_names))
    for key in extra:
        table = table.append_column(key, _column([(r.profile or {}).get(key) for r in records]))
    if not keys:  # no records: nothing to check, and a customers file may not be empty
        return table
    report = ValidationReport()
    profiles = load_table(table, CUSTOMERS, report)
    _refuse_losses(report)
    return profiles


def _column(values: list[Any]) -> pa.Array:
    """Values of one attribute across records: numbers, texts or booleans; mixed kinds become text."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def records_from_tables(
    log: EventLog,
    requests: pa.Table,
    customers: pa.Table | None = None,
    max_events: int | None = None,
) -> list[ScoringRequest]:
    """The records an application would send for `requests` (`customer_id`, `as_of`): each customer's
    events strictly before as_of (the last `max_events` of them, when given) and profile.

    With every event kept, a record scores exactly as the batch job scores the same request (the history
    aggregates count events beyond the model's window too).
    """
    customer_ids = requests.column("customer_id").combine_chunks().cast(pa.string())
    as_of = np.asarray(requests.column("as_of").combine_chunks().cast(pa.int64()), dtype=np.int64)
    windows = history_windows(
        log.timestamps, log.offsets, log.index_of(customer_ids), as_of, max_events or log.num_events + 1
    )
    events = log.to_table().select([c for c in EVENT_FIELDS if c in log.source.column_names])
    events = events.set_column(0, "timestamp", pc.strftime(events.column(0), ISO_FORMAT))
    event_rows = events.to_pylist()
    profiles = _profiles(customers, customer_ids)
    times = pc.strftime(requests.column("as_of"), ISO_FORMAT).to_pylist()
    return [
        ScoringRequest(
            customer_id=customer_id,
            as_of=time,
            events=[RequestEvent(**row) for row in event_rows[start:end]],
            profile=profile,
        )
        for customer_id, time, start, end, profile in zip(
            customer_ids.to_pylist(), times, windows.start, windows.end, profiles, strict=True
        )
    ]


def _profiles(customers: pa.Table | None, customer_ids: pa.Array) -> list[dict[str, Any] | None]:
    if customers is None:
        return [None] * len(customer_ids)
    rows = customers.drop_columns(["customer_id"]).to_pylist()
    found = profile_rows(customers, customer_ids).tolist()
    return [None if i < 0 else {k: _json_value(v) for k, v in rows[i].items()} for i in found]


def _json_value(value: Any) -> ProfileValue:
    if value is None or isinstance(value, str | float):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return float(value)
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


def _event_log(records: Sequence[AnyScoringRequest], keys: list[str]) -> EventLog:
    counts = [len(record.events) for record in records]
    if not sum(counts):  # profile-only requests: an empty log, which the table validation would call unusable
        return EventLog.empty()
    rows = [
        event if isinstance(event, dict) else vars(event) for record in records for event in record.events
    ]
    # Arrow reads the fields out of the event dicts itself (a missing one is null): a /rank_batch call
    # brings 50,000 events, and a Python pass per column cost more than the rest of building the log.
    events = pa.array(rows, type=_EVENT_STRUCT).flatten()
    customer_ids = pa.array(np.repeat(np.array(keys, dtype=object), counts), pa.string())
    table = pa.table({"customer_id": customer_ids, **dict(zip(_EVENT_STRUCT.names, events, strict=True))})
    report = ValidationReport()
    log = load_events(table, report)
    _refuse_losses(report)
    return log


def _refuse_losses(report: ValidationReport) -> None:
    """Refuses records whose rows the data contract rejected, as the batch job leaves their customers
    unscored; an event sent twice is kept once, as the batch job keeps it (`ValidationReport.losses`)."""
    if report.losses:
        raise DataContractError("; ".join(str(finding) for finding in report.losses))


def _as_of(records: Sequence[BaseScoringRequest], log: EventLog, keys: list[str]) -> pa.Array:
    """Each record's as_of; by default just after its last event (as_of is exclusive, so every event
    given counts), or now for a record without events."""
    given = pa.array([r.as_of for r in records], pa.string())
    parsed = normalise_column(given, ColumnSpec("as_of", ColumnType.TIMESTAMP, required=False))
    if parsed.rejections:
        bad = [records[i].as_of for i in np.flatnonzero(parsed.rejections[0][1])[:3]]
        raise DataContractError(f"as_of must be an ISO-8601 time, got {', '.join(map(repr, bad))}")
    if not parsed.values.null_count:  # every record says when
        return parsed.values
    index = log.index_of(pa.array(keys, pa.string()))
    after_last = np.append(log.timestamps[log.offsets[1:] - 1] + 1, epoch_micros(datetime.now(UTC)))
    default = after_last[np.where(index >= 0, index, -1)]
    micros = np.asarray(parsed.values.cast(pa.int64()).fill_null(0), dtype=np.int64)
    chosen = np.where(np.asarray(parsed.values.is_valid(), dtype=bool), micros, default)
    return pa.array(chosen, pa.int64()).cast(UTC_US)


def _answer(record: BaseScoringRequest, row: dict[str, Any]) -> ScoredRequest:
    """The record's answer: its row cut to its top_k, without the actions it did not ask about."""
    ranked = row["actions"][: record.top_k] if record.top_k is not None else row["actions"]
    # Validated from plain data in one call: pydantic builds the nested models in Rust, where a Python
    # constructor call per action cost a /rank_batch call of 500 customers 7 ms instead of 5.
    return ScoredRequest.model_validate(
        {
            "customer_id": record.customer_id,
            "as_of": row["as_of"].isoformat(),
            "model_version": row["model_version"],
            "p_conversion": row["p_conversion"],
            "p_churn": row["p_churn"],
            "top_action": ranked[0]["action"] if ranked else None,
            "chosen_action": row["chosen_action"],
            "chosen_probability": row["chosen_probability"],
            "actions": ranked,
            "suppressed": [s for s in row["suppressed"] if s["reason"] != NOT_A_CANDIDATE],
            "evidence": None
            if not record.explain
            else [_evidence(e) for e in row["evidence"][: record.explain]],
        }
    )


def _evidence(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "timestamp": event["timestamp"].isoformat()}
