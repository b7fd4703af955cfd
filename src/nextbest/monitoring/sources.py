"""The served decisions that `nextbest monitor` reads: a service's decision log (`--decisions`), or a
customer store's served contacts (`--store`), and what each source does not record.

A store keeps, per served decision, the customer, the instant, the action, the probability it was served
with and its decision id; a decision log also keeps the model version, the control-group flag and the
model's probabilities. The monitor measures on a store what a store knows and says what it does not,
rather than fill the gaps in: control-group membership alone can be recomputed, from the catalog's
`control` group (a stable hash of the customer id, `control_members`, as the service assigns it).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from nextbest.data import CUSTOMERS, ValidationReport, load_events, load_table
from nextbest.data.events import EventLog
from nextbest.decisioning.catalog import ControlGroup
from nextbest.decisioning.policy import control_members
from nextbest.errors import DataContractError
from nextbest.scoring.decision_log import LOG_COLUMNS, DecisionLog
from nextbest.store import open_store
from nextbest.store.transfer import export_tables

# What a store's contact does not carry, by the decisions table's column (or the skipped answers' kind).
STORE_NOT_RECORDED = {
    "model_version": "the store does not record which model version served a contact",
    "served_p_conversion": (
        "the store does not record the served action's P(conversion): calibration is measured on a "
        "decision log (--decisions)"
    ),
    "p_conversion": (
        "the store does not record the model's score at the decision: the score's drift is measured on a "
        "decision log (--decisions)"
    ),
    "fallback_answers": (
        "the store records a fallback answer (its deadline passed) as a contact like any other: fallbacks "
        "are counted as decisions"
    ),
    "nothing_served": "the store records no contact when nothing was served",
}
# What each kind of `ServedDecisions.skipped` counts.
SKIPPED = {
    "unreadable_lines": "unreadable log lines",
    "fallback_answers": "fallback answers",
    "nothing_served": "answers that served nothing",
}
CONTROL_NOT_RECORDED = (
    "the store does not record control-group membership: give --model, whose catalog's control group "
    "(a stable hash of the customer id) is the one the service assigned"
)


@dataclass(frozen=True)
class ServedDecisions:
    """Served decisions as the monitor reads them.

    Attributes:
        table: the decisions table (`LOG_COLUMNS`); a column its source does not record is null.
        skipped: what the source held that is not a decision of the model, counted by kind.
        not_recorded: why, per column (or skipped kind) that the source does not record, it is unknown.
    """

    table: pa.Table
    skipped: dict[str, int]
    not_recorded: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_log(cls, log: DecisionLog) -> ServedDecisions:
        """A decision log's decisions: it records every column, and counts what it skipped."""
        skipped = {
            "unreadable_lines": log.unreadable_lines,
            "fallback_answers": log.fallbacks,
            "nothing_served": log.unserved,
        }
        return cls(log.decisions, skipped)

    @classmethod
    def from_contacts(cls, contacts: pa.Table, control: ControlGroup | None) -> ServedDecisions:
        """A store's contacts table (`CustomerStore.contacts_table`) as served decisions; with `control`,
        the serving catalog's control group, each customer's membership as the service assigned it."""
        ids = contacts.column("customer_id").combine_chunks()
        not_recorded = dict(STORE_NOT_RECORDED)
        if control is None:
            not_recorded["control"] = CONTROL_NOT_RECORDED
            flags = pa.nulls(contacts.num_rows, pa.bool_())
        else:
            flags = pa.array(control_members(ids, control), pa.bool_())
        known = {name: contacts.column(name) for name in ("timestamp", "action", "propensity")}
        columns = {"customer_id": ids, "control": flags, **known}
        table = pa.table(
            {
                name: columns[name].cast(kind) if name in columns else pa.nulls(contacts.num_rows, kind)
                for name, kind in LOG_COLUMNS.items()
            }
        )
        return cls(table, {}, not_recorded)


@dataclass(frozen=True)
class StoredInputs:
    """What `nextbest monitor --store` reads from a store."""

    decisions: ServedDecisions
    events: EventLog
    customers: pa.Table | None


def read_store(uri: str, control: ControlGroup | None, report: ValidationReport) -> StoredInputs:
    """The served contacts, events and profiles of the store at `uri`, read as `nextbest store export`
    writes them (into a temporary folder: the events stream out in batches) and as the monitor reads
    the contract tables; `control` as in `ServedDecisions.from_contacts`.

    Raises:
        StoreError: the store cannot be opened or read.
        DataContractError: the store holds no served contact, or no event.
    """
    with open_store(uri) as store, tempfile.TemporaryDirectory(prefix="nextbest-monitor-") as folder:
        exported = Path(folder)
        rows = export_tables(store, exported)
        for name, what in (("decisions.parquet", "served contact"), ("events.parquet", "event")):
            if not rows[name]:
                raise DataContractError(f"the store {uri} holds no {what}: nothing to monitor")
        events = load_events(exported / "events.parquet", report)
        customers = None
        if rows["customers.parquet"]:
            customers = load_table(exported / "customers.parquet", CUSTOMERS, report)
        contacts = pq.read_table(exported / "decisions.parquet")
    return StoredInputs(ServedDecisions.from_contacts(contacts, control), events, customers)
