"""The action catalog (YAML): what each action is worth and costs, when it is allowed, how often it is used.

```yaml
churn_cost: 20.0                 # what a churned customer costs (weighs P(churn | action))
contact_events: [email_sent, sms_sent, push_sent, call_made]   # events that count as contacts
contact_caps:                    # across all channels
  - {max: 3, days: 7}
context:                         # what requests bring for rules to read (context.<key>): key: number | text
  store_open: number
profile:                         # profile attributes rules read that the model does not: name: number | text
  loyalty_tier: text
control: {share: 0.05}           # a stable 5% of customers served a random eligible action (lift is measured)
actions:
  - id: email_offer
    channel: email
    value: 40.0                  # worth of a conversion
    cost: 0.5
    weight: 1.0                  # business lever: multiplies the expected value
    eligible_if: 'profile.email_opt_in == 1 and days_since(event_type="purchase") > 7'
    limits: [{max: 1, days: 7}]  # at most 1 contact on this action's channel in 7 days
    cooldown_days: 14            # not again within 14 days of this action
  - {id: no_action}
```

Every problem is reported with the entry it is in (`actions[2] (call_back): ...`); unknown keys are errors,
not silently ignored.

Rules are checked twice. On reading: each is a condition that compares like with like, and reads only
the context keys the catalog declares (a request supplies its context, so the catalog is where their
names and types are known). Against a model (`check_model`: when a model is packaged with the catalog,
loaded with it, or given another catalog to rank with): it reads only profile attributes the model
knows (its encoder's columns: categories are texts, numbers numbers, dates and times times) or the
catalog declares under `profile:`, with the types they have. So a typo or a type mismatch fails before
anything is scored, instead of silently suppressing an action for everyone. Requests are checked too
(`check_context`): a context value of another type than declared is the request's error, named.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

from nextbest.decisioning.expressions import (
    DECLARABLE_TYPES,
    MAX_DAYS,
    NAMESPACES,
    HistoryQuery,
    Rule,
    RuleError,
    ValueType,
    parse_rule,
)
from nextbest.errors import DataContractError, NextbestError
from nextbest.journeys.labels import BUSINESS_TOUCHES
from nextbest.journeys.profile import ProfileEncoder

NO_ACTION = "no_action"


class CatalogError(NextbestError):
    """A catalog that cannot be used; the message names the entry and the field."""


@dataclass(frozen=True)
class ContactLimit:
    """At most `max` contacts in the last `days` days, on `channel` (every channel when None)."""

    max: int
    days: float
    channel: str | None = None

    def query(self, contact_events: tuple[str, ...]) -> HistoryQuery:
        match = [("event_type", contact_events)]
        if self.channel is not None:
            match.append(("channel", (self.channel,)))
        return HistoryQuery("count", self.days, tuple(match))

    def describe(self) -> str:
        where = f" on {self.channel}" if self.channel else ""
        return f"at most {self.max} contact{'s' if self.max != 1 else ''}{where} per {self.days:g} days"


@dataclass(frozen=True)
class CatalogAction:
    """One action: its economics, its eligibility rule and its contact policy."""

    id: str
    channel: str | None = None
    value: float = 1.0
    cost: float = 0.0
    weight: float = 1.0
    eligible_if: Rule | None = None
    limits: tuple[ContactLimit, ...] = ()
    cooldown_days: float | None = None

    def cooldown_query(self, contact_events: tuple[str, ...]) -> HistoryQuery:
        return HistoryQuery("days_since", None, (("action", (self.id,)), ("event_type", contact_events)))


@dataclass(frozen=True)
class Exploration:
    """How the served action is drawn from the ranking: "off" (always the best eligible action),
    "epsilon" (the best with probability 1 - epsilon, else any eligible one uniformly) or "softmax"
    (eligible actions in proportion to exp(expected value / temperature)). Draws are seeded per request
    (`seed`, customer, as_of), so a re-run serves the same actions."""

    policy: str = "off"
    epsilon: float = 0.0
    temperature: float = 1.0
    seed: int = 0


EXPLORATION_POLICIES = ("off", "epsilon", "softmax")


@dataclass(frozen=True)
class ControlGroup:
    """The customers served a uniformly random eligible action instead of the policy's, so that the
    policy's lift is measured against them: a stable `share` of customer ids, chosen by a hash of the id
    and `seed` (a customer stays in or out whatever the time, the model or the worker)."""

    share: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class ActionCatalog:
    """The actions in ranking order of ties, the cost of churn, and the contact caps across channels."""

    actions: tuple[CatalogAction, ...]
    churn_cost: float = 0.0
    contact_events: tuple[str, ...] = tuple(sorted(BUSINESS_TOUCHES))
    contact_caps: tuple[ContactLimit, ...] = ()
    exploration: Exploration = Exploration()
    control: ControlGroup = ControlGroup()
    context: Mapping[str, ValueType] = field(default_factory=dict)
    profile: Mapping[str, ValueType] = field(default_factory=dict)
    source: str = field(default="catalog", compare=False)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(a.id for a in self.actions)

    @property
    def values(self) -> np.ndarray:
        """[K] what a conversion is worth after each action, in catalog order."""
        return np.array([a.value for a in self.actions], dtype=np.float64)

    @property
    def costs(self) -> np.ndarray:
        """[K] each action's cost."""
        return np.array([a.cost for a in self.actions], dtype=np.float64)

    @property
    def weights(self) -> np.ndarray:
        """[K] each action's business lever."""
        return np.array([a.weight for a in self.actions], dtype=np.float64)

    def expected_values(self, p_conversion: np.ndarray, p_churn: np.ndarray) -> np.ndarray:
        """[N, K] weight · (value · P(conversion | a) - churn_cost · P(churn | a) - cost) from [N, K]
        probabilities of the catalog's actions (catalog order)."""
        value: np.ndarray = self.weights * (
            self.values * p_conversion - self.churn_cost * p_churn - self.costs
        )
        return value

    @classmethod
    def default(cls, actions: Sequence[str]) -> ActionCatalog:
        """Without a catalog: every model action, value 1, cost 0, no rules (DESIGN §5)."""
        return cls(tuple(CatalogAction(id=a) for a in actions), source="default catalog")

    @classmethod
    def from_yaml(cls, path: str | Path) -> ActionCatalog:
        try:
            data = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise CatalogError(f"cannot read the catalog {path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise CatalogError(f"{path} is not valid YAML: {exc}") from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "catalog") -> ActionCatalog:
        """Builds and validates a catalog from its YAML structure."""
        if not isinstance(data, Mapping):
            raise CatalogError(f"{source}: expected a mapping with an `actions` list")
        _no_unknown_keys(
            data,
            {
                "actions",
                "churn_cost",
                "contact_events",
                "contact_caps",
                "exploration",
                "control",
                *NAMESPACES,
            },
            source,
        )
        entries = data.get("actions")
        if not isinstance(entries, list) or not entries:
            raise CatalogError(f"{source}: `actions` must be a non-empty list")
        actions = tuple(_action(entry, f"{source}: actions[{i}]") for i, entry in enumerate(entries))
        seen: set[str] = set()
        for i, action in enumerate(actions):
            if action.id in seen:
                raise CatalogError(f"{source}: actions[{i}] ({action.id}): the id is listed twice")
            seen.add(action.id)
        contact_events = data.get("contact_events", sorted(BUSINESS_TOUCHES))
        if not isinstance(contact_events, list) or not all(isinstance(e, str) for e in contact_events):
            raise CatalogError(f"{source}: contact_events must be a list of event types")
        caps = data.get("contact_caps", [])
        if not isinstance(caps, list):
            raise CatalogError(f"{source}: contact_caps must be a list of {{max, days}}")
        catalog = cls(
            actions=actions,
            churn_cost=_number(data, "churn_cost", 0.0, source, minimum=0.0),
            contact_events=tuple(contact_events),
            contact_caps=tuple(_limit(c, f"{source}: contact_caps[{i}]", None) for i, c in enumerate(caps)),
            exploration=_exploration(data.get("exploration", {}), f"{source}: exploration"),
            control=_control(data.get("control", {}), f"{source}: control"),
            context=_declared_types(data.get("context", {}), f"{source}: context"),
            profile=_declared_types(data.get("profile", {}), f"{source}: profile"),
            source=source,
        )
        catalog.check_rules()
        return catalog

    def check_model(self, model_actions: Sequence[str], profile: ProfileEncoder) -> None:
        """Checks that the catalog fits a model: its actions are ones the model scores, and its rules
        read profile attributes the model knows (`profile`, its encoding) or the catalog declares, with
        their types.

        Raises:
            CatalogError: the message names the entry (and the rule) at fault.
        """
        self.check_actions(model_actions)
        self.check_rules(rule_types(profile))

    def check_actions(self, model_actions: Sequence[str]) -> None:
        """Every catalog action must be one the model scores."""
        known = set(model_actions)
        for i, action in enumerate(self.actions):
            if action.id not in known:
                raise CatalogError(
                    f"{self.source}: actions[{i}] ({action.id}): unknown action; the model scores "
                    f"{', '.join(model_actions)}"
                )

    def check_rules(self, model_profile: Mapping[str, ValueType] | None = None) -> None:
        """Every rule is a condition comparing like with like that reads only declared context keys;
        given a model's profile attributes and their types, also only profile attributes the model knows
        or the catalog declares (with the model's type, where both name one)."""
        for name, kind in self.profile.items():
            known = (model_profile or {}).get(name, kind)
            if known != kind:
                raise CatalogError(
                    f"{self.source}: profile: {name} is declared a {kind}, but the model reads it as "
                    f"a {known}"
                )
        profile = {**(model_profile or {}), **self.profile}
        types = {("context", k): t for k, t in self.context.items()} | {
            ("profile", k): t for k, t in profile.items()
        }
        complete = NAMESPACES if model_profile is not None else ("context",)
        for i, action in enumerate(self.actions):
            if action.eligible_if is not None:
                try:
                    action.eligible_if.check_types(types, complete)
                except RuleError as exc:
                    raise CatalogError(
                        f"{self.source}: actions[{i}] ({action.id}): eligible_if: {exc}"
                    ) from exc

    def check_context(self, requests: pa.Schema) -> None:
        """Raises `DataContractError` naming the key unless each declared context column of `requests`
        holds values of its declared type, so that rules compare like with like whatever a request
        sends."""
        for key, kind in self.context.items():
            if key not in requests.names:
                continue
            found = requests.field(key).type
            if pa.types.is_dictionary(found):
                found = found.value_type
            allowed = _NUMBER_TYPES if kind is ValueType.NUMBER else _TEXT_TYPES
            if not (pa.types.is_null(found) or any(test(found) for test in allowed)):
                raise DataContractError(
                    f"context.{key} must be a {kind}, as the catalog declares it; got {_arrow_kind(found)}"
                )

    def to_dict(self) -> dict[str, Any]:
        """The YAML structure (round-trips through `from_dict`)."""
        return {
            "churn_cost": self.churn_cost,
            "contact_events": list(self.contact_events),
            "contact_caps": [_limit_dict(c) for c in self.contact_caps],
            "actions": [_action_dict(a) for a in self.actions],
            "exploration": dict(vars(self.exploration)),
            "control": dict(vars(self.control)),
            "context": {name: str(kind) for name, kind in self.context.items()},
            "profile": {name: str(kind) for name, kind in self.profile.items()},
        }


# Booleans are texts to rules ("true", "false"), as the encoder reads them.
_NUMBER_TYPES = (pa.types.is_integer, pa.types.is_floating)
_TEXT_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_boolean)


