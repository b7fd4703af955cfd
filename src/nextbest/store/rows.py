"""Rows offered to the store, checked against the data contract one by one, and their identities.

Events and profiles arrive as records (an HTTP body's dicts) or as Arrow tables (a backfill from files).
Either way each column goes through the contract's own normalisers (`nextbest.data.normalize`), so the
store accepts exactly what `nextbest validate` and the batch job accept, and every rejected row is named
by its position, the field and the problem.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from nextbest.data.normalize import UnusableColumnError, normalise_column
from nextbest.data.report import json_arrays
from nextbest.data.schema import CUSTOMERS, EVENTS, UTC_US, ColumnSpec, ColumnType, TableSpec
from nextbest.data.text import CATEGORICAL_COLUMNS
from nextbest.errors import DataContractError

Records: TypeAlias = Sequence[Mapping[str, Any]]
Rows: TypeAlias = pa.Table | Records

# The events the store keeps: the contract's columns, the caller's id of the event (what makes a resent
# event a duplicate) and the decision it carries out (what keeps a served contact from counting twice).
STORED_EVENTS = TableSpec(
    EVENTS.name,
    (
        *EVENTS.columns,
        ColumnSpec("event_id", ColumnType.STRING, required=False),
        ColumnSpec("decision_id", ColumnType.STRING, required=False),
    ),
    time_column="timestamp",
)
EVENT_COLUMNS = tuple(c.name for c in STORED_EVENTS.columns)
# What an event is, beyond its customer, when it has no event_id: two rows equal in all of these are one
# event sent twice.
CONTENT_COLUMNS = ("timestamp", "event_type", "channel", "action", "value", "decision_id")
# Two keys of 16 bytes (pandas' hashing takes one), so an event_id never names the same key as a content.
_ID_HASH_KEY, _CONTENT_HASH_KEY = "nextbest:eventid", "nextbest:content"

# Profile attribute kinds, as stored and as exported.
ATTRIBUTE_TYPES: dict[str, pa.DataType] = {
    "number": pa.float64(),
    "text": pa.string(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "timestamp": UTC_US,
}


@dataclass(frozen=True)
class Rejection:
    """One problem with one offered row: its position in the batch, the field and what is wrong."""

    index: int
    field: str | None
    problem: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "problem": self.problem}


@dataclass(frozen=True)
class CheckedEvents:
    """The good rows of a batch of events, normalised, and the rejections of the others.

    Attributes:
        table: the good rows (`EVENT_COLUMNS`, timestamps as UTC instants, text undictionaried).
        index: int64, each good row's position in the batch.
        keys: int64, each good row's identity within its customer (`event_keys`).
        rejected: every problem found, in batch order.
    """

    table: pa.Table
    index: np.ndarray
    keys: np.ndarray
    rejected: tuple[Rejection, ...]


@dataclass(frozen=True)
class CheckedProfiles:
    """The good profile rows of a batch: per row its position, customer and attributes (name → (kind,
    JSON value); a None value removes the attribute), the kind each attribute first has, and the
    rejections."""

    index: tuple[int, ...]
    customer_ids: tuple[str, ...]
    attributes: tuple[dict[str, tuple[str | None, Any]], ...]
    kinds: dict[str, str]
    rejected: tuple[Rejection, ...]


def check_events(rows: Rows) -> CheckedEvents:
    """The batch's events held to the data contract, row by row (see the module docstring).

    Raises:
        DataContractError: a table column whose type cannot hold its contract type at all.
    """
    table = rows if isinstance(rows, pa.Table) else _records_table(rows, STORED_EVENTS.columns)
    problems: list[Rejection] = []
    columns: dict[str, pa.Array] = {}
    for column in STORED_EVENTS.columns:
        values = _column_or_nulls(table, column.name)
        columns[column.name] = _undictionaried(_normalised(values, column, problems))
    bad = _rejected_mask(problems, table.num_rows)
    good = pa.table(columns).filter(pa.array(~bad))
    index = np.flatnonzero(~bad).astype(np.int64)
    return CheckedEvents(good, index, event_keys(good), tuple(sorted(problems, key=_batch_order)))


def event_keys(events: pa.Table) -> np.ndarray:
    """int64 per event: its identity within its customer. Its `event_id` when it has one (sent twice, it
    is stored once whatever else changed), else everything it says (`CONTENT_COLUMNS`).

    A 64-bit hash: two different events of one customer share a key with odds of about n²/2⁶⁵ (n: the
    customer's events), never in practice.
    """
    if events.num_rows == 0:
        return np.zeros(0, dtype=np.int64)
    frame = events.select(list(CONTENT_COLUMNS)).to_pandas(timestamp_as_object=False)
    frame["timestamp"] = np.asarray(events.column("timestamp").cast(pa.int64()))
    by_content = pd.util.hash_pandas_object(frame, index=False, hash_key=_CONTENT_HASH_KEY).to_numpy()
    ids = events.column("event_id").to_pandas()
    by_id = pd.util.hash_pandas_object(ids, index=False, hash_key=_ID_HASH_KEY).to_numpy()
    keys = np.where(ids.notna().to_numpy(), by_id, by_content)
    return keys.view(np.int64)


def packed_events(events: pa.Table) -> list[str]:
    """Each event but its customer as the JSON array the backends store: `EVENT_COLUMNS[1:]` in order,
    the time in µs since the epoch. Written by Arrow, column by column: a backfill packs millions."""
    fields = events.select(list(EVENT_COLUMNS[1:]))
    fields = fields.set_column(0, "timestamp", fields.column(0).cast(pa.int64()))
    for name in CATEGORICAL_COLUMNS:  # a handful of values: each escaped once, not once a row
        i = fields.schema.get_field_index(name)
        fields = fields.set_column(i, name, pc.dictionary_encode(fields.column(i)))
    return json_arrays(fields).to_pylist()


def unpacked_events(customer_ids: Sequence[str], packed: Sequence[str]) -> pa.Table:
    """Stored events (`packed_events`) of the given customers as a normalised events table."""
    rows = json.loads(f"[{','.join(packed)}]")  # one parse: per-text calls cost more than the text
    columns = list(zip(*rows, strict=True)) if rows else [()] * (len(EVENT_COLUMNS) - 1)
    return events_table(dict(zip(EVENT_COLUMNS, [customer_ids, *columns], strict=True)))


def events_table(columns: Mapping[str, Sequence[Any]]) -> pa.Table:
    """Events as lists per column of `EVENT_COLUMNS` (times in µs) as a normalised table."""
    types = {"timestamp": pa.int64(), "value": pa.float64()}
    arrays = {name: pa.array(columns[name], types.get(name, pa.string())) for name in EVENT_COLUMNS}
    arrays["timestamp"] = arrays["timestamp"].cast(UTC_US)
    return pa.table(arrays)


def check_profiles(rows: Rows) -> CheckedProfiles:
    """The batch's profile rows held to the contract's customers table, row by row: a customer_id, and
    attributes that are numbers (finite, in range), texts, booleans, dates or times.

    Raises:
        DataContractError: a table column of a type that no attribute can have (a list, a struct).
    """
    records = _profile_records(rows)
    ids = pa.array([_text_or_none(r.get("customer_id")) for r in records], pa.string())
    problems: list[Rejection] = []
    checked_ids = _normalised(ids, CUSTOMERS.column("customer_id"), problems).to_pylist()
    kinds: dict[str, str] = {}
    attributes: list[dict[str, tuple[str | None, Any]]] = []
    numbers: list[tuple[int, str, float]] = []
    for i, record in enumerate(records):
        row: dict[str, tuple[str | None, Any]] = {}
        for name, value in record.items():
            if name == "customer_id":
                continue
            kind, stored, problem = attribute_value(value)
            if problem is not None:
                problems.append(Rejection(i, name, problem))
                continue
            row[name] = kind, stored
            if kind == "number":
                numbers.append((i, name, stored))
            if kind is not None:
                kinds.setdefault(name, kind)
        attributes.append(row)
    problems += _number_problems(numbers)
    bad = _rejected_mask(problems, len(records))
    good = np.flatnonzero(~bad).tolist()
    return CheckedProfiles(
        tuple(good),
        tuple(checked_ids[i] for i in good),
        tuple(attributes[i] for i in good),
        kinds,
        tuple(sorted(problems, key=_batch_order)),
    )


def attribute_value(value: Any) -> tuple[str | None, Any, str | None]:
    """(kind, stored JSON value, problem) of one profile attribute value; None removes the attribute."""
    if value is None:
        return None, None, None
    if isinstance(value, bool | np.bool_):
        return "bool", bool(value), None
    if isinstance(value, int | float | np.integer | np.floating):
        return "number", float(value), None  # held to the contract's rule by `_number_problems`
    if isinstance(value, str):
        return ("text", value, None) if value else (None, None, None)  # "" says no more than null
    if isinstance(value, datetime):
        aware = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)  # naive: UTC
        return "timestamp", aware.isoformat().replace("+00:00", "Z"), None
    if isinstance(value, date):
        return "date", value.isoformat(), None
    return None, None, f"expected a number, text, true/false, date or time, got {type(value).__name__}"


def _number_problems(numbers: list[tuple[int, str, float]]) -> list[Rejection]:
    """The numeric attributes (row, name, value) that break the contract's rule for numbers
    (`ColumnType.FLOAT`), checked by its own normaliser in one pass over the batch."""
    if not numbers:
        return []
    values = pa.array([value for _, _, value in numbers], pa.float64())
    checked = normalise_column(values, ColumnSpec("attribute", ColumnType.FLOAT, required=False))
    return [
        Rejection(numbers[i][0], numbers[i][1], problem)
        for problem, mask in checked.rejections
        for i in np.flatnonzero(mask)
    ]


def attribute_column(values: Sequence[Any], kind: str) -> pa.Array:
    """Stored JSON values of one attribute as the Arrow column of its kind (`ATTRIBUTE_TYPES`)."""
    target = ATTRIBUTE_TYPES[kind]
    if kind in ("date", "timestamp"):
        return pc.cast(pa.array(values, pa.string()), target)
    return pa.array(values, target)


def convert_attribute(found: str | None, stored: Any, kind: str) -> tuple[Any, str | None]:
    """A value of kind `found` (as `attribute_value` gives it) as an attribute held as `kind`: a text
    that reads as that date or time becomes one; anything else of another kind is the row's problem."""
    if found is None or found == kind:
        return stored, None
    if found == "text" and kind in ("date", "timestamp"):
        parsed = normalise_column(pa.array([stored]), ColumnSpec("value", ColumnType.TIMESTAMP, False))
        if not parsed.rejections:
            if kind == "date":
                return pc.cast(parsed.values, pa.date32())[0].as_py().isoformat(), None
            return _iso_instant(parsed.values)[0], None
    return None, f"expected a {kind}, as the store holds this attribute; got a {found}"


def _iso_instant(values: pa.Array) -> list[str]:
    return pc.strftime(values.cast(UTC_US), "%Y-%m-%dT%H:%M:%SZ").to_pylist()


def _profile_records(rows: Rows) -> list[dict[str, Any]]:
    if not isinstance(rows, pa.Table):
        return [dict(r) if isinstance(r, Mapping) else {"customer_id": None} for r in rows]
    for field in rows.schema:
        kind = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
        if pa.types.is_nested(kind) or pa.types.is_binary(kind):
            raise DataContractError(f"customers table: column {field.name} holds {kind}, not an attribute")
    return rows.to_pylist()


def _text_or_none(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return str(value)
    return None


def _records_table(records: Records, columns: Sequence[ColumnSpec]) -> pa.Table:
    """Records as a table of the contract's physical types (a cell of the wrong kind: `_WRONG_KIND`)."""
    rows = [r if isinstance(r, Mapping) else {} for r in records]
    return pa.table({c.name: _physical([r.get(c.name) for r in rows], c) for c in columns})


def _physical(values: list[Any], column: ColumnSpec) -> pa.Array:
    inferred = _inferred(values, column)
    if inferred is not None:
        return inferred
    if column.type is ColumnType.FLOAT:
        numbers = all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values)
        if numbers:
            return pa.array([None if v is None else float(v) for v in values], pa.float64())
        return pa.array([_as_text(v, allow_numbers=True) for v in values], pa.string())
    if column.type is ColumnType.TIMESTAMP:
        return pa.array([v.isoformat() if isinstance(v, datetime) else _as_text(v) for v in values])
    return pa.array([_as_text(v, allow_numbers=column.name == "customer_id") for v in values], pa.string())


def _inferred(values: list[Any], column: ColumnSpec) -> pa.Array | None:
    """`values` as `_physical` gives them when Arrow's own conversion infers a type that needs nothing
    of it (text, or numbers for a number column: the usual batch, converted at C speed); else None."""
    try:
        array = pa.array(values)
    except (pa.ArrowException, OverflowError):
        return None  # mixed kinds: each cell is looked at
    if array.type == pa.null():
        return array.cast(pa.float64() if column.type is ColumnType.FLOAT else pa.string())
    if array.type == pa.string():
        return array
    if column.type is ColumnType.FLOAT and array.type in (pa.int64(), pa.float64()):
        return array.cast(pa.float64(), safe=False)  # as float() converts each
    return None


def _as_text(value: Any, allow_numbers: bool = False) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if allow_numbers and isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    return _WRONG_KIND


# Stands for a cell of a kind its column cannot hold (a list where a time is expected): text no parser
# reads, named as the wrong kind by `_normalised`.
_WRONG_KIND = "\x00wrong kind\x00"


def _column_or_nulls(table: pa.Table, name: str) -> pa.Array:
    if name not in table.column_names:
        return pa.nulls(table.num_rows, pa.string())
    return table.column(name).combine_chunks()


def _normalised(values: pa.Array, column: ColumnSpec, problems: list[Rejection]) -> pa.Array:
    """`values` normalised to `column`'s type; each rejected cell is recorded and becomes null."""
    wrong_kind = _wrong_kind_mask(values)
    try:
        result = normalise_column(values, column)
    except UnusableColumnError as exc:
        raise DataContractError(f"events table: column {column.name}: {exc}") from exc
    checked = result.values
    if wrong_kind is not None:
        kind = {ColumnType.STRING: "text", ColumnType.TIMESTAMP: "an ISO-8601 time"}.get(
            column.type, "number"
        )
        problems += [Rejection(int(i), column.name, f"expected {kind}") for i in np.flatnonzero(wrong_kind)]
    for problem, mask in result.rejections:
        if wrong_kind is not None:
            mask = mask & ~wrong_kind
        problems += [Rejection(int(i), column.name, problem) for i in np.flatnonzero(mask)]
    if wrong_kind is not None:
        checked = pc.if_else(pa.array(wrong_kind), pa.scalar(None, checked.type), checked)
    return checked


def _wrong_kind_mask(values: pa.Array) -> np.ndarray | None:
    if not pa.types.is_string(values.type) or values.null_count == len(values):
        return None
    mask = np.asarray(pc.equal(values, _WRONG_KIND).fill_null(False), dtype=bool)
    return mask if mask.any() else None


def _undictionaried(values: pa.Array) -> pa.Array:
    return values.dictionary_decode() if pa.types.is_dictionary(values.type) else values


def _rejected_mask(problems: list[Rejection], rows: int) -> np.ndarray:
    bad = np.zeros(rows, dtype=bool)
    bad[[p.index for p in problems]] = True
    return bad


def _batch_order(rejection: Rejection) -> tuple[int, str]:
    return rejection.index, rejection.field or ""
