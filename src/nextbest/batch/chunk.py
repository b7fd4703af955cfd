"""Scoring one chunk of customers: raw contract tables in, the output rows and the rejected rows out.

Every engine (the local streaming job, Spark) scores through `score_chunk`, so they cannot disagree.

A customer with a rejected event or profile row is not scored: ranking on a history with holes would
serve a confident answer to the wrong question. Its requests go to the rejects with the reason instead.
Rows that merely repeat a kept row (duplicates) are rejected without costing the customer its score.

The result depends on the order of a customer's rows in the input (which of two repeated rows is kept,
how events at the same time are ordered), so an engine that shuffles rows must restore it first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from nextbest.data import CUSTOMERS, EVENTS, REQUESTS, EventLog, ValidationReport, load_events, load_table
from nextbest.data.report import RejectedRows
from nextbest.data.tables import TableSource
from nextbest.decisioning.catalog import ActionCatalog
from nextbest.journeys import requests_at_end
from nextbest.scoring.decide import decide
from nextbest.scoring.output import decisions_table
from nextbest.scoring.scorer import DEFAULT_BATCH_SIZE, JourneyScorer

REJECTS_SCHEMA = pa.schema(
    [
        ("table", pa.string()),
        ("customer_id", pa.string()),
        ("column", pa.string()),
        ("problem", pa.string()),
        ("row", pa.string()),  # the row as read, as JSON (the line's text for a malformed CSV line)
    ]
)
NOT_SCORED = "not scored: {count} of the customer's {table} rows were rejected (see them in the rejects)"


@dataclass(frozen=True)
class ScoringOptions:
    """What every chunk of a job is scored with."""

    model_version: str
    catalog: ActionCatalog | None = None
    top_k: int | None = None
    explain: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE
    progress: bool = False  # a bar over the chunk's model batches


@dataclass(frozen=True)
class ScoredChunk:
    """The output rows (`nextbest.scoring.output.OUTPUT_SCHEMA`) and rejected rows (`REJECTS_SCHEMA`)
    of a chunk, with how many events it read."""

    decisions: pa.Table
    rejects: pa.Table
    events: int
    report: ValidationReport = field(repr=False)


def score_chunk(
    scorer: JourneyScorer,
    events: TableSource | None,
    requests: TableSource | None,
    customers: TableSource | None,
    options: ScoringOptions,
) -> ScoredChunk:
    """Scores the requests of one chunk (default: each of its customers after its last event).

    `events` None means the chunk's customers have no events (they are scored from their profile).

    Raises:
        DataContractError: a table cannot be used at all (e.g. a required column is missing).
    """
    report = ValidationReport(keep_rejected_rows=True)
    log = EventLog.empty() if events is None else load_events(events, report)
    profiles = None if customers is None else load_table(customers, CUSTOMERS, report)
    wanted = requests_at_end(log) if requests is None else load_table(requests, REQUESTS, report)
    unscorable = _customers_losing_rows(report)
    blocked = pc.is_in(wanted.column("customer_id"), value_set=pa.array(list(unscorable), pa.string()))
    scored = wanted.filter(pc.invert(blocked))
    decisions = decide(
        scorer,
        log,
        scored,
        profiles,
        catalog=options.catalog,
        batch_size=options.batch_size,
        progress=options.progress,
        explain=options.explain,
    )
    rejects = pa.concat_tables(
        [*(rejects_table(r) for r in report.rejected_rows), _not_scored(wanted.filter(blocked), unscorable)]
    )
    output = decisions_table(decisions, options.model_version, options.top_k)
    return ScoredChunk(output, rejects, log.num_events, report)


def rejects_table(rejected: RejectedRows) -> pa.Table:
    """`rejected` rows as rows of the rejects file (`REJECTS_SCHEMA`)."""
    if rejected.rows is None:
        rows: list[dict[str, Any]] = [{} for _ in rejected.lines]
        texts = list(rejected.lines)
    else:
        rows = rejected.rows.to_pylist()
        texts = [json.dumps(row, default=str, ensure_ascii=False) for row in rows]
    ids = [None if row.get("customer_id") is None else str(row["customer_id"]) for row in rows]
    count = len(texts)
    return pa.table(
        [
            pa.repeat(pa.scalar(rejected.table, pa.string()), count),
            pa.array(ids, pa.string()),
            pa.repeat(pa.scalar(rejected.column, pa.string()), count),
            pa.repeat(pa.scalar(rejected.problem, pa.string()), count),
            pa.array(texts, pa.string()),
        ],
        schema=REJECTS_SCHEMA,
    )


def _customers_losing_rows(report: ValidationReport) -> dict[str, str]:
    """Customers with an event or profile row rejected for a bad cell, and the reason they are not scored.

    Repeats of a kept row (duplicates) and rows without a customer cost no customer its score.
    """
    lost: dict[str, dict[str, int]] = {}
    for rejected in report.rejected_rows:
        if rejected.table not in (EVENTS.name, CUSTOMERS.name) or rejected.rows is None or rejected.repeat:
            continue
        ids = pc.cast(rejected.rows.column("customer_id"), pa.string()).drop_null().to_pylist()
        for customer in ids:
            counts = lost.setdefault(customer, {})
            counts[rejected.table] = counts.get(rejected.table, 0) + 1
    return {
        customer: "; ".join(NOT_SCORED.format(count=n, table=table) for table, n in counts.items())
        for customer, counts in lost.items()
    }


def _not_scored(requests: pa.Table, reasons: dict[str, str]) -> pa.Table:
    """The requests left unscored, as rejects that say why."""
    ids = requests.column("customer_id").to_pylist()
    as_of = requests.column("as_of").to_pylist()
    rows = [json.dumps({"customer_id": c, "as_of": t.isoformat()}) for c, t in zip(ids, as_of, strict=True)]
    count = len(ids)
    return pa.table(
        [
            pa.repeat(pa.scalar(REQUESTS.name, pa.string()), count),
            pa.array(ids, pa.string()),
            pa.nulls(count, pa.string()),
            pa.array([reasons[c] for c in ids], pa.string()),
            pa.array(rows, pa.string()),
        ],
        schema=REJECTS_SCHEMA,
    )
