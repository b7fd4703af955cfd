"""Scoring records as the contract tables the batch job reads, and back.

A batch of records becomes the same tables (events, requests with their context, profiles) that the
batch job scores, so a request ranks identically online and in bulk. Each record is keyed by its
position, so two records for one customer never mix their histories.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nextbest.data.events import EventLog
from nextbest.data.io import TEXT_DICTIONARY
from nextbest.data.normalize import normalise_column
from nextbest.data.report import ValidationReport
from nextbest.data.schema import CUSTOMERS, REQUESTS, UTC_US, ColumnSpec, ColumnType
from nextbest.data.tables import load_events, load_table
from nextbest.data.text import CATEGORICAL_COLUMNS
from nextbest.errors import DataContractError
from nextbest.journeys.profile import profile_rows
from nextbest.journeys.requests import epoch_micros
from nextbest.journeys.windows import history_windows
from nextbest.scoring.schemas import (
    EVENT_FIELDS,
    AnyScoringRequest,
    BaseScoringRequest,
    ProfileValue,
    RequestEvent,
    ScoringRequest,
)
from nextbest.scoring.scorer import JourneyScorer

# Arrow's %S carries the fraction of the second (microseconds here), so times round-trip exactly.
ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# `RequestEvent` as Arrow reads it. The low-cardinality text fields are read as dictionaries, as files
# are (`nextbest.data.io`): the conversion builds each field's distinct strings as it goes, where the log
# would hash every row later.
_ARROW_TYPES: dict[object, pa.DataType] = {
    str: pa.string(),
    str | None: pa.string(),
    float | None: pa.float64(),
}
_EVENT_STRUCT = pa.struct(
    [
        (name, TEXT_DICTIONARY if name in CATEGORICAL_COLUMNS else _ARROW_TYPES[field.annotation])
        for name, field in RequestEvent.model_fields.items()
    ]
)


def request_tables(
    scorer: JourneyScorer, records: Sequence[AnyScoringRequest]
) -> tuple[EventLog, pa.Table, pa.Table]:
    """The records as contract tables (events, requests with their context, profiles), each record
    keyed by its position.

    Raises:
        DataContractError: an event, as_of or profile attribute cannot be used; the message names the field.
    """
    _check_customer_ids(records)
    keys = [str(i) for i in range(len(records))]
    log = _event_log(records, keys)
    requests = pa.table(
        {
            "customer_id": pa.array(keys, pa.string()),
            "as_of": _as_of(records, log, keys),
            **_context_columns(records),
        }
    )
    return log, requests, _profiles_table(scorer, keys, records)


def _check_customer_ids(records: Sequence[BaseScoringRequest]) -> None:
    """Refuses a customer_id that a requests file could not hold either (e.g. an empty one)."""
    ids = pa.array([r.customer_id for r in records], pa.string())
    for problem, _ in normalise_column(ids, REQUESTS.column("customer_id")).rejections:
        raise DataContractError(f"customer_id: {problem}")


def candidate_mask(records: Sequence[BaseScoringRequest], actions: tuple[str, ...]) -> np.ndarray | None:
    """[N, K] which of `actions` each record asks for; None when no record narrows them.

    Raises:
        DataContractError: a record names an action that is not among `actions`.
    """
    if all(r.candidates is None for r in records):
        return None
    known = set(actions)
    for r in records:
        unknown = sorted(set(r.candidates or ()) - known)
        if unknown:
            raise DataContractError(
                f"candidates: unknown action(s) {unknown}; the actions are {list(actions)}"
            )
    return np.array(
        [[r.candidates is None or a in r.candidates for a in actions] for r in records], dtype=bool
    )


def _context_columns(records: Sequence[BaseScoringRequest]) -> dict[str, pa.Array]:
    keys = sorted({key for r in records for key in (r.context or {})})
    return {key: _column([(r.context or {}).get(key) for r in records]) for key in keys}


def _profiles_table(
    scorer: JourneyScorer, keys: list[str], records: Sequence[BaseScoringRequest]
) -> pa.Table:
    """The profile as the encoder reads it, plus every other attribute given (rules may read them), held
    to the data contract as a customers file is."""
    table = scorer.encoder.profile.records_table(keys, [r.profile for r in records])
    extra = sorted({key for r in records for key in (r.profile or {})} - set(table.column_names))
    for key in extra:
        table = table.append_column(key, _column([(r.profile or {}).get(key) for r in records]))
    if not keys:  # no records: nothing to check, and a customers file may not be empty
        return table
    report = ValidationReport()
    profiles = load_table(table, CUSTOMERS, report)
    _refuse_losses(report)
    return profiles


def _column(values: list[Any]) -> pa.Array:
    """Values of one attribute across records: numbers, texts or booleans; mixed kinds become text."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def records_from_tables(
    log: EventLog,
    requests: pa.Table,
    customers: pa.Table | None = None,
    max_events: int | None = None,
) -> list[ScoringRequest]:
    """The records an application would send for `requests` (`customer_id`, `as_of`): each customer's
    events strictly before as_of (the last `max_events` of them, when given) and profile.

    With every event kept, a record scores exactly as the batch job scores the same request (the history
    aggregates count events beyond the model's window too).
    """
    customer_ids = requests.column("customer_id").combine_chunks().cast(pa.string())
    as_of = np.asarray(requests.column("as_of").combine_chunks().cast(pa.int64()), dtype=np.int64)
    windows = history_windows(
        log.timestamps, log.offsets, log.index_of(customer_ids), as_of, max_events or log.num_events + 1
    )
    event_rows = request_events(log.to_table())
    profiles = request_profiles(customers, customer_ids)
    times = pc.strftime(requests.column("as_of"), ISO_FORMAT).to_pylist()
    return [
        ScoringRequest(
            customer_id=customer_id,
            as_of=time,
            events=[RequestEvent(**row) for row in event_rows[start:end]],
            profile=profile,
        )
        for customer_id, time, start, end, profile in zip(
            customer_ids.to_pylist(), times, windows.start, windows.end, profiles, strict=True
        )
    ]


