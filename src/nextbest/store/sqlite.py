"""The embedded store: one SQLite file, shared by every process and thread on one machine.

WAL mode lets readers go on while one writer writes; every write is one transaction, begun IMMEDIATE so
that a contact limit's check and its contact are one step no other writer can come between.
`synchronous=NORMAL` in WAL mode keeps every committed transaction through a killed process (SIGKILL
included); only a power cut or an OS crash can take back the last ones.

Customers are rows of `customers` (their profile a JSON object); events and contacts are keyed by the
customer's row id, events by their identity (`nextbest.store.rows.event_keys`), so a duplicate is a
conflict the insert ignores.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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

FORMAT = "1"
# How long a writer waits for another's transaction before the store counts as unavailable.
BUSY_TIMEOUT_S = 30.0
PAGE_SIZE = 16384
CACHE_KIB = 65536  # per connection, at most (SQLite's default: 2,000)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS customers (
    id INTEGER PRIMARY KEY, customer_id TEXT NOT NULL UNIQUE, profile TEXT,
    events INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS events (
    cust INTEGER NOT NULL, key INTEGER NOT NULL, ts INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (cust, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS contacts (
    cust INTEGER NOT NULL, decision_id TEXT NOT NULL, ts INTEGER NOT NULL, action TEXT NOT NULL,
    channel TEXT, probability REAL, PRIMARY KEY (cust, decision_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attributes (name TEXT PRIMARY KEY, kind TEXT NOT NULL);
"""
# The smallest and largest times SQLite's integers hold: no bound.
_MIN, _MAX = -(2**63), 2**63 - 1
_EVENT_FIELDS = "e.data, e.key"
# Keeps a customer's (`:cust`) last `:max` rows by time and drops its rows older than `:oldest`.
_TRIM = """
DELETE FROM {table} WHERE cust = :cust AND (ts < :oldest OR {key} IN (
    SELECT {key} FROM {table} WHERE cust = :cust ORDER BY ts DESC, {key} DESC LIMIT -1 OFFSET :max))
"""


