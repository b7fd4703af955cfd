"""The sequence model against gradient-boosted trees on the same rows of real journeys, with paired intervals.

    python benchmarks/sequence_vs_trees.py [--dataset criteo cdnow] [--seeds 5] [--ablation [only]]
                                           [--sample-customers N] [--max-epochs E] [--data-dir DIR]

Each data set is converted with the project's adapter (`nextbest convert criteo|cdnow`) and trained with
its config (`configs/criteo.yaml`, `configs/cdnow.yaml`) by the training command itself, its `export`
comparing the calibrated models (the network alone, `sequence`, and the model the config exports when that
is the network stacked with trees, `hybrid`) with the trees (`gbt`: `BaselineModel` on the history
aggregates) fitted on the same training split and scored on the same test rows.

The split, per seed (the seed of the split and of the training alike):

* criteo: journeys grouped by user (a user's two journeys overlap in time), 70/20/10 train/validation/test
  by user. The journeys span one month with no common cutoff, so there is no split by time.
* cdnow: customers 60/20/20; every label is churn in the 39 weeks after 1997-10-01, every feature from
  purchases before it, so the test customers are held out by customer and their outcomes by time.

The head compared is the one the issue asks about: conversion on criteo, churn on cdnow. Per seed and
data set, each model's ROC-AUC and log loss minus the trees', with a 95% paired
bootstrap interval over test customers (`nextbest.evaluation.paired_differences`, as every training run
logs); over the seeds, the mean difference with a two-level bootstrap interval over seeds and customers
(`pool_seeds`). `--ablation` trains both again on shuffled events: within every history, the events
before the label's cutoff in random order and evenly spaced one second apart up to it, so that neither
order nor timing carries anything; the sequence model's loss of AUC there is what order and timing carry.
`--ablation only` trains on the shuffled events alone (to add the ablation to runs already made).

`--sample-customers` keeps that many groups (users, customers) at random (seed 0) before the split, and
`--max-epochs` replaces the config's, to fit small machines. Prints one JSON object per training run
and a final `{"summary": ...}` line on stdout (training's own output goes to stderr); nothing is written
outside a temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nextbest.adapters._output import ConvertedDataset, write_dataset
from nextbest.adapters.cdnow import read_cdnow
from nextbest.adapters.criteo import read_criteo
from nextbest.data.schema import UTC_US
from nextbest.evaluation import PairedDifference, pool_seeds
from nextbest_training.cli import fit_and_export
from nextbest_training.export import ExportResult

REPO_ROOT = Path(__file__).resolve().parents[1]
TREES = "gbt"
MICROS_PER_SECOND = 1_000_000
# Per model compared with the trees and metric, its paired differences over the seeds.
Pooled = dict[str, dict[str, list[PairedDifference]]]


@dataclasses.dataclass(frozen=True)
class DataSet:
    """How to read one source and which config trains on it."""

    read: Callable[[Path], ConvertedDataset]
    config: Path
    group_column: str  # the customers column the config splits by, or customer_id
    head: str  # the head compared


DATASETS = {
    "criteo": DataSet(
        lambda d: read_criteo(d / "criteo_attribution" / "train_journeys.jsonl"),
        REPO_ROOT / "configs" / "criteo.yaml",
        "user_id",
        "conversion",
    ),
    "cdnow": DataSet(
        lambda d: read_cdnow(d / "cdnow" / "CDNOW_master.txt"),
        REPO_ROOT / "configs" / "cdnow.yaml",
        "customer_id",
        "churn",
    ),
}


def default_data_dir() -> Path:
    return Path(os.environ.get("NEXTBEST_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def sample_groups(ds: ConvertedDataset, group_column: str, keep: int | None) -> ConvertedDataset:
    """The data of `keep` groups drawn at random (all of them when None or more than there are)."""
    owners = ds.labels if group_column == "customer_id" else ds.customers
    if owners is None:
        raise SystemExit(f"the converter returned no customers table: no {group_column} to sample by")
    groups = owners[group_column].combine_chunks()
    distinct = pc.unique(groups)
    if keep is None or keep >= len(distinct):
        return ds
    chosen = distinct.take(pa.array(np.random.default_rng(0).permutation(len(distinct))[:keep]))
    ids = owners.filter(pc.is_in(groups, value_set=chosen))["customer_id"].combine_chunks()

    def kept(table: pa.Table) -> pa.Table:
        return table.filter(pc.is_in(table["customer_id"], value_set=ids))

    customers = None if ds.customers is None else kept(ds.customers)
    return dataclasses.replace(ds, events=kept(ds.events), labels=kept(ds.labels), customers=customers)


def shuffle_histories(events: pa.Table, labels: pa.Table, seed: int) -> pa.Table:
    """`events` with every customer's events before its label cutoff in random order and evenly spaced,
    one second apart, ending a second before the cutoff; events at or after it (outcomes) are untouched.

    Raises:
        SystemExit: a customer has more than one label row (no single cutoff to shuffle before).
    """
    label_ids = labels["customer_id"].combine_chunks()
    if len(pc.unique(label_ids)) != len(label_ids):
        raise SystemExit("labels: customer_id repeats; the ablation needs one cutoff per customer")
    customer = np.asarray(pc.index_in(events["customer_id"], value_set=label_ids).fill_null(-1))
    cutoff = np.asarray(labels["as_of"].cast(UTC_US).cast(pa.int64()))
    timestamps = np.asarray(events["timestamp"].cast(UTC_US).cast(pa.int64()))
    before = np.flatnonzero((customer >= 0) & (timestamps < cutoff[np.maximum(customer, 0)]))
    # Sorted by customer, randomly within: each event's position in its history's new order.
    rows = before[np.lexsort((np.random.default_rng(seed).random(len(before)), customer[before]))]
    owners = customer[rows]
    first = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
    lengths = np.diff(np.r_[first, len(rows)])
    position = np.arange(len(rows)) - np.repeat(first, lengths)
    remaining = np.repeat(lengths, lengths) - position  # the last event of a history gets 1
    shuffled = timestamps.copy()
    shuffled[rows] = cutoff[owners] - remaining * MICROS_PER_SECOND
    column = events.schema.get_field_index("timestamp")
    return events.set_column(column, "timestamp", pa.array(shuffled).cast(UTC_US))


def train_once(
    dataset: str, folder: Path, seed: int, max_epochs: int | None, work: Path
) -> tuple[ExportResult, float]:
    """One config run on the converted tables in `folder`: what its export did, and its seconds."""
    spec = DATASETS[dataset]
    args = ["--config", str(spec.config), "--seed_everything", str(seed), "--data.seed", str(seed)]
    args += [f"--data.{name}={folder / f'{name}.parquet'}" for name in ("events", "labels")]
    if (folder / "customers.parquet").exists():
        args += [f"--data.customers={folder / 'customers.parquet'}"]
    if max_epochs is not None:
        args += ["--trainer.max_epochs", str(max_epochs)]
    args += ["--trainer.default_root_dir", str(work / "checkpoints"), "--trainer.enable_progress_bar=false"]
    args += [f"--export.baselines=[{TREES}]", "--export.register=false", "--export.journey_report=false"]
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # Lightning's tables would break the JSON lines
        exported = fit_and_export(args)
    if exported is None:
        raise SystemExit(f"{dataset}: the training run exported nothing (no MLflow run)")
    return exported[0], time.perf_counter() - started


def measurement(
    dataset: str, variant: str, seed: int, head: str, result: ExportResult, seconds: float
) -> tuple[dict[str, Any], dict[str, dict[str, PairedDifference]]]:
    """The JSON line of one run's head, and per model compared with the trees (the exported model and,
    when that is the hybrid, the network alone) its paired differences (for pooling)."""
    paired = {
        model: heads[head] for (model, reference), heads in result.comparisons.items() if reference == TREES
    }
    line: dict[str, Any] = {"dataset": dataset, "variant": variant, "seed": seed, "head": head}
    for metric in next(iter(paired.values())):
        line[metric] = {model: round(d[metric].model, 4) for model, d in paired.items()}
        line[metric][TREES] = round(next(iter(paired.values()))[metric].baseline, 4)
        line[f"{metric}_diff"] = {
            model: {k: round(v, 4) for k, v in d[metric].difference.to_dict().items()}
            for model, d in paired.items()
        }
    line["test_rows"] = int(result.metrics[TREES][head]["count"])
    line["train_s"] = round(seconds, 1)
    return line, paired


def summarise(lines: list[dict[str, Any]], pooled: dict[tuple[str, str], Pooled]) -> dict[str, Any]:
    """Per data set and variant: each model's metrics over the seeds (mean, min, max) and each of ours'
    pooled paired difference with the trees; with the ablation, the AUC each model loses to shuffling (per
    seed, same test rows)."""
    summary: dict[str, Any] = {}
    for (dataset, variant), models in pooled.items():
        runs = _runs(lines, dataset, variant)
        entry: dict[str, Any] = {
            "seeds": len(runs),
            "head": runs[0]["head"],
            "test_rows": runs[0]["test_rows"],
        }
        for metric in next(iter(models.values())):
            entry[metric] = {m: _mean_range([r[metric][m] for r in runs]) for m in runs[0][metric]}
            entry[f"{metric}_diff"] = {
                model: {k: round(v, 4) for k, v in pool_seeds(differences[metric]).to_dict().items()}
                for model, differences in models.items()
            }
        summary.setdefault(dataset, {})[variant] = entry
    for dataset, variants in summary.items():
        if {"original", "shuffled"} <= variants.keys():
            pairs = list(
                zip(_runs(lines, dataset, "original"), _runs(lines, dataset, "shuffled"), strict=True)
            )
            variants["auc_lost_to_shuffling"] = {
                m: _mean_range([a["roc_auc"][m] - b["roc_auc"][m] for a, b in pairs])
                for m in pairs[0][0]["roc_auc"]
            }
    return summary


def _runs(lines: list[dict[str, Any]], dataset: str, variant: str) -> list[dict[str, Any]]:
    return sorted(
        (x for x in lines if (x["dataset"], x["variant"]) == (dataset, variant)), key=lambda x: x["seed"]
    )


def _mean_range(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(float(np.mean(values)), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def run(args: argparse.Namespace) -> int:
    lines: list[dict[str, Any]] = []
    pooled: dict[tuple[str, str], Pooled] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
        for dataset in args.dataset:
            spec = DATASETS[dataset]
            ds = sample_groups(spec.read(args.data_dir), spec.group_column, args.sample_customers)
            variants = {} if args.ablation == "only" else {"original": ds}
            if args.ablation:
                variants["shuffled"] = dataclasses.replace(
                    ds, events=shuffle_histories(ds.events, ds.labels, 0)
                )
            for variant, data in variants.items():
                folder = work / dataset / variant
                write_dataset(data, folder)
                for seed in range(args.seeds):
                    result, seconds = train_once(dataset, folder, seed, args.max_epochs, work)
                    line, paired = measurement(dataset, variant, seed, spec.head, result, seconds)
                    print(json.dumps(line), flush=True)
                    lines.append(line)
                    for model, metrics in paired.items():
                        for metric, d in metrics.items():
                            models = pooled.setdefault((dataset, variant), {})
                            models.setdefault(model, {}).setdefault(metric, []).append(d)
    print(json.dumps({"summary": summarise(lines, pooled)}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", nargs="+", choices=sorted(DATASETS), default=["criteo", "cdnow"])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--seeds", type=int, default=5, help="training runs per data set (seeds 0..N-1)")
    parser.add_argument(
        "--ablation",
        nargs="?",
        const="also",
        choices=("also", "only"),
        help="also (or only) train on order- and time-free events",
    )
    parser.add_argument("--sample-customers", type=int, default=None, help="groups kept (default: all)")
    parser.add_argument("--max-epochs", type=int, default=None, help="default: the config's")
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
