"""Loading and validating the contract tables (events, customers, decisions, labels)."""

from __future__ import annotations

from pathlib import Path
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nextbest.data.events import EventLog
from nextbest.data.io import read_raw_table
from nextbest.data.normalize import normalise_table
from nextbest.data.report import (
    MAX_EXAMPLES,
    Finding,
    Severity,
    ValidationReport,
    row_examples,
)
from nextbest.data.schema import CUSTOMERS, DECISIONS, EVENTS, LABELS, REQUESTS, TableSpec
from nextbest.errors import DataContractError

TableSource: TypeAlias = str | Path | pa.Table

# Which columns identify a row: a second row with the same key is rejected (the first is kept).
_UNIQUE_KEYS: dict[str, tuple[str, ...] | None] = {
    CUSTOMERS.name: ("customer_id",),
    LABELS.name: ("customer_id", "as_of"),
    REQUESTS.name: ("customer_id", "as_of"),
    DECISIONS.name: None,  # None: the whole row
}


def load_events(source: TableSource, report: ValidationReport | None = None) -> EventLog:
    """Read, normalise and order an events table.

    Rows with bad cells are rejected and counted in `report`; the rest load.

    Raises:
        DataContractError: the table cannot be used at all (unreadable, empty, missing columns, ...).
    """
    report = report if report is not None else ValidationReport()
    table = _normalised_or_raise(source, EVENTS, report)
    return EventLog.from_normalised(table, report)


def load_table(source: TableSource, spec: TableSpec, report: ValidationReport | None = None) -> pa.Table:
    """Read and normalise a customers, decisions or labels table (see `load_events` for events).

    Raises:
        DataContractError: the table cannot be used at all.
    """
    report = report if report is not None else ValidationReport()
    table = _normalised_or_raise(source, spec, report)
    return _reject_repeated_keys(table, spec, report)


def validate_tables(
    events: TableSource | None = None,
    customers: TableSource | None = None,
    decisions: TableSource | None = None,
    labels: TableSource | None = None,
) -> ValidationReport:
    """Check any subset of the contract tables, collecting every finding instead of stopping at one."""
    report = ValidationReport()
    customer_sets: dict[str, pa.Array] = {}
    sources = {EVENTS: events, CUSTOMERS: customers, DECISIONS: decisions, LABELS: labels}
    for spec, source in sources.items():
        if source is None:
            continue
        try:
            if spec is EVENTS:
                customer_sets[spec.name] = load_events(source, report).customer_ids
            else:
                customer_sets[spec.name] = load_table(source, spec, report).column("customer_id")
        except DataContractError as exc:
            if spec.name not in report.unusable_tables:
                report.unusable(spec.name, None, str(exc))
    _report_customers_without_events(customer_sets, report)
    return report


def _normalised_or_raise(source: TableSource, spec: TableSpec, report: ValidationReport) -> pa.Table:
    raw = source if isinstance(source, pa.Table) else read_raw_table(source, spec, report)
    if spec is LABELS and not {"conversion", "churn"} & set(raw.column_names):
        report.rows_read[spec.name] = raw.num_rows
        report.unusable(spec.name, None, "needs a `conversion` or a `churn` column")
        raise DataContractError(_unusable_message(source, spec, report))
    table = normalise_table(raw, spec, report)
    if table is None:
        raise DataContractError(_unusable_message(source, spec, report))
    return table


def _unusable_message(source: TableSource, spec: TableSpec, report: ValidationReport) -> str:
    name = "in-memory table" if isinstance(source, pa.Table) else str(source)
    problems = "\n".join(f"  {f}" for f in report.errors if f.table == spec.name)
    return f"{spec.name} table {name} does not meet the data contract:\n{problems}"


def _reject_repeated_keys(table: pa.Table, spec: TableSpec, report: ValidationReport) -> pa.Table:
    key = _UNIQUE_KEYS.get(spec.name)
    if key is not None and len(key) == 1 and _all_distinct(table.column(key[0])):
        return table  # the usual case, without converting the key to pandas (an online request's profile)
    columns = list(key) if key else table.column_names
    repeated = table.select(columns).to_pandas().duplicated(keep="first").to_numpy()
    if not repeated.any():
        return table
    rows = np.flatnonzero(repeated)
    what = f"repeated {', '.join(key)}" if key else "duplicate rows (identical in every column)"
    shown = table.select(columns).take(pa.array(rows[:MAX_EXAMPLES])).to_pylist()
    values = [", ".join(str(v) for v in row.values()) for row in shown]
    column = ", ".join(key) if key else None
    examples = row_examples(rows, values)
    report.reject(spec.name, column, f"{what}; the first is kept", len(rows), examples, repeat=True)
    report.keep(
        spec.name, column, f"{what}; the first is kept", lambda: table.filter(pa.array(repeated)), repeat=True
    )
    return table.filter(pa.array(~repeated))


def _all_distinct(values: pa.ChunkedArray) -> bool:
    """Whether no two values are equal (two nulls count as equal)."""
    return bool(pc.count_distinct(values, mode="all").as_py() == len(values))


def _report_customers_without_events(customer_sets: dict[str, pa.Array], report: ValidationReport) -> None:
    known = customer_sets.get(EVENTS.name)
    if known is None:
        return
    for table, ids in customer_sets.items():
        if table == EVENTS.name:
            continue
        unknown = pc.invert(pc.is_in(ids, value_set=known))
        count = int(pc.sum(unknown).as_py() or 0)
        if count:
            examples = pc.filter(ids, unknown).slice(0, 3).to_pylist()
            report.add(
                Finding(
                    table,
                    "customer_id",
                    Severity.WARNING,
                    "customers with no events (scored from their profile alone)",
                    count,
                    tuple(str(e) for e in examples),
                )
            )
