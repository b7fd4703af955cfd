"""`nextbest monitor`: what served decisions did and whether the model still fits its world."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nextbest.errors import NextbestError

if TYPE_CHECKING:
    from nextbest.data import ValidationReport
    from nextbest.monitoring.reference import InputReference

DESCRIPTION = """\
Monitor the decisions a service served (its decision log, --decisions) against the events that
followed them (--events): the decision mix per day and action; realised conversion and churn per
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
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "monitor",
        help="outcomes, lift against control, calibration, input drift and alerts of served decisions",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--decisions", type=Path, required=True, metavar="DIR", help="the service's decision log directory"
    )
    parser.add_argument("--events", type=Path, required=True, metavar="PATH", help="events table")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    parser.add_argument(
        "--model", metavar="URI", help="MLflow model URI whose training reference drift is measured against"
    )
    parser.add_argument("--customers", type=Path, metavar="PATH", help="customers table (profile drift)")
    parser.add_argument("--fail-on-alert", action="store_true", help="exit with status 1 when an alert fires")
    outcomes = parser.add_argument_group("outcomes", "how converted and churned are read off the events")
    outcomes.add_argument(
        "--conversion-event", default="purchase", help="event type of a conversion (purchase)"
    )
    outcomes.add_argument(
        "--horizon-days", type=float, default=30.0, help="conversion window after a decision (30)"
    )
    outcomes.add_argument(
        "--churn-days", type=float, default=60.0, help="silence after a decision that is churn (60)"
    )
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
    from nextbest.data import CUSTOMERS, ValidationReport, load_events, load_table
    from nextbest.journeys.labels import LabelRules
    from nextbest.monitoring.monitor import MonitorOptions, monitor
    from nextbest.monitoring.report import write_report
    from nextbest.scoring.decision_log import read_decision_log

    began = time.perf_counter()
    report = ValidationReport()
    log = read_decision_log(args.decisions)
    events = load_events(args.events, report)
    customers = None if args.customers is None else load_table(args.customers, CUSTOMERS, report)
    rules = LabelRules(
        conversion_event=args.conversion_event,
        conversion_horizon_days=args.horizon_days,
        churn_inactivity_days=args.churn_days,
    )
    options = MonitorOptions(
        rules=rules, quiet_days=args.quiet_days, resamples=args.resamples, sample=args.sample
    )
    summary = monitor(log, events, _reference(args.model), customers, options)
    try:
        page, numbers = write_report(summary, args.out)
    except OSError as exc:
        raise NextbestError(f"cannot write the report to {args.out}: {exc}") from exc
    _print_summary(summary, report, time.perf_counter() - began, page, numbers)
    return 1 if args.fail_on_alert and summary["alerts"] else 0


def _reference(model_uri: str | None) -> InputReference | str:
    """The model's input reference, or why drift cannot be measured."""
    if model_uri is None:
        return "no model given (--model): drift is measured against the reference a model saved at training."
    from nextbest.scoring.pyfunc import load_version

    scorer, version = load_version(model_uri)
    if scorer.reference is None:
        message = (
            f"the model {model_uri} (version {version}) carries no input reference: it was trained before "
            "nextbest saved one with the model. Retrain it to measure drift."
        )
        print(f"nextbest monitor: {message}", file=sys.stderr)
        return message
    return scorer.reference


def _print_summary(
    summary: dict[str, Any], report: ValidationReport, seconds: float, page: Path, numbers: Path
) -> None:
    decisions, outcomes, lift = summary["decisions"], summary["outcomes"], summary["lift"]
    skipped = decisions["skipped"]
    print(
        f"{decisions['total']:,} decisions ({decisions['control']:,} control); outcome windows still open: "
        f"{outcomes['open']['conversion']:,} (conversion), {outcomes['open']['churn']:,} (churn); not "
        f"counted: {skipped['unreadable_lines']:,} unreadable lines, {skipped['fallback_answers']:,} "
        f"fallbacks, {skipped['nothing_served']:,} with nothing served."
    )
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
