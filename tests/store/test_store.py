"""The customer store, one suite for both backends (SQLite file, real redis-server): ingestion checked row
by row, idempotence, event-time order, profiles, histories for scoring, the atomic contact check,
erasure, retention, and clear errors for a store that cannot be opened."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from nextbest.decisioning import ActionCatalog
from nextbest.journeys.requests import epoch_micros
from nextbest.store import (
    Candidate,
    CustomerStore,
    Decision,
    StoreError,
    StoreUnavailableError,
    UnknownActionError,
    open_store,
)
from tests.store.conftest import LocalCluster

NOW = datetime(2026, 11, 20, 10, tzinfo=UTC)
CATALOG = ActionCatalog.from_dict(
    {
        "actions": [
            {"id": "email_offer", "channel": "email", "limits": [{"max": 1, "days": 7}]},
            {"id": "sms_offer", "channel": "sms", "cooldown_days": 3},
            {"id": "call_back", "channel": "call_center"},
        ]
    }
)
RANKED = [Candidate("email_offer", 0.8), Candidate("sms_offer", 0.15), Candidate("call_back", 0.05)]


def event(
    customer: str, hours_ago: float, event_type: str = "page_view", **fields: object
) -> dict[str, object]:
    at = NOW - timedelta(hours=hours_ago)
    return {"customer_id": customer, "timestamp": at.isoformat(), "event_type": event_type, **fields}


def stored_times(store: CustomerStore, customer: str) -> list[datetime]:
    record = store.customer(customer)
    assert record is not None
    return [e["timestamp"] for e in record.events]


def test_events_are_stored_once_and_read_in_event_time_order(store: CustomerStore) -> None:
    first = store.append_events([event("c1", 1), event("c1", 30, "email_open", channel="email")])
    late = store.append_events(
        [
            event("c1", 48, event_id="e-9"),  # late and out of order
            event("c1", 1),  # identical in every field: the same event again
            event("c1", 5, event_id="e-9"),  # the same event_id: the same event, whatever else changed
            event("c2", 2, "purchase", value=12.5),
        ]
    )
    assert (first.accepted, first.duplicates, first.rejected) == (2, 0, ())
    assert (late.accepted, late.duplicates, late.rejected) == (2, 2, ())
    times = stored_times(store, "c1")
    assert times == sorted(times)
    assert len(times) == 3
    assert times[0] == NOW - timedelta(hours=48)


def test_each_bad_event_is_named_by_index_and_field_while_the_good_are_stored(store: CustomerStore) -> None:
    result = store.append_events(
        [
            event("c1", 1),
            {"customer_id": "c1", "timestamp": "yesterday", "event_type": "page_view"},
            {"customer_id": "", "timestamp": NOW.isoformat(), "event_type": "page_view"},
            event("c1", 2, value=float("nan")),
            event("c1", 3, event_type=["a", "list"]),
            {"customer_id": "c1", "timestamp": NOW.isoformat()},
            event("c1", 4, value="12.5"),  # a number as text reads as a file's CSV cell does
        ]
    )
    named = {(r.index, r.field) for r in result.rejected}
    assert named == {(1, "timestamp"), (2, "customer_id"), (3, "value"), (4, "event_type"), (5, "event_type")}
    assert all(r.problem for r in result.rejected)
    assert result.accepted == 2
    assert len(stored_times(store, "c1")) == 2


def test_profiles_upsert_attributes_and_keep_each_attribute_s_kind(store: CustomerStore) -> None:
    first = store.upsert_profiles([{"customer_id": "c1", "segment": "gold", "age": 41, "opt_in": True}])
    second = store.upsert_profiles(
        [
            {"customer_id": "c1", "segment": None, "age": 42},  # null removes an attribute
            {"customer_id": "c2", "age": "old"},  # another kind than stored
            {"customer_id": "c3", "age": float("inf")},
            {"customer_id": None, "age": 1},
        ]
    )
    assert first.accepted == 1
    assert second.accepted == 1
    assert {(r.index, r.field) for r in second.rejected} == {(1, "age"), (2, "age"), (3, "customer_id")}
    record = store.customer("c1")
    assert record is not None
    assert record.profile == {"age": 42.0, "opt_in": True}
    assert store.customer("c2") is None


def test_histories_are_the_events_before_each_as_of_as_scoring_reads_them(store: CustomerStore) -> None:
    store.append_events([event("c1", h) for h in (1, 5, 50)] + [event("c2", 3, "purchase", value=5.0)])
    store.upsert_profiles([{"customer_id": "c1", "segment": "gold"}])
    as_of = [epoch_micros(NOW - timedelta(hours=4)), epoch_micros(NOW), epoch_micros(NOW)]
    histories = store.histories(["c1", "c2", "nobody"], np.array(as_of))
    log = histories.log()
    assert log.customer_ids.to_pylist() == ["c1", "c2"]
    assert np.diff(log.offsets).tolist() == [2, 1]
    assert histories.events.column("value").to_pylist()[-1] == 5.0
    assert histories.profiles.to_pylist() == [{"customer_id": "c1", "segment": "gold"}]
    empty = store.histories(["nobody"], np.array([epoch_micros(NOW)]))
    assert empty.log().num_events == 0


def test_serving_records_the_contact_and_the_limit_holds(store: CustomerStore) -> None:
    first = store.serve("c1", NOW, "d-1", RANKED, CATALOG)
    second = store.serve("c1", NOW + timedelta(hours=1), "d-2", RANKED, CATALOG)
    again = store.serve("c1", NOW, "d-1", RANKED, CATALOG)
    assert first.action == "email_offer"
    assert first.contact is not None
    assert first.contact.probability == 0.8
    assert second.action == "sms_offer"
    assert second.suppressed == (("email_offer", "contact limit: at most 1 contact on email per 7 days"),)
    assert again.repeated
    assert again.action == "email_offer"
    third = store.serve("c1", NOW + timedelta(hours=2), "d-3", RANKED, CATALOG)
    assert third.action == "call_back"  # sms_offer is cooling down
    assert [r[0] for r in third.suppressed] == ["email_offer", "sms_offer"]
    later = store.serve("c1", NOW + timedelta(days=8), "d-4", RANKED, CATALOG)
    assert later.action == "email_offer"
    record = store.customer("c1")
    assert record is not None
    assert [(c.decision_id, c.action) for c in record.contacts] == [
        ("d-1", "email_offer"),
        ("d-2", "sms_offer"),
        ("d-3", "call_back"),
        ("d-4", "email_offer"),
    ]


def test_a_contact_served_for_a_later_instant_counts_against_an_earlier_decision(
    store: CustomerStore,
) -> None:
    """Two concurrent calls read the clock before ranking; the later-stamped one serves first. The
    earlier-stamped one must still see that contact as made, or both would serve past the limit."""
    later = store.serve("c1", NOW + timedelta(seconds=1), "d-late", RANKED, CATALOG)
    earlier = store.serve("c1", NOW, "d-early", RANKED, CATALOG)
    assert later.action == "email_offer"
    assert earlier.action == "sms_offer"
    assert [r[0] for r in earlier.suppressed] == ["email_offer"]


def test_a_batch_serves_each_customer_in_order_counting_its_earlier_decisions(store: CustomerStore) -> None:
    """One serve_many with two decisions for c1 and one for c2 (and c1's first again, repeated): c1's
    second decision sees its first contact, as two separate calls would."""
    ranked = tuple(RANKED)
    decisions = [
        Decision("c1", NOW, "d-1", ranked),
        Decision("c2", NOW, "d-2", ranked),
        Decision("c1", NOW + timedelta(hours=1), "d-3", ranked),
        Decision("c1", NOW, "d-1", ranked),
    ]
    served = store.serve_many(decisions, CATALOG)
    assert [s.decision_id for s in served] == ["d-1", "d-2", "d-3", "d-1"]
    assert [s.action for s in served] == ["email_offer", "email_offer", "sms_offer", "email_offer"]
    assert [s.repeated for s in served] == [False, False, False, True]
    record = store.customer("c1")
    assert record is not None
    assert [c.decision_id for c in record.contacts] == ["d-1", "d-3"]


def test_a_send_event_carrying_the_decision_id_is_not_counted_twice(store: CustomerStore) -> None:
    twice = ActionCatalog.from_dict(
        {"actions": [{"id": "email_offer", "channel": "email", "limits": [{"max": 2, "days": 7}]}]}
    )
    ranked = [Candidate("email_offer")]
    assert store.serve("c1", NOW, "d-1", ranked, twice).action == "email_offer"
    sent = event("c1", -0.5, "email_sent", channel="email", action="email_offer", decision_id="d-1")
    store.append_events([sent])
    assert store.serve("c1", NOW + timedelta(hours=1), "d-2", ranked, twice).action == "email_offer"
    # Two contacts now (d-1 with its send, d-2): the limit holds.
    assert store.serve("c1", NOW + timedelta(hours=2), "d-3", ranked, twice).action is None
    # A send the store did not serve counts like any contact.
    store.append_events(
        [event("c2", 1, "email_sent", channel="email"), event("c2", 2, "email_sent", channel="email")]
    )
    assert store.serve("c2", NOW, "d-4", ranked, twice).action is None


def test_a_candidate_outside_the_catalog_is_refused(store: CustomerStore) -> None:
    with pytest.raises(UnknownActionError, match="teleport"):
        store.serve("c1", NOW, "d-1", [Candidate("teleport")], CATALOG)


def test_erasure_removes_everything_and_says_how_much(store: CustomerStore) -> None:
    store.append_events([event("c1", h) for h in (1, 2, 3)] + [event("c2", 1)])
    store.upsert_profiles([{"customer_id": "c1", "segment": "gold"}])
    store.serve("c1", NOW, "d-1", RANKED, CATALOG)
    erased = store.erase("c1")
    assert (erased.events, erased.contacts, erased.profile) == (3, 1, True)
    assert store.customer("c1") is None
    assert store.erase("c1").anything is False
    assert store.customer("c2") is not None
    assert store.contacts_table().num_rows == 0


def test_retention_keeps_the_latest_events_per_customer(store_uri: str) -> None:
    with open_store(store_uri, max_events=3) as store:
        store.append_events([event("c1", h) for h in (10, 20, 30, 40)])
        store.append_events([event("c1", 50), event("c1", 1), event("c2", 1)])  # a late one is trimmed
        times = stored_times(store, "c1")
        assert times == [NOW - timedelta(hours=h) for h in (20, 10, 1)]
        assert len(stored_times(store, "c2")) == 1


def test_events_older_than_the_ttl_are_rejected_by_name(store_uri: str) -> None:
    now = datetime.now(UTC)
    with open_store(store_uri, ttl_days=30) as store:
        result = store.append_events(
            [
                {"customer_id": "c1", "timestamp": (now - timedelta(days=40)).isoformat(), "event_type": "x"},
                {"customer_id": "c1", "timestamp": (now - timedelta(days=1)).isoformat(), "event_type": "x"},
            ]
        )
        assert result.accepted == 1
        assert [(r.index, r.field) for r in result.rejected] == [(0, "timestamp")]


def test_sixteen_concurrent_serves_serve_a_limited_action_exactly_once(store_uri: str) -> None:
    ranked = [Candidate("email_offer", 1.0)]
    stores = [open_store(store_uri) for _ in range(4)]  # several clients, as several workers have
    start = threading.Barrier(16)
    served: list[str | None] = [None] * 16

    def serve(i: int) -> None:
        start.wait()
        served[i] = stores[i % 4].serve("c1", NOW, f"d-{i}", ranked, CATALOG).action

    threads = [threading.Thread(target=serve, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert served.count("email_offer") == 1
    assert served.count(None) == 15


def test_table_input_is_checked_like_records(store: CustomerStore) -> None:
    table = pa.table(
        {
            "customer_id": ["c1", "c1", None],
            "timestamp": ["2026-11-19T08:00:00Z", "not a time", "2026-11-19T08:00:00Z"],
            "event_type": ["page_view", "page_view", "page_view"],
            "campaign": ["x", "y", "z"],
        }
    )
    result = store.append_events(table)
    assert result.accepted == 1
    assert [(r.index, r.field) for r in result.rejected] == [(1, "timestamp"), (2, "customer_id")]


def test_a_store_that_cannot_be_opened_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unknown store URI"):
        open_store("postgres://localhost/db")
    with pytest.raises(StoreError, match=r"sqlite:///.*missing.*no such directory"):
        open_store(f"sqlite:///{tmp_path / 'missing' / 'store.db'}")
    not_a_database = tmp_path / "notes.db"
    not_a_database.write_text("this is not SQLite " * 100)
    with pytest.raises(StoreError, match=r"notes\.db"):
        open_store(f"sqlite:///{not_a_database}")
    from tests.store.conftest import free_port

    for unreachable in (f"redis://127.0.0.1:{free_port()}/0", f"redis+cluster://127.0.0.1:{free_port()}"):
        with pytest.raises(StoreError, match=re.escape(unreachable)):
            open_store(unreachable)


def test_a_redis_that_goes_away_is_unavailable_and_the_store_recovers(tmp_path: Path) -> None:
    from tests.store.conftest import RedisServer

    server = RedisServer(tmp_path)
    try:
        with open_store(server.url) as store:
            assert store.append_events([event("c1", 1)]).accepted == 1
            server.stop()
            with pytest.raises(StoreUnavailableError, match=re.escape(server.url)):
                store.append_events([event("c1", 2)])
            with pytest.raises(StoreUnavailableError):
                store.serve("c1", NOW, "d-1", RANKED, CATALOG)
            server.start()
            assert store.append_events([event("c1", 2)]).accepted == 1
    finally:
        server.stop()


@pytest.mark.slow
def test_on_a_cluster_each_customer_is_one_slot_and_customers_spread_over_the_nodes(
    redis_cluster: LocalCluster,
) -> None:
    import redis

    customers = [f"c{i}" for i in range(30)]
    with open_store(redis_cluster.url) as store:
        store.append_events([event(c, h) for c in customers for h in (1, 2)])
        store.upsert_profiles([{"customer_id": c, "segment": "gold"} for c in customers])
        for c in customers:
            store.serve(c, NOW, f"d-{c}", RANKED, CATALOG)
        slots: dict[str, set[int]] = {}
        nodes_holding: set[int] = set()
        for node in redis_cluster.nodes:
            with redis.Redis(port=node.port, decode_responses=True) as client:
                for key in client.scan_iter("nextbest:{*"):
                    slots.setdefault(key[key.index("{") : key.index("}")], set()).add(
                        client.cluster("KEYSLOT", key)
                    )
                    nodes_holding.add(node.port)
        assert len(slots) == len(customers)
        assert all(len(found) == 1 for found in slots.values())
        assert len(nodes_holding) == len(redis_cluster.nodes)
        assert store.profiles_table().num_rows == len(customers)  # export finds them all
