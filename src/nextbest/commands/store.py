"""`nextbest store`: backfill a customer store from contract tables, and export it back to them."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from nextbest.errors import NextbestError
from nextbest.store import DEFAULT_MAX_EVENTS, open_store

STORE_ENV = "NEXTBEST_STORE"
STORE_HELP = (
    "the store: sqlite:///PATH (a file on this machine), redis://HOST:PORT/DB or "
    f"redis+cluster://HOST:PORT (a Redis Cluster, by any node) (default: ${STORE_ENV})"
)
LOAD_DESCRIPTION = """\
Backfill the store from contract tables. Events are checked against the data contract exactly as the
service's POST /events checks them: good rows are stored, bad rows counted and named by file row, field
and problem; an event already stored (same event_id, or the same in every field) is stored once, so a
load can be rerun or resumed. Customers' attributes are upserted onto their profiles. Each customer keeps
its last --max-events events.
"""
EXPORT_DESCRIPTION = """\
Write the store's contents as contract tables for the next training run: DIR/events.parquet,
DIR/customers.parquet and DIR/decisions.parquet (every served contact: customer_id, timestamp, action,
propensity, channel, decision_id). DIR is claimed as nextbest score claims its output: a rerun replaces
the files it wrote, a file it did not write is never replaced, and DIR is never the store's own file.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "store",
        help="load contract tables into a customer store, or export it",
        description="The customer store behind `nextbest serve --store` (sqlite://, redis:// or redis+cluster://).",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    load = commands.add_parser(
        "load",
        help="backfill the store from events (and customers) tables",
        description=LOAD_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    load.add_argument("--store", metavar="URI", help=STORE_HELP)
    load.add_argument(
        "--events", type=Path, required=True, metavar="PATH", help="events table (Parquet or CSV)"
    )
    load.add_argument("--customers", type=Path, metavar="PATH", help="customers table (profiles)")
    load.add_argument(
        "--max-events",
        type=int,
        default=DEFAULT_MAX_EVENTS,
        metavar="N",
        help=f"events kept per customer, the latest (default {DEFAULT_MAX_EVENTS:,})",
    )
    load.set_defaults(handler=run_load)
    export = commands.add_parser(
        "export",
        help="write the store back as events, customers and decisions tables",
        description=EXPORT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("--store", metavar="URI", help=STORE_HELP)
    export.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    export.add_argument(
        "--overwrite",
        action="store_true",
        help="replace another store's export in DIR (only files that DIR's _job.json lists as written "
        "by nextbest store export, and only when DIR holds nothing else)",
    )
    export.set_defaults(handler=run_export)


def _store_uri(args: argparse.Namespace) -> str:
    uri = args.store or os.environ.get(STORE_ENV)
    if not uri:
        raise NextbestError(f"no store given: pass --store URI or set {STORE_ENV}")
    return str(uri)


def run_load(args: argparse.Namespace) -> int:
    from nextbest.store.transfer import load_tables

    started = time.perf_counter()
    with open_store(_store_uri(args), max_events=args.max_events) as store:
        loads = load_tables(store, args.events, args.customers, progress=True)
    seconds = time.perf_counter() - started
    for load in loads:
        print(load.render())
    events = loads[0]
    print(f"loaded in {seconds:.1f} s ({events.read / max(seconds, 1e-9):,.0f} events/s)")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from nextbest.store.transfer import export_tables

    with open_store(_store_uri(args)) as store:
        rows = export_tables(store, args.out, overwrite=args.overwrite)
    for name, count in rows.items():
        print(f"{args.out / name}: {count:,} rows")
    return 0
