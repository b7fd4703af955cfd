"""Held-out quality and fit time of the engineered-feature baselines (logistic regression, GBT).

Usage:
    python benchmarks/criteo_baselines.py [--dataset criteo|cdnow] [--data-dir DIR] [--seed 0]

criteo: every journey is one request (as_of = 1 s after its last touch), conversion label; journeys are
split 80/20 by user, since a user's two journeys overlap in time. Reference on a held-out split of the
same source (data README): GBT on bag-of-campaigns, first/last touch, length and gap features about
0.915 ROC-AUC, logistic regression about 0.77.

cdnow: the Fader-Hardie-Lee protocol, churn (no purchase in the 39-week holdout) as of 1997-10-01;
customers are split 80/20.

Prints one JSON object per model: ROC-AUC, log loss, average precision, Brier score, fit and predict
seconds. Converted data stay in memory; nothing is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nextbest.adapters.cdnow import read_cdnow
from nextbest.adapters.criteo import read_criteo
from nextbest.data import load_events
from nextbest.data.events import EventLog
from nextbest.evaluation import evaluate_binary
from nextbest_training.baselines import KINDS, BaselineModel

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Split:
    """One side of the split: its own event log and its requests (customer index, as_of, labels)."""

    log: EventLog
    customer_index: np.ndarray
    as_of: np.ndarray
    labels: dict[str, np.ndarray]


def default_data_dir() -> Path:
    return Path(os.environ.get("NEXTBEST_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def user_groups_criteo(data_dir: Path) -> tuple[pa.Table, pa.Table, pa.Array]:
    """Events, labels and, per label row, its user (journeys of one user go to the same side)."""
    ds = read_criteo(data_dir / "criteo_attribution" / "train_journeys.jsonl")
    if ds.customers is None:
        raise SystemExit("the Criteo converter returned no customers table: no user ids to split by")
    rows = pc.index_in(ds.labels["customer_id"], value_set=ds.customers["customer_id"].combine_chunks())
    return ds.events, ds.labels, ds.customers["user_id"].combine_chunks().take(rows)


def user_groups_cdnow(data_dir: Path) -> tuple[pa.Table, pa.Table, pa.Array]:
    """Events, labels (churn only) and, per label row, its group: the customer itself."""
    ds = read_cdnow(data_dir / "cdnow" / "CDNOW_master.txt")
    labels = ds.labels.select(["customer_id", "as_of", "churn"])
    return ds.events, labels, labels["customer_id"].combine_chunks()


def split_groups(groups: pa.Array, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask over rows: True for rows whose group falls in the held-out `fraction` of groups."""
    distinct = pc.unique(groups)
    rng = np.random.default_rng(seed)
    held_out = rng.permutation(len(distinct))[: round(fraction * len(distinct))]
    return np.asarray(pc.is_in(groups, value_set=distinct.take(pa.array(held_out))), dtype=bool)


def build_split(events: pa.Table, labels: pa.Table) -> Split:
    """The events of `labels`' customers as their own log, and the requests against it."""
    customers = labels["customer_id"].combine_chunks()
    log = load_events(events.filter(pc.is_in(events["customer_id"], value_set=customers)))
    outcomes = [name for name in ("conversion", "churn") if name in labels.column_names]
    return Split(
        log=log,
        customer_index=log.index_of(customers),
        as_of=np.asarray(pc.cast(labels["as_of"], pa.int64()).to_numpy()),
        labels={name: np.asarray(labels[name].to_numpy(), dtype=np.float64) for name in outcomes},
    )


def run(dataset: str, data_dir: Path, seed: int, threads: int | None) -> list[dict[str, object]]:
    started = time.perf_counter()
    events, labels, groups = (user_groups_criteo if dataset == "criteo" else user_groups_cdnow)(data_dir)
    held_out = split_groups(groups, TEST_FRACTION, seed)
    train = build_split(events, labels.filter(pa.array(~held_out)))
    test = build_split(events, labels.filter(pa.array(held_out)))
    prepare_s = time.perf_counter() - started
    results = []
    for kind in KINDS:
        started = time.perf_counter()
        model = BaselineModel(kind, random_state=seed, n_threads=threads).fit(
            train.log, train.customer_index, train.as_of, train.labels
        )
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        predictions = model.predict_proba(test.log, test.customer_index, test.as_of)
        predict_s = time.perf_counter() - started
        for outcome, probabilities in predictions.items():
            metrics = evaluate_binary(test.labels[outcome], probabilities)
            results.append(
                {
                    "dataset": dataset,
                    "model": kind,
                    "outcome": outcome,
                    "train_requests": len(train.as_of),
                    "test_requests": len(test.as_of),
                    **{name: round(value, 4) for name, value in metrics.items()},
                    "count": int(metrics["count"]),
                    "fit_s": round(fit_s, 2),
                    "predict_s": round(predict_s, 2),
                    "prepare_s": round(prepare_s, 2),
                }
            )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("criteo", "cdnow"), default="criteo")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of the models")
    parser.add_argument("--threads", type=int, default=None, help="native threads (default: all cores)")
    args = parser.parse_args(argv)
    for result in run(args.dataset, args.data_dir, args.seed, args.threads):
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
