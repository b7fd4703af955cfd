"""The shared store: Redis, for every worker and machine, and Redis Cluster past one node.

Each customer's state lives under keys that share the hash tag `{customer_id}`, so one customer is one
hash slot and every multi-key step on it runs on one node:

- `nextbest:{id}:events`: hash, event key → the event (`nextbest.store.rows.packed_events`);
  `nextbest:{id}:times`: sorted set, event
  key → event time (µs). Keys are `nextbest.store.rows.event_keys` written as 20 digits, so members tied
  on time sort as the SQLite store sorts them.
- `nextbest:{id}:contacts` / `nextbest:{id}:contact_times`: the same for served contacts, by decision_id.
- `nextbest:{id}:profile`: hash, attribute → value (JSON).

Two keys are shared: `nextbest:customers` (the set of customer ids, for export) and `nextbest:attributes`
(each profile attribute's kind). Appending a customer's events and trimming them to the retention is one
Lua script; serving a contact is an optimistic transaction (WATCH the customer's keys, decide, MULTI/EXEC,
again if another client wrote in between), so the contact rule that decides is the decisioning module's
own, in Python, and no Lua restates it. A script or transaction touches one customer's keys only; the
shared keys are written by commands of their own, so on a cluster (`redis+cluster://HOST:PORT`, any node
of it) every step lands on the node of its slot.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import numpy as np
import pyarrow as pa

from nextbest.decisioning.catalog import ActionCatalog
from nextbest.journeys.requests import epoch_micros
from nextbest.store.base import (
    CustomerRecord,
    CustomerStore,
    Erased,
    Histories,
    Retention,
    StoreError,
    StoreUnavailableError,
    by_customer_and_time,
    contact_rows,
    instant,
    latest_as_of,
    merged_profile,
    profiles_table,
    reconcile_kinds,
)
from nextbest.store.contacts import Contact, Decision, Served, catalog_actions, choose
from nextbest.store.rows import (
    CheckedEvents,
    CheckedProfiles,
    Rejection,
    packed_events,
    unpacked_events,
)

try:
    import redis
    from redis.cluster import RedisCluster
    from redis.exceptions import ClusterDownError, RedisClusterException
except ImportError:  # the `store` extra
    redis = None  # type: ignore[assignment]

T = TypeVar("T")
CLUSTER_SUFFIX = "+cluster"  # redis+cluster://, rediss+cluster://
PREFIX = "nextbest:"
CUSTOMERS = PREFIX + "customers"
ATTRIBUTES = PREFIX + "attributes"
# Seconds a command may take before the store counts as unavailable (a hang is worse than a 503).
TIMEOUT_S = 10.0
# Customers per pipeline round trip.
PIPELINE_CUSTOMERS = 500
_OFFSET = 2**63  # int64 keys shifted to unsigned: as 20 digits, text order is number order

# KEYS: a hash and its sorted set of times. ARGV: max kept, oldest time kept ('' for none), then
# (member, time, value) triples. Adds the members not there yet, trims to the retention, returns how many
# were added.
_APPEND = """
local added = 0
for i = 3, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 2]) == 1 then
    redis.call('ZADD', KEYS[2], ARGV[i + 1], ARGV[i])
    added = added + 1
  end
end
local gone = {}
if ARGV[2] ~= '' then
  gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[2])
