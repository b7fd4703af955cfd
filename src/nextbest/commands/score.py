"""`nextbest score`: batch scoring of contract tables with a registered (or any MLflow) nextbest model."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pyarrow.parquet as pq

from nextbest.data import CUSTOMERS, REQUESTS, ValidationReport, load_events, load_table
from nextbest.errors import NextbestError
from nextbest.journeys import requests_at_end

DESCRIPTION = """\
Score customers with a nextbest model: P(conversion) and P(churn) with no action, and the catalog's
actions ranked by expected value under its rules and contact limits. Writes one Parquet row per
request: customer_id, as_of, model_version, p_conversion, p_churn, top_action, actions (action, rank,
score, uplift, p_conversion, p_churn) and suppressed (action, reason). Columns of --requests beyond
customer_id and as_of are the context that catalog rules read. Rows that break the data contract are
left out and counted in the summary.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "score",
        help="batch-score customers with a model from the MLflow registry",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        required=True,
        metavar="URI",
        help="MLflow model URI, e.g. models:/nextbest@champion (tracking store: MLFLOW_TRACKING_URI)",
    )
    parser.add_argument("--events", type=Path, required=True, metavar="PATH", help="events table")
    parser.add_argument("--customers", type=Path, metavar="PATH", help="customers table (profiles)")
    parser.add_argument(
        "--requests",
        type=Path,
        metavar="PATH",
        help="customer_id, as_of table of the moments to score (default: every customer, just after "
        "its last event)",
    )
    parser.add_argument(
        "--catalog",
        type=Path,
        metavar="FILE",
        help="action catalog (YAML) used instead of the model's packaged one, for what-if runs",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="FILE", help="output Parquet file")
    parser.add_argument("--top-k", type=int, metavar="K", help="keep the K best actions (default: all)")
    parser.add_argument(
        "--explain",
        type=int,
        default=0,
        metavar="N",
        help="add an evidence column: the N history events that weighed most in each served action's "
        "value, by occlusion (one more forward pass per event; default 0: off)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=1024, metavar="N", help="requests per model call (default 1024)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.top_k is not None and args.top_k < 1:
        raise NextbestError(f"--top-k must be at least 1, got {args.top_k}")
    if args.explain < 0:
        raise NextbestError(f"--explain must be 0 or more, got {args.explain}")
    if args.batch_size < 1:
        raise NextbestError(f"--batch-size must be at least 1, got {args.batch_size}")
    # MLflow is imported only by the commands that need it: it takes seconds.
    from nextbest.decisioning.catalog import ActionCatalog
    from nextbest.scoring.decide import decide
    from nextbest.scoring.output import decisions_table
    from nextbest.scoring.pyfunc import load_scorer, model_version

    began = time.perf_counter()
    scorer = load_scorer(args.model)
    catalog = None if args.catalog is None else ActionCatalog.from_yaml(args.catalog)
    version = model_version(args.model, scorer)
    report = ValidationReport()
    log = load_events(args.events, report)
    customers = None if args.customers is None else load_table(args.customers, CUSTOMERS, report)
    requests = requests_at_end(log) if args.requests is None else load_table(args.requests, REQUESTS, report)
    decisions = decide(
        scorer,
        log,
        requests,
        customers,
        catalog=catalog,
        batch_size=args.batch_size,
        progress=True,
        explain=args.explain,
    )
    table = decisions_table(decisions, version, args.top_k)
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, args.out)
    except OSError as exc:
        raise NextbestError(f"cannot write {args.out}: {exc}") from exc
    seconds = time.perf_counter() - began
    print(_summary(table.num_rows, log.num_events, report, version, args.out, seconds))
    return 0


def _summary(
    rows: int, events: int, report: ValidationReport, version: str, out: Path, seconds: float
) -> str:
    rejected = sum(report.rows_rejected.values())
    lines = [
        f"Scored {rows:,} requests from {events:,} events with model version {version} in {seconds:.1f} s "
        f"({rows / max(seconds, 1e-9):,.0f} requests/s); wrote {out}.",
        f"Rejected {rejected:,} input rows" + (":" if rejected else "."),
    ]
    lines += [f"  {finding}" for finding in report.findings]
    return "\n".join(lines)
