"""Which of a decision's ranked candidates the contact policy lets the store serve, given what it holds.

The backends call `choose` inside their atomic step, on the customer's stored events and contacts. What
counts against a limit, a cool-down or a cap is the decisioning module's rule (`contact_suppressions`
over `history_values`), read on a one-customer log where every served contact is an event of the type
`SERVED`, counted as a contact. An event that carries a stored contact's `decision_id` is the caller's
own report of that contact, so the contact stands for it and it is not counted again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
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


def choose(
    events: pa.Table,
    contacts: Sequence[Contact],
    at: int,
    candidates: Sequence[Candidate],
    catalog: ActionCatalog,
) -> tuple[int | None, tuple[tuple[str, str], ...]]:
    """The index of the first candidate whose contact policy holds at `at` (µs since the epoch), or
    None, and the (action, reason) of each candidate passed over.

    Args:
        events: the customer's stored events (`timestamp`, `event_type`, `channel`, `action`,
            `decision_id`).
        contacts: the customer's stored contacts. Contacts and events at `at` itself count: a contact
            served in the same instant is a contact already made.
    """
    actions = catalog_actions(catalog, candidates)
    passed_over: list[tuple[str, str]] = []
    reasons = contact_reasons(events, contacts, at, actions, catalog)
    for i, (action, reason) in enumerate(zip(actions, reasons, strict=True)):
        if reason is None:
            return i, tuple(passed_over)
        passed_over.append((action.id, reason))
    return None, tuple(passed_over)


def contact_reasons(
    events: pa.Table,
    contacts: Sequence[Contact],
    at: int,
    actions: Sequence[CatalogAction],
    catalog: ActionCatalog,
) -> list[str | None]:
    """Per action of `actions`, the first rule of its contact policy that the customer's stored `events`
    and `contacts` up to `at` (µs since the epoch, inclusive; see `choose`) break, or None."""
    counted = dataclasses.replace(catalog, contact_events=(*catalog.contact_events, SERVED))
    queries = set().union(*(contact_queries(counted, action) for action in actions))
    log = _limit_log(events, contacts)
    customer = np.array([0 if log.num_customers else -1])
    history = history_values(log, customer, np.array([at + 1]), queries)
    return [
        next(
            (reason for blocked, reason in contact_suppressions(counted, action, history) if blocked[0]), None
        )
        for action in actions
    ]


def _limit_log(events: pa.Table, contacts: Sequence[Contact]) -> EventLog:
    """One customer's events and served contacts as the log that limits are read on."""
    served = {c.decision_id for c in contacts}
    decisions = events.column("decision_id").to_pylist()
    reported = np.array([d is not None and d in served for d in decisions], dtype=bool)
    events = events.filter(pa.array(~reported)) if reported.any() else events
    times = [
        *np.asarray(events.column("timestamp").cast(pa.int64())).tolist(),
        *(_micros(c) for c in contacts),
    ]
    table = pa.table(
        {
            "customer_id": pa.array(["customer"] * len(times), pa.string()),
            "timestamp": pa.array(times, pa.int64()).cast(UTC_US),
            "event_type": [*events.column("event_type").to_pylist(), *([SERVED] * len(contacts))],
            "channel": [*events.column("channel").to_pylist(), *(c.channel for c in contacts)],
            "action": [*events.column("action").to_pylist(), *(c.action for c in contacts)],
            # Every row is one contact or event: none may pass for another's duplicate.
            "row": np.arange(len(times)),
        }
    )
    return EventLog.from_normalised(table.cast(_LOG_SCHEMA))


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


def _micros(contact: Contact) -> int:
    return int(pa.scalar(contact.timestamp, UTC_US).cast(pa.int64()).as_py())
