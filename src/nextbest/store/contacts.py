"""Which of a decision's ranked candidates the contact policy lets the store serve, given what it holds.

The backends call `choose` inside their atomic step, on the customers' stored events and contacts. What
counts against a limit, a cool-down or a cap is the decisioning module's rule (`contact_suppressions`
over `history_values`), read on a log of the customers where every served contact is an event of type
`SERVED`, counted as a contact. An event that carries a stored contact's `decision_id` is the caller's
own report of that contact, so the contact stands for it and it is not counted again.

At the atomic serve, every stored contact is a contact made, even one stamped after the decision's
instant: concurrent calls read the clock before they rank, so a call can reach the serve after another
that read the clock later and served first. Counting that contact at the decision's instant keeps any
number of concurrent calls within a limit. Ranking reads the history as of its instant.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from nextbest.data.events import EventLog
from nextbest.data.schema import UTC_US
from nextbest.decisioning.catalog import ActionCatalog, CatalogAction
from nextbest.decisioning.history import history_values
from nextbest.decisioning.policy import contact_queries, contact_suppressions
from nextbest.errors import NextbestError
from nextbest.journeys.requests import epoch_micros

# The event type of a served contact in the history that limits are read on.
SERVED = "nextbest:served"


@dataclass(frozen=True)
class Candidate:
    """A ranked action the caller would serve, and the probability with which its policy chose it."""

    action: str
    probability: float | None = None


@dataclass(frozen=True)
class Contact:
    """A served action, as the store records it."""

    decision_id: str
    timestamp: datetime
    action: str
    channel: str | None
    probability: float | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Served:
    """What `CustomerStore.serve` did for a decision.

    Attributes:
        contact: the recorded contact; None when every candidate was held back.
        suppressed: (action, reason) of each candidate passed over before the served one, best first.
        repeated: the decision was served before; `contact` is that earlier answer, unchanged.
    """

    decision_id: str
    contact: Contact | None
    suppressed: tuple[tuple[str, str], ...] = ()
    repeated: bool = False

    @property
    def action(self) -> str | None:
        return None if self.contact is None else self.contact.action


class UnknownActionError(NextbestError):
    """A candidate names an action that the catalog does not have."""


def catalog_actions(catalog: ActionCatalog, candidates: Sequence[Candidate]) -> list[CatalogAction]:
    """Each candidate's catalog entry.

    Raises:
        UnknownActionError: a candidate that the catalog does not list.
    """
    by_id = {action.id: action for action in catalog.actions}
    unknown = [c.action for c in candidates if c.action not in by_id]
    if unknown:
        raise UnknownActionError(f"candidates not in the catalog {catalog.source}: {', '.join(unknown)}")
    return [by_id[c.action] for c in candidates]


@dataclass(frozen=True)
class Decision:
    """A decision for the store to serve: its customer, instant, id and ranked candidates, best first."""

    customer_id: str
    at: datetime
    decision_id: str
    candidates: tuple[Candidate, ...]


def choose(
    events: pa.Table,
    contacts: Mapping[str, Sequence[Contact]],
    decisions: Sequence[Decision],
    catalog: ActionCatalog,
) -> list[tuple[int | None, tuple[tuple[str, str], ...]]]:
    """Per decision, the index of its first candidate whose contact policy holds at its instant, or None,
    and the (action, reason) of each candidate passed over. One call reads every decision's customer at
    once; a customer decided twice must be decided again after the first is recorded.

    Args:
        events: the customers' stored events (`customer_id`, `timestamp`, `event_type`, `channel`,
            `action`, `decision_id`).
        contacts: the customers' stored contacts, all of them: one stamped after a decision's instant
            counts as made at that instant. Contacts and events at a decision's instant itself count.
        decisions: of distinct customers.

    Raises:
        UnknownActionError: a candidate that the catalog does not list.
        ValueError: two decisions for one customer.
    """
    customer_ids = [d.customer_id for d in decisions]
    if len(set(customer_ids)) < len(customer_ids):
        raise ValueError("choose decides each customer once per call; serve a customer's decisions in turns")
    at = np.array([epoch_micros(d.at) for d in decisions], dtype=np.int64)
    reasons = contact_reasons(events, contacts, customer_ids, at, catalog, every_contact_made=True)
    column = {action.id: k for k, action in enumerate(catalog.actions)}
    chosen = []
    for decision, held in zip(decisions, reasons, strict=True):
        passed_over: list[tuple[str, str]] = []
        first = None
        for i, action in enumerate(catalog_actions(catalog, decision.candidates)):
            reason = held[column[action.id]]
            if reason is None:
                first = i
                break
            passed_over.append((action.id, reason))
        chosen.append((first, tuple(passed_over)))
    return chosen


def contact_reasons(
    events: pa.Table,
    contacts: Mapping[str, Sequence[Contact]],
    customer_ids: Sequence[str],
    at: np.ndarray,
    catalog: ActionCatalog,
    *,
    every_contact_made: bool = False,
) -> np.ndarray:
    """[N, K] objects: per request (`customer_ids`, `at` in µs since the epoch) and catalog action, the
    first rule of the action's contact policy that the customer's stored `events` and `contacts` up to
    `at` (inclusive) break, or None. With `every_contact_made` (the atomic serve; one request per
    customer), a contact after `at` counts as made at `at`."""
    counted = dataclasses.replace(catalog, contact_events=(*catalog.contact_events, SERVED))
    queries = set().union(*(contact_queries(counted, action) for action in catalog.actions))
    made_by = dict(zip(customer_ids, np.asarray(at).tolist(), strict=True)) if every_contact_made else {}
    log = _limit_log(events, contacts, made_by)
    customers = log.index_of(pa.array(customer_ids, pa.string()))
    history = history_values(log, customers, np.asarray(at, dtype=np.int64) + 1, queries)
    held = np.full((len(customer_ids), len(catalog.actions)), None, dtype=object)
    for k, action in enumerate(catalog.actions):
        unblocked = np.ones(len(customer_ids), dtype=bool)  # by the action's earlier rules
        for blocked, reason in contact_suppressions(counted, action, history):
            held[blocked & unblocked, k] = reason
            unblocked &= ~blocked
    return held


def _limit_log(
    events: pa.Table, contacts: Mapping[str, Sequence[Contact]], made_by: Mapping[str, int]
) -> EventLog:
    """The customers' events and served contacts as the log that limits are read on; a customer's
    contacts after its `made_by` instant (µs) are moved to it."""
    owned = [(customer, c) for customer, customer_contacts in contacts.items() for c in customer_contacts]
    owners, served = [customer for customer, _ in owned], [c for _, c in owned]
    decisions = {c.decision_id for c in served}
    reported = np.array([d is not None and d in decisions for d in events.column("decision_id").to_pylist()])
    events = events.filter(pa.array(~reported, pa.bool_())) if reported.any() else events
    times = [
        *np.asarray(events.column("timestamp").cast(pa.int64())).tolist(),
        *(min(epoch_micros(c.timestamp), made_by.get(customer, _NEVER)) for customer, c in owned),
    ]
    table = pa.table(
        {
            "customer_id": [*events.column("customer_id").to_pylist(), *owners],
            "timestamp": pa.array(times, pa.int64()).cast(UTC_US),
            "event_type": [*events.column("event_type").to_pylist(), *([SERVED] * len(served))],
            "channel": [*events.column("channel").to_pylist(), *(c.channel for c in served)],
            "action": [*events.column("action").to_pylist(), *(c.action for c in served)],
            # Every row is one contact or event: none may pass for another's duplicate.
            "row": np.arange(len(times)),
        }
    )
    return EventLog.from_normalised(table.cast(_LOG_SCHEMA))


_NEVER = np.iinfo(np.int64).max

_LOG_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("timestamp", UTC_US),
        ("event_type", pa.string()),
        ("channel", pa.string()),
        ("action", pa.string()),
        ("row", pa.int64()),
    ]
)
