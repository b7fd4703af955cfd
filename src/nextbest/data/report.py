"""Validation findings: what is wrong with which table, column and rows, and what was done about it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import pyarrow as pa

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
