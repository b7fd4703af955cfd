"""True value of the learned policy on customers not used in training, against random, the oracle and a
gradient-boosted-trees policy trained on the same decisions.

    python benchmarks/policy_value.py [--customers 20000] [--holdout-customers 5000] [--epochs 5] [--seed 0]
                                      [--pretrain FILE] [--out DIR]

Simulates a training world and a held-out world (another seed: other customers), trains the demo
configuration (`configs/demo.yaml`, catalog `configs/catalogs/demo.yaml`) on the first, and ranks the
held-out world's decisions with the registered model under the catalog's rules. The truth of the
simulation gives every policy's true value per decision; random and the oracle play by the same rules.

The baseline is an S-learner: gradient-boosted trees on the history aggregates, the profile and the
action taken, one classifier per outcome, its expected values ranked the same way.

Prints one JSON object per policy (true value, share of the random-to-oracle gap closed) and the
figures' summary; `--customers 200000 --holdout-customers 10000 --epochs 8` is the run reported in
docs/benchmarks.md (about 8 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from sklearn.ensemble import HistGradientBoostingClassifier

from nextbest.cli import main as nextbest
from nextbest.data import CUSTOMERS, DECISIONS, load_events, load_table
from nextbest.data.events import EventLog
from nextbest.decisioning.catalog import ActionCatalog
from nextbest.evaluation.policies import (
    ORACLE,
    RANDOM,
    evaluate_policies,
    gap_closed,
    true_action_values,
    truth_matrices,
)
from nextbest.journeys.aggregates import AggregateFeaturizer
from nextbest.scoring.decide import Decisions, decide
from nextbest.scoring.pyfunc import load_scorer

REPO_ROOT = Path(__file__).resolve().parents[1]
CATALOG = REPO_ROOT / "configs" / "catalogs" / "demo.yaml"
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"


def simulate(folder: Path, customers: int, seed: int) -> None:
    code = nextbest(["simulate", "--customers", str(customers), "--seed", str(seed), "--out", str(folder)])
    if code:
        raise SystemExit(f"simulate failed ({code})")


def train(world: Path, epochs: int, pretrain: Path | None) -> None:
    tables = {name: str(world / f"{name}.parquet") for name in ("events", "customers", "decisions")}
    args = [
        "train",
        "--config",
        str(DEMO_CONFIG),
        *(["--config", str(pretrain)] if pretrain else []),
        "--trainer.max_epochs",
        str(epochs),
    ]
    args += [item for name, path in tables.items() for item in (f"--data.{name}", path)]
    args += ["--export.catalog", str(CATALOG), "--export.baselines", "[]"]
    if nextbest(args):
        raise SystemExit("training failed")


class Covariates:
    """What the tree baselines see of a decision: the history aggregates at its time (windowed token counts
    included where the demo config gives the network them) and the profile codes."""

    def __init__(self, log: EventLog) -> None:
        journey = yaml.safe_load(DEMO_CONFIG.read_text())["data"].get("journey", {})
        self.featurizer = AggregateFeaturizer.fit(log, window_days=journey.get("aggregate_window_days", ()))

    def __call__(self, log: EventLog, customers: pa.Table, decisions: pa.Table) -> np.ndarray:
        ids = decisions.column("customer_id").combine_chunks()
        as_of = np.asarray(decisions.column("timestamp").cast(pa.int64()), dtype=np.int64)
        history, _ = self.featurizer.transform(log, log.index_of(ids), as_of)
        rows = customers.take(pc.index_in(ids, value_set=customers.column("customer_id").combine_chunks()))
        profile = [
            _codes(rows.column(name))
            for name in rows.column_names
            if name != "customer_id" and not pa.types.is_temporal(rows.column(name).type)
        ]
        return np.column_stack([history, *profile])


def outcome_labels(decisions: pa.Table) -> dict[str, np.ndarray]:
    """The decisions' labels the tree baselines learn, per outcome."""
    return {
        outcome: np.asarray(decisions.column(outcome).cast(pa.int8()), dtype=np.int8)
        for outcome in ("converted", "churned")
    }


def trees() -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05)


class SLearner:
    """Gradient-boosted trees on (history aggregates, profile codes, action one-hot), per outcome."""

    def __init__(self, log: EventLog, num_actions: int) -> None:
        self.covariates = Covariates(log)
        self.num_actions = num_actions
        self.models: dict[str, HistGradientBoostingClassifier] = {}

    def fit(self, log: EventLog, customers: pa.Table, decisions: pa.Table, action: np.ndarray) -> SLearner:
        x = np.column_stack([self.covariates(log, customers, decisions), np.eye(self.num_actions)[action]])
        for outcome, y in outcome_labels(decisions).items():
            self.models[outcome] = trees().fit(x, y)
        return self

    def expected_values(
        self, log: EventLog, customers: pa.Table, decisions: pa.Table, catalog: ActionCatalog
    ) -> np.ndarray:
        n, k = decisions.num_rows, len(catalog.ids)
        covariates = self.covariates(log, customers, decisions)
        p = {outcome: np.zeros((n, k)) for outcome in self.models}
        for a in range(k):
            x = np.column_stack([covariates, np.eye(k)[np.full(n, a)]])
            for outcome, model in self.models.items():
                p[outcome][:, a] = model.predict_proba(x)[:, 1]
        return catalog.expected_values(p["converted"], p["churned"])


