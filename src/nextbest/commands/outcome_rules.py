"""The options that say how a decision's outcomes are read off the events that followed it: one definition
for every command that reads them (`evaluate`, `monitor`, `promote`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nextbest.journeys.labels import LabelRules


def add_outcome_rules(parser: argparse.ArgumentParser, title: str) -> None:
    """--conversion-event, --horizon-days and --churn-days, in a group named `title`."""
    outcomes = parser.add_argument_group(title, "how converted and churned are read off the events")
    outcomes.add_argument(
        "--conversion-event", default="purchase", help="event type of a conversion (purchase)"
    )
    outcomes.add_argument(
        "--horizon-days", type=float, default=30.0, help="conversion window after a decision (30)"
    )
    outcomes.add_argument(
        "--churn-days", type=float, default=60.0, help="silence after a decision that is churn (60)"
    )


def outcome_rules(args: argparse.Namespace) -> LabelRules:
    """The label rules the options of `add_outcome_rules` give."""
    from nextbest.journeys.labels import LabelRules

    return LabelRules(
        conversion_event=args.conversion_event,
        conversion_horizon_days=args.horizon_days,
        churn_inactivity_days=args.churn_days,
    )