def _arrow_kind(found: pa.DataType) -> str:
    if any(test(found) for test in _NUMBER_TYPES):
        return "numbers"
    return "texts" if any(test(found) for test in _TEXT_TYPES) else f"values of type {found}"


def rule_types(profile: ProfileEncoder) -> dict[str, ValueType]:
    """The type rules read each of a model's profile attributes as: its categories (texts and booleans
    at training) as texts, its numbers as numbers, its dates and times as times."""
    return (
        dict.fromkeys(profile.categorical, ValueType.TEXT)
        | dict.fromkeys(profile.numeric, ValueType.NUMBER)
        | dict.fromkeys(profile.temporal, ValueType.TIME)
    )


ACTION_KEYS = {"id", "channel", "value", "cost", "weight", "eligible_if", "limits", "cooldown_days"}


def _action(entry: Any, where: str) -> CatalogAction:
    if not isinstance(entry, Mapping):
        raise CatalogError(f"{where}: expected a mapping with at least an `id`")
    action_id = entry.get("id")
    if not isinstance(action_id, str) or not action_id:
        raise CatalogError(f"{where}: `id` must be a non-empty text")
    where = f"{where} ({action_id})"
    _no_unknown_keys(entry, ACTION_KEYS, where)
    channel = entry.get("channel")
    if channel is not None and not isinstance(channel, str):
        raise CatalogError(f"{where}: channel must be a text")
    rule = entry.get("eligible_if")
    try:
        eligible_if = None if rule is None else parse_rule(rule)
    except RuleError as exc:
        raise CatalogError(f"{where}: eligible_if: {exc}") from exc
    limits = entry.get("limits", [])
    if not isinstance(limits, list):
        raise CatalogError(f"{where}: limits must be a list of {{max, days}}")
    cooldown = entry.get("cooldown_days")
    return CatalogAction(
        id=action_id,
        channel=channel,
        value=_number(entry, "value", 1.0, where),
        cost=_number(entry, "cost", 0.0, where),
        weight=_number(entry, "weight", 1.0, where, minimum=0.0),
        eligible_if=eligible_if,
        limits=tuple(_limit(limit, f"{where}: limits[{i}]", channel) for i, limit in enumerate(limits)),
        cooldown_days=None if cooldown is None else _number(entry, "cooldown_days", 0.0, where, minimum=0.0),
    )


