"""Static customer profile features: categorical codes and standardised numbers, learned on training data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nextbest.data.normalize import normalise_column
from nextbest.data.schema import MICROS_PER_DAY, ColumnSpec, ColumnType
from nextbest.errors import DataContractError
from nextbest.journeys.vocab import MISSING, Vocabulary


@dataclass(frozen=True)
class NumericStats:
    mean: float
    std: float


@dataclass(frozen=True)
class ProfileEncoder:
    """Encodes the customers table's attribute columns (every column but `customer_id`).

    Text, boolean and dictionary columns are categorical (one vocabulary each); numeric columns are
    standardised with a missing indicator; timestamp and date columns become "days before as_of", so a
    sign-up date reads as tenure at the time of each request.
    """

    categorical: dict[str, Vocabulary]
    numeric: dict[str, NumericStats]
    temporal: dict[str, NumericStats]

    @property
    def num_categorical(self) -> int:
        return len(self.categorical)

    @property
    def num_numeric(self) -> int:
        """Width of the numeric block: a value and a missing flag per numeric or temporal column."""
        return 2 * (len(self.numeric) + len(self.temporal))

    @property
    def categorical_sizes(self) -> list[int]:
        return [len(v) for v in self.categorical.values()]

    @classmethod
    def fit(cls, customers: pa.Table | None, max_categories: int = 1000) -> ProfileEncoder:
        if customers is None:
            return cls({}, {}, {})
        categorical, numeric, temporal = {}, {}, {}
        reference = _reference_time(customers)
        for name in customers.column_names:
            if name == "customer_id":
                continue
            column = customers.column(name).combine_chunks()
            kind = column.type
            if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
                temporal[name] = _stats(_days_before(column, np.full(len(column), reference)))
            elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
                numeric[name] = _stats(
                    np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False))
                )
            else:
                categorical[name] = Vocabulary.fit(_as_text(column), max_size=max_categories)
        return cls(categorical, numeric, temporal)

    def encode(
        self, customers: pa.Table | None, rows: np.ndarray, as_of: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Features for requests whose profile is row `rows[i]` of `customers` (-1: no profile).

        Returns:
            `profile_categorical` [B, C] int32 and `profile_numeric` [B, 2·(numeric + temporal)] float32.
        """
        size = len(rows)
        categorical = np.full((size, self.num_categorical), MISSING, dtype=np.int32)
        has_row = rows >= 0
        if customers is None or not has_row.any():
            numeric = np.zeros((size, self.num_numeric), dtype=np.float32)
            numeric[:, 1::2] = 1.0
            return {"profile_categorical": categorical, "profile_numeric": numeric}
        picked = take_rows(customers, rows)  # a request without a profile row reads a row of nulls
        present = set(picked.column_names)
        for j, (name, vocab) in enumerate(self.categorical.items()):
            if name in present:
                categorical[:, j] = vocab.encode(_as_text(picked.column(name).combine_chunks()))
        stats = [*self.numeric.values(), *self.temporal.values()]
        values = np.full((size, len(stats)), np.nan)  # [B, numeric + temporal]; NaN: missing
        for j, name in enumerate(self.numeric):
            if name in present:
                values[:, j] = _numbers(picked.column(name))
        for j, name in enumerate(self.temporal, start=len(self.numeric)):
            if name in present:
                values[:, j] = _days_before(picked.column(name).combine_chunks(), as_of)
        mean = np.array([s.mean for s in stats])
        std = np.array([s.std for s in stats])
        missing = np.isnan(values)
        numeric = np.empty((size, self.num_numeric), dtype=np.float32)
        numeric[:, 0::2] = np.where(missing, 0.0, (values - mean) / std)
        numeric[:, 1::2] = missing
        return {"profile_categorical": categorical, "profile_numeric": numeric}

    def records_table(
        self, customer_ids: Sequence[str], profiles: Sequence[Mapping[str, Any] | None]
    ) -> pa.Table:
        """A customers table from per-customer attribute records (JSON-like), typed as at fit time.

        Attributes the encoder does not know are ignored; a missing or None attribute is missing.

        Raises:
            DataContractError: a value cannot be read as its column's type (the message names it).
        """
        columns: dict[str, pa.Array] = {"customer_id": pa.array(customer_ids, pa.string())}
        for name in self.categorical:
            columns[name] = pa.array([_category_text(_attribute(p, name)) for p in profiles], pa.string())
        for name in self.numeric:
            columns[name] = pa.array([_number(_attribute(p, name), name) for p in profiles], pa.float64())
        for name in self.temporal:
            columns[name] = _instants([_attribute(p, name) for p in profiles], name)
        return pa.table(columns)

    def to_dict(self) -> dict[str, Any]:
        return {
            "categorical": {k: v.to_dict() for k, v in self.categorical.items()},
            "numeric": {k: [s.mean, s.std] for k, s in self.numeric.items()},
            "temporal": {k: [s.mean, s.std] for k, s in self.temporal.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProfileEncoder:
        return cls(
            {k: Vocabulary.from_dict(v) for k, v in data["categorical"].items()},
            {k: NumericStats(*v) for k, v in data["numeric"].items()},
            {k: NumericStats(*v) for k, v in data["temporal"].items()},
        )


def profile_rows(customers: pa.Table, customer_ids: pa.Array) -> np.ndarray:
    """Each request's row in `customers` (int64; -1: the customer has no profile row)."""
    known = customers.column("customer_id").combine_chunks()
    if known.equals(customer_ids):  # already in request order, as the online service builds its table
        return np.arange(len(customer_ids), dtype=np.int64)
    return np.asarray(pc.index_in(customer_ids, value_set=known).fill_null(-1), dtype=np.int64)


def take_rows(table: pa.Table, rows: np.ndarray) -> pa.Table:
    """Rows `rows` of `table` (from `profile_rows`), an all-null row for -1."""
    if len(rows) == table.num_rows and np.array_equal(rows, np.arange(len(rows))):
        return table  # a take of every row in order would only copy it
    return table.take(pa.array(rows, mask=rows < 0))


def _as_text(column: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    return column if pa.types.is_string(column.type) else pc.cast(column, pa.string())


def _numbers(column: pa.ChunkedArray) -> np.ndarray:
    values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float64)


def _days_before(column: pa.Array, as_of: np.ndarray) -> np.ndarray:
    # Zoned or naive, microsecond timestamps are microseconds since the epoch already (UTC for zoned ones).
    if not (pa.types.is_timestamp(column.type) and column.type.unit == "us"):
        column = pc.cast(column, pa.timestamp("us"))
    micros = pc.cast(column, pa.int64()).to_numpy(zero_copy_only=False)
    micros = np.asarray(micros, dtype=np.float64)  # nulls arrive as NaN
    return (as_of - micros) / MICROS_PER_DAY


def _reference_time(customers: pa.Table) -> float:
    """Fit-time stand-in for as_of: the latest time in any temporal column (only centres the scale)."""
    latest = [
        pc.max(pc.cast(pc.cast(customers.column(n), pa.timestamp("us")), pa.int64())).as_py()
        for n in customers.column_names
        if pa.types.is_timestamp(customers.schema.field(n).type)
        or pa.types.is_date(customers.schema.field(n).type)
    ]
    return float(max((v for v in latest if v is not None), default=0))


def _stats(values: np.ndarray) -> NumericStats:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return NumericStats(0.0, 1.0)
    std = float(finite.std())
    return NumericStats(float(finite.mean()), std if std > 0 else 1.0)


def _attribute(profile: Mapping[str, Any] | None, name: str) -> Any:
    return None if profile is None else profile.get(name)


def _category_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):  # as Arrow casts a boolean column to text at fit time
        return "true" if value else "false"
    return str(value)


def _number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataContractError(f"profile.{name} must be a number, got {value!r}")
    return float(value)


def _instants(values: list[Any], name: str) -> pa.Array:
    text = pa.array([None if v is None else str(v) for v in values], pa.string())
    parsed = normalise_column(text, ColumnSpec(name, ColumnType.TIMESTAMP, required=False))
    if parsed.rejections:
        bad = [values[i] for i in np.flatnonzero(parsed.rejections[0][1])[:3]]
        raise DataContractError(f"profile.{name} must be an ISO-8601 time, got {', '.join(map(repr, bad))}")
    return parsed.values