class SQLiteStore(CustomerStore):
    """The store in the SQLite file `path` (created with its tables when absent)."""

    def __init__(self, path: Path, uri: str, retention: Retention) -> None:
        super().__init__(uri, retention)
        self.path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        if not path.parent.is_dir():
            raise StoreError(f"cannot open the store {uri}: no such directory {path.parent}")
        try:
            with self._writing() as db:
                for statement in _SCHEMA.split(";")[:-1]:  # executescript would commit first
                    db.execute(statement)
                found = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
                if found is None:
                    db.execute("INSERT INTO meta VALUES ('format', ?)", (FORMAT,))
                elif found[0] != FORMAT:
                    raise StoreError(
                        f"{uri} holds a store of format {found[0]}; this nextbest reads {FORMAT}"
                    )
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StoreError(f"cannot open the store {uri}: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection (sqlite3 connections are not shared between threads)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            try:
                # Each connection is used by its own thread only; `close` may come from another.
                db = sqlite3.connect(
                    self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
                )
                # Before WAL mode: a new file's page size (an existing one keeps its own). Larger pages
                # and cache mean fewer pages written per batch of events.
                db.execute(f"PRAGMA page_size={PAGE_SIZE}")
                mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"cannot open the store {self.uri}: {exc}") from exc
            if mode != "wal":
                raise StoreError(f"cannot open the store {self.uri}: its file system does not allow WAL mode")
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, begun IMMEDIATE: it holds the write lock from its first statement."""
        db = self._connection()
        with _available(self.uri):
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: its statements see one snapshot."""
        db = self._connection()
        with _available(self.uri):
            db.execute("BEGIN")
            try:
                yield db
            finally:
                db.execute("COMMIT")

    def _append(self, checked: CheckedEvents) -> int:
        table = checked.table
        with self._writing() as db:
            unique = pc.unique(table.column("customer_id"))
            rows = _customer_rows(db, unique.to_pylist(), create=True)
            cust = np.array([rows[c] for c in unique.to_pylist()], dtype=np.int64)[
                np.asarray(pc.index_in(table.column("customer_id"), value_set=unique))
            ]
            order = np.lexsort((checked.keys, cust))  # the key's order: neighbouring inserts
            ordered = table.take(pa.array(order))
            columns = (
                cust[order].tolist(),
                checked.keys[order].tolist(),
                np.asarray(ordered.column("timestamp").cast(pa.int64())).tolist(),
                packed_events(ordered),
            )
            before = db.total_changes
            # Four parameters a row: binding them is most of an insert's cost.
            db.executemany(
                "INSERT OR IGNORE INTO events (cust, key, ts, data) VALUES (?, ?, ?, ?)",
                zip(*columns, strict=True),
            )
            added = db.total_changes - before
            self._retain(db, cust)
        return added

    def _retain(self, db: sqlite3.Connection, cust: np.ndarray) -> None:
        """Trims the customers (row ids `cust`, one per event offered) to the retention.

        `customers.events` bounds a customer's stored events from above (it counts events offered, the
        duplicates too), so only customers whose bound passes `max_events` are trimmed, after which
        `max_events` bounds them again; with a TTL every customer touched is, since its events age.
        """
        touched, offered = np.unique(cust, return_counts=True)
        bounds = db.execute(
            "UPDATE customers SET events = events + j.value ->> 1 FROM json_each(?) j "
            "WHERE customers.id = j.value ->> 0 RETURNING id, events",
            (json.dumps(np.column_stack([touched, offered]).tolist()),),
        ).fetchall()
        over = (
            touched.tolist()
            if self.retention.ttl_days
            else [c for c, n in bounds if n > self.retention.max_events]
        )
        if over:
            self._trim(db, "events", "key", over)
            db.execute(
                "UPDATE customers SET events = min(events, ?) WHERE id IN (SELECT value FROM json_each(?))",
                (self.retention.max_events, json.dumps(over)),
            )

    def _trim(self, db: sqlite3.Connection, table: str, key: str, custs: list[int]) -> None:
        oldest = self.retention.oldest()
        bounds = {"max": self.retention.max_events, "oldest": _MIN if oldest is None else oldest}
        db.executemany(_TRIM.format(table=table, key=key), ({"cust": cust, **bounds} for cust in custs))

    def _upsert(self, checked: CheckedProfiles) -> tuple[int, tuple[Rejection, ...]]:
        with self._writing() as db:
            stored = dict(db.execute("SELECT name, kind FROM attributes").fetchall())
            rows, new, rejected = reconcile_kinds(checked, stored)
            db.executemany("INSERT OR IGNORE INTO attributes VALUES (?, ?)", new.items())
            ids = sorted({customer_id for _, customer_id, _ in rows})
            _customer_rows(db, ids, create=True)
            profiles = dict(
                db.execute(
                    "SELECT c.customer_id, c.profile FROM json_each(?) j "
                    "JOIN customers c ON c.customer_id = j.value",
                    (json.dumps(ids),),
                ).fetchall()
            )
            current = {cid: json.loads(text) if text else {} for cid, text in profiles.items()}
            for _, customer_id, attributes in rows:
                current[customer_id] = merged_profile(current[customer_id], attributes)
            db.executemany(
                "UPDATE customers SET profile = ? WHERE customer_id = ?",
                [(json.dumps(p) if p else None, cid) for cid, p in current.items()],
            )
        return len(rows), rejected

    def customer(self, customer_id: str) -> CustomerRecord | None:
        with self._reading() as db:
            found = db.execute(
                "SELECT id, profile FROM customers WHERE customer_id = ?", (customer_id,)
            ).fetchone()
            if found is None:
                return None
            cust, profile = found
            events = self._events_of(db, cust)
            contacts = self._contacts_of(db, cust)
        if not (profile or events.num_rows or contacts):
            return None
        return CustomerRecord(
            customer_id, json.loads(profile) if profile else {}, events.to_pylist(), contacts
        )

    def _events_of(self, db: sqlite3.Connection, cust: int) -> pa.Table:
        """One customer's events, in time order."""
        oldest = self.retention.oldest()
        rows = db.execute(
            f"SELECT c.customer_id, {_EVENT_FIELDS} FROM events e JOIN customers c ON c.id = e.cust "
            "WHERE e.cust = ? AND e.ts >= ?",
            (cust, _MIN if oldest is None else oldest),
        ).fetchall()
        return by_customer_and_time(*_events_and_keys(rows))

    def _contacts_of(self, db: sqlite3.Connection, cust: int) -> list[Contact]:
        oldest = self.retention.oldest()
        rows = db.execute(
            "SELECT decision_id, ts, action, channel, probability FROM contacts WHERE cust = ? AND ts >= ? "
            "ORDER BY ts, decision_id",
            (cust, _MIN if oldest is None else oldest),
        ).fetchall()
        return [_contact(*row) for row in rows]

    def histories(self, customer_ids: Sequence[str], as_of: Sequence[int] | np.ndarray) -> Histories:
        latest = latest_as_of(customer_ids, as_of)
        with self._reading() as db:
            events, every_contact = self._events_and_contacts(db, latest)
            profiles = db.execute(
                "SELECT c.customer_id, c.profile FROM json_each(?) j JOIN customers c "
                "ON c.customer_id = j.value WHERE c.profile IS NOT NULL",
                (json.dumps(list(latest)),),
            ).fetchall()
            kinds = dict(db.execute("SELECT name, kind FROM attributes").fetchall())
        contacts = {
            customer_id: kept
            for customer_id, served in every_contact.items()
            if (kept := [c for c in served if epoch_micros(c.timestamp) <= latest[customer_id]])
        }
        stored = profiles_table([r[0] for r in profiles], [json.loads(r[1]) for r in profiles], kinds)
        return Histories(events, stored, contacts)

    def _events_and_contacts(
        self, db: sqlite3.Connection, latest: dict[str, int]
    ) -> tuple[pa.Table, dict[str, list[Contact]]]:
        """The customers' events before `latest[customer]` µs, in customer and time order, and all their
        contacts, in time order: a contact after it still stands for the event that reports it."""
        oldest = self.retention.oldest()
        wanted = {"wanted": json.dumps(list(latest.items())), "oldest": _MIN if oldest is None else oldest}
        rows = db.execute(
            f"SELECT c.customer_id, {_EVENT_FIELDS} FROM json_each(:wanted) j "
            "JOIN customers c ON c.customer_id = j.value ->> 0 JOIN events e ON e.cust = c.id "
            "WHERE e.ts < j.value ->> 1 AND e.ts >= :oldest",
            wanted,
        ).fetchall()
        contacts = db.execute(
            "SELECT c.customer_id, k.decision_id, k.ts, k.action, k.channel, k.probability "
            "FROM json_each(:wanted) j JOIN customers c ON c.customer_id = j.value ->> 0 "
            "JOIN contacts k ON k.cust = c.id WHERE k.ts >= :oldest "
            "ORDER BY c.customer_id, k.ts, k.decision_id",
            wanted,
        ).fetchall()
        served: dict[str, list[Contact]] = {}
        for customer_id, *contact in contacts:
            served.setdefault(customer_id, []).append(_contact(*contact))
        return by_customer_and_time(*_events_and_keys(rows)), served

    def serve_many(self, decisions: Sequence[Decision], catalog: ActionCatalog) -> list[Served]:
        for decision in decisions:
            catalog_actions(catalog, decision.candidates)  # an unknown action is refused before any write
        answers: dict[int, Served] = {}
        with self._writing() as db:
            custs = _customer_rows(db, sorted({d.customer_id for d in decisions}), create=True)
            for turn in _turns(decisions):
                answers |= self._serve_turn(db, custs, {i: decisions[i] for i in turn}, catalog)
        return [answers[i] for i in range(len(decisions))]

    def _serve_turn(
        self,
        db: sqlite3.Connection,
        custs: dict[str, int],
        decisions: dict[int, Decision],
        catalog: ActionCatalog,
    ) -> dict[int, Served]:
        """Serves decisions of distinct customers inside the write transaction `db`."""
        earlier = dict(
            (decision_id, _contact(decision_id, *contact))
            for decision_id, *contact in db.execute(
                "SELECT k.decision_id, k.ts, k.action, k.channel, k.probability FROM json_each(?) j "
                "JOIN contacts k ON k.cust = j.value ->> 0 AND k.decision_id = j.value ->> 1",
                (json.dumps([[custs[d.customer_id], d.decision_id] for d in decisions.values()]),),
            )
        )
        answers = {
            i: Served(d.decision_id, earlier[d.decision_id], repeated=True)
            for i, d in decisions.items()
            if d.decision_id in earlier
        }
        new = {i: d for i, d in decisions.items() if i not in answers}
        latest = {d.customer_id: epoch_micros(d.at) + 1 for d in new.values()}
        events, contacts = self._events_and_contacts(db, latest)
        for (i, decision), (chosen, passed_over) in zip(
            new.items(), choose(events, contacts, list(new.values()), catalog), strict=True
        ):
            contact = None
            if chosen is not None:
                action = catalog_actions(catalog, decision.candidates[chosen : chosen + 1])[0]
                at = instant(epoch_micros(decision.at))
                probability = decision.candidates[chosen].probability
                contact = Contact(decision.decision_id, at, action.id, action.channel, probability)
                db.execute(
                    "INSERT INTO contacts VALUES (?, ?, ?, ?, ?, ?)",
                    (custs[decision.customer_id], contact.decision_id, epoch_micros(at), action.id,
                     action.channel, probability),
                )  # fmt: skip
            answers[i] = Served(decision.decision_id, contact, passed_over)
        self._trim(db, "contacts", "decision_id", sorted({custs[d.customer_id] for d in new.values()}))
        return answers

    def erase(self, customer_id: str) -> Erased:
        with self._writing() as db:
            found = db.execute(
                "SELECT id, profile FROM customers WHERE customer_id = ?", (customer_id,)
            ).fetchone()
            if found is None:
                return Erased(0, 0, False)
            cust, profile = found
            events = db.execute("DELETE FROM events WHERE cust = ?", (cust,)).rowcount
            contacts = db.execute("DELETE FROM contacts WHERE cust = ?", (cust,)).rowcount
            db.execute("DELETE FROM customers WHERE id = ?", (cust,))
        return Erased(events, contacts, profile is not None)

    def iter_events(self, batch_rows: int = 1 << 18) -> Iterator[pa.Table]:
        oldest = self.retention.oldest()
        with self._reading() as db:
            cursor = db.execute(
                f"SELECT c.customer_id, {_EVENT_FIELDS} FROM events e JOIN customers c ON c.id = e.cust "
                "WHERE e.ts >= ?",
                (_MIN if oldest is None else oldest,),
            )
            while rows := cursor.fetchmany(batch_rows):
                yield _events_and_keys(rows)[0]

    def profiles_table(self) -> pa.Table:
        with self._reading() as db:
            rows = db.execute(
                "SELECT customer_id, profile FROM customers WHERE profile IS NOT NULL"
            ).fetchall()
            kinds = dict(db.execute("SELECT name, kind FROM attributes").fetchall())
        return profiles_table([r[0] for r in rows], [json.loads(r[1]) for r in rows], kinds)

    def contacts_table(self) -> pa.Table:
        with self._reading() as db:
            rows = db.execute(
                "SELECT c.customer_id, k.decision_id, k.ts, k.action, k.channel, k.probability "
                "FROM contacts k JOIN customers c ON c.id = k.cust ORDER BY c.customer_id, k.ts"
            ).fetchall()
        return contact_rows([r[0] for r in rows], [_contact(*r[1:]) for r in rows])

    def local_files(self) -> tuple[Path, ...]:
        return (
            self.path,
            self.path.with_name(self.path.name + "-wal"),
            self.path.with_name(self.path.name + "-shm"),
        )

    def close(self) -> None:
        with self._lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
        self._local = threading.local()


