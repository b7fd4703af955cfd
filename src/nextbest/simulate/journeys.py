"""Organic journeys: sessions driven by a lifecycle-stage Markov chain, then expanded into events.

Each customer moves through awareness, consideration, evaluation, purchase, post-purchase and advocacy,
or drifts towards churn (and finally goes dormant). The gap to the next session is exponential with a rate
set by the customer's engagement and current stage; sessions land on plausible hours and weekdays for
their kind (web, app, store, service call). The loop runs over session steps, vectorised across all
customers still active; the events inside sessions are generated afterwards in one vectorised pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from nextbest.simulate._arrays import (
    DAY,
    HOUR,
    BoolArray,
    FloatArray,
    IntArray,
    positions_within,
    sample_rows,
    sigmoid,
)
from nextbest.simulate.events import AC, CH, ET, NO_CODE, EventArrays
from nextbest.simulate.population import LatentTraits, Population
from nextbest.simulate.timing import APP, SERVICE, STORE, WEB, schedule_sessions

AWARENESS, CONSIDERATION, EVALUATION, PURCHASE, POST_PURCHASE, ADVOCACY, DRIFT, DORMANT = range(8)
STAGES = ("awareness", "consideration", "evaluation", "purchase", "post_purchase", "advocacy", "drift")

# Every event of a session lies within SESSION_GUARD after its start, so a session that starts before
# `end - SESSION_GUARD` cannot spill over a decision time. (The email open that leads into a conversion
# session comes minutes before it, and such sessions start hours after their decision.)
SESSION_GUARD = HOUR
_SLOT = 90  # seconds between consecutive events of a session
_MIN_GAP = 2 * HOUR

_RATE_BY_STAGE = np.array([0.7, 1.0, 1.6, 2.2, 0.8, 1.0, 0.35, 0.0])
_BUY_BY_STAGE = np.array([0.0, 0.01, 0.06, 0.85, 0.02, 0.03, 0.0, 0.0])
_AD_BY_STAGE = np.array([0.6, 0.35, 0.2, 0.1, 0.05, 0.05, 0.1, 0.0])
_VIEWS_BY_STAGE = np.array([0.6, 2.0, 3.0, 2.0, 0.6, 0.8, 0.4, 0.0])
_CART_BY_STAGE = np.array([0.01, 0.08, 0.35, 0.6, 0.03, 0.05, 0.02, 0.0])
_REVIEW_BY_STAGE = np.array([0.0, 0.0, 0.0, 0.0, 0.15, 0.3, 0.0, 0.0])
_REFERRAL_BY_STAGE = np.array([0.0, 0.0, 0.0, 0.0, 0.02, 0.15, 0.0, 0.0])
_PURCHASE_MEDIAN_BY_SEGMENT = np.array([35.0, 60.0, 110.0])
_KIND_CHANNEL = np.array([CH["web"], CH["app"], CH["store"], CH["call_center"]], dtype=np.int16)
_HEAD_EVENT = np.array([ET["page_view"], ET["app_session"], ET["store_visit"], ET["support_call"]], np.int16)


def _transition_coefficients() -> FloatArray:
    """coef[from, to] = (base, per unit of buying mood, per unit of unhappiness); the rest stays put."""
    coef = np.zeros((8, 8, 3))
    coef[AWARENESS, CONSIDERATION] = (0.1, 0.35, 0.0)
    coef[AWARENESS, DRIFT] = (0.02, 0.0, 0.05)
    coef[AWARENESS, DORMANT] = (0.01, 0.0, 0.02)
    coef[CONSIDERATION, AWARENESS] = (0.05, 0.0, 0.0)
    coef[CONSIDERATION, EVALUATION] = (0.08, 0.35, 0.0)
    coef[CONSIDERATION, DRIFT] = (0.02, 0.0, 0.06)
    coef[CONSIDERATION, DORMANT] = (0.01, 0.0, 0.01)
    coef[EVALUATION, CONSIDERATION] = (0.15, 0.0, 0.0)
    coef[EVALUATION, PURCHASE] = (0.08, 0.4, 0.0)
    coef[EVALUATION, DRIFT] = (0.02, 0.0, 0.04)
    coef[PURCHASE, EVALUATION] = (0.3, 0.0, 0.0)
    coef[PURCHASE, DRIFT] = (0.02, 0.0, 0.03)
    coef[POST_PURCHASE, ADVOCACY] = (0.05, 0.3, -0.05)
    coef[POST_PURCHASE, CONSIDERATION] = (0.2, 0.1, 0.0)
    coef[POST_PURCHASE, DRIFT] = (0.03, 0.0, 0.15)
    coef[ADVOCACY, CONSIDERATION] = (0.2, 0.0, 0.0)
    coef[ADVOCACY, DRIFT] = (0.02, 0.0, 0.05)
    coef[DRIFT, CONSIDERATION] = (0.05, 0.1, 0.0)
    coef[DRIFT, DORMANT] = (0.08, 0.0, 0.12)
    return coef


_TRANSITIONS = _transition_coefficients()


@dataclass(frozen=True)
class Sessions:
    """Column-wise sessions.

    Attributes:
        customer: Customer index.
        time: Start, in seconds after the world's start.
        stage: Lifecycle stage during the session.
        kind: WEB, APP, STORE or SERVICE.
        purchased: Whether the session ends in a purchase.
        value: Value of that purchase when fixed in advance (a decision's conversion), NaN to draw it.
        entry_action: Action code of an email whose click opened the session, or NO_CODE.
    """

    customer: IntArray
    time: IntArray
    stage: IntArray
    kind: IntArray
    purchased: BoolArray
    value: FloatArray
    entry_action: npt.NDArray[np.int16]

    @staticmethod
    def concat(parts: list[Sessions]) -> Sessions:
        """All parts as one."""
        columns = zip(*(vars(p).values() for p in parts), strict=True)
        return Sessions(*(np.concatenate(list(c)) for c in columns))


@dataclass(frozen=True)
class PhaseStart:
    """How the sessions of one phase (between decisions) begin, for the customers in the phase.

    Attributes:
        customer: Customer indices in the phase.
        time: Start of each customer's first session of the phase.
        stage: Stage at that first session.
        end: Sessions of the phase start before `end - SESSION_GUARD`.
        no_purchase_until: Organic purchases are suppressed in sessions starting at or before this time.
        forced_purchase: The first session ends in a purchase (a conversion caused by a decision).
        first_kind: Kind of the first session, or -1 to draw it.
        entry_action: Email action whose click opens the first session, or NO_CODE.
        forced_value: Value of the forced purchase (NaN where there is none).
    """

    customer: IntArray
    time: IntArray
    stage: IntArray
    end: IntArray
    no_purchase_until: IntArray
    forced_purchase: BoolArray
    first_kind: IntArray
    entry_action: npt.NDArray[np.int16]
    forced_value: FloatArray


def run_sessions(
    rng: np.random.Generator,
    population: Population,
    phase: PhaseStart,
    session_rate: float,
    start_weekday: int,
) -> tuple[Sessions, IntArray]:
    """Simulates one phase of sessions; returns them with each phase customer's final stage."""
    traits = population.traits.take(phase.customer)
    app_share = sigmoid(
        1.5 * traits.app_affinity + 1.5 * (population.profiles.device[phase.customer] == 0) - 1.2
    )
    rate = session_rate * np.exp(0.9 * traits.engagement)
    stage = phase.stage.copy()
    t = phase.time.copy()
    rows = np.arange(phase.customer.size, dtype=np.int64)
    drawn = _draw_kind(rng, stage, traits.dissatisfaction, app_share)
    kind = np.where(phase.first_kind >= 0, phase.first_kind, drawn)
    purchased = phase.forced_purchase | _buys(rng, stage, kind, t, phase.no_purchase_until)
    parts = [_record(phase.customer, t, stage, kind, purchased, phase.forced_value, phase.entry_action)]
    stage = _next_stage(rng, stage, purchased, traits)
    while True:
        rows = rows[stage[rows] != DORMANT]
        gap = rng.exponential(1.0, rows.size) / (rate[rows] * _RATE_BY_STAGE[stage[rows]]) * DAY
        kind = _draw_kind(rng, stage[rows], traits.dissatisfaction[rows], app_share[rows])
        start = schedule_sessions(
            rng, t[rows] + np.maximum(gap, _MIN_GAP).astype(np.int64), kind, start_weekday
        )
        in_phase = start < phase.end[rows] - SESSION_GUARD
        rows, kind, start = rows[in_phase], kind[in_phase], start[in_phase]
        if rows.size == 0:
            return Sessions.concat(parts), stage
        t[rows] = start
        purchased = _buys(rng, stage[rows], kind, start, phase.no_purchase_until[rows])
        parts.append(_record(phase.customer[rows], start, stage[rows], kind, purchased))
        stage[rows] = _next_stage(rng, stage[rows], purchased, traits.take(rows))


def _record(
    customer: IntArray,
    time: IntArray,
    stage: IntArray,
    kind: IntArray,
    purchased: BoolArray,
    value: FloatArray | None = None,
    entry_action: npt.NDArray[np.int16] | None = None,
) -> Sessions:
    return Sessions(
        customer=customer,
        time=time.copy(),
        stage=stage.copy(),
        kind=kind,
        purchased=purchased,
        value=np.full(customer.size, np.nan) if value is None else value,
        entry_action=np.full(customer.size, NO_CODE, np.int16) if entry_action is None else entry_action,
    )


def _draw_kind(
    rng: np.random.Generator, stage: IntArray, unhappy: FloatArray, app_share: FloatArray
) -> IntArray:
    service = rng.random(stage.size) < sigmoid(
        -3.4 + 0.9 * unhappy + 1.8 * (stage == DRIFT) + 0.7 * (stage == POST_PURCHASE)
    )
    u = rng.random(stage.size)
    shopping = np.where(u < 0.1, STORE, np.where(u < 0.1 + 0.9 * app_share, APP, WEB))
    return np.where(service, SERVICE, shopping).astype(np.int64)


def _buys(
    rng: np.random.Generator, stage: IntArray, kind: IntArray, time: IntArray, no_purchase_until: IntArray
) -> BoolArray:
    allowed = (kind != SERVICE) & (time > no_purchase_until)
    return allowed & (rng.random(stage.size) < _BUY_BY_STAGE[stage])


def _next_stage(
    rng: np.random.Generator, stage: IntArray, purchased: BoolArray, traits: LatentTraits
) -> IntArray:
    mood = sigmoid(traits.intent - 0.3)
    unhappy = sigmoid(traits.dissatisfaction - 0.5)
    coef = _TRANSITIONS[stage]
    probs = coef[:, :, 0] + coef[:, :, 1] * mood[:, None] + coef[:, :, 2] * unhappy[:, None]
    probs[np.arange(stage.size), stage] += 1.0 - probs.sum(axis=1)
    nxt = sample_rows(rng, probs)
    return np.where(purchased, POST_PURCHASE, nxt)


def purchase_values(rng: np.random.Generator, segment: IntArray) -> FloatArray:
    """Basket values at full price: lognormal around a median that grows with the segment."""
    value = rng.lognormal(np.log(_PURCHASE_MEDIAN_BY_SEGMENT[segment]), 0.6)
    return np.round(value, 2)


def expand_sessions(rng: np.random.Generator, sessions: Sessions, population: Population) -> EventArrays:
    """The events of every session: entry (ad or email click), head, offer, views, cart, purchase, review."""
    n = sessions.customer.size
    stage, kind = sessions.stage, sessions.kind
    browsing = (kind == WEB) | (kind == APP)
    channel = _KIND_CHANNEL[kind]
    unhappy = population.traits.dissatisfaction[sessions.customer]
    views = np.where(browsing, rng.poisson(_VIEWS_BY_STAGE[stage] + sessions.purchased), rng.poisson(0.3, n))
    views = np.minimum(views, 20).astype(np.int64)
    clicked_email = sessions.entry_action >= 0
    ad = browsing & ~clicked_email & (rng.random(n) < _AD_BY_STAGE[stage])
    offer = browsing & (rng.random(n) < 0.12)
    complaint = (kind == SERVICE) & (rng.random(n) < sigmoid(-1.2 + unhappy + 0.8 * (stage == DRIFT)))
    cart = browsing & (sessions.purchased | (rng.random(n) < _CART_BY_STAGE[stage]))
    review = browsing & (rng.random(n) < _REVIEW_BY_STAGE[stage])
    referral = browsing & (rng.random(n) < _REFERRAL_BY_STAGE[stage])
    drawn = purchase_values(rng, population.profiles.segment[sessions.customer])
    value = np.where(np.isnan(sessions.value), drawn, sessions.value)
    view_rows = np.repeat(np.arange(n, dtype=np.int64), views)
    emit = _Emitter(rng, sessions)
    return EventArrays.concat(
        [
            emit(clicked_email, -3, ET["email_open"], CH["email"], sessions.entry_action),
            emit(clicked_email, 0, ET["email_click"], CH["email"], sessions.entry_action),
            emit(ad, 0, ET["ad_impression"], CH["display"]),
            emit(np.ones(n, np.bool_), 1, _HEAD_EVENT[kind], channel),
            emit(offer, 2, ET["offer_shown"], channel, AC["onsite_offer"]),
            emit(complaint, 2, ET["complaint"], channel),
            emit.rows(view_rows, 3 + positions_within(views), ET["product_view"], channel[view_rows]),
            emit(cart, 3 + views, ET["add_to_cart"], channel),
            emit(sessions.purchased, 4 + views, ET["purchase"], channel, value=value),
            emit(review, 5 + views, ET["review"], channel),
            emit(referral, 6 + views, ET["referral"], channel),
        ]
    )


class _Emitter:
    """Places the events of a session component at their slot after the session start."""

    def __init__(self, rng: np.random.Generator, sessions: Sessions) -> None:
        self._rng = rng
        self._sessions = sessions

    def __call__(
        self,
        mask: BoolArray,
        slot: int | IntArray,
        event_type: int | npt.NDArray[np.int16],
        channel: int | npt.NDArray[np.int16],
        action: int | npt.NDArray[np.int16] = NO_CODE,
        value: float | FloatArray = np.nan,
    ) -> EventArrays:
        """Events for the sessions in `mask`; array arguments are per session and get masked too."""

        def pick(x: int | float | npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
            return np.broadcast_to(np.asarray(x), mask.shape)[mask]

        rows = np.flatnonzero(mask).astype(np.int64)
        return self.rows(rows, pick(slot), pick(event_type), pick(channel), pick(action), pick(value))

    def rows(
        self,
        rows: IntArray,
        slot: npt.NDArray[np.generic],
        event_type: int | npt.NDArray[np.generic],
        channel: int | npt.NDArray[np.generic],
        action: int | npt.NDArray[np.generic] = NO_CODE,
        value: float | npt.NDArray[np.generic] = np.nan,
    ) -> EventArrays:
        """Events for explicit session rows (one event per entry) at explicit slots."""
        jitter = self._rng.integers(0, _SLOT - 10, rows.size)
        time = self._sessions.time[rows] + slot.astype(np.int64) * _SLOT + jitter
        return EventArrays.build(
            self._sessions.customer[rows],
            time,
            np.asarray(event_type, dtype=np.int16),
            np.asarray(channel, dtype=np.int16),
            np.asarray(action, dtype=np.int16),
            np.asarray(value, dtype=np.float64),
        )
