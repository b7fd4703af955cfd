"""Request frames (`customer_id`, `as_of`): the moments at which journeys are cut and scored."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from nextbest.data.events import EventLog
from nextbest.data.schema import UTC_US

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
