"""Validation findings: what is wrong with which table, column and rows, and what was done about it."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MAX_EXAMPLES = 3


class Severity(Enum):
    """ERROR: the table is unusable or rows were rejected. WARNING: usable as loaded (e.g. re-sorted)."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One problem in one table (and column), with the number of rows it affects and a few examples.

    `repeat` marks rows rejected as repeats of a row that was kept (duplicates, a repeated key): nothing
    they said was lost.
    """

    table: str
    column: str | None
    severity: Severity
    problem: str
    rows: int = 0
    examples: tuple[str, ...] = ()
    repeat: bool = False

    def __str__(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        count = f" ({self.rows:,} row{'' if self.rows == 1 else 's'})" if self.rows else ""
        examples = f"; e.g. {', '.join(self.examples)}" if self.examples else ""
        return f"{self.severity.value}: {where}: {self.problem}{count}{examples}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "column": self.column,
            "severity": self.severity.value,
            "problem": self.problem,
            "rows": self.rows,
            "examples": list(self.examples),
        }


@dataclass(frozen=True)
class RejectedRows:
    """Rows removed from `table` for one `problem`, as read (before normalisation).

    `rows` holds the raw rows; for lines that could not be split into fields (malformed CSV) it is None
    and `lines` holds their text. `repeat` marks repeats of a row that was kept (duplicates, a repeated
    key): the customer lost no information.
    """

    table: str
    column: str | None
    problem: str
    rows: pa.Table | None = None
    lines: tuple[str, ...] = ()
    repeat: bool = False

    def __len__(self) -> int:
        return len(self.lines) if self.rows is None else self.rows.num_rows

    def texts(self) -> pa.StringArray:
        """Each rejected row as read: a JSON object of its cells, or the text of a malformed line."""
        if self.rows is None:
            return pa.array(self.lines, pa.string())
        return json_objects(self.rows)

    def customer_ids(self) -> pa.StringArray:
        """The customer of each rejected row, as text; null where the row has none (or is a line)."""
        if self.rows is None or "customer_id" not in self.rows.column_names:
            return pa.nulls(len(self), pa.string())
        return pc.cast(self.rows.column("customer_id"), pa.string()).combine_chunks()


@dataclass
class ValidationReport:
    """Everything found while loading tables, and how many rows each table lost to rejection.

    With `keep_rejected_rows`, the rejected rows themselves are kept too (`rejected_rows`), for a job
    that writes them out; otherwise only counts and a few examples are.
    """

    findings: list[Finding] = field(default_factory=list)
    rows_read: dict[str, int] = field(default_factory=dict)
    rows_rejected: dict[str, int] = field(default_factory=dict)
    unusable_tables: set[str] = field(default_factory=set)
    keep_rejected_rows: bool = False
    rejected_rows: list[RejectedRows] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]

    @property
    def losses(self) -> list[Finding]:
        """The errors that lost information: every error but the rejection of repeats of a kept row.

        A customer with a loss is not scored (a history with holes would answer the wrong question); a
        repeat costs it nothing, online as in batch.
        """
        return [f for f in self.errors if not f.repeat]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.WARNING]

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def reject(
        self,
        table: str,
        column: str | None,
        problem: str,
        rows: int,
        examples: Sequence[str],
        repeat: bool = False,
    ) -> None:
        """Record rows removed from `table` (they are counted, never dropped silently); `repeat`: they
        repeat rows that were kept (see `Finding`)."""
        examples = tuple(examples[:MAX_EXAMPLES])
        self.add(Finding(table, column, Severity.ERROR, problem, rows, examples, repeat))
        self.count_rejected(table, rows)

    def keep(
        self,
        table: str,
        column: str | None,
        problem: str,
        rows: Callable[[], pa.Table] | None = None,
        lines: Sequence[str] = (),
        repeat: bool = False,
    ) -> None:
        """Keep rejected rows, if this report keeps them (see the class docstring).

        `rows` makes the table of raw rows: called only when they are kept, since most loads only count.
        """
        if self.keep_rejected_rows:
            self.rejected_rows.append(
                RejectedRows(table, column, problem, None if rows is None else rows(), tuple(lines), repeat)
            )

    def count_rejected(self, table: str, rows: int) -> None:
        """Add `rows` to the rows removed from `table` (whose findings were recorded separately)."""
        if rows == 0:
            return
        self.rows_rejected[table] = self.rows_rejected.get(table, 0) + rows

    def unusable(self, table: str, column: str | None, problem: str) -> None:
        """Record that `table` cannot be used at all: every row read counts as rejected."""
        self.add(Finding(table, column, Severity.ERROR, problem))
        self.unusable_tables.add(table)
        if table in self.rows_read:
            self.rows_rejected[table] = self.rows_read[table]

    def render(self) -> str:
        """A human-readable report: one line per table, then one per finding."""
        lines = []
        for table in sorted(self.unusable_tables - self.rows_read.keys()):
            lines.append(f"{table}: unusable")
        for table, read in self.rows_read.items():
            rejected = self.rows_rejected.get(table, 0)
            unusable = " (table unusable)" if table in self.unusable_tables else ""
            lines.append(
                f"{table}: {read:,} rows read, {read - rejected:,} accepted, {rejected:,} rejected{unusable}"
            )
        lines += [str(f) for f in self.findings]
        if not self.findings:
            lines.append("all tables meet the data contract")
        return "\n".join(lines)

    def passed(self, strict: bool = False) -> bool:
        """No errors (and, when `strict`, no warnings either)."""
        return not self.errors and not (strict and self.warnings)

    def to_dict(self, strict: bool = False) -> dict[str, Any]:
        return {
            "ok": self.passed(strict),
            "strict": strict,
            "rows_read": self.rows_read,
            "rows_rejected": self.rows_rejected,
            "unusable_tables": sorted(self.unusable_tables),
            "findings": [f.to_dict() for f in self.findings],
        }


def row_examples(
    row_numbers: Sequence[int] | np.ndarray, values: Sequence[object] | None = None
) -> list[str]:
    """Example strings like "row 12: 'yesterday'" (1-based data rows, header excluded)."""
    rows = list(row_numbers[:MAX_EXAMPLES])
    if values is None:
        return [f"row {int(r) + 1}" for r in rows]
    return [
        f"row {int(r) + 1}" if v is None else f"row {int(r) + 1}: {v!r}"
        for r, v in zip(rows, values[:MAX_EXAMPLES], strict=False)
    ]


def json_objects(table: pa.Table) -> pa.StringArray:
    """Each row of `table` as the text of a JSON object of its cells (null cells as null).

    Column by column in Arrow, not row by row in Python: a job may reject millions of rows (repeated
    events) and writes every one of them out. Numbers are written as Arrow writes them (NaN and the
    infinities as `json.dumps` does), times as ISO 8601 text ("2026-11-20T10:00:00.000000Z" for an
    instant), and values of other types (lists, structs, bytes) as `json.dumps` writes their Python value.
    """
    parts: list[pa.Array | str] = []
    for i, (name, column) in enumerate(zip(table.column_names, table.columns, strict=True)):
        key = ("{" if i == 0 else ",") + json.dumps(name, ensure_ascii=False) + ":"
        parts += [key, _json_values(column.combine_chunks()).fill_null("null")]
    if not parts:
        return pa.array(["{}"] * table.num_rows, pa.string())
    joined: pa.StringArray = pc.binary_join_element_wise(*parts, "}", "")
    return joined


def json_arrays(table: pa.Table) -> pa.StringArray:
    """Each row of `table` as the text of a JSON array of its cells, in column order (see `json_objects`
    for how each type is written)."""
    if table.num_columns == 0:
        return pa.array(["[]"] * table.num_rows, pa.string())
    parts: list[pa.Array | str] = []
    for i, column in enumerate(table.columns):
        parts.append("[" if i == 0 else ",")
        if column.null_count == len(column):  # an absent optional column: no text to write per row
            parts.append("null")
        else:
            parts.append(_json_values(column.combine_chunks()).fill_null("null"))
    parts.append("]")
    # Neighbouring constant parts joined first: the element-wise join costs per part and row.
    merged: list[pa.Array | str] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    if len(merged) == 1:  # every column null: one text for every row
        return pa.array([merged[0]] * table.num_rows, pa.string())
    joined: pa.StringArray = pc.binary_join_element_wise(*merged, "")
    return joined


def _json_values(values: pa.Array) -> pa.Array:
    """The JSON text of each value (null where it is null)."""
    kind = values.type
    if pa.types.is_dictionary(kind):  # each distinct value encoded once
        return _json_values(values.dictionary).take(values.indices)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _json_string(values.cast(pa.string()))
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        return values.cast(pa.string())
    if pa.types.is_float32(kind) or pa.types.is_float64(kind):
        text = pc.if_else(pc.is_nan(values), "NaN", values.cast(pa.string()))
        return pc.if_else(pc.is_inf(values), pc.if_else(pc.less(values, 0), "-Infinity", "Infinity"), text)
    if pa.types.is_timestamp(kind) and kind.tz:
        # Arrow writes an instant as "2026-11-20 10:00:00.000000Z"; cast from the zoned type it looks the
        # zone up row by row, so its UTC wall time is cast instead and the "Z" added.
        return _quoted(values.cast(pa.timestamp(kind.unit)), suffix="Z")
    if any(is_kind(kind) for is_kind in (pa.types.is_timestamp, pa.types.is_date, pa.types.is_time)):
        return _quoted(values)  # no character to escape
    # Nested, binary, decimal and other columns (extra columns only): rare, so row by row.
    return pa.array(
        [None if v is None else json.dumps(v, default=str, ensure_ascii=False) for v in values.to_pylist()],
        pa.string(),
    )


def _json_string(text: pa.Array) -> pa.Array:
    """`text` as JSON string literals: quoted, with backslashes, quotes and control characters escaped."""
    if pc.any(pc.match_substring_regex(text, r'["\\\x00-\x1f]')).as_py():  # rare: escape
        text = pc.replace_substring(pc.replace_substring(text, "\\", "\\\\"), '"', '\\"')
        for code in range(0x20):
            text = pc.replace_substring(text, chr(code), json.dumps(chr(code))[1:-1])
    return _quoted(text)


def _quoted(values: pa.Array, suffix: str = "") -> pa.Array:
    """`values` as text between double quotes (`suffix` added inside them)."""
    return pc.binary_join_element_wise('"', values.cast(pa.string()), suffix + '"', "")
