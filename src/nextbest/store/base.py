"""The customer store's interface: what the service and the `nextbest store` commands ask of a backend.

A store keeps, per customer, the events it was sent (each once, read back in event-time order), the
profile attributes (upserted), and the contacts it served (each with its decision_id and probability).
Backends differ in where they keep them (`nextbest.store.sqlite`, `nextbest.store.redis`); what they
accept, reject and return is decided here and in `nextbest.store.rows`, once.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nextbest.data.events import EventLog
from nextbest.data.schema import MICROS_PER_DAY, MICROS_PER_SECOND, UTC_US
from nextbest.decisioning.catalog import ActionCatalog
from nextbest.errors import NextbestError
from nextbest.journeys.requests import EPOCH
from nextbest.store.contacts import Candidate, Contact, Decision, Served
from nextbest.store.rows import (
    CheckedEvents,
    CheckedProfiles,
    Rejection,
    Rows,
    attribute_column,
    check_events,
    check_profiles,
    convert_attribute,
)

DEFAULT_MAX_EVENTS = 1000


class StoreError(NextbestError):
    """The store cannot be opened, reached or used; the message names its URI."""


class StoreUnavailableError(StoreError):
    """The store went away (or stayed locked) while in use: the operation did not happen; retry later."""


@dataclass(frozen=True)
class Retention:
    """How much a store keeps per customer: the last `max_events` events (and as many contacts), and,
    with `ttl_days`, nothing older than that many days."""

    max_events: int = DEFAULT_MAX_EVENTS
    ttl_days: float | None = None

    def __post_init__(self) -> None:
        if self.max_events < 1:
            raise StoreError(f"max_events must be at least 1, got {self.max_events}")
        if self.ttl_days is not None and not self.ttl_days > 0:
            raise StoreError(f"ttl_days must be a positive number of days, got {self.ttl_days}")

    def oldest(self) -> int | None:
        """The earliest time (µs since the epoch) still kept, or None without a TTL."""
        if self.ttl_days is None:
            return None
        return int(time.time() * MICROS_PER_SECOND) - round(self.ttl_days * MICROS_PER_DAY)


@dataclass(frozen=True)
class AppendResult:
    """What became of a batch of events: stored, already there, or rejected (named)."""

    accepted: int
    duplicates: int
    rejected: tuple[Rejection, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": [r.to_dict() for r in self.rejected],
        }


@dataclass(frozen=True)
class UpsertResult:
    """What became of a batch of profile rows: upserted, or rejected (named)."""

    accepted: int
    rejected: tuple[Rejection, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "rejected": [r.to_dict() for r in self.rejected]}


@dataclass(frozen=True)
class CustomerRecord:
    """Everything stored about one customer: events in event-time order (`EVENT_COLUMNS`, timestamps as
    datetimes, absent fields as None), the profile, and the contacts served in time order."""

    customer_id: str
    profile: dict[str, Any]
    events: list[dict[str, Any]]
    contacts: list[Contact]

    def to_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "profile": self.profile,
            "events": self.events,
            "contacts": [c.to_dict() for c in self.contacts],
        }


@dataclass(frozen=True)
class Erased:
    """How much an erasure removed."""

    events: int
    contacts: int
    profile: bool

    @property
    def anything(self) -> bool:
        return bool(self.events or self.contacts or self.profile)

    def to_dict(self) -> dict[str, Any]:
        return {"events": self.events, "contacts": self.contacts, "profile": self.profile}


@dataclass(frozen=True)
class Histories:
    """Customers' stored state as the contract tables scoring reads. Served contacts are not events
    here (the model never saw them as such); they count against contact limits
    (`nextbest.store.contacts.contact_reasons`, and atomically in `CustomerStore.serve`).

    Attributes:
        events: normalised events (`EVENT_COLUMNS`), by customer then time.
        profiles: `customer_id` and the attributes, one row per customer with a profile.
        contacts: each customer's served contacts up to its as_of (inclusive), in time order; customers
            without any are left out.
    """

    events: pa.Table
    profiles: pa.Table = field(default_factory=lambda: pa.table({"customer_id": pa.array([], pa.string())}))
    contacts: Mapping[str, list[Contact]] = field(default_factory=dict)

    def log(self) -> EventLog:
        """The events as the journeys and the encoder read them."""
        return EventLog.from_normalised(self.events) if self.events.num_rows else EventLog.empty()


class CustomerStore(ABC):
    """A customer store (open one with `nextbest.store.open_store`). Safe to share between threads."""

    def __init__(self, uri: str, retention: Retention) -> None:
        self.uri = uri
        self.retention = retention

    def append_events(self, rows: Rows) -> AppendResult:
        """Stores a batch of events, each checked against the data contract (see
        `nextbest.store.rows`); an event stored before (same `event_id`, or the same in every field) is a
        duplicate. Late and out-of-order events are welcome; events older than the TTL are rejected.
        Returns once the accepted events are durable.

        Raises:
            DataContractError: a table column that cannot hold its contract type at all.
            StoreUnavailableError: the store cannot be reached; nothing was stored.
        """
        checked = check_events(rows)
        checked, expired = self._unexpired(checked)
        if checked.table.num_rows == 0:
            return AppendResult(0, 0, _merged(checked.rejected, expired))
        accepted = self._append(checked)
        return AppendResult(accepted, checked.table.num_rows - accepted, _merged(checked.rejected, expired))

    def upsert_profiles(self, rows: Rows) -> UpsertResult:
        """Sets the attributes each row gives on its customer's profile (null removes one). An attribute
        keeps the kind it was first stored with; a row that gives it another is rejected, named."""
        checked = check_profiles(rows)
        if not checked.index:
            return UpsertResult(0, checked.rejected)
        accepted, rejected = self._upsert(checked)
        return UpsertResult(accepted, _merged(checked.rejected, rejected))

    @abstractmethod
    def customer(self, customer_id: str) -> CustomerRecord | None:
        """Everything stored about `customer_id`; None when nothing is."""

    @abstractmethod
    def histories(self, customer_ids: Sequence[str], as_of: Sequence[int] | np.ndarray) -> Histories:
        """The stored events strictly before each customer's `as_of` (µs since the epoch), the contacts
        served up to it (inclusive) and the profiles of `customer_ids`. A customer listed twice gets the
        history before the later as_of."""

    def serve(
        self,
        customer_id: str,
        at: datetime,
        decision_id: str,
        candidates: Sequence[Candidate],
        catalog: ActionCatalog,
    ) -> Served:
        """One decision's `serve_many`."""
        return self.serve_many([Decision(customer_id, at, decision_id, tuple(candidates))], catalog)[0]

    @abstractmethod
    def serve_many(self, decisions: Sequence[Decision], catalog: ActionCatalog) -> list[Served]:
        """Serves, per decision, the first of its ranked candidates whose contact policy in `catalog`
        (limits, cool-down, caps) holds against the customer's stored events and contacts up to the
        decision's instant, and records it as a contact, in one atomic step per decision: concurrent
        calls, from any thread, process or machine, never serve past a limit, and a customer decided
        twice in `decisions` has its first contact counted against its second. A `decision_id` served
        before gets its earlier answer again.

        Raises:
            UnknownActionError: a candidate that the catalog does not list.
        """

    @abstractmethod
    def erase(self, customer_id: str) -> Erased:
        """Removes everything stored about `customer_id`: events, profile and contacts."""

    @abstractmethod
    def iter_events(self, batch_rows: int = 1 << 18) -> Iterator[pa.Table]:
        """Every stored event (`EVENT_COLUMNS`), in batches of about `batch_rows` rows."""

    @abstractmethod
    def profiles_table(self) -> pa.Table:
        """Every stored profile: `customer_id` and the attributes, typed by kind."""

    @abstractmethod
    def contacts_table(self) -> pa.Table:
        """Every served contact as a decisions table: customer_id, timestamp, action, propensity (the
        probability it was served with), channel, decision_id."""

    def local_files(self) -> tuple[Path, ...]:
        """The files on this machine that the store lives in (none for a server's)."""
        return ()

    @abstractmethod
    def close(self) -> None:
        """Releases the store's connections."""

    @abstractmethod
    def _append(self, checked: CheckedEvents) -> int:
        """Stores the checked events not stored yet; returns how many were new."""

    @abstractmethod
    def _upsert(self, checked: CheckedProfiles) -> tuple[int, tuple[Rejection, ...]]:
        """Upserts the checked profile rows (see `reconcile_kinds`); returns (accepted, rejected)."""

    def _unexpired(self, checked: CheckedEvents) -> tuple[CheckedEvents, tuple[Rejection, ...]]:
        oldest = self.retention.oldest()
        if oldest is None or checked.table.num_rows == 0:
            return checked, ()
        micros = np.asarray(checked.table.column("timestamp").cast(pa.int64()))
        old = micros < oldest
        if not old.any():
            return checked, ()
        problem = f"older than the store keeps (ttl_days={self.retention.ttl_days:g})"
        expired = tuple(Rejection(int(i), "timestamp", problem) for i in checked.index[old])
        keep = pa.array(~old)
        return CheckedEvents(
            checked.table.filter(keep), checked.index[~old], checked.keys[~old], checked.rejected
        ), expired

    def __enter__(self) -> CustomerStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def reconcile_kinds(
    checked: CheckedProfiles, stored: Mapping[str, str]
) -> tuple[list[tuple[int, str, dict[str, Any]]], dict[str, str], tuple[Rejection, ...]]:
    """The rows to upsert as (batch index, customer, attributes), the kinds new to the store, and the
    rejections of rows that give an attribute another kind than stored (or than an earlier row)."""
    kinds = {**checked.kinds, **stored}
    rows, rejected = [], []
    for index, customer_id, attributes in zip(
        checked.index, checked.customer_ids, checked.attributes, strict=True
    ):
        converted, problems = {}, []
        for name, (found, value) in attributes.items():
            converted[name], problem = convert_attribute(found, value, kinds.get(name, found or "text"))
            if problem is not None:
                problems.append(Rejection(index, name, problem))
        if problems:
            rejected += problems
        else:
            rows.append((index, customer_id, converted))
    new = {name: kind for name, kind in checked.kinds.items() if name not in stored}
    return rows, new, tuple(rejected)


