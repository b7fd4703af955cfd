"""Outcome labels at a cutoff: from a point-in-time label frame, or from rules over later events.

Labels are float32 arrays with NaN where the outcome is unknown (for example the observation window
ends before the horizon and nothing decided the outcome yet); the model masks those out of its loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nextbest.data.events import EventLog
from nextbest.data.schema import MICROS_PER_DAY
from nextbest.data.text import equals_mask
from nextbest.journeys.windows import customer_segments, segmented_searchsorted

OUTCOMES = ("conversion", "churn")
# Touches the business initiates: they show nothing about whether the customer is still around.
BUSINESS_TOUCHES = ("email_sent", "push_sent", "sms_sent", "offer_shown", "ad_impression", "outbound_call")


@dataclass(frozen=True)
class LabelRules:
    """How outcomes are read off the events that follow a cutoff `as_of`.

    Attributes:
        conversion_event: the event type that counts as a conversion.
        conversion_horizon_days: conversion = a `conversion_event` in `[as_of, as_of + H days)`.
        churn_inactivity_days: churn = no customer activity in `[as_of, as_of + D days)` ...
        churn_event: ... or, when set, a `churn_event` (e.g. "cancellation") in that window instead.
        not_activity: event types that do not count as activity: the business's own touches (the
            decision's e-mail at `as_of` must not make its recipient look active).
    """

    conversion_event: str = "purchase"
    conversion_horizon_days: float = 30.0
    churn_inactivity_days: float = 60.0
    churn_event: str | None = None
    not_activity: tuple[str, ...] = BUSINESS_TOUCHES


def labels_from_rules(
    log: EventLog,
    customer: np.ndarray,
    as_of: np.ndarray,
    rules: LabelRules,
    observed_until: int | None = None,
) -> dict[str, np.ndarray]:
    """Conversion and churn labels for requests (customer index into `log`, as_of in µs).

    Args:
        observed_until: the end of the observation (µs, exclusive); defaults to just after the last event.
            Outcomes whose window runs past it stay unknown (NaN) unless already decided.
    """
    until = int(log.timestamps.max()) + 1 if observed_until is None and log.num_events else observed_until
    until = 0 if until is None else until
    conversion_horizon = as_of + int(rules.conversion_horizon_days * MICROS_PER_DAY)
    churn_horizon = as_of + int(rules.churn_inactivity_days * MICROS_PER_DAY)
    is_conversion = _is_event_type(log, rules.conversion_event)
    conversions = _count_between(log, is_conversion, customer, as_of, conversion_horizon)
    conversion = _decided(conversions > 0, conversion_horizon <= until)
    if rules.churn_event is None:
        is_activity = ~_is_event_type(log, *rules.not_activity)
        active = _count_between(log, is_activity, customer, as_of, churn_horizon) > 0
        churn = _decided(~active, churn_horizon <= until, known_early=active, early_value=0.0)
    else:
        is_churn = _is_event_type(log, rules.churn_event)
        churned = _count_between(log, is_churn, customer, as_of, churn_horizon) > 0
        churn = _decided(churned, churn_horizon <= until)
    return {"conversion": conversion, "churn": churn}


def labels_from_frame(labels: pa.Table) -> dict[str, np.ndarray]:
    """The outcome columns of a normalised label frame as float32 arrays (NaN where missing)."""
    result = {}
    for outcome in OUTCOMES:
        if outcome in labels.column_names:
            column = pc.cast(labels.column(outcome), pa.float32()).to_numpy(zero_copy_only=False)
            result[outcome] = np.asarray(column, dtype=np.float32)
        else:
            result[outcome] = np.full(labels.num_rows, np.nan, dtype=np.float32)
    return result


def _is_event_type(log: EventLog, *event_types: str) -> np.ndarray:
    """Boolean mask over the log's sorted rows: the event is of one of `event_types`."""
    return log.sorted_values(equals_mask(log.source.column("event_type"), *event_types))


def _count_between(
    log: EventLog, selected: np.ndarray, customer: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Selected events (a mask over sorted rows) of each request's customer in [lo, hi)."""
    timestamps = log.timestamps[selected]
    counts = np.bincount(log.customer_index[selected], minlength=log.num_customers)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    first, last = customer_segments(offsets, customer)
    start = segmented_searchsorted(timestamps, first, last, lo, side="left")
    stop = segmented_searchsorted(timestamps, first, last, hi, side="left")
    return stop - start


def _decided(
    outcome: np.ndarray,
    window_observed: np.ndarray,
    known_early: np.ndarray | None = None,
    early_value: float = 1.0,
) -> np.ndarray:
    """Outcome as float32, NaN where the window is cut off by the observation end.

    An outcome is still known when the evidence that decides it already happened: a conversion seen
    inside a cut-off window is a conversion; activity seen inside a cut-off churn window is not churn.
    """
    labels = outcome.astype(np.float32)
    decided_early = outcome if known_early is None else known_early
    labels[~window_observed & ~decided_early] = np.nan
    if known_early is not None:
        labels[~window_observed & known_early] = early_value
    return labels
