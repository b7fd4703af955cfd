"""Orchestration: population, marketing history, journeys, decisions and outcomes, in time order.

The timeline is cut at each customer's decisions. Events before a decision are final when it is made, so
its history aggregates (and hence its truth) are computed from exactly the events a model will see. After
a decision, the sampled outcome shapes what follows: a churned customer falls silent for good, a
non-churned one returns within the churn window, a converted one buys once within the horizon (and
nobody else buys in it), so the label rules H and D reproduce every logged outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from nextbest.simulate._arrays import DAY, HOUR, BoolArray, FloatArray, IntArray, uniform_days
from nextbest.simulate.actions import (
    Decisions,
    Served,
    decide,
    logging_policy_probabilities,
    true_outcome_probabilities,
)
from nextbest.simulate.config import SimulationConfig
from nextbest.simulate.events import AC, CH, ET, NO_CODE, EventArrays
from nextbest.simulate.history import history_aggregates
from nextbest.simulate.journeys import (
    ADVOCACY,
    AWARENESS,
    CONSIDERATION,
    DORMANT,
    DRIFT,
    EVALUATION,
    POST_PURCHASE,
    PURCHASE,
    SESSION_GUARD,
    PhaseStart,
    expand_sessions,
    purchase_values,
    run_sessions,
)
from nextbest.simulate.marketing import marketing_history
from nextbest.simulate.output import SimulatedWorld, build_world
from nextbest.simulate.population import Population, draw_population
from nextbest.simulate.timing import APP, WEB, business_hours, schedule_sessions

_INITIAL_STAGES = np.array([AWARENESS, CONSIDERATION, EVALUATION, POST_PURCHASE, ADVOCACY, DRIFT])
_INITIAL_SHARES = np.array([0.15, 0.4, 0.1, 0.2, 0.05, 0.1])
_NEW_CUSTOMER_DAYS = 90
_CONVERSION_DELAY_DAYS = 5.0
_EMAIL_ACTIONS = ("email_offer", "discount_10")


@dataclass(frozen=True)
class DecisionRound:
    """A pass of decisions (every first decision, then every second one) as a decider sees it.

    Attributes:
        config: The world's configuration.
        customers: The `customers` table of every customer (ids and profiles, no latent traits).
        customer: Customer index (row of `customers`) of each decision.
        as_of: Decision times, seconds after `config.start`.
        history: Every event generated so far, of every customer, unsorted. Campaigns are planned ahead
            and other customers' journeys run on, so it holds events after some decisions: a decider
            reads each customer's events before that customer's own `as_of` only.
    """

    config: SimulationConfig
    customers: pa.Table
    customer: IntArray
    as_of: IntArray
    history: EventArrays


# Chooses the action of each decision of a round, in place of the logging policy.
Decider = Callable[[DecisionRound], Served]


@dataclass(frozen=True)
class _Timeline:
    first_seen: IntArray
    first_decision: IntArray
    wants_second: BoolArray
    second_gap: IntArray
    end: int
    weekday: int


def simulate(config: SimulationConfig, decider: Decider | None = None) -> SimulatedWorld:
    """Simulates a world; identical configs (seed included) give identical tables.

    Args:
        config: Size, seed, timeline, actions, effect sizes and behaviour rates.
        decider: Chooses the actions in place of the logging policy (e.g. a running service); the world
            is then identical for identical configs and identical choices.

    Returns:
        The world's tables and metadata.
    """
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(7)]
    population = draw_population(config.n_customers, rngs[0], config.customer_prefix)
    timeline = _draw_timeline(rngs[1], config)
    rates = (config.email_rate, config.push_rate, config.sms_rate)
    marketing = marketing_history(
        rngs[2], population, timeline.first_seen, timeline.end, rates, timeline.weekday
    )
    journeys = _Journeys(rngs[3], population, config, timeline.weekday)
    stage = journeys.run(_opening_phase(rngs[4], population, timeline))
    everyone = np.arange(population.size, dtype=np.int64)
    deciding = _Deciding(rngs[5], population, config, decider)
    first = deciding.decide([marketing, *journeys.events], everyone, timeline.first_decision)
    second_at = first.as_of + timeline.second_gap
    phase_end = np.where(timeline.wants_second, second_at, timeline.end)
    stage = journeys.run(_phase_after(rngs[6], population, config, first, stage, phase_end))
    again = first.customer[~first.churned & timeline.wants_second]
    touched = _touchpoints(config, first)
    second = deciding.decide([marketing, touched, *journeys.events], again, second_at[again])
    journeys.run(_phase_after(rngs[6], population, config, second, stage, np.full_like(stage, timeline.end)))
    decisions = Decisions.concat([first, second])
    events = EventArrays.concat([marketing, touched, _touchpoints(config, second), *journeys.events])
    observable = _observable(events, decisions, population.size, timeline.end)
    return build_world(config, population, observable, decisions)


def _observable(events: EventArrays, decisions: Decisions, n_customers: int, end: int) -> EventArrays:
    """Sorted events without what a churner would have received after churning, nor past the window's end."""
    silent_after = np.full(n_customers, end, dtype=np.int64)
    silent_after[decisions.customer[decisions.churned]] = decisions.as_of[decisions.churned]
    keep = (events.time <= silent_after[events.customer]) & (events.time < end)
    return events.select(keep).sorted()