def _limit(entry: Any, where: str, default_channel: str | None) -> ContactLimit:
    if not isinstance(entry, Mapping):
        raise CatalogError(f"{where}: expected a mapping {{max, days[, channel]}}")
    _no_unknown_keys(entry, {"max", "days", "channel"}, where)
    maximum = entry.get("max")
    if isinstance(maximum, bool) or not isinstance(maximum, int) or maximum < 0:
        raise CatalogError(f"{where}: max must be a non-negative whole number, got {maximum!r}")
    days = _number(entry, "days", None, where, minimum=0.0, maximum=MAX_DAYS)
    if not days > 0:
        raise CatalogError(f"{where}: days must be a positive number")
    channel = entry.get("channel", default_channel)
    if channel is not None and not isinstance(channel, str):
        raise CatalogError(f"{where}: channel must be a text")
    return ContactLimit(max=maximum, days=days, channel=channel)


def _exploration(entry: Any, where: str) -> Exploration:
    if not isinstance(entry, Mapping):
        raise CatalogError(f"{where}: expected a mapping {{policy, epsilon | temperature, seed}}")
    _no_unknown_keys(entry, {"policy", "epsilon", "temperature", "seed"}, where)
    policy = entry.get("policy", "off")
    if policy not in EXPLORATION_POLICIES:
        raise CatalogError(
            f"{where}: policy must be one of {', '.join(EXPLORATION_POLICIES)}, got {policy!r}"
        )
    epsilon = _number(entry, "epsilon", 0.1 if policy == "epsilon" else 0.0, where, minimum=0.0)
    if epsilon > 1:
        raise CatalogError(f"{where}: epsilon must be at most 1, got {epsilon:g}")
    temperature = _number(entry, "temperature", 1.0, where)
    if not temperature > 0:
        raise CatalogError(f"{where}: temperature must be positive, got {temperature:g}")
    return Exploration(policy, epsilon, temperature, _seed(entry, where))


