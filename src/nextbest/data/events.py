"""The event log: normalised events grouped by customer and ordered by time, the input of journeys."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nextbest.data.report import MAX_EXAMPLES, Finding, Severity, ValidationReport
from nextbest.data.schema import EVENTS, UTC_US
from nextbest.data.text import LOOKUP_LIMIT, dictionary_codes


@dataclass(frozen=True)
class EventLog:
    """Events grouped by customer (ids in lexicographic order) and ordered by time within each customer.

    Sorting only computes a permutation: columns are gathered into sorted order when asked for, so
    the strings of a large log are never copied unless a caller needs them.

    Attributes:
        source: the normalised events table in its original row order (extra columns kept).
        order: int64 positions into `source`, in sorted order (duplicate rows left out).
        customer_ids: the distinct customer ids, sorted; customer `i` owns sorted rows
            `offsets[i]:offsets[i+1]`.
        offsets: int64 array of length `len(customer_ids) + 1`.
        timestamps: event times in sorted order, int64 microseconds since the Unix epoch (UTC).
    """

    source: pa.Table
    order: np.ndarray
    customer_ids: pa.StringArray
    offsets: np.ndarray
    timestamps: np.ndarray

    @property
    def num_events(self) -> int:
        return len(self.order)

    @property
    def num_customers(self) -> int:
        return len(self.customer_ids)

    @cached_property
    def customer_index(self) -> np.ndarray:
        """For every sorted event, the index of its customer in `customer_ids` (int32)."""
        return np.repeat(np.arange(self.num_customers, dtype=np.int32), np.diff(self.offsets))

    def sorted_values(self, values: np.ndarray) -> np.ndarray:
        """Put per-row values computed on `source` (e.g. vocabulary codes) into sorted order."""
        sorted_values: np.ndarray = values[self.order]
        return sorted_values

    @cached_property
    def values(self) -> tuple[np.ndarray, np.ndarray]:
        """The monetary `value` of every sorted event (float64, 0 where null) and whether it is present."""
        if "value" not in self.source.column_names:
            return np.zeros(self.num_events), np.zeros(self.num_events, dtype=bool)
        column = pc.cast(self.source.column("value").combine_chunks(), pa.float64())
        present = np.asarray(pc.is_valid(column), dtype=bool)
        values = np.asarray(column.fill_null(0.0), dtype=np.float64)
        return self.sorted_values(values), self.sorted_values(present)

    @cached_property
    def _token_codes(self) -> dict[str, tuple[pa.StringArray, np.ndarray]]:
        return {}

    def token_codes(self, name: str) -> tuple[pa.StringArray, np.ndarray]:
        """A text column's distinct strings and, per sorted event, the int32 index of its string (-1 for
        null, or for every event when the log has no such column).

        Computed once per log: the encoder, the aggregates and the rules' history queries all start from
        it, so each row's string is hashed once.
        """
        cache = self._token_codes
        if name not in cache:
            if name in self.source.column_names:
                dictionary, indices = dictionary_codes(self.source.column(name))
                cache[name] = (dictionary, self.sorted_values(indices))
            else:
                cache[name] = (pa.array([], pa.string()), np.full(self.num_events, -1, dtype=np.int32))
        return cache[name]

    def to_table(self) -> pa.Table:
        """The whole events table in sorted order (copies every column)."""
        return self.source.take(pa.array(self.order))

    def index_of(self, customer_ids: pa.Array) -> np.ndarray:
        """Positions of `customer_ids` in this log (int64), -1 for customers without events."""
        customer_ids = customer_ids.cast(pa.string())
        if max(len(customer_ids), self.num_customers) <= LOOKUP_LIMIT:  # e.g. an online request's log
            positions = self._positions
            return np.array([positions.get(i, -1) for i in customer_ids.to_pylist()], dtype=np.int64)
        found = pc.index_in(customer_ids, value_set=self.customer_ids)
        return np.asarray(found.fill_null(-1), dtype=np.int64)

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {customer: i for i, customer in enumerate(self.customer_ids.to_pylist())}

    @classmethod
    def empty(cls) -> EventLog:
        """A log without events: customers scored from their profile alone."""
        columns = {"customer_id": pa.string(), "timestamp": UTC_US, "event_type": pa.string()}
        return cls.from_normalised(pa.table({name: pa.array([], kind) for name, kind in columns.items()}))

    @classmethod
    def from_normalised(cls, events: pa.Table, report: ValidationReport | None = None) -> EventLog:
        """Group and order normalised events (see `nextbest.data.load_events` for raw input).

        Exact duplicate rows are rejected (kept once) and events logged out of time order are sorted;
        both are recorded in `report`.
        """
        report = report if report is not None else ValidationReport()
        timestamps = np.asarray(events.column("timestamp").combine_chunks().cast(pa.int64()))
        if events.num_rows < _PARALLEL_ROWS:
            codes, customer_ids = _customer_codes(events.column("customer_id"))
            order = _group_by_customer(codes, _time_order(timestamps))
        else:
            # Arrow and numpy release the GIL, so sorting by time and encoding ids share the two cores.
            by_time = _POOL.submit(_time_order, timestamps)
            codes, customer_ids = _customer_codes(events.column("customer_id"), _POOL)
            order = _group_by_customer(codes, by_time.result())
        codes, timestamps = codes[order], timestamps[order]
        _report_out_of_order(events, order, codes, report)
        keep = _first_of_duplicates(events, order, codes, timestamps, report)
        if keep is not None:
            order, codes, timestamps = order[keep], codes[keep], timestamps[keep]
        offsets = np.zeros(len(customer_ids) + 1, dtype=np.int64)
        np.cumsum(np.bincount(codes, minlength=len(customer_ids)), out=offsets[1:])
        return cls(events, order.astype(np.int64), customer_ids, offsets, timestamps)


# Below this many events, threads cost more than they save (an online request has a few hundred).
_PARALLEL_ROWS = 100_000
# Shared, so that loading a log does not start and join threads every time.
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="nextbest-events")


def _customer_codes(
    ids: pa.ChunkedArray, pool: ThreadPoolExecutor | None = None
) -> tuple[np.ndarray, pa.StringArray]:
    """Integer codes that order customers lexicographically, and the sorted distinct ids.

    Hashing the ids is the costliest step of loading, so with a `pool` halves are encoded in parallel
    and their dictionaries unified.
    """
    ids = ids.combine_chunks()
    if pool is None:
        encoded = pc.dictionary_encode(ids)
        dictionary, indices = encoded.dictionary, np.asarray(encoded.indices)
    else:
        half = len(ids) // 2
        halves = pool.map(pc.dictionary_encode, [ids.slice(0, half), ids.slice(half)])
        unified = pa.chunked_array(
            list(halves), type=pa.dictionary(pa.int32(), ids.type)
        ).unify_dictionaries()
        dictionary = unified.chunk(0).dictionary
        indices = np.concatenate([np.asarray(chunk.indices) for chunk in unified.chunks])
    by_id = np.asarray(pc.sort_indices(dictionary), dtype=np.int32)
    rank = np.empty_like(by_id)
    rank[by_id] = np.arange(len(by_id), dtype=np.int32)
    return rank[indices], dictionary.take(pa.array(by_id))


def _time_order(timestamps: np.ndarray) -> np.ndarray | None:
    """Stable row order by time, or None when the rows are already in time order.

    Logs are usually appended in time order; grouping by customer is then all the sorting needed.
    """
    if timestamps.size < 2 or bool(np.all(timestamps[1:] >= timestamps[:-1])):
        return None
    return np.argsort(timestamps, kind="stable")


def _group_by_customer(codes: np.ndarray, by_time: np.ndarray | None) -> np.ndarray:
    """Row order by (customer, time); stable, so that rows tied on both keep their file order."""
    if by_time is None:
        return np.argsort(codes, kind="stable")
    return by_time[np.argsort(codes[by_time], kind="stable")]


def _report_out_of_order(
    events: pa.Table, order: np.ndarray, codes: np.ndarray, report: ValidationReport
) -> None:
    same_customer = codes[1:] == codes[:-1]
    moved = same_customer & (order[1:] < order[:-1])
    if moved.any():
        report.add(
            Finding(
                EVENTS.name,
                "timestamp",
                Severity.WARNING,
                "events are not in time order within their customer; they are sorted on load",
                int(moved.sum()),
                tuple(_describe_events(events, order[1:][moved][:MAX_EXAMPLES])),
            )
        )


def _first_of_duplicates(
    events: pa.Table,
    order: np.ndarray,
    codes: np.ndarray,
    timestamps: np.ndarray,
    report: ValidationReport,
) -> np.ndarray | None:
    """Mask (over sorted rows) keeping the first of each set of identical rows, or None if all differ.

    Identical rows share customer and time, so only runs of tied (customer, time) need a look at their
    other columns, with the run standing for the customer and the time (hashing ids is costly).
    """
    tie = (codes[1:] == codes[:-1]) & (timestamps[1:] == timestamps[:-1])
    if not tie.any():
        return None
    in_run = np.zeros(len(order), dtype=bool)
    in_run[1:] |= tie
    in_run[:-1] |= tie
    candidates = np.flatnonzero(in_run)
    others = [name for name in events.column_names if name not in ("customer_id", "timestamp")]
    frame = events.select(others).take(pa.array(order[candidates])).to_pandas()
    frame.columns = range(len(others))  # whatever the names, none clashes with the run's
    frame[len(others)] = np.cumsum(np.concatenate([[True], ~tie])[candidates])  # a new run: no tie before
    duplicated = frame.duplicated(keep="first").to_numpy()
    if not duplicated.any():
        return None
    dropped = candidates[duplicated]
    problem = "duplicate rows (identical in every column); the first is kept"
    examples = _describe_events(events, order[dropped][:MAX_EXAMPLES])
    report.reject(EVENTS.name, None, problem, len(dropped), examples, repeat=True)
    report.keep(EVENTS.name, None, problem, lambda: events.take(pa.array(order[dropped])), repeat=True)
    keep = np.ones(len(order), dtype=bool)
    keep[dropped] = False
    return keep


def _describe_events(events: pa.Table, rows: np.ndarray) -> list[str]:
    """Examples that a person can find in their data: customer, time and event type of each row."""
    picked = events.select(["customer_id", "timestamp", "event_type"]).take(pa.array(rows)).to_pylist()
    return [f"{r['customer_id']} {r['event_type']} at {r['timestamp'].isoformat()}" for r in picked]
