"""The true effect of each action, the logging policy that chose them, and the sampled outcomes.

Truth: churn and conversion-among-non-churners are logistic in the customer's latent traits and the
observable history aggregates at the decision; each action adds a heterogeneous term to both logits.
Churn is drawn first and only non-churners can convert, so

    P(churn | a)      = sigmoid(churn_logit + churn_effect(a))
    P(conversion | a) = (1 - P(churn | a)) * sigmoid(conversion_logit + conversion_effect(a))

are the exact probabilities of the decision's labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from nextbest.simulate._arrays import BoolArray, FloatArray, IntArray, sample_rows, sigmoid
from nextbest.simulate.config import EffectSizes
from nextbest.simulate.history import HistoryAggregates
from nextbest.simulate.population import LatentTraits, Profiles

_BRONZE, _GOLD = 0, 2
_APP_DEVICE = 0


@dataclass(frozen=True)
class _Signals:
    """Derived quantities the action effects are written in; all in [0, 1] except `fatigue`."""

    email_reachable: FloatArray
    email_engaged: FloatArray
    fatigue: FloatArray
    app_user: FloatArray
    service_issue: FloatArray
    gold: FloatArray

    @staticmethod
    def of(profiles: Profiles, history: HistoryAggregates, effects: EffectSizes) -> _Signals:
        opened = np.clip(history.email_open_rate_60d, 0.0, 1.0)
        return _Signals(
            email_reachable=profiles.email_opt_in * (1.0 - history.unsubscribed),
            email_engaged=0.6 * opened + 0.4 * np.tanh(history.email_clicks_60d / 2.0),
            fatigue=np.maximum(history.emails_14d - effects.email_fatigue_threshold, 0.0),
            app_user=np.tanh(history.app_sessions_30d / 2.0),
            service_issue=np.tanh(history.service_contacts_30d / 1.5),
            gold=(profiles.segment == _GOLD).astype(np.float64),
        )


_Effect = Callable[[LatentTraits, HistoryAggregates, _Signals, EffectSizes], tuple[FloatArray, FloatArray]]


def _email_offer(
    t: LatentTraits, h: HistoryAggregates, s: _Signals, e: EffectSizes
) -> tuple[FloatArray, FloatArray]:
    # Engaged readers respond (below about 20% engagement an offer is ignored), but every email above the
    # tolerated number turns the offer into spam.
    conversion = s.email_reachable * (
        e.email_engagement * (s.email_engaged - 0.2) - e.email_fatigue_conversion * s.fatigue
    )
    churn = s.email_reachable * e.email_fatigue_churn * s.fatigue + e.contact_annoyance * h.unsubscribed
    return conversion, churn


def _discount(
    t: LatentTraits, h: HistoryAggregates, s: _Signals, e: EffectSizes
) -> tuple[FloatArray, FloatArray]:
    # Only the price-sensitive (above 0.3) are swayed; a discount also rescues an abandoned cart.
    sway = np.maximum(t.price_sensitivity - 0.3, 0.0) / 0.7
    conversion = s.email_reachable * (e.discount_price_sensitivity * sway + 0.4 * h.abandoned_cart)
    churn = -s.email_reachable * e.discount_retention * sway + e.contact_annoyance * h.unsubscribed
    return conversion, churn


def _call_back(
    t: LatentTraits, h: HistoryAggregates, s: _Signals, e: EffectSizes
) -> tuple[FloatArray, FloatArray]:
    # A call rescues customers with open service issues and mildly annoys everybody else.
    conversion = e.call_back_conversion * (s.gold - 0.3)
    churn = -e.call_back_service_churn * s.service_issue + e.contact_annoyance * (1.0 - s.service_issue)
    return conversion, churn


def _push(
    t: LatentTraits, h: HistoryAggregates, s: _Signals, e: EffectSizes
) -> tuple[FloatArray, FloatArray]:
    # A push reaches only customers who use the app; for the others it is a wasted, slightly irritating send.
    conversion = e.push_app_engagement * (s.app_user - 0.1)
    churn = -0.3 * s.app_user + 0.5 * e.contact_annoyance * (1.0 - s.app_user)
    return conversion, churn


def _sms(t: LatentTraits, h: HistoryAggregates, s: _Signals, e: EffectSizes) -> tuple[FloatArray, FloatArray]:
    # A reminder only makes sense with something to be reminded of.
    conversion = e.sms_abandoned_cart * (h.abandoned_cart - 0.1)
    churn = e.contact_annoyance * (1.0 - h.abandoned_cart)
    return conversion, churn


def _no_action(
    t: LatentTraits, h: HistoryAggregates, s: _Signals, e: EffectSizes
) -> tuple[FloatArray, FloatArray]:
    zero = np.zeros(t.intent.size)
    return zero, zero


_EFFECTS: dict[str, _Effect] = {
    "email_offer": _email_offer,
    "discount_10": _discount,
    "call_back": _call_back,
    "push_notification": _push,
    "sms_reminder": _sms,
    "no_action": _no_action,
}


def true_outcome_probabilities(
    traits: LatentTraits,
    profiles: Profiles,
    history: HistoryAggregates,
    actions: Sequence[str],
    effects: EffectSizes,
) -> tuple[FloatArray, FloatArray]:
    """The exact outcome probabilities of every candidate action at each decision.

    A pure function: equal inputs give equal outputs, which is what lets tests and uplift experiments
    reconstruct the truth of a world, or of a variant with other effect sizes.

    Args:
        traits: Latent traits of the decided customers, one row per decision.
        profiles: Profiles of the decided customers, aligned with `traits`.
        history: History aggregates at each decision time, aligned with `traits`.
        actions: Candidate action ids (columns of the result).
        effects: Coefficients of the outcome model.

    Returns:
        `(p_conversion, p_churn)`, each of shape (decisions, actions): the probability that the decision is
        followed by a purchase within the horizon, and by silence through the churn window.
    """
    signals = _Signals.of(profiles, history, effects)
    conversion_logit, churn_logit = _baseline_logits(traits, profiles, history, effects)
    persuadability = np.exp(effects.persuadability_intent_coupling * traits.intent)
    deltas = [_EFFECTS[a](traits, history, signals, effects) for a in actions]
    p_churn = sigmoid(
        churn_logit[:, None] + persuadability[:, None] * np.stack([d[1] for d in deltas], axis=1)
    )
    p_buy = sigmoid(
        conversion_logit[:, None] + persuadability[:, None] * np.stack([d[0] for d in deltas], axis=1)
    )
    return (1.0 - p_churn) * p_buy, p_churn


def _baseline_logits(
    traits: LatentTraits, profiles: Profiles, history: HistoryAggregates, effects: EffectSizes
) -> tuple[FloatArray, FloatArray]:
    recency = np.minimum(history.days_since_active, 120.0)
    conversion = (
        effects.base_conversion_logit
        + 0.8 * traits.intent
        + 0.35 * np.log1p(history.product_views_14d)
        + 0.8 * history.abandoned_cart
        + 0.25 * np.log1p(history.purchases)
        + 0.2 * profiles.segment
        - 0.015 * recency
    )
    churn = (
        effects.base_churn_logit
        + 0.5 * traits.dissatisfaction
        - 0.3 * traits.engagement
        + 0.6 * np.log1p(history.service_contacts_30d)
        + 0.025 * recency
        - 0.25 * np.log1p(profiles.tenure_days / 365.0)
        - 0.15 * np.log1p(history.events_30d)
        + 0.3 * history.unsubscribed
    )
    return conversion, churn


def logging_policy_probabilities(
    profiles: Profiles, actions: Sequence[str], floor: float = 0.05, temperature: float = 1.0
) -> FloatArray:
    """The logging policy: a softmax over simple rules on profile attributes, mixed with a uniform floor.

    Every action gets at least `floor`, so the logs support off-policy evaluation of any target policy.

    Args:
        profiles: Profiles of the decided customers, one row per decision.
        actions: Candidate action ids (columns of the result).
        floor: Minimum probability of each action; `floor * len(actions)` must be below 1.
        temperature: Softmax temperature; larger is closer to uniform.

    Returns:
        Array of shape (decisions, actions) whose rows sum to 1.
    """
    opt_in = profiles.email_opt_in.astype(np.float64)
    rules = {
        "email_offer": 0.8 * opt_in,
        "discount_10": 0.7 * (profiles.segment == _BRONZE) + 0.4 * opt_in - 0.3,
        "call_back": 0.9 * (profiles.segment == _GOLD) - 0.5,
        "push_notification": 1.0 * (profiles.device == _APP_DEVICE) - 0.2,
        "sms_reminder": 0.3 * (profiles.age_band <= 1) - 0.2,
        "no_action": np.full(opt_in.size, 0.5),
    }
    scores = np.stack([rules[a] for a in actions], axis=1) / temperature
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    softmax = weights / weights.sum(axis=1, keepdims=True)
    probs: FloatArray = floor + (1.0 - floor * len(actions)) * softmax
    return probs


@dataclass(frozen=True)
class Decisions:
    """Decisions at one pass (at most one per customer), with their truth and sampled outcomes.

    Attributes:
        customer: Customer index of each decision.
        as_of: Decision time (seconds after start).
        action: Index of the logged action into the config's actions.
        propensity: Logging-policy probability of the logged action.
        p_conversion: True conversion probability of every action, (decisions, actions).
        p_churn: True churn probability of every action, (decisions, actions).
        churned: Sampled churn under the logged action.
        converted: Sampled conversion under the logged action (never together with churn).
        revenue: Value of the converting purchase, 0 without conversion.
    """

    customer: IntArray
    as_of: IntArray
    action: IntArray
    propensity: FloatArray
    p_conversion: FloatArray
    p_churn: FloatArray
    churned: BoolArray
    converted: BoolArray
    revenue: FloatArray

    @staticmethod
    def concat(parts: list[Decisions]) -> Decisions:
        """All parts as one."""
        columns = zip(*(vars(p).values() for p in parts), strict=True)
        return Decisions(*(np.concatenate(list(c)) for c in columns))


@dataclass(frozen=True)
class Served:
    """The actions a decider other than the logging policy chose (e.g. a running service).

    Attributes:
        action: Index of each decision's action into the config's actions.
        propensity: Probability with which each action was chosen.
    """

    action: IntArray
    propensity: FloatArray


def decide(
    rng: np.random.Generator,
    customer: IntArray,
    as_of: IntArray,
    truth: tuple[FloatArray, FloatArray],
    policy: FloatArray,
    basket_value: FloatArray,
    price_discount: FloatArray,
    served: Served | None = None,
) -> Decisions:
    """Draws the logged action from `policy` (or takes `served`), then churn and conversion from the truth
    of that action.

    Args:
        rng: Random generator.
        customer: Customer index of each decision.
        as_of: Decision times.
        truth: `(p_conversion, p_churn)` from `true_outcome_probabilities`.
        policy: Logging-policy probabilities, aligned with the truth's columns.
        basket_value: What each customer would spend on a converting purchase at full price.
        price_discount: Share of the basket each action gives away, per action.
        served: The actions taken instead of the logging policy's, with their probabilities.
    """
    p_conversion, p_churn = truth
    # The logging policy draws even when its action is not taken, so that the outcome draws below use the
    # same random numbers whoever decides: a world played live differs from the logged one only through
    # the actions taken.
    action = sample_rows(rng, policy)
    rows = np.arange(customer.size)
    propensity = policy[rows, action]
    if served is not None:
        action, propensity = served.action, served.propensity
    churn_p = p_churn[rows, action]
    buy_given_stay = p_conversion[rows, action] / np.maximum(1.0 - churn_p, 1e-12)
    churned = rng.random(customer.size) < churn_p
    converted = ~churned & (rng.random(customer.size) < buy_given_stay)
    revenue = np.where(converted, np.round(basket_value * (1.0 - price_discount[action]), 2), 0.0)
    return Decisions(customer, as_of, action, propensity, p_conversion, p_churn, churned, converted, revenue)
