"""The request and answer shapes of scoring (the pyfunc's and the HTTP API's interface, DESIGN §4).

Each shape is declared here once, as a pydantic model; the service's plain-dict event type and the
Arrow types of the batch output (`nextbest.scoring.output`, held equal by a test) follow from these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, NotRequired, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, with_config
from typing_extensions import TypedDict  # pydantic needs this one, not typing's, before Python 3.12

ProfileValue = str | float | None
# Explaining costs a forward pass per history event, and a long list explains nothing.
MAX_EXPLAINED_EVENTS = 20
EVENTS_DESCRIPTION = "the history; only events before as_of count"
NO_ACTION_DESCRIPTION = (
    "with no action: the figures of the model's no_action action when it has one, which uplift is "
    "measured from"
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


# The events table columns a request event carries (its customer is the request's).
EVENT_FIELDS = tuple(RequestEvent.model_fields)


def typed_dict_of(model: type[BaseModel]) -> Any:
    """`model` as a TypedDict: the same fields, constraints, configuration and JSON schema (but for
    defaults, which a TypedDict has none of; an optional field is one that may be left out)."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        annotated = Annotated[(info.annotation, *info.metadata, Field(description=info.description))]  # type: ignore[name-defined]
        fields[name] = annotated if info.is_required() else NotRequired[annotated]
    typed = TypedDict(model.__name__, fields)  # type: ignore[misc]
    typed.__doc__ = model.__doc__  # the schema's description, as users read it
    return with_config(model.model_config)(typed)


# A `RequestEvent` as the online service validates it: a plain dict, at half the cost of a model instance
# (a /rank_batch call brings tens of thousands of events). The pyfunc keeps `RequestEvent`,
# as MLflow's signature inference accepts models only.
if TYPE_CHECKING:
    EventDict: TypeAlias = dict[str, Any]
else:
    EventDict = typed_dict_of(RequestEvent)


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
    candidates: list[str] | None = Field(
        default=None, min_length=1, description="the actions to rank (or score); default: all"
    )
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


class ServedScoringRequest(BaseScoringRequest):
    """A customer's context at the moment of decision."""

    # The JSON of `ScoringRequest`, its events validated into plain dicts, and optional: a service with
    # a customer store has the history already.
    model_config = ConfigDict(title="ScoringRequest")

    events: list[EventDict] | None = Field(
        default=None,
        description=f"{EVENTS_DESCRIPTION}. Required unless the service keeps a customer store; with one, "
        "the stored events before as_of (default: now) and these count, an event sent and stored counted "
        "once",
    )


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


class RankResponse(BaseModel):
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
                "control": False,
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
                "evidence": None,
                "fallback": None,
                "decision_id": "5f0c2b7e9a4d4e51b1c3f0d2a6e8b947",
            }
        }
    )

    customer_id: str
    as_of: str
    model_version: str
    p_conversion: float | None = Field(description=f"{NO_ACTION_DESCRIPTION}; None in a fallback answer")
    p_churn: float | None = Field(description=f"{NO_ACTION_DESCRIPTION}; None in a fallback answer")
    top_action: str | None = None
    chosen_action: str | None = Field(default=None, description="the action served (exploration may differ)")
    chosen_probability: float | None = Field(default=None, description="probability it was served with")
    control: bool = Field(
        default=False,
        description="the customer is in the catalog's control group, served a random eligible action",
    )
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
    decision_id: str | None = Field(
        default=None,
        description="this decision's unique id (online answers): a service with a customer store records "
        "the served action under it, and an event that carries it is not counted as a second contact",
    )


class ActionProbabilities(BaseModel):
    action: str
    p_conversion: float = Field(description="P(conversion) if the action is taken")
    p_churn: float = Field(description="P(churn) if the action is taken")


class ScoreResponse(BaseModel):
    """The model's probabilities for a request, unranked: no catalog values, rules or limits."""

    customer_id: str
    as_of: str
    model_version: str
    p_conversion: float = Field(description=NO_ACTION_DESCRIPTION)
    p_churn: float = Field(description=NO_ACTION_DESCRIPTION)
    actions: list[ActionProbabilities] = Field(
        description="every action of the model, or the request's candidates, in the model's order"
    )
