"""Point-in-time aggregates of the observable history, as the true outcome model sees it.

Only events strictly before the decision time count, exactly what a model trained on the events table
can see; this is what makes the action effects learnable.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from nextbest.simulate._arrays import DAY, BoolArray, FloatArray, IntArray
from nextbest.simulate.events import AC, CUSTOMER_INITIATED, ET, EventArrays

_NEVER_ACTIVE_DAYS = 365.0
_INITIATED = np.zeros(len(ET), np.bool_)
_INITIATED[list(CUSTOMER_INITIATED)] = True


@dataclass(frozen=True)
class HistoryAggregates:
    """Per-decision summaries of the events before `as_of` (counts are floats for the logit algebra).

    Attributes:
        events_30d: Events of any kind in the last 30 days.
        days_since_active: Days since the last customer-initiated event (365 when there is none).
        emails_14d: Marketing emails received in the last 14 days (the fatigue measure).
        email_open_rate_60d: Opens per email received in the last 60 days (0 without emails).
        email_clicks_60d: Email clicks in the last 60 days.
        discount_clicks: Clicks on discount emails, ever.
        app_sessions_30d: App sessions in the last 30 days.
        service_contacts_30d: Support calls and complaints in the last 30 days.
        abandoned_cart: 1 when the last add-to-cart is within 14 days and not followed by a purchase.
        product_views_14d: Product views in the last 14 days.
        purchases: Purchases, ever.
        unsubscribed: 1 after an email unsubscribe.
    """

    events_30d: FloatArray
    days_since_active: FloatArray
    emails_14d: FloatArray
    email_open_rate_60d: FloatArray
    email_clicks_60d: FloatArray
    discount_clicks: FloatArray
    app_sessions_30d: FloatArray
    service_contacts_30d: FloatArray
    abandoned_cart: FloatArray
    product_views_14d: FloatArray
    purchases: FloatArray
    unsubscribed: FloatArray

    def take(self, rows: IntArray) -> HistoryAggregates:
        """The aggregates of the decisions at `rows`."""
        return HistoryAggregates(*(getattr(self, f.name)[rows] for f in fields(self)))


def history_aggregates(events: EventArrays, customer: IntArray, as_of: IntArray) -> HistoryAggregates:
    """Aggregates for decisions (`customer[i]` at `as_of[i]`); at most one decision per customer per call."""
    n = int(max(events.customer.max(initial=-1), customer.max(initial=-1))) + 1
    cutoff = np.full(n, -1, dtype=np.int64)
    cutoff[customer] = as_of
    past = events.select(events.time < cutoff[events.customer])
    age = (cutoff[past.customer] - past.time) / DAY
    kind = past.event_type

    def count(mask: BoolArray, within_days: float = np.inf) -> FloatArray:
        rows = mask & (age <= within_days)
        return np.bincount(past.customer[rows], minlength=n)[customer].astype(np.float64)

    def last(mask: BoolArray) -> FloatArray:
        latest = np.full(n, np.iinfo(np.int64).min)
        np.maximum.at(latest, past.customer[mask], past.time[mask])
        return latest[customer].astype(np.float64)

    emails_60d = count(kind == ET["email_sent"], 60)
    last_cart, last_purchase = last(kind == ET["add_to_cart"]), last(kind == ET["purchase"])
    last_active = last(_INITIATED[kind])
    return HistoryAggregates(
        events_30d=count(np.ones(len(past), np.bool_), 30),
        days_since_active=np.minimum((as_of - last_active) / DAY, _NEVER_ACTIVE_DAYS),
        emails_14d=count(kind == ET["email_sent"], 14),
        email_open_rate_60d=count(kind == ET["email_open"], 60) / np.maximum(emails_60d, 1.0),
        email_clicks_60d=count(kind == ET["email_click"], 60),
        discount_clicks=count((kind == ET["email_click"]) & (past.action == AC["discount_10"])),
        app_sessions_30d=count(kind == ET["app_session"], 30),
        service_contacts_30d=count((kind == ET["support_call"]) | (kind == ET["complaint"]), 30),
        abandoned_cart=((last_cart > last_purchase) & (as_of - last_cart <= 14 * DAY)).astype(np.float64),
        product_views_14d=count(kind == ET["product_view"], 14),
        purchases=count(kind == ET["purchase"]),
        unsubscribed=(count(kind == ET["unsubscribe"]) > 0).astype(np.float64),
    )
