"""Every knob of the synthetic world, in one frozen dataclass.

The defaults give a world with realistic base rates (about 5-25% conversion and 10-30% churn within the
label windows) and action effects large enough that a learned policy has a clear gap to close between a
random and an oracle choice. Tests and experiments build variants with `dataclasses.replace`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from nextbest.errors import NextbestError

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ActionSpec:
    """A business action the logging policy can take at a decision.

    Attributes:
        id: Action id, as written to the `action` column of events, decisions and truth.
        channel: Channel of the touchpoint, or None for the no-action baseline.
        touch_event: Event type logged at the decision time, or None when the action leaves no trace.
        price_discount: Share of the basket value given away when the action leads to a purchase.
    """

    id: str
    channel: str | None
    touch_event: str | None
    price_discount: float = 0.0


DEFAULT_ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("email_offer", "email", "email_sent"),
    ActionSpec("discount_10", "email", "email_sent", price_discount=0.1),
    ActionSpec("call_back", "call_center", "outbound_call"),
    ActionSpec("push_notification", "app", "push_sent"),
    ActionSpec("sms_reminder", "sms", "sms_sent"),
    ActionSpec("no_action", None, None),
)

KNOWN_ACTION_IDS = frozenset(a.id for a in DEFAULT_ACTIONS)


@dataclass(frozen=True)
class EffectSizes:
    """Coefficients of the true outcome model (logit scale), see `true_outcome_probabilities`.

    Attributes:
        base_conversion_logit: Intercept of P(conversion | not churned) under no action.
        base_churn_logit: Intercept of P(churn) under no action.
        email_engagement: Conversion uplift of `email_offer` for a customer who opens and clicks every email.
        email_fatigue_threshold: Emails received in the last 14 days that a customer tolerates.
        email_fatigue_conversion: Conversion penalty of `email_offer` per email above the threshold.
        email_fatigue_churn: Churn increase of `email_offer` per email above the threshold.
        discount_price_sensitivity: Conversion uplift of `discount_10` for a fully price-sensitive customer.
        discount_retention: Churn reduction of `discount_10` for a fully price-sensitive customer.
        call_back_service_churn: Churn reduction of `call_back` after recent support calls or complaints.
        call_back_conversion: Conversion uplift of `call_back` for gold customers.
        push_app_engagement: Conversion uplift of `push_notification` for active app users.
        sms_abandoned_cart: Conversion uplift of `sms_reminder` for customers with an abandoned cart.
        contact_annoyance: Churn increase of a contact that is useless to the customer.
        persuadability_intent_coupling: Scales every action effect by exp(coupling * intent); negative
            values make the likeliest converters the least persuadable.
    """

    base_conversion_logit: float = -3.0
    base_churn_logit: float = -1.9
    email_engagement: float = 2.2
    email_fatigue_threshold: float = 3.0
    email_fatigue_conversion: float = 0.45
    email_fatigue_churn: float = 0.3
    discount_price_sensitivity: float = 2.6
    discount_retention: float = 0.6
    call_back_service_churn: float = 2.2
    call_back_conversion: float = 0.8
    push_app_engagement: float = 1.8
    sms_abandoned_cart: float = 1.8
    contact_annoyance: float = 0.15
    persuadability_intent_coupling: float = 0.0


@dataclass(frozen=True)
class SimulationConfig:
    """All knobs of `simulate`; times are in days relative to `start` unless named otherwise.

    Attributes:
        n_customers: Number of customers.
        seed: Seed of every random draw; equal seeds give equal worlds.
        customer_prefix: What each customer id starts with, before its zero-padded number.
        start: First instant of the world (timezone-aware).
        span_days: Length of the observation window; events end before `start + span_days`.
        horizon_days: Conversion label window H after a decision.
        churn_inactivity_days: Silence D after a decision that defines churn.
        decision_window: Range of days after `start` in which the first decision falls.
        second_decision_rate: Share of customers still active after their first decision who get a second.
        second_decision_gap: Range of whole days between a customer's first and second decision.
        actions: The candidate actions of every decision, the no-action baseline included.
        effects: Coefficients of the true outcome model.
        logging_floor: Minimum propensity of every action under the logging policy.
        logging_temperature: Temperature of the logging policy's softmax (higher is closer to uniform).
        session_rate: Median organic sessions per day of an average-engagement customer.
        email_rate: Median marketing emails per day to an opted-in customer.
        push_rate: Median push notifications per day to an app user.
        sms_rate: Median SMS per day.
    """

    n_customers: int = 10_000
    seed: int = 0
    customer_prefix: str = "c"
    start: datetime = DEFAULT_START
    span_days: int = 273
    horizon_days: int = 30
    churn_inactivity_days: int = 60
    decision_window: tuple[float, float] = (75.0, 150.0)
    second_decision_rate: float = 0.3
    second_decision_gap: tuple[float, float] = (31.0, 60.0)
    actions: tuple[ActionSpec, ...] = DEFAULT_ACTIONS
    effects: EffectSizes = field(default_factory=EffectSizes)
    logging_floor: float = 0.05
    logging_temperature: float = 1.0
    session_rate: float = 0.04
    email_rate: float = 0.075
    push_rate: float = 0.035
    sms_rate: float = 0.008

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise NextbestError("invalid simulation config: " + "; ".join(problems))

    @property
    def action_ids(self) -> tuple[str, ...]:
        """The candidate action ids, in catalog order."""
        return tuple(a.id for a in self.actions)

    @property
    def last_decision_day(self) -> int:
        """A bound on every decision time, in days after `start` (second decisions are whole days later)."""
        return math.ceil(self.decision_window[1]) + math.floor(self.second_decision_gap[1])

    def _problems(self) -> list[str]:
        problems: list[str] = []
        if self.n_customers < 1:
            problems.append(f"n_customers must be at least 1, got {self.n_customers}")
        if self.start.tzinfo is None:
            problems.append("start must be timezone-aware")
        if not 2.0 <= self.decision_window[0] < self.decision_window[1]:
            problems.append("decision_window must be an increasing range starting at day 2 or later")
        if math.ceil(self.second_decision_gap[0]) > math.floor(self.second_decision_gap[1]):
            problems.append("second_decision_gap must contain a whole number of days")
        if self.second_decision_gap[0] <= self.horizon_days:
            # A second decision inside the first one's conversion window would blur its label.
            problems.append("second_decision_gap must start after horizon_days")
        if self.last_decision_day + max(self.horizon_days, self.churn_inactivity_days) >= self.span_days:
            problems.append("span_days must leave max(H, D) days after the last possible decision")
        ids = self.action_ids
        if len(set(ids)) != len(ids) or len(ids) < 2:
            problems.append("actions must be at least two distinct ids")
        if unknown := sorted(set(ids) - KNOWN_ACTION_IDS):
            problems.append(f"actions without a true effect model: {unknown}")
        if not 0.0 <= self.logging_floor * len(ids) < 1.0:
            problems.append("logging_floor times the number of actions must be in [0, 1)")
        if not 0.0 <= self.second_decision_rate <= 1.0:
            problems.append("second_decision_rate must be in [0, 1]")
        return problems


# Days of history before the first live day: the default world's first decisions come this late too, so
# the service sees histories as long as those its model was trained on.
LIVE_LEAD_DAYS = 75


def live_config(
    customers: int, days: int, seed: int, *, first_day: date | None = None, customer_prefix: str = "c"
) -> SimulationConfig:
    """A world whose customers are each decided once, within `days` days after `LIVE_LEAD_DAYS` of history:
    from `first_day` (default `LIVE_LEAD_DAYS` after the default start) on. Worlds with distinct
    `customer_prefix`es share no customer, so they can be played one after another against one store.

    Second decisions come at least a conversion horizon after the first, which would take them past a
    short live period; the world runs on after the last decision until every outcome is known.
    """
    if days < 1:
        raise NextbestError(f"a live world needs at least 1 day, got {days}")
    horizon, churn_days = SimulationConfig.horizon_days, SimulationConfig.churn_inactivity_days
    # Unused without second decisions, but part of the span's bound: the narrowest valid gap keeps the
    # world (and the events posted after the last decision) short.
    gap = horizon + 1
    span = LIVE_LEAD_DAYS + days + gap + max(horizon, churn_days) + 1
    start = DEFAULT_START
    if first_day is not None:
        start = datetime.combine(first_day, time(), UTC) - timedelta(days=LIVE_LEAD_DAYS)
    return SimulationConfig(
        n_customers=customers,
        seed=seed,
        customer_prefix=customer_prefix,
        start=start,
        decision_window=(float(LIVE_LEAD_DAYS), float(LIVE_LEAD_DAYS + days)),
        second_decision_rate=0.0,
        second_decision_gap=(float(gap), float(gap)),
        span_days=span,
    )