def _codes(column: pa.ChunkedArray) -> np.ndarray:
    if (
        pa.types.is_integer(column.type)
        or pa.types.is_floating(column.type)
        or pa.types.is_boolean(column.type)
    ):
        return np.asarray(column.cast(pa.float64()).fill_null(np.nan), dtype=np.float64)
    encoded = column.combine_chunks().dictionary_encode()
    return np.asarray(encoded.indices.fill_null(-1), dtype=np.float64)


def world_arguments(parser: argparse.ArgumentParser, holdout_customers: int) -> None:
    """The options of a run on a simulated training world and a held-out one (`run_worlds`)."""
    parser.add_argument("--customers", type=int, default=20_000, help="training world size")
    parser.add_argument("--holdout-customers", type=int, default=holdout_customers)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument(
        "--seed", type=int, default=0, help="training world seed (the holdout's is seed + 1000)"
    )
    parser.add_argument(
        "--out", type=Path, help="keep the worlds and the MLflow store here (default: temporary)"
    )


def run_worlds(folder: Path, args: argparse.Namespace, pretrain: Path | None = None) -> None:
    """Simulates the training and held-out worlds under `folder` and trains the demo config on the first
    into the MLflow store there (nextbest@champion)."""
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    os.chdir(folder)  # the run's artifacts (./mlruns) and checkpoints stay with the store
    simulate(folder / "train", args.customers, args.seed)
    simulate(folder / "holdout", args.holdout_customers, args.seed + 1000)
    train(folder / "train", args.epochs, pretrain)


def decided_holdout(holdout: Path, catalog: ActionCatalog) -> tuple[EventLog, pa.Table, pa.Table, Decisions]:
    """The held-out world's events, customers and logged decisions, and the champion's decisions at the
    logged decisions' moments."""
    log = load_events(holdout / "events.parquet")
    customers = load_table(holdout / "customers.parquet", CUSTOMERS)
    decisions = load_table(holdout / "decisions.parquet", DECISIONS)
    requests = pa.table(
        {"customer_id": decisions.column("customer_id"), "as_of": decisions.column("timestamp")}
    )
    decided = decide(load_scorer("models:/nextbest@champion"), log, requests, customers, catalog=catalog)
    return log, customers, decisions, decided


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    world_arguments(parser, holdout_customers=5_000)
    parser.add_argument(
        "--pretrain", type=Path, help="YAML with a `pretrain:` section: pretrain the encoder first"
    )
    args = parser.parse_args(argv)
    pretrain = args.pretrain.resolve() if args.pretrain else None
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.out or Path(scratch)
        began = time.perf_counter()
        run_worlds(folder, args, pretrain)
        trained = time.perf_counter() - began
        figures = evaluate(folder, args)
    for figure in figures:
        print(json.dumps(figure))
    learned, trees = figures[0], figures[1]
    print(
        f"learned policy closes {learned['gap_closed']:.1%} of the random-to-oracle gap "
        f"(trees {trees['gap_closed']:.1%}); {args.customers:,} training customers, training {trained:.0f} s",
        file=sys.stderr,
    )
    return 0


def evaluate(folder: Path, args: argparse.Namespace) -> list[dict[str, object]]:
    catalog = ActionCatalog.from_yaml(CATALOG)
    holdout = folder / "holdout"
    log, customers, decisions, decided = decided_holdout(holdout, catalog)
    truth = truth_matrices(pq.read_table(holdout / "truth.parquet"), decisions, catalog.ids)
    report = evaluate_policies(decided, decisions, catalog, truth, resamples=10)
    values = report.true_values

    train_world = folder / "train"
    train_log = load_events(train_world / "events.parquet")
    train_decisions = load_table(train_world / "decisions.parquet", DECISIONS)
    index = {a: i for i, a in enumerate(catalog.ids)}
    action = np.array([index[a] for a in train_decisions.column("action").to_pylist()])
    trees = SLearner(train_log, len(catalog.ids)).fit(
        train_log, load_table(train_world / "customers.parquet", CUSTOMERS), train_decisions, action
    )
    expected = trees.expected_values(log, customers, decisions, catalog)
    eligible = decided.ranking.eligible
    choice = np.argmax(np.where(eligible, expected, -np.inf), axis=1)
    true_value = true_action_values(truth, catalog)
    trees_value = float(true_value[np.arange(len(choice)), choice].mean())

    def gap(value: float) -> float:
        return (value - values[RANDOM]) / (values[ORACLE] - values[RANDOM])

    common = {"training_customers": args.customers, "holdout_decisions": report.decisions}
    return [
        {"policy": "learned", "true_value": values["learned"], "gap_closed": gap_closed(report), **common},
        {"policy": "gbt s-learner", "true_value": trees_value, "gap_closed": gap(trees_value), **common},
        *(
            {"policy": name, "true_value": values[name], **common}
            for name in (RANDOM, ORACLE, "oracle ignoring rules")
        ),
    ]


if __name__ == "__main__":
    sys.exit(main())