end
local over = redis.call('ZCARD', KEYS[2]) - #gone - tonumber(ARGV[1])
if over > 0 then
  for _, member in ipairs(redis.call('ZRANGE', KEYS[2], #gone, #gone + over - 1)) do
    gone[#gone + 1] = member
  end
end
for i = 1, #gone, 1000 do
  local chunk = {unpack(gone, i, math.min(i + 999, #gone))}
  redis.call('ZREM', KEYS[2], unpack(chunk))
  redis.call('HDEL', KEYS[1], unpack(chunk))
end
return added
"""


class RedisStore(CustomerStore):
    """The store in the Redis database at `uri` (`redis://HOST:PORT/DB`), or in the Redis Cluster that
    the node at `redis+cluster://HOST:PORT` belongs to."""

    def __init__(self, uri: str, retention: Retention) -> None:
        super().__init__(uri, retention)
        if redis is None:
            raise StoreError(
                f"cannot open the store {uri}: the Redis client is not installed "
                "(pip install 'nextbest[store]')"
            )
        try:
            self._client = _connected(uri)
        except (redis.RedisError, RedisClusterException, ValueError) as exc:
            raise StoreError(f"cannot reach the store {uri}: {exc}") from exc

    def _append(self, checked: CheckedEvents) -> int:
        table = checked.table
        ids = table.column("customer_id").to_pylist()
        micros = np.asarray(table.column("timestamp").cast(pa.int64())).tolist()
        members = _members(checked.keys)
        by_customer: dict[str, list[Any]] = {}
        for customer_id, member, at, value in zip(ids, members, micros, packed_events(table), strict=True):
            by_customer.setdefault(customer_id, []).extend((member, at, value))
        added = 0
        with _available(self.uri):
            customers = list(by_customer.items())
            for start in range(0, len(customers), PIPELINE_CUSTOMERS):
                pipe = self._client.pipeline(transaction=False)
                batch = customers[start : start + PIPELINE_CUSTOMERS]
                pipe.sadd(CUSTOMERS, *(c for c, _ in batch))
                for customer_id, args in batch:
                    _append_and_trim(pipe, _keys(customer_id, "events", "times"), [*self._retained(), *args])
                added += sum(pipe.execute()[1:])
        return added

    def _retained(self) -> list[Any]:
        oldest = self.retention.oldest()
        return [self.retention.max_events, "" if oldest is None else oldest]

    def _upsert(self, checked: CheckedProfiles) -> tuple[int, tuple[Rejection, ...]]:
        with _available(self.uri):
            stored = _done(self._client.hgetall(ATTRIBUTES))
            rows, new, rejected = reconcile_kinds(checked, stored)
            pipe = self._client.pipeline(transaction=False)
            for name, kind in new.items():
                pipe.hsetnx(ATTRIBUTES, name, kind)
            if rows:
                pipe.sadd(CUSTOMERS, *{customer_id for _, customer_id, _ in rows})
            for _, customer_id, attributes in rows:
                (key,) = _keys(customer_id, "profile")
                kept = {name: json.dumps(value) for name, value in attributes.items() if value is not None}
                removed = [name for name, value in attributes.items() if value is None]
                if kept:
                    pipe.hset(key, mapping=kept)
                if removed:
                    pipe.hdel(key, *removed)
            pipe.execute()
        return len(rows), rejected

    def customer(self, customer_id: str) -> CustomerRecord | None:
        with _available(self.uri):
            pipe = self._client.pipeline(transaction=True)  # one snapshot
            events_key, profile_key, contacts_key = _keys(customer_id, "events", "profile", "contacts")
            for key in (events_key, profile_key, contacts_key):
                pipe.hgetall(key)
            events, profile, contacts = (_hash(reply) for reply in pipe.execute())
        if not (events or profile or contacts):
            return None
        return CustomerRecord(
            customer_id,
            merged_profile({}, {name: json.loads(value) for name, value in profile.items()}),
            self._events([customer_id], [events]).to_pylist(),
            self._contacts(contacts),
        )

    def _events(
        self,
        customer_ids: Sequence[str],
        hashes: Sequence[dict[str, str]],
        before: Sequence[int] | None = None,
    ) -> pa.Table:
        """Stored event hashes of `customer_ids` as an events table, by customer and time, kept events
        only (and, with `before`, each customer's strictly before its time)."""
        oldest = self.retention.oldest()
        ids: list[str] = []
        packed: list[str] = []
        keys: list[int] = []
        for i, (customer_id, events) in enumerate(zip(customer_ids, hashes, strict=True)):
            for member, text in events.items():
                at = int(text[1 : text.index(",")])  # the packed event's first field
                if (oldest is not None and at < oldest) or (before is not None and at >= before[i]):
                    continue
                ids.append(customer_id)
                packed.append(text)
                keys.append(int(member) - _OFFSET)
        return by_customer_and_time(unpacked_events(ids, packed), np.array(keys, dtype=np.int64))

    def _contacts(self, stored: dict[str, str]) -> list[Contact]:
        oldest = self.retention.oldest()
        contacts = [_contact(decision_id, text) for decision_id, text in stored.items()]
        kept = [c for c in contacts if oldest is None or epoch_micros(c.timestamp) >= oldest]
        return sorted(kept, key=lambda c: (c.timestamp, c.decision_id))

    def histories(self, customer_ids: Sequence[str], as_of: Sequence[int] | np.ndarray) -> Histories:
        latest = latest_as_of(customer_ids, as_of)
        wanted = list(latest)
        with _available(self.uri):
            events, profiles = self._hashes(wanted, "events"), self._hashes(wanted, "profile")
            contacts = self._hashes(wanted, "contacts")
            kinds = _done(self._client.hgetall(ATTRIBUTES))
        served = {}
        for customer_id, stored in zip(wanted, contacts, strict=True):
            until = instant(latest[customer_id])
            kept = [c for c in self._contacts(stored) if c.timestamp <= until]
            if kept:
                served[customer_id] = kept
        return Histories(
            self._events(wanted, events, [latest[c] for c in wanted]),
            _profiles(wanted, profiles, kinds),
            served,
        )

    def _hashes(self, customer_ids: Sequence[str], name: str) -> list[dict[str, str]]:
        """HGETALL of each customer's `name` hash, pipelined."""
        found: list[dict[str, str]] = []
        for start in range(0, len(customer_ids), PIPELINE_CUSTOMERS):
            pipe = self._client.pipeline(transaction=False)
            for customer_id in customer_ids[start : start + PIPELINE_CUSTOMERS]:
                pipe.hgetall(_keys(customer_id, name)[0])
            found += pipe.execute()
        return found

    def serve_many(self, decisions: Sequence[Decision], catalog: ActionCatalog) -> list[Served]:
        for decision in decisions:
            catalog_actions(catalog, decision.candidates)  # an unknown action is refused before any write
        with _available(self.uri):
            return [self._serve(decision, catalog) for decision in decisions]

    def _serve(self, decision: Decision, catalog: ActionCatalog) -> Served:
        """One decision, optimistically: its customer's keys are watched while it is decided, and a write
        to them meanwhile (from any client) makes it decide again. A cluster keeps one customer's keys in
        one hash slot, so this works there too; several customers at once would not."""
        customer_id, decision_id = decision.customer_id, decision.decision_id
        at_us = epoch_micros(decision.at)
        keys = _keys(customer_id, "events", "times", "contacts", "contact_times")
        self._client.sadd(CUSTOMERS, customer_id)
        with self._client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(*keys)
                    earlier = _done(pipe.hget(keys[2], decision_id))
                    if earlier is not None:
                        return Served(decision_id, _contact(decision_id, earlier), repeated=True)
                    events = self._events([customer_id], [_done(pipe.hgetall(keys[0]))], [at_us + 1])
                    contacts = {customer_id: self._contacts(_done(pipe.hgetall(keys[2])))}
                    [(chosen, passed_over)] = choose(events, contacts, [decision], catalog)
                    if chosen is None:
                        return Served(decision_id, None, passed_over)
                    action = catalog_actions(catalog, decision.candidates[chosen : chosen + 1])[0]
                    probability = decision.candidates[chosen].probability
                    pipe.multi()
                    value = json.dumps([at_us, action.id, action.channel, probability])
                    _append_and_trim(pipe, keys[2:], [*self._retained(), decision_id, at_us, value])
                    pipe.execute()
                    return Served(decision_id, _contact(decision_id, value), passed_over)
                except redis.WatchError:
                    continue  # another client wrote this customer's state first: decide again

    def erase(self, customer_id: str) -> Erased:
        keys = _keys(customer_id, "events", "times", "contacts", "contact_times", "profile")
        with _available(self.uri):
            pipe = self._client.pipeline(transaction=True)
            pipe.hlen(keys[0])
            pipe.hlen(keys[2])
            pipe.exists(keys[4])
            pipe.delete(*keys)
            events, contacts, profile, _ = pipe.execute()
            self._client.srem(CUSTOMERS, customer_id)
        return Erased(events, contacts, bool(profile))

    def _all_customers(self) -> list[str]:
        return sorted(self._client.sscan_iter(CUSTOMERS, count=10_000))

    def iter_events(self, batch_rows: int = 1 << 18) -> Iterator[pa.Table]:
        with _available(self.uri):
            customers = self._all_customers()
        batch: list[str] = []
        for customer_id in customers:
            batch.append(customer_id)
            if len(batch) * self.retention.max_events >= batch_rows or len(batch) >= batch_rows:
                yield self._events_of(batch)
                batch = []
        if batch:
            yield self._events_of(batch)

    def _events_of(self, customer_ids: list[str]) -> pa.Table:
        with _available(self.uri):
            return self._events(customer_ids, self._hashes(customer_ids, "events"))

    def profiles_table(self) -> pa.Table:
        with _available(self.uri):
            customers = self._all_customers()
            profiles = self._hashes(customers, "profile")
            kinds = _done(self._client.hgetall(ATTRIBUTES))
        return _profiles(customers, profiles, kinds)

    def contacts_table(self) -> pa.Table:
        with _available(self.uri):
            customers = self._all_customers()
            stored = self._hashes(customers, "contacts")
        ids, contacts = [], []
        for customer_id, hashed in zip(customers, stored, strict=True):
            for contact in self._contacts(hashed):
                ids.append(customer_id)
                contacts.append(contact)
        return contact_rows(ids, contacts)

    def close(self) -> None:
        self._client.close()


def _connected(uri: str) -> redis.Redis | RedisCluster:
    """A client of the Redis (or, for `redis+cluster://`, the Redis Cluster) at `uri`, that answered."""
    scheme, rest = uri.split("://", 1)
    options: dict[str, Any] = {
        "socket_timeout": TIMEOUT_S,
        "socket_connect_timeout": TIMEOUT_S,
        "decode_responses": True,
    }
    client: redis.Redis | RedisCluster
    if scheme.endswith(CLUSTER_SUFFIX):  # the client finds the other nodes from this one
        client = RedisCluster(url=f"{scheme.removesuffix(CLUSTER_SUFFIX)}://{rest}", **options)
    else:
        client = redis.Redis.from_url(uri, **options)
    client.ping()
    return client


@contextmanager
def _available(uri: str) -> Iterator[None]:
    """A Redis that cannot be reached, or times out, is unavailable: the operation did not happen."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError, ClusterDownError) as exc:
        raise StoreUnavailableError(f"the store {uri} is unavailable: {exc}") from exc


def _profiles(
    customer_ids: Sequence[str], hashes: Sequence[dict[str, str]], kinds: dict[str, str]
) -> pa.Table:
    """The stored profile hashes of `customer_ids` as a customers table (customers without one left out)."""
    stored = [
        (c, {k: json.loads(v) for k, v in h.items()}) for c, h in zip(customer_ids, hashes, strict=True) if h
    ]
    return profiles_table([c for c, _ in stored], [p for _, p in stored], kinds)


def _append_and_trim(client: Any, keys: list[str], args: list[Any]) -> None:
    """Runs `_APPEND` on `client` (a pipeline). By EVAL, not EVALSHA: a cluster's pipeline cannot load
    a script that a node lacks (one restarted or failed over), and the server caches the script either
    way."""
    client.execute_command("EVAL", _APPEND, len(keys), *keys, *args)


def _hash(reply: dict[str, str] | list[str]) -> dict[str, str]:
    """HGETALL's reply as a dict: redis-py's cluster transactions (6.4) return it unparsed, as the flat
    list field, value, field, value..."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def _done(result: Awaitable[T] | T) -> T:
    """A command's result: redis-py types each command for its synchronous and asynchronous clients
    alike, and this store's client is synchronous."""
    return cast(T, result)


def _keys(customer_id: str, *names: str) -> list[str]:
    """The customer's keys, all in the hash slot of its id ('}' and '%' escaped, so the tag is the whole
    id and two ids never share keys)."""
    tag = customer_id.replace("%", "%25").replace("}", "%7D")
    return [f"{PREFIX}{{{tag}}}:{name}" for name in names]


def _members(keys: np.ndarray) -> list[str]:
    shifted = keys.astype(np.int64).view(np.uint64) ^ np.uint64(_OFFSET)
    return [f"{k:020d}" for k in shifted.tolist()]


def _contact(decision_id: str, text: str) -> Contact:
    at, action, channel, probability = json.loads(text)
    return Contact(decision_id, instant(at), action, channel, probability)
