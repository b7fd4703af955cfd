"""Normalising raw columns to the contract's logical types, rejecting (and reporting) bad rows.

Every column normaliser returns the converted array and a mask of rows it rejects; one bad cell costs one
row, never the file. Types that cannot be meant as the logical type at all (a number where a timestamp is
expected) make the whole table unusable, reported as a single finding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from nextbest.data.report import (
    MAX_EXAMPLES,
    Finding,
    Severity,
    ValidationReport,
    row_examples,
)
from nextbest.data.schema import MAX_MAGNITUDE, UTC_US, ColumnSpec, ColumnType, TableSpec

_ZONE_SUFFIX = r"(Z|[+-]\d{2}(:?\d{2})?)$"
_DATE_PREFIX = r"^\d{4}-\d{2}-\d{2}"
NOT_FINITE = "not a finite number (NaN or Infinity)"
# Parsing is tried on chunks so that a single bad cell only sends its own chunk down the slow path.
PARSE_CHUNK_ROWS = 65_536


class UnusableColumnError(Exception):
    """The column's physical type cannot hold the logical type (reported as one table-level finding)."""


@dataclass(frozen=True)
class Normalised:
    """A converted column and the rows it rejects, as (problem, boolean row mask) pairs."""

    values: pa.Array
    rejections: tuple[tuple[str, np.ndarray], ...] = ()

    def reject(self, problem: str, mask: np.ndarray, values: pa.Array | None = None) -> Normalised:
        """This result with `mask` rows rejected for `problem`, unless an earlier problem already did."""
        new_values = self.values if values is None else values
        for _, earlier in self.rejections:
            mask = mask & ~earlier
        if not mask.any():
            return Normalised(new_values, self.rejections)
        return Normalised(new_values, (*self.rejections, (problem, mask)))


def normalise_table(raw: pa.Table, spec: TableSpec, report: ValidationReport) -> pa.Table | None:
    """Contract columns converted to their logical types; rows with bad cells removed and reported.

    Returns:
        The normalised table (extra columns passed through), or None when the table is unusable
        (empty, missing a required column, a column of an impossible type); the reason is in `report`.
    """
    report.rows_read[spec.name] = raw.num_rows + report.rows_rejected.get(spec.name, 0)
    if raw.num_rows == 0:
        report.unusable(spec.name, None, "table is empty")
        return None
    names = raw.column_names
    missing = [c for c in spec.required if c not in names]
    if missing:
        has = ", ".join(names)
        report.unusable(spec.name, ", ".join(missing), f"missing required column(s); the table has: {has}")
        return None
    columns: dict[str, pa.Array] = {}
    rejected = np.zeros(raw.num_rows, dtype=bool)
    for column in (*spec.columns, *_attribute_columns(raw, spec)):
        if column.name not in names:
            continue
        original = raw.column(column.name).combine_chunks()
        try:
            result = normalise_column(original, column)
        except UnusableColumnError as exc:
            report.unusable(spec.name, column.name, str(exc))
            return None
        for problem, mask in result.rejections:
            rows = np.flatnonzero(mask)
            bad_values = original.take(pa.array(rows[:MAX_EXAMPLES])).to_pylist()
            examples = tuple(row_examples(rows, bad_values))
            report.add(Finding(spec.name, column.name, Severity.ERROR, problem, len(rows), examples))
            # A row already rejected for an earlier column is kept once, under its first problem.
            report.keep(spec.name, column.name, problem, partial(raw.filter, pa.array(mask & ~rejected)))
            rejected |= mask
        columns[column.name] = result.values
    # A row with several bad cells gets a finding per cell but is one rejected row.
    report.count_rejected(spec.name, int(rejected.sum()))
    # One new table, not a copy per replaced column (a repeated name's first column is the contract's).
    replaced = {names.index(name): values for name, values in columns.items()}
    arrays = [replaced.get(i, raw.column(i)) for i in range(len(names))]
    table = pa.Table.from_arrays(arrays, names=names, metadata=raw.schema.metadata)
    return table.filter(pa.array(~rejected)) if rejected.any() else table


def _attribute_columns(raw: pa.Table, spec: TableSpec) -> list[ColumnSpec]:
    """The table's numeric attributes beyond the contract's columns, as FLOAT columns (see `TableSpec`)."""
    if not spec.numeric_attributes:
        return []
    contract = {c.name for c in spec.columns}
    return [
        ColumnSpec(field.name, ColumnType.FLOAT, required=False)
        for field in raw.schema
        if field.name not in contract and _is_number(field.type)
    ]


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)


