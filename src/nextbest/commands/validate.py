"""`nextbest validate`: check tables against the data contract and report every problem found."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nextbest.data import validate_tables
from nextbest.errors import NextbestError

DESCRIPTION = """\
Check events (and optionally customers, decisions, labels) against the data contract.

Prints one line per table (rows read, accepted, rejected) and one per finding, naming the table,
column, number of rows and a few examples. Exit status: 0 when no errors were found (warnings, such
as events logged out of time order, are fine unless --strict), 1 otherwise.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check tables against the data contract",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--events", type=Path, required=True, metavar="PATH", help="events table (Parquet or CSV)"
    )
    parser.add_argument("--customers", type=Path, metavar="PATH", help="customers table")
    parser.add_argument("--decisions", type=Path, metavar="PATH", help="decisions table")
    parser.add_argument("--labels", type=Path, metavar="PATH", help="labels table")
    parser.add_argument("--strict", action="store_true", help="treat warnings as errors")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON to FILE")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    report = validate_tables(
        events=args.events, customers=args.customers, decisions=args.decisions, labels=args.labels
    )
    print(report.render())
    if args.json:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report.to_dict(args.strict), indent=2))
        except OSError as exc:
            raise NextbestError(f"cannot write the JSON report to {args.json}: {exc}") from exc
    return 0 if report.passed(args.strict) else 1
