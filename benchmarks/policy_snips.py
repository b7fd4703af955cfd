"""The learned policy's self-normalised IPS value on a held-out world's logged decisions, paired against the
best single action and a per-arm gradient-boosted T-learner trained on the same decisions.

    python benchmarks/policy_snips.py [--customers 20000] [--holdout-customers 100000] [--epochs 5] [--seed 0]
                                      [--resamples 1000] [--out DIR]

The held-out world's decisions were logged by the simulator's randomised logging policy (every action at
least 5%, propensities recorded), so they are a randomised experiment with six actions, each with the
demo catalog's cost. A policy's value is the catalog's value of the outcome minus the action's cost, as in
`policy_value.py`; SNIPS weighs each logged reward by the policy's probability of the logged action over
its propensity (`nextbest.evaluation.ope`). The learned policy and the T-learner play by the catalog's
rules; single actions ignore them, and the best one is picked on the held-out log itself, which favours it.

The T-learner: per action, one gradient-boosted classifier per outcome on the decisions that took it
(history aggregates and profile, the S-learner's features of `policy_value.py`); it takes the eligible
action of highest expected value.

Prints one JSON object per policy (SNIPS with its 95% bootstrap interval, the true value the simulation
knows), one per comparison (the learned policy's SNIPS minus the other's, paired on the same resamples),
and a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.ensemble import HistGradientBoostingClassifier

from nextbest.data import CUSTOMERS, DECISIONS, load_events, load_table
from nextbest.data.events import EventLog
from nextbest.decisioning.catalog import ActionCatalog
from nextbest.evaluation.ope import Estimate, constant_policy, estimate_paired_values
from nextbest.evaluation.policies import truth_matrices, usable_log
from policy_value import (
    CATALOG,
    Covariates,
    decided_holdout,
    outcome_labels,
    run_worlds,
    trees,
    world_arguments,
)


class TLearner:
    """Per action, gradient-boosted trees on (history aggregates, profile codes) per outcome, fitted on the
    decisions that took that action."""

    def __init__(self, log: EventLog, catalog: ActionCatalog) -> None:
        self.covariates = Covariates(log)
        self.catalog = catalog
        self.models: list[dict[str, HistGradientBoostingClassifier]] = []

    def fit(self, log: EventLog, customers: pa.Table, decisions: pa.Table) -> TLearner:
        x = self.covariates(log, customers, decisions)
        action = np.array(decisions.column("action").to_pylist())
        labels = outcome_labels(decisions)
        for a in self.catalog.ids:
            took = action == a
            self.models.append({o: trees().fit(x[took], y[took]) for o, y in labels.items()})
        return self

    def expected_values(self, log: EventLog, customers: pa.Table, decisions: pa.Table) -> np.ndarray:
        x = self.covariates(log, customers, decisions)
        p = {
            outcome: np.column_stack([arm[outcome].predict_proba(x)[:, 1] for arm in self.models])
            for outcome in ("converted", "churned")
        }
        return self.catalog.expected_values(p["converted"], p["churned"])


def greedy(expected: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """[N, K] the policy taking the eligible action of highest expected value; no action where none is."""
    best = np.argmax(np.where(eligible, expected, -np.inf), axis=1)
    return np.where(eligible.any(axis=1, keepdims=True), np.eye(expected.shape[1])[best], 0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    world_arguments(parser, holdout_customers=100_000)
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.out or Path(scratch)
        run_worlds(folder, args)
        lines = evaluate(folder, args)
    for line in lines:
        print(json.dumps(line))
    return 0


def evaluate(folder: Path, args: argparse.Namespace) -> list[dict[str, object]]:
    catalog = ActionCatalog.from_yaml(CATALOG)
    holdout, train_world = folder / "holdout", folder / "train"
    log, customers, decisions, decided = decided_holdout(holdout, catalog)
    logged, usable, _ = usable_log(decisions, catalog)
    eligible, predicted = decided.ranking.eligible[usable], decided.ranking.expected_value[usable]

    train_log = load_events(train_world / "events.parquet")
    t_learner = TLearner(train_log, catalog).fit(
        train_log,
        load_table(train_world / "customers.parquet", CUSTOMERS),
        load_table(train_world / "decisions.parquet", DECISIONS),
    )
    t_expected = t_learner.expected_values(log, customers, decisions)[usable]

    n, k = len(logged.action), len(catalog.ids)
    learned = (decided.probabilities[usable], predicted)
    others = {f"always {a}": (constant_policy(i, n, k), predicted) for i, a in enumerate(catalog.ids)}
    others["gbt t-learner"] = (greedy(t_expected, eligible), t_expected)
    paired = {
        name: estimate_paired_values(logged, learned, other, resamples=args.resamples, seed=args.seed)
        for name, other in others.items()
    }
    singles = [name for name in others if name.startswith("always ")]
    best_single = max(singles, key=lambda name: paired[name].baseline["snips"].value)

    conversion, churn = truth_matrices(pq.read_table(holdout / "truth.parquet"), decisions, catalog.ids)
    true_value = (catalog.values * conversion - catalog.churn_cost * churn - catalog.costs)[usable]

    def policy_line(name: str, policy: np.ndarray, snips: Estimate) -> dict[str, object]:
        true = float((policy * true_value).sum(axis=1).sum() / max(policy.sum(), 1.0))
        return {"policy": name, "snips": snips.to_dict(), "true_value_per_served_decision": true}

    common = {"training_customers": args.customers, "holdout_decisions": n, "seed": args.seed}
    learned_snips = paired[best_single].target["snips"]
    lines = [{**policy_line("learned", learned[0], learned_snips), **common}]
    lines += [
        {**policy_line(name, others[name][0], paired[name].baseline["snips"]), **common}
        for name in [*singles, "gbt t-learner"]
    ]
    differences = {
        "best single action": paired[best_single].difference["snips"],
        "gbt t-learner": paired["gbt t-learner"].difference["snips"],
    }
    lines += [
        {"comparison": f"learned - {name}", "snips_difference": d.to_dict(), **common}
        for name, d in differences.items()
    ]
    lines.append(
        {
            "summary": {
                "best_single_action": best_single,
                "learned_snips": learned_snips.value,
                **{f"learned_minus_{k.replace(' ', '_')}": d.value for k, d in differences.items()},
                "learned_at_least_both": all(d.value >= 0 for d in differences.values()),
                "learned_beats_both": all(d.low > 0 for d in differences.values()),
                **common,
            }
        }
    )
    return lines


if __name__ == "__main__":
    sys.exit(main())
