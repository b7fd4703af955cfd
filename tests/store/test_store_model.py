"""Hypothesis-generated sequences of appends (duplicates, late events), profile upserts, contact serves and
erasures keep each backend equal to a simple in-memory model of the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from nextbest.decisioning import ActionCatalog
from nextbest.store import Candidate, CustomerStore, event_keys, open_store
from nextbest.store.rows import check_events

MAX_EVENTS = 4
START = datetime(2026, 11, 1, tzinfo=UTC)
CUSTOMERS = ("c0", "c1", "c}2")  # a brace: the Redis hash tag must still hold the whole id
CATALOG = ActionCatalog.from_dict(
    {
        "actions": [
            {"id": "email_offer", "channel": "email", "limits": [{"max": 1, "days": 2}]},
            {"id": "call_back", "channel": "call_center"},
        ]
    }
)
RANKED = [Candidate("email_offer", 0.9), Candidate("call_back", 0.1)]
DAY = timedelta(days=1)

events = st.fixed_dictionaries(
    {
        "customer_id": st.sampled_from(CUSTOMERS),
        "timestamp": st.integers(0, 96).map(lambda h: (START + timedelta(hours=h)).isoformat()),
        "event_type": st.sampled_from(["page_view", "email_sent"]),
    },
    optional={
        "channel": st.sampled_from(["email", "web"]),
        "event_id": st.sampled_from(["e1", "e2", "e3"]),
        "decision_id": st.sampled_from(["d0", "d1"]),
        "value": st.sampled_from([1.0, 2.5]),
    },
)
profiles = st.fixed_dictionaries(
    {"customer_id": st.sampled_from(CUSTOMERS)},
    optional={
        "age": st.none() | st.sampled_from([30, 40.5]),
        "segment": st.none() | st.sampled_from(["a", "b"]),
    },
)


@dataclass
class Customer:
    """The model of one customer: events by key, profile, contacts by decision_id."""

    events: dict[int, dict[str, Any]] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    contacts: dict[str, tuple[datetime, str]] = field(default_factory=dict)


def as_stored(row: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    checked = check_events([row])
    return int(event_keys(checked.table)[0]), checked.table.to_pylist()[0]


class StoreModel(RuleBasedStateMachine):
    uri: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.store: CustomerStore = open_store(self.uri, max_events=MAX_EVENTS)
        self.model: dict[str, Customer] = {}

    def teardown(self) -> None:
        for customer in CUSTOMERS:
            self.store.erase(customer)
        self.store.close()

    @rule(batch=st.lists(events, min_size=1, max_size=6))
    def append(self, batch: list[dict[str, Any]]) -> None:
        result = self.store.append_events(batch)
        accepted = 0
        for row in batch:
            key, stored = as_stored(row)
            customer = self.model.setdefault(row["customer_id"], Customer())
            if key not in customer.events:
                customer.events[key] = stored
                accepted += 1
        for customer in self.model.values():  # retention, once the batch is in: the latest by time
            kept = sorted(customer.events, key=lambda k: (customer.events[k]["timestamp"], k))[-MAX_EVENTS:]
            customer.events = {k: customer.events[k] for k in kept}
        assert (result.accepted, result.duplicates, result.rejected) == (accepted, len(batch) - accepted, ())

    @rule(batch=st.lists(profiles, min_size=1, max_size=3))
    def upsert(self, batch: list[dict[str, Any]]) -> None:
        result = self.store.upsert_profiles(batch)
        assert (result.accepted, result.rejected) == (len(batch), ())
        for row in batch:
            customer = self.model.setdefault(row["customer_id"], Customer())
            for name, value in row.items():
                if name == "customer_id":
                    continue
                if value is None:
                    customer.profile.pop(name, None)
                else:
                    customer.profile[name] = float(value) if isinstance(value, int | float) else value

    @rule(
        customer_id=st.sampled_from(CUSTOMERS),
        hours=st.integers(0, 120),
        decision=st.sampled_from(["d0", "d1", "d2"]),
    )
    def serve(self, customer_id: str, hours: int, decision: str) -> None:
        at = START + timedelta(hours=hours)
        served = self.store.serve(customer_id, at, decision, RANKED, CATALOG)
        customer = self.model.setdefault(customer_id, Customer())
        if decision in customer.contacts:
            assert served.repeated
            assert served.action == customer.contacts[decision][1]
            return
        action = "call_back" if self._emails(customer, at) >= 1 else "email_offer"
        assert served.action == action
        customer.contacts[decision] = (at, action)
        kept = sorted(customer.contacts, key=lambda d: (customer.contacts[d][0], d))[-MAX_EVENTS:]
        customer.contacts = {d: customer.contacts[d] for d in kept}

    @staticmethod
    def _emails(customer: Customer, at: datetime) -> int:
        """Contacts on email in the two days up to `at`: served ones (every one is made: a later one
        counts at `at`), and sends not reporting one."""
        window = (at - 2 * DAY, at)
        served = [min(t, at) for t, action in customer.contacts.values() if action == "email_offer"]
        sends = [
            e["timestamp"]
            for e in customer.events.values()
            if e["event_type"] == "email_sent"
            and e["channel"] == "email"
            and e["decision_id"] not in customer.contacts
        ]
        return sum(window[0] < t <= window[1] for t in [*served, *sends])

    @rule(customer_id=st.sampled_from(CUSTOMERS))
    def erase(self, customer_id: str) -> None:
        erased = self.store.erase(customer_id)
        customer = self.model.pop(customer_id, Customer())
        assert (erased.events, erased.contacts, erased.profile) == (
            len(customer.events),
            len(customer.contacts),
            bool(customer.profile),
        )

    @invariant()
    def the_store_equals_the_model(self) -> None:
        for customer_id in CUSTOMERS:
            record = self.store.customer(customer_id)
            customer = self.model.get(customer_id, Customer())
            if record is None:
                assert not (customer.events)
                assert not (customer.profile)
                assert not (customer.contacts)
                continue
            expected = [
                customer.events[k]
                for k in sorted(customer.events, key=lambda k: (customer.events[k]["timestamp"], k))
            ]
            assert record.events == expected
            assert record.profile == customer.profile
            contacts = sorted((t, d, a) for d, (t, a) in customer.contacts.items())
            assert [(c.timestamp, c.decision_id, c.action) for c in record.contacts] == contacts


@pytest.mark.parametrize("max_examples", [40])
def test_the_store_behaves_as_its_model(store_uri: str, max_examples: int) -> None:
    StoreModel.uri = store_uri
    StoreModel.TestCase.settings = settings(
        max_examples=max_examples,
        stateful_step_count=12,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    StoreModel.TestCase().runTest()
