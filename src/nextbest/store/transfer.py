"""Contract tables into a store (`nextbest store load`) and back out (`nextbest store export`).

Loading streams the events file in batches through `CustomerStore.append_events`, so a backfill is
checked, deduplicated and retained exactly as live ingestion is; exporting writes the tables the next
training run reads, the served contacts as its decisions table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from nextbest.batch.claim import claim_output, temporary
from nextbest.data.io import count_rows, iter_raw_batches, read_raw_table
from nextbest.data.report import MAX_EXAMPLES, ValidationReport
from nextbest.data.schema import CUSTOMERS
from nextbest.store.base import CustomerStore
from nextbest.store.rows import EVENT_COLUMNS, STORED_EVENTS, Rejection, events_table

EXPORT_WRITER = "nextbest store export"
EXPORT_FILES = ("events.parquet", "customers.parquet", "decisions.parquet")
# Rows per batch handed to the store: large enough that per-batch work is small beside per-row work.
LOAD_BATCH_ROWS = 1 << 17


@dataclass
class TableLoad:
    """What became of one table's rows."""

    table: str
    read: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    examples: list[str] = field(default_factory=list)
    not_stored: tuple[str, ...] = ()

    def add_rejections(self, rejections: tuple[Rejection, ...], first_row: int) -> None:
        self.rejected += len({r.index for r in rejections})
        for r in rejections[: MAX_EXAMPLES - len(self.examples)]:
            self.examples.append(f"row {first_row + r.index + 1}: {r.field}: {r.problem}")

    def render(self) -> str:
        line = (
            f"{self.table}: {self.read:,} rows read, {self.accepted:,} stored, "
            f"{self.duplicates:,} already stored, {self.rejected:,} rejected"
        )
        if self.examples:
            line += "; e.g. " + "; ".join(self.examples)
        if self.not_stored:
            line += f"\n{self.table}: columns the store does not keep: {', '.join(self.not_stored)}"
        return line


def load_tables(
    store: CustomerStore,
    events: Path,
    customers: Path | None = None,
    *,
    batch_rows: int = LOAD_BATCH_ROWS,
    progress: bool = False,
) -> list[TableLoad]:
    """Appends the events table (and upserts the customers table) into `store`, in batches.

    Raises:
        DataContractError: a table that cannot be read, or a column that cannot hold its type at all.
    """
    report = ValidationReport()
    loads = [_load_events(store, events, report, batch_rows, progress)]
    if customers is not None:
        loads.append(_load_customers(store, customers, report, batch_rows))
    return loads


def _load_events(
    store: CustomerStore, path: Path, report: ValidationReport, batch_rows: int, progress: bool
) -> TableLoad:
    load = TableLoad(STORED_EVENTS.name)
    bar = tqdm(total=count_rows(path, STORED_EVENTS), unit="event", disable=not progress, desc="loading")
    with bar:
        for batch in iter_raw_batches(path, STORED_EVENTS, report, batch_rows):
            if not load.read:
                load.not_stored = tuple(c for c in batch.schema.names if c not in EVENT_COLUMNS)
            result = store.append_events(pa.Table.from_batches([batch]))
            load.accepted += result.accepted
            load.duplicates += result.duplicates
            load.add_rejections(result.rejected, load.read)
            load.read += batch.num_rows
            bar.update(batch.num_rows)
    load.rejected += report.rows_rejected.get(STORED_EVENTS.name, 0)  # malformed CSV lines
    return load


def _load_customers(store: CustomerStore, path: Path, report: ValidationReport, batch_rows: int) -> TableLoad:
    load = TableLoad(CUSTOMERS.name)
    table = read_raw_table(path, CUSTOMERS, report)
    for start in range(0, table.num_rows, batch_rows):
        result = store.upsert_profiles(table.slice(start, batch_rows))
        load.accepted += result.accepted
        load.add_rejections(result.rejected, start)
        load.read += min(batch_rows, table.num_rows - start)
    load.rejected += report.rows_rejected.get(CUSTOMERS.name, 0)
    return load


def export_tables(store: CustomerStore, out: Path, *, overwrite: bool = False) -> dict[str, int]:
    """Writes `out/events.parquet`, `customers.parquet` and `decisions.parquet` (the served contacts:
    customer_id, timestamp, action, propensity, channel, decision_id); returns the rows of each.

    `out` is claimed as `nextbest score` claims its output (`nextbest.batch.claim`): a file that this
    command did not write is never replaced.
    """
    claim_output(
        out,
        {"store": store.uri},
        EXPORT_FILES,
        store.local_files(),
        overwrite=overwrite,
        resumable=False,
        writer=EXPORT_WRITER,
    )
    rows = {"events.parquet": _write_events(store, out / "events.parquet")}
    for name, table in (
        ("customers.parquet", store.profiles_table()),
        ("decisions.parquet", store.contacts_table()),
    ):
        pq.write_table(table, temporary(out / name))
        os.replace(temporary(out / name), out / name)
        rows[name] = table.num_rows
    return rows


def _write_events(store: CustomerStore, path: Path) -> int:
    written = 0
    with pq.ParquetWriter(
        temporary(path), events_table({name: [] for name in EVENT_COLUMNS}).schema
    ) as writer:
        for batch in store.iter_events():
            writer.write_table(batch)
            written += batch.num_rows
    os.replace(temporary(path), path)
    return written
