"""Test metrics of a config run with and without self-supervised pretraining (`pretrain:`), labels scarce.

    python benchmarks/pretraining.py --config configs/cdnow.yaml --events E --labels L
                                     [--label-share 0.1] [--seeds 0 1] [--pretrain FILE] [--out DIR]
                                     [-- extra `nextbest train` arguments]

The label frame's validation and test customers keep their labels (the same split, `data.seed` 0, as a
full run); of its training customers only `--label-share` keep theirs, the rest become unknown (NaN).
Every customer's history is still there, so pretraining reads all of them while the supervised heads
learn from the few labels. Each seed draws its own labelled customers and seeds the run; the two arms
of a seed share them.

Prints one JSON object per run (seed, arm, the calibrated model's and each baseline's test metrics per
head: `roc_auc`, `log_loss`) and, last, the mean paired difference per head with its spread over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from nextbest.cli import main as nextbest
from nextbest.journeys.examples import split_groups
from nextbest.model.heads import OUTCOMES

# The `pretrain:` section used when no --pretrain file is given: the section's defaults.
DEFAULT_PRETRAIN = {"pretrain": {}}


def scarce_labels(labels: pa.Table, fractions: tuple[float, float], share: float, seed: int) -> pa.Table:
    """`labels` with all but `share` of the training customers' outcomes set to null."""
    train, _, _ = split_groups(labels.column("customer_id").combine_chunks(), fractions, seed=0)
    rng = np.random.default_rng(seed)
    hidden = rng.choice(train, size=len(train) - round(share * len(train)), replace=False)
    unknown = np.zeros(labels.num_rows, dtype=bool)
    unknown[hidden] = True
    for outcome in OUTCOMES:
        if outcome in labels.column_names:
            index = labels.column_names.index(outcome)
            column = labels.column(outcome)
            labels = labels.set_column(
                index, outcome, pc.if_else(pa.array(unknown), pa.nulls(len(unknown), column.type), column)
            )
    return labels


def split_fractions(config: Path) -> tuple[float, float]:
    """The config's validation and test fractions (the DataModule's defaults where it sets none)."""
    data = (yaml.safe_load(config.read_text()) or {}).get("data", {})
    return data.get("validation_fraction", 0.2), data.get("test_fraction", 0.1)


def run(args: argparse.Namespace, labels: Path, seed: int, pretrain: Path | None) -> dict[str, object]:
    """One `nextbest train` run; its test metrics and each baseline's, read back from MLflow."""
    argv = ["train", "--config", str(args.config), *(["--config", str(pretrain)] if pretrain else [])]
    argv += ["--data.events", str(args.events), "--data.labels", str(labels)]
    argv += ["--seed_everything", str(seed), "--export.register", "false", *args.extra]
    if nextbest(argv):
        raise SystemExit(f"training failed: {' '.join(argv)}")
    client = mlflow.MlflowClient()
    (latest,) = client.search_runs(
        [client.get_experiment_by_name("nextbest").experiment_id],
        "tags.mlflow.parentRunId IS NULL",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    models = {"sequence": latest}
    children = client.search_runs(
        [latest.info.experiment_id], f"tags.mlflow.parentRunId = '{latest.info.run_id}'"
    )
    models.update({child.info.run_name.removeprefix("baseline-"): child for child in children})
    metrics = {
        name: {
            key.removeprefix("test/scored/"): value
            for key, value in r.data.metrics.items()
            if key.startswith("test/scored/") and key.endswith(("/roc_auc", "/log_loss"))
        }
        for name, r in models.items()
    }
    arm = "pretrained" if pretrain else "from scratch"
    return {"seed": seed, "arm": arm, "label_share": args.label_share, "metrics": metrics}


def paired_summary(results: list[dict[str, object]]) -> dict[str, dict[str, float]]:
    """Per metric of the sequence model: mean and spread over seeds of pretrained minus scratch."""
    by_arm: dict[str, dict[object, dict[str, float]]] = {}
    for result in results:
        metrics = result["metrics"]
        assert isinstance(metrics, dict)
        by_arm.setdefault(str(result["arm"]), {})[result["seed"]] = metrics["sequence"]
    summary = {}
    for key in by_arm["pretrained"][next(iter(by_arm["pretrained"]))]:
        diffs = [by_arm["pretrained"][s][key] - by_arm["from scratch"][s][key] for s in by_arm["pretrained"]]
        spread = float(np.std(diffs, ddof=min(1, len(diffs) - 1)))
        summary[key] = {"mean": float(np.mean(diffs)), "sd": spread}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--events", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--label-share", type=float, default=0.1, help="share of training customers labelled")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--pretrain", type=Path, help="YAML with the `pretrain:` section (default: defaults)")
    parser.add_argument("--out", type=Path, help="keep the label frames and the MLflow store here")
    parser.add_argument("extra", nargs="*", help="more `nextbest train` arguments (after --)")
    args = parser.parse_args(argv)
    args.config, args.events = args.config.resolve(), args.events.resolve()
    fractions = split_fractions(args.config)
    labels = pq.read_table(args.labels)
    with tempfile.TemporaryDirectory() as scratch:
        folder = (args.out or Path(scratch)).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
        os.chdir(folder)  # checkpoints and artifacts stay with the store
        pretrain = args.pretrain.resolve() if args.pretrain else folder / "pretrain.yaml"
        if not args.pretrain:
            pretrain.write_text(yaml.safe_dump(DEFAULT_PRETRAIN))
        results = []
        for seed in args.seeds:
            path = folder / f"labels-{seed}.parquet"
            pq.write_table(scarce_labels(labels, fractions, args.label_share, seed), path)
            for arm in (None, pretrain):
                results.append(run(args, path, seed, arm))
                print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"pretrained_minus_scratch": paired_summary(results), "seeds": args.seeds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