class _Journeys:
    """Runs the phases of organic sessions and collects their events."""

    def __init__(
        self, rng: np.random.Generator, population: Population, config: SimulationConfig, weekday: int
    ) -> None:
        self._rng = rng
        self._population = population
        self._rate = config.session_rate
        self._weekday = weekday
        self.events: list[EventArrays] = []

    def run(self, phase: PhaseStart) -> IntArray:
        """Simulates a phase, keeps its events and returns each customer's final stage (all customers)."""
        sessions, final = run_sessions(self._rng, self._population, phase, self._rate, self._weekday)
        self.events.append(expand_sessions(self._rng, sessions, self._population))
        stage = np.full(self._population.size, DORMANT, dtype=np.int64)
        stage[phase.customer] = final
        return stage


def _draw_timeline(rng: np.random.Generator, config: SimulationConfig) -> _Timeline:
    n = config.n_customers
    first_decision = business_hours(rng, uniform_days(rng, *config.decision_window, n))
    # Most customers are active from early on; a tail arrives shortly before their decision.
    history_share = rng.beta(0.7, 2.0, n)
    first_seen_draw = np.floor((first_decision - DAY) * history_share).astype(np.int64)
    first_seen = schedule_sessions(rng, first_seen_draw, np.full(n, WEB), config.start.weekday())
    first_seen = np.where(first_seen < first_decision - DAY, first_seen, first_seen_draw)
    # Whole days keep the second decision at the first one's time of day.
    low, high = config.second_decision_gap
    second_gap = rng.integers(int(np.ceil(low)), int(np.floor(high)) + 1, n) * DAY
    return _Timeline(
        first_seen=first_seen,
        first_decision=first_decision,
        wants_second=rng.random(n) < config.second_decision_rate,
        second_gap=second_gap,
        end=config.span_days * DAY,
        weekday=config.start.weekday(),
    )


def _opening_phase(rng: np.random.Generator, population: Population, timeline: _Timeline) -> PhaseStart:
    n = population.size
    stage = _INITIAL_STAGES[rng.choice(_INITIAL_STAGES.size, size=n, p=_INITIAL_SHARES)]
    stage = np.where(population.profiles.tenure_days < _NEW_CUSTOMER_DAYS, AWARENESS, stage)
    return PhaseStart(
        customer=np.arange(n, dtype=np.int64),
        time=timeline.first_seen,
        stage=stage.astype(np.int64),
        end=timeline.first_decision,
        no_purchase_until=np.full(n, -1, dtype=np.int64),
        forced_purchase=np.zeros(n, np.bool_),
        first_kind=np.full(n, -1, dtype=np.int64),
        entry_action=np.full(n, NO_CODE, dtype=np.int16),
        forced_value=np.full(n, np.nan),
    )