def _control(entry: Any, where: str) -> ControlGroup:
    if not isinstance(entry, Mapping):
        raise CatalogError(f"{where}: expected a mapping {{share, seed}}")
    _no_unknown_keys(entry, {"share", "seed"}, where)
    share = _number(entry, "share", 0.0, where, minimum=0.0, maximum=1.0)
    return ControlGroup(share, _seed(entry, where))


def _seed(entry: Mapping[str, Any], where: str) -> int:
    seed = entry.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise CatalogError(f"{where}: seed must be a whole number, got {seed!r}")
    return seed


def _number(
    entry: Mapping[str, Any],
    key: str,
    default: float | None,
    where: str,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    """`entry[key]`, a finite number within the bounds given (`default` when absent; None: required)."""
    if key not in entry and default is None:
        raise CatalogError(f"{where}: {key} is required")
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
        raise CatalogError(f"{where}: {key} must be a finite number, got {str(value)[:40]}")
    if minimum is not None and value < minimum:
        raise CatalogError(f"{where}: {key} must be at least {minimum:g}, got {value!r}")
    if maximum is not None and value > maximum:
        raise CatalogError(f"{where}: {key} must be at most {maximum:,g}, got {value:g}")
    return float(value)


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # a whole number too large for a float
        return False


def _declared_types(entry: Any, where: str) -> dict[str, ValueType]:
    kinds = " or ".join(DECLARABLE_TYPES)
    if not isinstance(entry, Mapping):
        raise CatalogError(f"{where}: expected a mapping of names to their types ({kinds})")
    for name, kind in entry.items():
        if kind not in DECLARABLE_TYPES:
            raise CatalogError(f"{where}: {name}: the type must be {kinds}, got {kind!r}")
    return {str(name): ValueType(kind) for name, kind in entry.items()}


def _no_unknown_keys(entry: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise CatalogError(
            f"{where}: unknown key(s) {', '.join(map(str, unknown))}; allowed: {', '.join(sorted(allowed))}"
        )


def _limit_dict(limit: ContactLimit) -> dict[str, Any]:
    return {"max": limit.max, "days": limit.days, **({"channel": limit.channel} if limit.channel else {})}


def _action_dict(action: CatalogAction) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": action.id,
        "value": action.value,
        "cost": action.cost,
        "weight": action.weight,
    }
    if action.channel is not None:
        data["channel"] = action.channel
    if action.eligible_if is not None:
        data["eligible_if"] = action.eligible_if.text
    if action.limits:
        data["limits"] = [_limit_dict(limit) for limit in action.limits]
    if action.cooldown_days is not None:
        data["cooldown_days"] = action.cooldown_days
    return data