def normalise_column(values: pa.Array, column: ColumnSpec) -> Normalised:
    """Convert one column to its logical type; see the module docstring."""
    normaliser = _NORMALISERS[column.type]
    result = normaliser(values)
    if column.required and result.values.null_count:
        return result.reject("required value is missing", np.asarray(result.values.is_null(), dtype=bool))
    return result


def _string(values: pa.Array) -> Normalised:
    if pa.types.is_dictionary(values.type):
        return _dictionary_string(values)
    if pa.types.is_integer(values.type) or pa.types.is_large_string(values.type):
        values = values.cast(pa.string())
    if not pa.types.is_string(values.type):
        raise UnusableColumnError(f"expected text (or integer ids), got {values.type}")
    # An empty string carries no more information than a missing value.
    if pc.index(values, "").as_py() < 0:  # the usual case: one search, stopping at the first empty string
        return Normalised(values)
    return Normalised(pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values))


def _dictionary_string(values: pa.DictionaryArray) -> Normalised:
    """Dictionary-encoded text stays encoded; empty strings become nulls through the indices."""
    dictionary = _string(values.dictionary).values
    indices = values.indices
    if dictionary.null_count:
        blank = np.flatnonzero(np.asarray(dictionary.is_null(), dtype=bool))
        indices = pc.if_else(
            pc.is_in(indices, pa.array(blank, indices.type)), pa.scalar(None, indices.type), indices
        )
    return Normalised(pa.DictionaryArray.from_arrays(indices, dictionary))


def _timestamp(values: pa.Array) -> Normalised:
    kind = values.type
    if pa.types.is_timestamp(kind):
        # Naive timestamps are taken as UTC; aware ones are already stored as UTC instants.
        return Normalised(pc.cast(values, UTC_US, safe=False))
    if pa.types.is_date(kind):
        return Normalised(pc.cast(pc.cast(values, pa.timestamp("us")), UTC_US))
    if pa.types.is_dictionary(kind):
        return _timestamp(values.dictionary_decode())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        parsed = _parse_in_chunks(values.cast(pa.string()), _parse_iso8601_chunk)
        return _unparsable(values, parsed, "unparsable timestamp (expected ISO 8601)")
    raise UnusableColumnError(f"expected a timestamp or ISO-8601 text, got {kind}")


def _parse_iso8601_chunk(chunk: pa.Array) -> pa.Array:
    cast = _cast_iso8601(chunk)
    return cast if cast is not None else _parse_iso8601_cells(chunk)


def _cast_iso8601(text: pa.Array) -> pa.Array | None:
    """`text` as UTC instants by Arrow's ISO-8601 cast, the contract's one parser; None if a cell fails.

    Cells without an offset are UTC. Nanosecond fractions are cut to the microsecond, and
    microseconds reach past the nanoseconds' years (1677-2262), so ns is tried last.
    """
    for kind in _ISO8601_READINGS:
        try:
            return pc.cast(pc.cast(text, kind), UTC_US, safe=False)
        except pa.ArrowInvalid:
            continue
    return None


_ISO8601_READINGS = (UTC_US, pa.timestamp("us"), pa.timestamp("ns", tz="UTC"), pa.timestamp("ns"))


def _parse_iso8601_cells(chunk: pa.Array) -> pa.Array:
    """Slow path for a chunk with mixed zone styles or bad cells: each cell reads as it would alone.

    Cells with and without a zone offset are cast apart (one cast reads one style), and a group that
    fails is halved until its bad cells stand alone. RFC 3339 allows a lower-case 't' and 'z'.
    """
    text = pc.utf8_upper(pc.utf8_trim_whitespace(chunk))
    # Arrow's cast reads nothing that does not start with a date: such cells need no casting to fail.
    dated = np.asarray(pc.match_substring_regex(text, _DATE_PREFIX).fill_null(False), dtype=bool)
    has_offset = np.asarray(pc.match_substring_regex(text, _ZONE_SUFFIX).fill_null(False), dtype=bool)
    micros = np.zeros(len(text), dtype=np.int64)
    parsed = np.zeros(len(text), dtype=bool)
    for group in (dated & has_offset, dated & ~has_offset):
        rows = np.flatnonzero(group)
        if rows.size:
            instants = _bisect_iso8601(text.take(pa.array(rows)))
            parsed[rows] = np.asarray(instants.is_valid(), dtype=bool)
            micros[rows] = np.asarray(instants.cast(pa.int64()).fill_null(0), dtype=np.int64)
    return pa.array(micros, mask=~parsed).cast(UTC_US)


