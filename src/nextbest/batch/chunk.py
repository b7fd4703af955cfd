"""Scoring one chunk of customers: raw contract tables in, the output rows and the rejected rows out.

Every engine (the local streaming job, Spark) scores through `score_chunk`, so they cannot disagree.

A customer with a rejected event or profile row is not scored: ranking on a history with holes would
serve a confident answer to the wrong question. Its requests go to the rejects with the reason instead.
Rows that merely repeat a kept row (duplicates) are rejected without costing the customer its score.

The result depends on the order of a customer's rows in the input (which of two repeated rows is kept,
how events at the same time are ordered), so an engine that shuffles rows must restore it first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from nextbest.data import CUSTOMERS, EVENTS, REQUESTS, EventLog, ValidationReport, load_events, load_table
from nextbest.data.report import RejectedRows, json_objects
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
    count = len(rejected)
    return pa.table(
        [
            pa.repeat(pa.scalar(rejected.table, pa.string()), count),
            rejected.customer_ids(),
            pa.repeat(pa.scalar(rejected.column, pa.string()), count),
            pa.repeat(pa.scalar(rejected.problem, pa.string()), count),
            rejected.texts(),
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
    ids = requests.column("customer_id").combine_chunks()
    count = len(ids)
    return pa.table(
        [
            pa.repeat(pa.scalar(REQUESTS.name, pa.string()), count),
            ids,
            pa.nulls(count, pa.string()),
            pa.array([reasons[c] for c in ids.to_pylist()], pa.string()),
            json_objects(requests.select(["customer_id", "as_of"])),
        ],
        schema=REJECTS_SCHEMA,
    )