@contextmanager
def _available(uri: str) -> Iterator[None]:
    """A store that is locked past the busy timeout, or whose file went away, is unavailable."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise StoreUnavailableError(f"the store {uri} is unavailable: {exc}") from exc


def _turns(decisions: Sequence[Decision]) -> list[list[int]]:
    """The decisions' indices in turns of distinct customers: a customer's second decision comes in the
    turn after its first, so that it sees the first's contact."""
    seen: dict[str, int] = {}
    turns: list[list[int]] = []
    for i, decision in enumerate(decisions):
        turn = seen.get(decision.customer_id, -1) + 1
        seen[decision.customer_id] = turn
        if turn == len(turns):
            turns.append([])
        turns[turn].append(i)
    return turns


def _customer_rows(db: sqlite3.Connection, customer_ids: list[str], create: bool) -> dict[str, int]:
    """The row id of each of `customer_ids` that has one (every one, with `create`)."""
    wanted = json.dumps(customer_ids)
    if create:
        db.execute("INSERT OR IGNORE INTO customers (customer_id) SELECT value FROM json_each(?)", (wanted,))
    found = db.execute(
        "SELECT c.customer_id, c.id FROM json_each(?) j JOIN customers c ON c.customer_id = j.value",
        (wanted,),
    )
    return dict(found.fetchall())


def _events_and_keys(rows: list[tuple[Any, ...]]) -> tuple[pa.Table, np.ndarray]:
    """Rows of (customer_id, `_EVENT_FIELDS`) as an events table and the events' keys."""
    ids, packed, keys = (list(column) for column in zip(*rows, strict=True)) if rows else ([], [], [])
    return unpacked_events(ids, packed), np.array(keys, dtype=np.int64)


def _contact(
    decision_id: str, ts: int, action: str, channel: str | None, probability: float | None
) -> Contact:
    return Contact(decision_id, instant(ts), action, channel, probability)