class _Deciding:
    """Makes each pass of decisions: truth, actions (the logging policy's or the decider's), outcomes."""

    def __init__(
        self,
        rng: np.random.Generator,
        population: Population,
        config: SimulationConfig,
        decider: Decider | None,
    ) -> None:
        self._rng = rng
        self._population = population
        self._config = config
        self._decider = decider

    def decide(self, history_parts: list[EventArrays], customer: IntArray, as_of: IntArray) -> Decisions:
        """Decisions of `customer` at `as_of`, from the history generated so far."""
        population, config = self._population, self._config
        traits, profiles = population.traits.take(customer), population.profiles.take(customer)
        events = EventArrays.concat(history_parts)
        history = history_aggregates(events, customer, as_of)
        actions = config.action_ids
        truth = true_outcome_probabilities(traits, profiles, history, actions, config.effects)
        policy = logging_policy_probabilities(
            profiles, actions, config.logging_floor, config.logging_temperature
        )
        basket = purchase_values(self._rng, profiles.segment)
        discounts = np.array([a.price_discount for a in config.actions])
        served = None
        if self._decider is not None:
            customers = population.profiles.to_table(population.customer_ids, config.start)
            served = self._decider(DecisionRound(config, customers, customer, as_of, events))
        return decide(self._rng, customer, as_of, truth, policy, basket, discounts, served)


def _phase_after(
    rng: np.random.Generator,
    population: Population,
    config: SimulationConfig,
    decisions: Decisions,
    stage: IntArray,
    phase_end: IntArray,
) -> PhaseStart:
    """Non-churners come back inside the churn window; converters come back to buy inside the horizon.

    `stage` and `phase_end` are indexed by customer; the phase holds the decisions' non-churners.
    """
    stay = ~decisions.churned
    customer, as_of, converted = decisions.customer[stay], decisions.as_of[stay], decisions.converted[stay]
    action_ids = np.array(config.action_ids)[decisions.action[stay]]
    horizon = config.horizon_days * DAY
    return_by = np.minimum(config.churn_inactivity_days * DAY, phase_end[customer] - as_of) - SESSION_GUARD
    latest = np.where(converted, horizon - SESSION_GUARD, return_by)
    return_mean = DAY / (config.session_rate * np.exp(0.9 * population.traits.engagement[customer]))
    mean = np.where(converted, _CONVERSION_DELAY_DAYS * DAY, return_mean)
    earliest = as_of + _truncated_exponential(rng, mean, 2 * HOUR, latest)
    uses_app = (population.profiles.device[customer] == 0) | (action_ids == "push_notification")
    kind = np.where(converted, np.where(uses_app, APP, WEB), -1)
    scheduled = schedule_sessions(rng, earliest, np.maximum(kind, WEB), config.start.weekday())
    by_email = converted & np.isin(action_ids, _EMAIL_ACTIONS)
    revived = np.where(stage[customer] == DORMANT, DRIFT, stage[customer])
    return PhaseStart(
        customer=customer,
        time=np.where(scheduled <= as_of + latest, scheduled, earliest),
        stage=np.where(converted, PURCHASE, np.where(revived == PURCHASE, EVALUATION, revived)),
        end=phase_end[customer],
        no_purchase_until=as_of + horizon,
        forced_purchase=converted,
        first_kind=kind,
        entry_action=np.where(by_email, _action_codes(action_ids), NO_CODE).astype(np.int16),
        forced_value=np.where(converted, decisions.revenue[stay], np.nan),
    )


def _action_codes(action_ids: npt.NDArray[np.str_]) -> IntArray:
    codes = np.full(action_ids.size, NO_CODE, dtype=np.int64)
    for name, code in AC.items():
        codes[action_ids == name] = code
    return codes


def _truncated_exponential(rng: np.random.Generator, mean: FloatArray, low: int, high: IntArray) -> IntArray:
    """Exponential draws shifted by `low` and truncated so that `low <= x <= high` (seconds)."""
    width = np.maximum(high - low, 0).astype(np.float64)
    mass_below_width = -np.expm1(-width / mean)
    x = -mean * np.log1p(-rng.random(mean.size) * mass_below_width)
    return low + np.minimum(np.floor(x), width).astype(np.int64)


def _touchpoints(config: SimulationConfig, decisions: Decisions) -> EventArrays:
    """The event each decision leaves at its own time (none for the no-action baseline)."""
    parts = [EventArrays.empty()]
    for index, spec in enumerate(config.actions):
        if spec.touch_event is None or spec.channel is None:
            continue
        rows = decisions.action == index
        parts.append(
            EventArrays.build(
                decisions.customer[rows],
                decisions.as_of[rows],
                ET[spec.touch_event],
                CH[spec.channel],
                AC[spec.id],
            )
        )
    return EventArrays.concat(parts)
