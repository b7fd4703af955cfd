"""The data contract: which tables exist, their required and optional columns and logical types.

Column names are fixed by the contract (DESIGN.md §2); extra columns are allowed and passed through.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import pyarrow as pa

# Every time in nextbest is an instant in UTC, held as int64 microseconds since the Unix epoch.
UTC_US = pa.timestamp("us", tz="UTC")
MICROS_PER_SECOND = 1_000_000
MICROS_PER_HOUR = 3_600 * MICROS_PER_SECOND
MICROS_PER_DAY = 24 * MICROS_PER_HOUR
# The largest magnitude a number of the contract may have: far beyond any amount, count or measure that
# a touchpoint or a profile carries, small enough that the features built from such numbers (a lifetime's
# sum of values, a standardised attribute) stay finite in the model's float32, and below 2**53, so that
# every integer up to it is exact as a float64.
MAX_MAGNITUDE = 1e15


class ColumnType(Enum):
    """Logical column types; readers normalise physical types (int ids, ISO strings, ...) to these."""

    STRING = "string"
    TIMESTAMP = "timestamp"  # stored as timestamp[us, tz=UTC]
    FLOAT = "float"  # a finite number of magnitude at most MAX_MAGNITUDE; NaN and Infinity are not numbers
    BINARY_FLAG = "0/1"
    PROBABILITY = "probability in (0, 1]"


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: ColumnType
    required: bool


@dataclass(frozen=True)
class TableSpec:
    """One contract table. `time_column` is the column that orders a customer's rows.

    With `numeric_attributes`, every other column that holds numbers is an attribute of the row (the
    customers' profile), held to the rule of `ColumnType.FLOAT` as the contract's own number columns are.
    """

    name: str
    columns: tuple[ColumnSpec, ...]
    time_column: str | None
    numeric_attributes: bool = False

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    def column(self, name: str) -> ColumnSpec:
        """The contract column `name` (KeyError if the table has none)."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"{self.name} has no contract column {name!r}")


def _col(name: str, type_: ColumnType, required: bool = False) -> ColumnSpec:
    return ColumnSpec(name, type_, required)


EVENTS = TableSpec(
    "events",
    (
        _col("customer_id", ColumnType.STRING, required=True),
        _col("timestamp", ColumnType.TIMESTAMP, required=True),
        _col("event_type", ColumnType.STRING, required=True),
        _col("channel", ColumnType.STRING),
        _col("action", ColumnType.STRING),
        _col("value", ColumnType.FLOAT),
    ),
    time_column="timestamp",
)

CUSTOMERS = TableSpec(
    "customers",
    (_col("customer_id", ColumnType.STRING, required=True),),
    time_column=None,
    numeric_attributes=True,
)

DECISIONS = TableSpec(
    "decisions",
    (
        _col("customer_id", ColumnType.STRING, required=True),
        _col("timestamp", ColumnType.TIMESTAMP, required=True),
        _col("action", ColumnType.STRING, required=True),
        _col("propensity", ColumnType.PROBABILITY),
        _col("converted", ColumnType.BINARY_FLAG),
        _col("churned", ColumnType.BINARY_FLAG),
        _col("revenue", ColumnType.FLOAT),
    ),
    time_column="timestamp",
)

LABELS = TableSpec(
    "labels",
    (
        _col("customer_id", ColumnType.STRING, required=True),
        _col("as_of", ColumnType.TIMESTAMP, required=True),
        _col("conversion", ColumnType.BINARY_FLAG),
        _col("churn", ColumnType.BINARY_FLAG),
    ),
    time_column="as_of",
)

# The moments to score (`nextbest score --requests`): one row per customer and decision time.
REQUESTS = TableSpec(
    "requests",
    (
        _col("customer_id", ColumnType.STRING, required=True),
        _col("as_of", ColumnType.TIMESTAMP, required=True),
    ),
    time_column="as_of",
)

TABLES: dict[str, TableSpec] = {t.name: t for t in (EVENTS, CUSTOMERS, DECISIONS, LABELS)}
