"""`nextbest monitor`: what served decisions did and whether the model still fits its world."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nextbest.commands.outcome_rules import add_outcome_rules, outcome_rules
from nextbest.errors import NextbestError

if TYPE_CHECKING:
    import pyarrow as pa

    from nextbest.data import ValidationReport
    from nextbest.data.events import EventLog
    from nextbest.decisioning.catalog import ControlGroup
    from nextbest.monitoring.reference import InputReference
    from nextbest.monitoring.sources import ServedDecisions

DESCRIPTION = """\
Monitor the decisions a service served (its decision log, --decisions) against the events that
followed them (--events), or the contacts a service with a store served against the store's events
and profiles (--store): the decision mix per day and action; realised conversion and churn per
action over the decisions whose outcome window has closed (a --conversion-event within --horizon-days,
no activity for --churn-days; the decisions still open are counted); the policy's lift over the
catalog's control group with 95% bootstrap intervals over customers; calibration of the served
P(conversion) against what happened; and, with --model, the drift of every model input (event-type and
channel mix, history length, gaps between events, profile attributes with --customers, the score) as
PSI against the reference the model saved at training, guarded by a chi-square test so that neither
small samples nor trivial shifts of large ones alarm.

Alerts: no_responses (no conversion event for --quiet-days), success_rate_falling (the latest week's
conversion rate significantly 10% or more below the week before), calibration_off (observed conversions
significantly 20% or more off the served probabilities), input_drift (an input's status is "drifted").
Writes OUT/report.html (self-contained) and OUT/summary.json (decisions, outcomes, lift, calibration,
drift, alerts). With --fail-on-alert the exit status is 1 when an alert fires, for schedulers.

A store does not record the model version, the served probabilities or the model's score of a
decision: with --store, calibration and the score's drift are not measured (summary.json says why),
and the control group is the one of the --model's catalog (a stable hash of the customer id, as the
service assigns it); without --model, the lift is not measured.
"""


NO_MODEL = "no model given (--model): drift is measured against the reference a model saved at training."


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "monitor",
        help="outcomes, lift against control, calibration, input drift and alerts of served decisions",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = parser.add_argument_group("served decisions: --decisions with --events, or --store")
    sources = group.add_mutually_exclusive_group(required=True)
    sources.add_argument("--decisions", type=Path, metavar="DIR", help="the service's decision log directory")
    sources.add_argument(
        "--store", metavar="URI", help="the service's customer store: its contacts, events and profiles"
    )
    group.add_argument("--events", type=Path, metavar="PATH", help="events table (with --decisions)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    parser.add_argument(
        "--model", metavar="URI", help="MLflow model URI whose training reference drift is measured against"
    )
    parser.add_argument(
        "--customers", type=Path, metavar="PATH", help="customers table (profile drift; with --decisions)"
    )
    parser.add_argument("--fail-on-alert", action="store_true", help="exit with status 1 when an alert fires")
    add_outcome_rules(parser, "outcomes")
    parser.add_argument(
        "--quiet-days", type=float, default=7.0, help="days without a conversion that alert (7)"
    )
    parser.add_argument("--resamples", type=int, default=1000, metavar="N", help="bootstrap resamples (1000)")
    parser.add_argument(
        "--sample", type=int, default=200_000, metavar="N", help="decisions read for drift (200000)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    for name in ("resamples", "sample"):
        if getattr(args, name) < 10:
            raise NextbestError(f"--{name} must be at least 10, got {getattr(args, name)}")
    _check_sources(args)
    from nextbest.data import ValidationReport
    from nextbest.monitoring.monitor import MonitorOptions, monitor
    from nextbest.monitoring.report import write_report

    began = time.perf_counter()
    report = ValidationReport()
    reference, control = _model(args.model)
    served, events, customers = _inputs(args, control, report)
    options = MonitorOptions(
        rules=outcome_rules(args), quiet_days=args.quiet_days, resamples=args.resamples, sample=args.sample
    )
    summary = monitor(served, events, reference, customers, options)
    try:
        page, numbers = write_report(summary, args.out)
    except OSError as exc:
        raise NextbestError(f"cannot write the report to {args.out}: {exc}") from exc
    _print_summary(summary, report, time.perf_counter() - began, page, numbers)
    return 1 if args.fail_on_alert and summary["alerts"] else 0


def _check_sources(args: argparse.Namespace) -> None:
    """A decision log comes with its events table and, optionally, a customers table; a store holds
    both (argparse has made sure that exactly one of --decisions and --store is given)."""
    if args.decisions is not None and args.events is None:
        raise NextbestError("--decisions needs --events PATH: the events that followed the decisions")
    if args.store is not None and (args.events, args.customers) != (None, None):
        raise NextbestError("--events and --customers go with --decisions: --store reads the store's own")


def _inputs(
    args: argparse.Namespace, control: ControlGroup | None, report: ValidationReport
) -> tuple[ServedDecisions, EventLog, pa.Table | None]:
    """The served decisions, the events and the customers' profiles, from a decision log or a store."""
    from nextbest.data import CUSTOMERS, load_events, load_table
    from nextbest.monitoring.sources import ServedDecisions, read_store
    from nextbest.scoring.decision_log import read_decision_log

    if args.store is not None:
        stored = read_store(args.store, control, report)
        return stored.decisions, stored.events, stored.customers
    served = ServedDecisions.from_log(read_decision_log(args.decisions))
    customers = None if args.customers is None else load_table(args.customers, CUSTOMERS, report)
    return served, load_events(args.events, report), customers


def _model(model_uri: str | None) -> tuple[InputReference | str, ControlGroup | None]:
    """The model's input reference (or why drift cannot be measured) and its catalog's control group."""
    if model_uri is None:
        return NO_MODEL, None
    from nextbest.scoring.pyfunc import load_version

    scorer, version = load_version(model_uri)
    control = scorer.action_catalog.control
    if scorer.reference is None:
        message = (
            f"the model {model_uri} (version {version}) carries no input reference: it was trained before "
            "nextbest saved one with the model. Retrain it to measure drift."
        )
        print(f"nextbest monitor: {message}", file=sys.stderr)
        return message, control
    return scorer.reference, control


def _print_summary(
    summary: dict[str, Any], report: ValidationReport, seconds: float, page: Path, numbers: Path
) -> None:
    from nextbest.monitoring.sources import SKIPPED

    decisions, outcomes, lift = summary["decisions"], summary["outcomes"], summary["lift"]
    control = "unknown" if decisions["control"] is None else f"{decisions['control']:,}"
    skipped = ", ".join(f"{n:,} {SKIPPED[kind]}" for kind, n in decisions["skipped"].items())
    print(
        f"{decisions['total']:,} decisions ({control} control); outcome windows still open: "
        f"{outcomes['open']['conversion']:,} (conversion), {outcomes['open']['churn']:,} (churn)"
        + (f"; not counted: {skipped}." if skipped else ".")
    )
    for reason in decisions["not_recorded"].values():
        print(f"Not recorded: {reason}.")
    if lift["available"]:
        difference = lift["conversion_rate_difference"]
        print(
            f"Lift in conversion rate against control: {difference['value']:+.2%} "
            f"[{difference['low']:+.2%}, {difference['high']:+.2%}]"
        )
    for alert in summary["alerts"]:
        print(f"ALERT {alert['severity']} {alert['name']}: {alert['message']}")
    rejected = sum(report.rows_rejected.values())
    if rejected:
        print(f"Rejected {rejected:,} input rows:")
        print("\n".join(f"  {finding}" for finding in report.findings))
    print(f"Wrote {page} and {numbers} in {seconds:.1f} s.")