def request_events(events: pa.Table) -> list[dict[str, Any]]:
    """The rows of an events table as a request's events: `RequestEvent`'s fields, times as ISO text."""
    events = events.select([c for c in EVENT_FIELDS if c in events.column_names])
    return events.set_column(0, "timestamp", pc.strftime(events.column(0), ISO_FORMAT)).to_pylist()


def request_profiles(customers: pa.Table | None, customer_ids: pa.Array) -> list[dict[str, Any] | None]:
    """Each customer's row of `customers` as a request's profile (None for a customer without one)."""
    if customers is None:
        return [None] * len(customer_ids)
    rows = customers.drop_columns(["customer_id"]).to_pylist()
    found = profile_rows(customers, customer_ids).tolist()
    return [None if i < 0 else {k: _json_value(v) for k, v in rows[i].items()} for i in found]


def _json_value(value: Any) -> ProfileValue:
    if value is None or isinstance(value, str | float):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return float(value)
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


def _event_log(records: Sequence[AnyScoringRequest], keys: list[str]) -> EventLog:
    # A request without events (the service fills them in from its store, or refuses it) has none.
    counts = [len(record.events or ()) for record in records]
    if not sum(counts):  # profile-only requests: an empty log, which the table validation would call unusable
        return EventLog.empty()
    rows = [
        event if isinstance(event, dict) else vars(event)
        for record in records
        for event in record.events or ()
    ]
    # Arrow reads the fields out of the event dicts itself (a missing one is null): a /rank_batch call
    # brings 50,000 events, and a Python pass per column cost more than the rest of building the log.
    events = pa.array(rows, type=_EVENT_STRUCT).flatten()
    customer_ids = pa.array(np.repeat(np.array(keys, dtype=object), counts), pa.string())
    table = pa.table({"customer_id": customer_ids, **dict(zip(_EVENT_STRUCT.names, events, strict=True))})
    report = ValidationReport()
    log = load_events(table, report)
    _refuse_losses(report)
    return log


def _refuse_losses(report: ValidationReport) -> None:
    """Refuses records whose rows the data contract rejected, as the batch job leaves their customers
    unscored; an event sent twice is kept once, as the batch job keeps it (`ValidationReport.losses`)."""
    if report.losses:
        raise DataContractError("; ".join(str(finding) for finding in report.losses))


def given_as_of(records: Sequence[BaseScoringRequest]) -> pa.Array:
    """Each record's as_of as a UTC instant; null where the record gives none.

    Raises:
        DataContractError: an as_of that is not an ISO-8601 time.
    """
    given = pa.array([r.as_of for r in records], pa.string())
    parsed = normalise_column(given, ColumnSpec("as_of", ColumnType.TIMESTAMP, required=False))
    if parsed.rejections:
        bad = [records[i].as_of for i in np.flatnonzero(parsed.rejections[0][1])[:3]]
        raise DataContractError(f"as_of must be an ISO-8601 time, got {', '.join(map(repr, bad))}")
    return parsed.values


def _as_of(records: Sequence[BaseScoringRequest], log: EventLog, keys: list[str]) -> pa.Array:
    """Each record's as_of; by default just after its last event (as_of is exclusive, so every event
    given counts), or now for a record without events."""
    parsed = given_as_of(records)
    if not parsed.null_count:  # every record says when
        return parsed
    index = log.index_of(pa.array(keys, pa.string()))
    after_last = np.append(log.timestamps[log.offsets[1:] - 1] + 1, epoch_micros(datetime.now(UTC)))
    default = after_last[np.where(index >= 0, index, -1)]
    micros = np.asarray(parsed.cast(pa.int64()).fill_null(0), dtype=np.int64)
    chosen = np.where(np.asarray(parsed.is_valid(), dtype=bool), micros, default)
    return pa.array(chosen, pa.int64()).cast(UTC_US)
