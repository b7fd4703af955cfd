"""`nextbest promote`: make the challenger the champion, only if it is not worse on the same holdout."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from nextbest.commands.outcome_rules import add_outcome_rules, outcome_rules
from nextbest.data import CUSTOMERS, DECISIONS, load_events, load_table
from nextbest.errors import NextbestError
from nextbest.registry import MODEL_NAME

if TYPE_CHECKING:
    from nextbest.data.events import EventLog
    from nextbest.decisioning.catalog import ActionCatalog
    from nextbest.journeys.labels import LabelRules
    from nextbest.scoring.decide import Decisions
    from nextbest.scoring.scorer import JourneyScorer

DESCRIPTION = """\
Compare the registered model's `challenger` with its `champion` on the same held-out logged decisions,
both ranking with the challenger's catalog (or --catalog) so that only the models differ. The two
policies are compared paired: the doubly robust estimate of the challenger's value minus the
champion's on the same decisions, with a 95% bootstrap interval that resamples the decisions of both
together. The champion alias moves to the challenger only when
  - the log can value both policies: it explored (some propensity below 1) and each policy takes a
    logged action somewhere,
  - the difference's lower end is at least -MARGIN (--margin, in the catalog's units per decision:
    0, the default, asks for evidence that the challenger is not worse at all; a positive margin
    accepts a loss of up to MARGIN), and
  - the challenger's expected calibration error of P(conversion | action taken) is not worse than the
    champion's by more than --ece-tolerance.
Otherwise nothing changes and the exit status is 3. Every figure is printed either way.

Decisions without a converted column (a store's `nextbest store export`) have their outcomes read off
the events that followed them (a --conversion-event within --horizon-days, no activity for
--churn-days); those whose window is still open are left out, and counted.
"""
REFUSED = 3


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "promote",
        help="move the champion alias to the challenger if it is not worse on a holdout",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--name", default=MODEL_NAME, help=f"registered model name (default {MODEL_NAME})")
    parser.add_argument("--events", type=Path, required=True, metavar="PATH", help="events table")
    parser.add_argument("--customers", type=Path, metavar="PATH", help="customers table (profiles)")
    parser.add_argument(
        "--decisions", type=Path, required=True, metavar="PATH", help="held-out logged decisions"
    )
    parser.add_argument("--catalog", type=Path, metavar="FILE", help="catalog both models rank with")
    parser.add_argument(
        "--margin",
        type=_non_negative,
        default=0.0,
        metavar="M",
        help="value per decision the challenger may lose (default 0)",
    )
    parser.add_argument(
        "--ece-tolerance", type=_non_negative, default=0.005, metavar="X", help="default 0.005"
    )
    parser.add_argument("--resamples", type=int, default=1000, metavar="N", help="bootstrap resamples (1000)")
    add_outcome_rules(parser, "outcomes of decisions without them")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from nextbest.decisioning.catalog import ActionCatalog
    from nextbest.registry import CHALLENGER, CHAMPION, alias_versions, model_uri, move_alias
    from nextbest.scoring.pyfunc import load_scorer

    versions = alias_versions(args.name, (CHAMPION, CHALLENGER))
    if versions["champion"] == versions["challenger"]:
        print(f"{args.name}: the challenger (version {versions['challenger']}) is already the champion.")
        return 0
    scorers = {alias: load_scorer(model_uri(alias, args.name)) for alias in versions}
    catalog = (
        scorers["challenger"].action_catalog
        if args.catalog is None
        else ActionCatalog.from_yaml(args.catalog)
    )
    for scorer in scorers.values():
        scorer.check_catalog(catalog)
    log = load_events(args.events)
    customers = None if args.customers is None else load_table(args.customers, CUSTOMERS)
    logged = load_table(args.decisions, DECISIONS)
    if "converted" not in logged.column_names:
        logged = _closed(logged, log, outcome_rules(args))
    decided = {alias: _decide(scorer, log, customers, logged, catalog) for alias, scorer in scorers.items()}
    from nextbest.evaluation.policies import compare_models, promotion_verdict

    comparison = compare_models(
        decided["champion"],
        decided["challenger"],
        logged,
        catalog,
        resamples=args.resamples,
    )
    promote, reasons = promotion_verdict(comparison, margin=args.margin, ece_tolerance=args.ece_tolerance)
    for alias, assessment in (("champion", comparison.champion), ("challenger", comparison.challenger)):
        estimate = assessment.policy_value
        print(
            f"{alias:<10} version {versions[alias]}: policy value (DR) "
            f"{estimate.value:.4f} [{estimate.low:.4f}, {estimate.high:.4f}], "
            f"calibration error {assessment.calibration_error:.4f}"
        )
    print("\n".join(f"  {reason}" for reason in reasons))
    if not promote:
        print(f"Refused: {args.name}@champion stays at version {versions['champion']}.")
        return REFUSED
    move_alias(args.name, CHAMPION, versions["challenger"])
    print(f"Promoted: {args.name}@champion is now version {versions['challenger']}.")
    return 0


def _closed(logged: pa.Table, log: EventLog, rules: LabelRules) -> pa.Table:
    """The decisions with their outcomes read off the events, those still open left out (and counted).

    Raises:
        NextbestError: no decision's outcome is known yet.
    """
    from nextbest.scoring.decision_log import with_outcomes

    if "churned" in logged.column_names:  # read off the events together with `converted`
        logged = logged.drop_columns(["churned"])
    derived = with_outcomes(logged, log, rules)
    closed = derived.filter(pc.and_(pc.is_valid(derived["converted"]), pc.is_valid(derived["churned"])))
    if not closed.num_rows:
        raise NextbestError(
            f"decisions: none of the {logged.num_rows:,} decisions has a closed outcome window yet"
        )
    if closed.num_rows < logged.num_rows:
        print(
            f"decisions: {logged.num_rows - closed.num_rows:,} of {logged.num_rows:,} left out, their "
            "outcome window still open"
        )
    return closed


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number at least 0, got {text}")
    return value


def _decide(
    scorer: JourneyScorer, log: EventLog, customers: pa.Table | None, logged: pa.Table, catalog: ActionCatalog
) -> Decisions:
    """The model's decisions at each held-out logged decision."""
    from nextbest.scoring.decide import decide

    requests = pa.table({"customer_id": logged.column("customer_id"), "as_of": logged.column("timestamp")})
    return decide(scorer, log, requests, customers, catalog=catalog)