def _bisect_iso8601(text: pa.Array) -> pa.Array:
    """`_cast_iso8601` of each cell (null where it fails), in about (bad cells) · log2(cells) casts."""
    cast = _cast_iso8601(text)
    if cast is not None:
        return cast
    if len(text) == 1:
        return pa.nulls(1, UTC_US)
    half = len(text) // 2
    return pa.concat_arrays([_bisect_iso8601(text.slice(0, half)), _bisect_iso8601(text.slice(half))])


def _float(values: pa.Array) -> Normalised:
    kind = values.type
    if pa.types.is_float64(kind):
        return _in_range(Normalised(values))
    if _is_number(kind):
        return _in_range(Normalised(pc.cast(values, pa.float64())))
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        parsed = _parse_in_chunks(values.cast(pa.string()), _parse_float_chunk)
        return _in_range(_unparsable(values, parsed, "not a number"))
    raise UnusableColumnError(f"expected a number, got {kind}")


def _parse_float_chunk(chunk: pa.Array) -> pa.Array:
    try:
        return pc.cast(chunk, pa.float64())
    except pa.ArrowInvalid:
        numbers = pd.to_numeric(pd.Series(chunk.to_pylist(), dtype=object), errors="coerce")
        return pa.array(numbers, type=pa.float64(), from_pandas=True)


def _binary_flag(values: pa.Array) -> Normalised:
    numbers = _float(values)
    flags = numbers.values
    bad = pc.and_(pc.is_valid(flags), pc.invert(pc.is_in(flags, pa.array([0.0, 1.0]))))
    mask = np.asarray(bad, dtype=bool)
    as_int8 = pc.cast(pc.if_else(bad, pa.scalar(None, pa.float64()), flags), pa.int8())
    return numbers.reject("expected 0 or 1", mask, as_int8)


def _probability(values: pa.Array) -> Normalised:
    numbers = _float(values)
    p = numbers.values
    bad = pc.or_(pc.less_equal(p, 0.0), pc.greater(p, 1.0)).fill_null(False)
    return numbers.reject("expected a probability in (0, 1]", np.asarray(bad, dtype=bool))


def _parse_in_chunks(values: pa.Array, parse: Callable[[pa.Array], pa.Array]) -> pa.Array:
    if len(values) <= PARSE_CHUNK_ROWS:
        return parse(values)
    chunks = [
        parse(values.slice(start, PARSE_CHUNK_ROWS)) for start in range(0, len(values), PARSE_CHUNK_ROWS)
    ]
    return pa.concat_arrays(chunks)


def _unparsable(original: pa.Array, parsed: pa.Array, problem: str) -> Normalised:
    if parsed.null_count == original.null_count:  # parsing nulls only the unparsable and the null cells
        return Normalised(parsed)
    unparsable = pc.and_(pc.is_valid(original), pc.is_null(parsed))
    return Normalised(parsed).reject(problem, np.asarray(unparsable, dtype=bool))


def _in_range(result: Normalised) -> Normalised:
    """Rejects what `ColumnType.FLOAT` does not hold: NaN and ±Infinity alike (a missing number is null,
    not NaN), and magnitudes beyond `MAX_MAGNITUDE`."""
    values = result.values
    # The usual case, in one pass: NaN fails the comparison, nulls are skipped, and a column of nulls
    # alone (min_count=0) passes too.
    if pc.all(pc.less_equal(pc.abs(values), MAX_MAGNITUDE), min_count=0).as_py():
        return result
    finite = pc.is_finite(values).fill_null(True)
    too_large = pc.and_(finite, pc.greater(pc.abs(values), MAX_MAGNITUDE)).fill_null(False)
    return result.reject(NOT_FINITE, np.asarray(pc.invert(finite), dtype=bool)).reject(
        f"out of range (magnitude above {MAX_MAGNITUDE:g})", np.asarray(too_large, dtype=bool)
    )


_NORMALISERS: dict[ColumnType, Callable[[pa.Array], Normalised]] = {
    ColumnType.STRING: _string,
    ColumnType.TIMESTAMP: _timestamp,
    ColumnType.FLOAT: _float,
    ColumnType.BINARY_FLAG: _binary_flag,
    ColumnType.PROBABILITY: _probability,
}
