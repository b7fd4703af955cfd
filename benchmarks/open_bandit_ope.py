"""Off-policy evaluation on real logs: the Bernoulli Thompson Sampling policy's click rate on ZOZOTOWN
(Open Bandit Dataset sample, ../shared/data/open_bandit), estimated from the uniformly random log and
compared with the click rate BTS achieved in its own log.

    python benchmarks/open_bandit_ope.py [--data-dir ../shared/data] [--resamples 2000]

BTS is context-free: it picks an item for each of three positions from its Beta posteriors. Its action
distribution per position is estimated from its own log as each item's mean logged propensity there,
renormalised (items BTS never showed at a position get 0). The random log's propensity is 1/80. The direct
method of DR predicts each position's mean click rate in the random log. Prints one JSON object per
estimate and a summary line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from nextbest.evaluation.ope import LoggedDecisions, estimate_policy_value, mean_estimate

COLUMNS = ["item_id", "position", "click", "propensity_score"]


def bts_action_distribution(bts: pd.DataFrame, n_items: int) -> np.ndarray:
    """[positions, items] BTS's probability of showing each item at each position (rows sum to 1)."""
    positions = sorted(bts["position"].unique())
    table = np.zeros((len(positions), n_items))
    means = bts.groupby(["position", "item_id"])["propensity_score"].mean()
    for (position, item), propensity in means.items():
        table[positions.index(position), item] = propensity
    return table / table.sum(axis=1, keepdims=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args(argv)
    folder = args.data_dir / "open_bandit"
    random_log = pd.read_csv(folder / "random" / "all.csv", usecols=COLUMNS)
    bts_log = pd.read_csv(folder / "bts" / "all.csv", usecols=COLUMNS)
    n_items = int(max(random_log["item_id"].max(), bts_log["item_id"].max())) + 1
    distribution = bts_action_distribution(bts_log, n_items)
    position = random_log["position"].to_numpy() - 1
    logged = LoggedDecisions(
        action=random_log["item_id"].to_numpy(),
        propensity=random_log["propensity_score"].to_numpy(),
        reward=random_log["click"].to_numpy(dtype=np.float64),
    )
    per_position = random_log.groupby("position")["click"].mean().to_numpy()
    predicted = np.repeat(per_position[position][:, None], n_items, axis=1)
    estimates = estimate_policy_value(logged, distribution[position], predicted, resamples=args.resamples)
    achieved = mean_estimate(bts_log["click"].to_numpy(dtype=np.float64), resamples=args.resamples)
    for name, estimate in {**estimates, "bts_on_policy": achieved}.items():
        print(json.dumps({"estimator": name, **estimate.to_dict()}))
    dr = estimates["dr"]
    print(
        f"BTS click rate: estimated from the random log {dr.value:.4%} "
        f"(DR, 95% CI {dr.low:.4%}-{dr.high:.4%}); achieved in its own log {achieved.value:.4%} "
        f"({achieved.low:.4%}-{achieved.high:.4%}); random policy {logged.reward.mean():.4%}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
