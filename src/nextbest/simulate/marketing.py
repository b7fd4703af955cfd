"""Past marketing contacts: email campaigns (with opens, clicks, unsubscribes), pushes and SMS.

Send times are Poisson per customer, snapped to campaign slots. Opens fall with the number of emails
received in the previous 14 days, and heavily mailed customers unsubscribe more often, so contact fatigue
is visible in the history, not only in the true effect of `email_offer`.
"""

from __future__ import annotations

import numpy as np

from nextbest.simulate._arrays import DAY, HOUR, BoolArray, FloatArray, IntArray, sigmoid
from nextbest.simulate.events import AC, CH, ET, EventArrays
from nextbest.simulate.population import Population
from nextbest.simulate.timing import campaign_slots

FATIGUE_WINDOW_DAYS = 14
_EMAIL_CAMPAIGNS = np.array([AC["newsletter"], AC["email_offer"], AC["discount_10"]], dtype=np.int16)
_EMAIL_CAMPAIGN_SHARES = np.array([0.5, 0.3, 0.2])


def marketing_history(
    rng: np.random.Generator,
    population: Population,
    first_seen: IntArray,
    end: int,
    rates: tuple[float, float, float],
    start_weekday: int,
) -> EventArrays:
    """Every marketing contact from each customer's first activity to `end`, with the customer's responses.

    Args:
        rng: Random generator.
        population: The customers.
        first_seen: Each customer's first activity (seconds after start); contacts start there.
        end: End of the observation window (seconds after start).
        rates: Median emails, pushes and SMS per day.
        start_weekday: Weekday of the world's start (Monday is 0).
    """
    email_rate, push_rate, sms_rate = rates
    profiles, traits = population.profiles, population.traits
    n = population.size
    has_app = (profiles.device == 0) | (traits.app_affinity > 0.8)
    spread = rng.standard_normal((3, n))
    emails = _sends(rng, email_rate * np.exp(1.0 * spread[0]) * profiles.email_opt_in, first_seen, end)
    pushes = _sends(rng, push_rate * np.exp(0.6 * spread[1]) * has_app, first_seen, end)
    texts = _sends(rng, sms_rate * np.exp(0.5 * spread[2]), first_seen, end)
    return EventArrays.concat(
        [
            _email_events(rng, population, _at_slots(rng, emails, (9, 17), first_seen, end, start_weekday)),
            _push_like(_at_slots(rng, pushes, (12, 18), first_seen, end, start_weekday), "push_sent", "app"),
            _push_like(_at_slots(rng, texts, (11,), first_seen, end, start_weekday), "sms_sent", "sms"),
        ]
    )


def _sends(
    rng: np.random.Generator, rate_per_day: FloatArray, first_seen: IntArray, end: int
) -> tuple[IntArray, FloatArray]:
    span = (end - first_seen).astype(np.float64)
    counts = rng.poisson(rate_per_day * span / DAY).astype(np.int64)
    customer = np.repeat(np.arange(first_seen.size, dtype=np.int64), counts)
    instant = first_seen[customer] + rng.random(customer.size) * span[customer]
    return customer, instant


def _at_slots(
    rng: np.random.Generator,
    sends: tuple[IntArray, FloatArray],
    hours: tuple[int, ...],
    first_seen: IntArray,
    end: int,
    start_weekday: int,
) -> tuple[IntArray, IntArray]:
    """Sends snapped to campaign slots inside [first_seen, end), sorted, at most one per customer and slot."""
    customer, instant = sends
    t = campaign_slots(rng, instant, hours, start_weekday)
    inside = (t >= first_seen[customer]) & (t < end)
    order = np.lexsort((t[inside], customer[inside]))
    customer, t = customer[inside][order], t[inside][order]
    new_slot = np.ones(t.size, np.bool_)
    new_slot[1:] = (customer[1:] != customer[:-1]) | (t[1:] - t[:-1] >= HOUR)
    return customer[new_slot], t[new_slot]


def _push_like(sends: tuple[IntArray, IntArray], event_type: str, channel: str) -> EventArrays:
    action = AC["push_notification"] if channel == "app" else AC["sms_reminder"]
    return EventArrays.build(sends[0], sends[1], ET[event_type], CH[channel], action)


def _email_events(
    rng: np.random.Generator, population: Population, sends: tuple[IntArray, IntArray]
) -> EventArrays:
    customer, t = sends
    traits = population.traits
    campaign = _EMAIL_CAMPAIGNS[
        rng.choice(_EMAIL_CAMPAIGN_SHARES.size, size=t.size, p=_EMAIL_CAMPAIGN_SHARES)
    ]
    recent = _recent_count(customer, t, FATIGUE_WINDOW_DAYS * DAY)
    affinity = traits.email_affinity[customer]
    opened = rng.random(t.size) < sigmoid(-0.4 + 1.1 * affinity - 0.1 * recent)
    open_t = t + 60 + rng.exponential(3 * HOUR, t.size).astype(np.int64)
    click_logit = (
        -1.6
        + 0.7 * affinity
        + (campaign == AC["discount_10"]) * (4.0 * traits.price_sensitivity[customer] - 2.0)
        + (campaign == AC["email_offer"]) * 0.3
    )
    clicked = opened & (rng.random(t.size) < sigmoid(click_logit))
    unsubscribed = opened & (rng.random(t.size) < sigmoid(-5.0 + 0.3 * recent - 0.5 * affinity))
    cutoff = np.full(population.size, np.iinfo(np.int64).max)
    np.minimum.at(cutoff, customer[unsubscribed], t[unsubscribed])
    kept = t <= cutoff[customer]
    final = unsubscribed & (t == cutoff[customer])
    click_t = open_t + 10 + rng.exponential(120, t.size).astype(np.int64)

    def part(mask: BoolArray, times: IntArray, event_type: str) -> EventArrays:
        rows = kept & mask
        return EventArrays.build(customer[rows], times[rows], ET[event_type], CH["email"], campaign[rows])

    return EventArrays.concat(
        [
            part(np.ones(t.size, dtype=np.bool_), t, "email_sent"),
            part(opened, open_t, "email_open"),
            part(clicked, click_t, "email_click"),
            part(final, open_t + 30, "unsubscribe"),
        ]
    )


def _recent_count(customer: IntArray, t: IntArray, window: int) -> IntArray:
    """For events sorted by customer and time: the customer's earlier events within `window` seconds."""
    key = customer * (1 << 40) + t
    first_in_window = np.searchsorted(key, key - window, side="left")
    return np.arange(key.size, dtype=np.int64) - first_in_window
