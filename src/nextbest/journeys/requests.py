"""Request frames (`customer_id`, `as_of`): the moments at which journeys are cut and scored."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nextbest.data.events import EventLog
from nextbest.data.schema import UTC_US
from nextbest.journeys.profile import profile_rows
from nextbest.journeys.windows import Windows, history_windows

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ResolvedRequests:
    """Requests found in the tables they are scored from, once per scoring call: each request's customer
    in the event log, its profile row and its history. The encoder, the history aggregates, the rules and
    the explanations all read these, so none of them looks a customer up again.

    Attributes:
        table: the requests as given (`customer_id`, `as_of` and any context columns).
        log: the event log the histories come from.
        customers: the profiles; None: no request has one.
        customer_ids: [N] the requests' customers, as text.
        as_of: [N] the requests' cutoffs, int64 µs since the Unix epoch.
        customer: [N] each request's customer index in `log` (-1: no events).
        profile_rows: [N] each request's row in `customers` (-1: no profile).
        history: each request's full history strictly before its as_of (`Windows.last` cuts it to a
            model's window).
    """

    table: pa.Table
    log: EventLog
    customers: pa.Table | None
    customer_ids: pa.Array
    as_of: np.ndarray
    customer: np.ndarray
    profile_rows: np.ndarray
    history: Windows

    @classmethod
    def of(cls, log: EventLog, requests: pa.Table, customers: pa.Table | None = None) -> ResolvedRequests:
        """Resolves `requests` (`customer_id`, `as_of`) against `log` and `customers`."""
        customer_ids = requests.column("customer_id").combine_chunks().cast(pa.string())
        as_of = np.asarray(pc.cast(requests.column("as_of"), pa.int64()).to_numpy(zero_copy_only=False))
        customer = log.index_of(customer_ids)
        rows = (
            np.full(len(customer_ids), -1, dtype=np.int64)
            if customers is None
            else profile_rows(customers, customer_ids)
        )
        history = history_windows(log.timestamps, log.offsets, customer, as_of)
        return cls(requests, log, customers, customer_ids, as_of, customer, rows, history)

    def __len__(self) -> int:
        return len(self.as_of)


def requests_at_end(log: EventLog) -> pa.Table:
    """Every customer as of the end of its events (just after its last one, so all of them count)."""
    last = log.timestamps[log.offsets[1:] - 1] + 1
    return _requests(log.customer_ids, last)


def requests_at_cutoffs(log: EventLog, cutoffs: Sequence[datetime]) -> pa.Table:
    """One request per cutoff for every customer with at least one event before that cutoff."""
    first = log.timestamps[log.offsets[:-1]]
    parts = []
    for cutoff in cutoffs:
        micros = epoch_micros(cutoff)
        active = np.flatnonzero(first < micros)
        parts.append(_requests(log.customer_ids.take(pa.array(active)), np.full(len(active), micros)))
    return pa.concat_tables(parts) if parts else _requests(pa.array([], pa.string()), np.array([], np.int64))


def epoch_micros(instant: datetime) -> int:
    """Microseconds since the Unix epoch, exactly; a naive datetime is taken as UTC (like the data)."""
    aware = instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)
    return (aware - EPOCH) // timedelta(microseconds=1)


def _requests(customer_ids: pa.Array, as_of_micros: np.ndarray) -> pa.Table:
    as_of = pa.array(as_of_micros.astype(np.int64), pa.int64()).cast(UTC_US)
    return pa.table({"customer_id": customer_ids, "as_of": as_of})