def latest_as_of(customer_ids: Sequence[str], as_of: Sequence[int] | np.ndarray) -> dict[str, int]:
    """Each distinct customer's latest as_of (see `CustomerStore.histories`)."""
    latest: dict[str, int] = {}
    for customer_id, until in zip(customer_ids, np.asarray(as_of, dtype=np.int64).tolist(), strict=True):
        latest[customer_id] = max(until, latest.get(customer_id, until))
    return latest


def merged_profile(stored: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """`stored` with `update` on top; a None in `update` removes the attribute."""
    merged = {**stored, **update}
    return {name: value for name, value in merged.items() if value is not None}


def instant(micros: int) -> datetime:
    """µs since the epoch as an aware UTC datetime."""
    return EPOCH + timedelta(microseconds=micros)


def by_customer_and_time(events: pa.Table, keys: np.ndarray) -> pa.Table:
    """`events` ordered by customer, then time, then key (so equal times read back in one order)."""
    if events.num_rows < 2:
        return events
    micros = np.asarray(events.column("timestamp").cast(pa.int64()))
    ids = events.column("customer_id").combine_chunks().dictionary_encode()
    rank = np.argsort(np.asarray(pc.sort_indices(ids.dictionary)))
    order = np.lexsort((keys, micros, rank[np.asarray(ids.indices)]))
    return events.take(pa.array(order))


def profiles_table(
    customer_ids: Sequence[str], profiles: Sequence[Mapping[str, Any]], kinds: Mapping[str, str]
) -> pa.Table:
    """Profiles as a customers table: one column per attribute, typed by its stored kind."""
    names = sorted({name for profile in profiles for name in profile})
    columns = {"customer_id": pa.array(customer_ids, pa.string())}
    for name in names:
        columns[name] = attribute_column([p.get(name) for p in profiles], kinds.get(name, "text"))
    return pa.table(columns)


def contact_rows(customer_ids: Sequence[str], contacts: Sequence[Contact]) -> pa.Table:
    """Contacts as a decisions table (see `CustomerStore.contacts_table`)."""
    return pa.table(
        {
            "customer_id": pa.array(customer_ids, pa.string()),
            "timestamp": pa.array([c.timestamp for c in contacts], UTC_US),
            "action": pa.array([c.action for c in contacts], pa.string()),
            "propensity": pa.array([c.probability for c in contacts], pa.float64()),
            "channel": pa.array([c.channel for c in contacts], pa.string()),
            "decision_id": pa.array([c.decision_id for c in contacts], pa.string()),
        }
    )


def _merged(*groups: tuple[Rejection, ...]) -> tuple[Rejection, ...]:
    return tuple(sorted((r for group in groups for r in group), key=lambda r: (r.index, r.field or "")))
