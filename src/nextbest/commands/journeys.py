"""`nextbest journeys`: the journey discovery report (paths, funnel, stalls, transitions, attribution)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from nextbest.errors import NextbestError

DESCRIPTION = """\
Discover the journeys customers actually take: the most frequent paths by channel and by event type,
a Sankey of the first touches, the funnel with its drop-offs, time to convert, where journeys stall,
channel-to-channel transitions, and attribution (exact absorbing-Markov-chain removal effects, first,
last and linear touch). With --model, the sequence model adds the moments of truth (touches whose
removal moves P(conversion) most) and journey segments (k-means on its embeddings, each with its most
valuable next action).

A journey ends at each conversion event; the next one starts after it. Writes OUT/report.html (one
self-contained file, readable offline) and OUT/summary.json (every number of the report).
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "journeys",
        help="journey discovery report: paths, funnel, stalls, transitions, attribution, segments",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=Path, required=True, metavar="PATH", help="events table")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    parser.add_argument("--customers", type=Path, metavar="PATH", help="customers table (for --model)")
    parser.add_argument(
        "--model",
        metavar="URI",
        help="MLflow model URI for the model-based sections, e.g. models:/nextbest@champion",
    )
    parser.add_argument(
        "--conversion-event",
        default="purchase",
        metavar="TYPE",
        help="event type of a conversion (default purchase)",
    )
    parser.add_argument(
        "--touch-column",
        default="channel",
        metavar="COLUMN",
        help="events column whose values label a touch in paths, transitions and attribution (default "
        "channel; e.g. action for campaigns)",
    )
    parser.add_argument(
        "--funnel",
        metavar="TYPES",
        help="comma-separated event types of the funnel stages, in order (default: found in the data)",
    )
    parser.add_argument(
        "--markov-order",
        type=int,
        action="append",
        metavar="K",
        help="order of the Markov attribution chain (repeatable; default 1; the first is the headline)",
    )
    parser.add_argument(
        "--churn-days", type=int, default=60, metavar="D", help="inactivity that counts as churn"
    )
    parser.add_argument(
        "--segments", type=int, default=5, metavar="K", help="journey segments (with --model)"
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=2000,
        metavar="N",
        help="customers the model-based sections read (default 2000)",
    )
    parser.add_argument("--title", default="Customer journeys", help="the report's title")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    orders = tuple(args.markov_order or (1,))
    if any(order < 1 for order in orders):
        raise NextbestError(f"--markov-order must be at least 1, got {min(orders)}")
    for name in ("churn_days", "segments", "sample"):
        if getattr(args, name) < 1:
            raise NextbestError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    from nextbest.data import CUSTOMERS, ValidationReport, load_events, load_table
    from nextbest.discovery.summary import DiscoveryOptions, summarise, write_report

    began = time.perf_counter()
    report = ValidationReport()
    log = load_events(args.events, report)
    customers = None if args.customers is None else load_table(args.customers, CUSTOMERS, report)
    scorer = None
    if args.model is not None:
        from nextbest.scoring.pyfunc import load_scorer

        scorer = load_scorer(args.model)
    stages = tuple(s.strip() for s in args.funnel.split(",") if s.strip()) if args.funnel else ()
    options = DiscoveryOptions(
        conversion_event=args.conversion_event,
        touch_column=args.touch_column,
        funnel_stages=stages,
        markov_orders=orders,
        churn_days=args.churn_days,
        segments=args.segments,
        model_sample=args.sample,
        title=args.title,
    )
    summary = summarise(log, options, scorer, customers)
    try:
        page, numbers = write_report(summary, args.out)
    except OSError as exc:
        raise NextbestError(f"cannot write the report to {args.out}: {exc}") from exc
    overview = summary["overview"]
    print(
        f"{overview['journeys']:,} journeys of {overview['customers']:,} customers "
        f"({overview['events']:,} events), {overview['conversion_rate']:.1%} converted; "
        f"wrote {page} and {numbers} in {time.perf_counter() - began:.1f} s."
    )
    rejected = sum(report.rows_rejected.values())
    if rejected:
        print(f"Rejected {rejected:,} input rows:")
        print("\n".join(f"  {finding}" for finding in report.findings))
    return 0
