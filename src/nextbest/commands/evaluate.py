"""`nextbest evaluate`: the model's policy against the logging policy, random and the best single action,
estimated off-policy on held-out logged decisions (and against the truth, when a simulation gives it)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from nextbest.commands.outcome_rules import add_outcome_rules, outcome_rules
from nextbest.data import CUSTOMERS, DECISIONS, ValidationReport, load_events, load_table
from nextbest.data.events import EventLog
from nextbest.errors import NextbestError

if TYPE_CHECKING:
    from nextbest.evaluation.policies import PolicyReport

EXPERIMENT = "nextbest-evaluation"
DESCRIPTION = """\
Estimate what the model's policy is worth from logged decisions (the decisions table with its
propensity, converted and churned columns), before it goes live: IPS, self-normalised IPS and doubly
robust estimates (the model's expected values as the direct method) with 95% bootstrap intervals, for
the learned policy, the logging policy, a random policy (uniform among the eligible actions) and every
single action. Rewards are in the catalog's units (value * converted - churn_cost * churned - cost).
With --truth (a simulated world's truth.parquet) the true value of every policy and of the oracle (the
best eligible action; also the best ignoring the rules) is reported too. Use decisions
the model was not trained on (a later period, or a simulated world with another seed). The report is
printed, optionally written as JSON, and logged to MLflow (experiment "nextbest-evaluation").

A log can value a policy only where it explored: when no logged decision has a propensity below 1
(the logging policy never explored; it can value only itself), or a policy never takes a logged
action, the report names the policies it cannot value and why (JSON: "unsupported").

--decisions may also be the service's decision log directory: the served actions and the probabilities
they were served with are the log, and each decision's outcome is read off the events that followed it
(a conversion event within --horizon-days, or no activity for --churn-days); decisions whose window is
still open are skipped.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="off-policy evaluation of a model's policy on logged decisions",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, metavar="URI", help="MLflow model URI")
    parser.add_argument("--events", type=Path, required=True, metavar="PATH", help="events table")
    parser.add_argument("--customers", type=Path, metavar="PATH", help="customers table (profiles)")
    parser.add_argument(
        "--decisions",
        type=Path,
        required=True,
        metavar="PATH",
        help="logged decisions with propensities, or the service's decision log directory",
    )
    add_outcome_rules(parser, "outcomes of a decision log")
    parser.add_argument(
        "--catalog", type=Path, metavar="FILE", help="catalog instead of the model's packaged one"
    )
    parser.add_argument("--truth", type=Path, metavar="PATH", help="true outcome probabilities (simulations)")
    parser.add_argument("--resamples", type=int, default=1000, metavar="N", help="bootstrap resamples (1000)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the report to MLflow")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.resamples < 10:
        raise NextbestError(f"--resamples must be at least 10, got {args.resamples}")
    from nextbest.decisioning.catalog import ActionCatalog
    from nextbest.evaluation.policies import evaluate_policies, gap_closed, truth_matrices
    from nextbest.scoring.decide import decide
    from nextbest.scoring.pyfunc import load_version

    scorer, version = load_version(args.model)
    catalog = scorer.action_catalog if args.catalog is None else ActionCatalog.from_yaml(args.catalog)
    scorer.check_catalog(catalog)
    report = ValidationReport()
    log = load_events(args.events, report)
    customers = None if args.customers is None else load_table(args.customers, CUSTOMERS, report)
    logged = _logged_decisions(args, log, report)
    requests = pa.table({"customer_id": logged.column("customer_id"), "as_of": logged.column("timestamp")})
    decided = decide(scorer, log, requests, customers, catalog=catalog, progress=True)
    truth = None if args.truth is None else truth_matrices(pq.read_table(args.truth), logged, catalog.ids)
    result = evaluate_policies(decided, logged, catalog, truth, resamples=args.resamples)
    gap = gap_closed(result) if truth is not None else None
    summary = {**result.to_dict(), **({"gap_closed": gap} if gap is not None else {})}
    print(_render(result, gap))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    if not args.no_mlflow:
        _log_to_mlflow(result, gap, summary, args.model, version)
    return 0


def _logged_decisions(args: argparse.Namespace, log: EventLog, report: ValidationReport) -> pa.Table:
    """The decisions table, or a service's decision log with its outcomes read off the events."""
    from nextbest.scoring.decision_log import is_decision_log, read_decision_log, with_outcomes

    if not is_decision_log(args.decisions):
        return load_table(args.decisions, DECISIONS, report)
    served = read_decision_log(args.decisions)
    if served.unreadable_lines:
        print(f"{args.decisions}: skipped {served.unreadable_lines} unreadable line(s)", file=sys.stderr)
    return with_outcomes(served.decisions, log, outcome_rules(args))


def _render(report: PolicyReport, gap: float | None) -> str:
    from nextbest.evaluation.policies import ORACLE, UNRULED_ORACLE, cannot_value

    truth = report.true_values
    lines = [f"Off-policy evaluation on {report.decisions:,} logged decisions (95% bootstrap intervals):"]
    for policy, values in report.estimates.items():
        figures = "  ".join(f"{k} {e.value:.4f} [{e.low:.4f}, {e.high:.4f}]" for k, e in values.items())
        true = f"  true {truth[policy]:.4f}" if policy in truth else ""
        lines.append(f"  {policy:<26} {figures}{true}")
    if gap is not None:
        for oracle in (ORACLE, UNRULED_ORACLE):
            lines.append(f"  {oracle:<26} true {truth[oracle]:.4f}")
        lines.append(f"The learned policy closes {gap:.1%} of the random-to-oracle gap in true value.")
    lines += cannot_value(report.unsupported)
    lines.append(f"Best single action (DR): {report.best_single_action}; skipped: {report.skipped}")
    return "\n".join(lines)


def _log_to_mlflow(
    report: PolicyReport, gap: float | None, summary: dict[str, Any], model_uri: str, version: str
) -> None:
    import mlflow

    # By id, not mlflow.set_experiment: that would leave the process's active experiment changed.
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=f"evaluate {model_uri}", experiment_id=experiment_id):
        mlflow.log_params({"model_uri": model_uri, "model_version": version})
        metrics = {
            f"policy/{_metric_name(policy)}/{estimator}/{part}": getattr(estimate, part)
            for policy, values in report.estimates.items()
            for estimator, estimate in values.items()
            for part in ("value", "low", "high")
        }
        metrics |= {f"policy/{_metric_name(p)}/true": v for p, v in report.true_values.items()}
        if gap is not None:
            metrics["policy/learned/gap_closed"] = gap
        mlflow.log_metrics(metrics)
        mlflow.log_dict(summary, "evaluation.json")


def _metric_name(policy: str) -> str:
    return policy.replace(" ", "_")
