"""`nextbest promote`: make the challenger the champion, only if it is not worse on the same holdout."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from nextbest.data import CUSTOMERS, DECISIONS, load_events, load_table
from nextbest.errors import NextbestError

if TYPE_CHECKING:
    from nextbest.data.events import EventLog
    from nextbest.decisioning.catalog import ActionCatalog
    from nextbest.evaluation.policies import Assessment
    from nextbest.scoring.scorer import JourneyScorer

DESCRIPTION = """\
Compare the registered model's `challenger` with its `champion` on the same held-out logged decisions:
the doubly robust estimate of each one's policy value (95% bootstrap lower bound), and each one's
expected calibration error of P(conversion | action taken). The champion alias moves to the
challenger only when the challenger's lower bound is not below the champion's and its calibration
error is not worse by more than --ece-tolerance; otherwise nothing changes and the exit status is 3.
Both sets of numbers are printed either way. Both models rank with the challenger's catalog (or
--catalog), so only the models differ.
"""
REFUSED = 3


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "promote",
        help="move the champion alias to the challenger if it is not worse on a holdout",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--name", default="nextbest", help="registered model name (default nextbest)")
    parser.add_argument("--events", type=Path, required=True, metavar="PATH", help="events table")
    parser.add_argument("--customers", type=Path, metavar="PATH", help="customers table (profiles)")
    parser.add_argument(
        "--decisions", type=Path, required=True, metavar="PATH", help="held-out logged decisions"
    )
    parser.add_argument("--catalog", type=Path, metavar="FILE", help="catalog both models rank with")
    parser.add_argument("--ece-tolerance", type=float, default=0.005, metavar="X", help="default 0.005")
    parser.add_argument("--resamples", type=int, default=1000, metavar="N", help="bootstrap resamples (1000)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from nextbest.decisioning.catalog import ActionCatalog
    from nextbest.scoring.pyfunc import load_scorer
    from nextbest.tracking import tracking_uri

    client = MlflowClient(tracking_uri())
    try:
        versions = {
            alias: client.get_model_version_by_alias(args.name, alias).version
            for alias in ("champion", "challenger")
        }
    except MlflowException as exc:
        raise NextbestError(f"{args.name} needs both a champion and a challenger alias: {exc}") from exc
    if versions["champion"] == versions["challenger"]:
        print(f"{args.name}: the challenger (version {versions['challenger']}) is already the champion.")
        return 0
    scorers = {alias: load_scorer(f"models:/{args.name}@{alias}") for alias in versions}
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
        raise NextbestError("decisions: promotion needs the converted column (calibration of P(conversion))")
    tables = (log, customers, logged)
    assessments = {
        alias: _assess(scorer, str(versions[alias]), tables, catalog, args.resamples)
        for alias, scorer in scorers.items()
    }
    from nextbest.evaluation.policies import promotion_verdict

    promote, reasons = promotion_verdict(
        assessments["champion"], assessments["challenger"], args.ece_tolerance
    )
    for alias, assessment in assessments.items():
        estimate = assessment.policy_value
        print(
            f"{alias:<10} version {assessment.version}: policy value (DR) {estimate.value:.4f} "
            f"[{estimate.low:.4f}, {estimate.high:.4f}], calibration error {assessment.ece:.4f}"
        )
    print("\n".join(f"  {reason}" for reason in reasons))
    if not promote:
        print(f"Refused: {args.name}@champion stays at version {versions['champion']}.")
        return REFUSED
    client.set_registered_model_alias(args.name, "champion", str(versions["challenger"]))
    print(f"Promoted: {args.name}@champion is now version {versions['challenger']}.")
    return 0


def _assess(
    scorer: JourneyScorer,
    version: str,
    tables: tuple[EventLog, pa.Table | None, pa.Table],
    catalog: ActionCatalog,
    resamples: int,
) -> Assessment:
    """One model's policy value (DR) and calibration error of P(conversion | action taken) on the holdout."""
    from nextbest.evaluation.policies import Assessment, learned_policy_value
    from nextbest.model.calibration import expected_calibration_error
    from nextbest.scoring.decide import decide

    log, customers, logged = tables
    requests = pa.table({"customer_id": logged.column("customer_id"), "as_of": logged.column("timestamp")})
    decided = decide(scorer, log, requests, customers, catalog=catalog)
    value = learned_policy_value(decided, logged, catalog, resamples=resamples)
    index = {a: i for i, a in enumerate(scorer.actions)}
    taken = np.array([index.get(a, -1) for a in logged.column("action").to_pylist()], dtype=np.int64)
    converted = np.asarray(logged.column("converted").cast(pa.float64()).fill_null(np.nan), dtype=np.float64)
    known = np.flatnonzero((taken >= 0) & np.isfinite(converted))
    predicted = decided.scores.action_p_conversion[known, taken[known]]
    ece = expected_calibration_error(predicted, converted[known])
    return Assessment(version, value, ece)
