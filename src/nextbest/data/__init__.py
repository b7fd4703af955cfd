"""The data contract: reading, normalising and validating events, customers, decisions and labels."""

from nextbest.data.events import EventLog
from nextbest.data.report import Finding, Severity, ValidationReport
from nextbest.data.schema import CUSTOMERS, DECISIONS, EVENTS, LABELS, REQUESTS, TABLES, ColumnType, TableSpec
from nextbest.data.tables import load_events, load_table, validate_tables

__all__ = [
    "CUSTOMERS",
    "DECISIONS",
    "EVENTS",
    "LABELS",
    "REQUESTS",
    "TABLES",
    "ColumnType",
    "EventLog",
    "Finding",
    "Severity",
    "TableSpec",
    "ValidationReport",
    "load_events",
    "load_table",
    "validate_tables",
]
