"""Uplift beats propensity: in a world where the likeliest converters are the least persuadable, treating
the customers with the highest predicted uplift earns more (in true conversion probability) than treating
those with the highest predicted P(conversion), with the same model and the same budget."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nextbest.cli import main
from nextbest.data import CUSTOMERS, load_events, load_table
from nextbest.decisioning import ActionCatalog
from nextbest.scoring.decide import decide
from nextbest.scoring.pyfunc import load_scorer
from nextbest.simulate import SimulationConfig, simulate, write_world
from nextbest.simulate.config import EffectSizes
from tests.conftest import REPO_ROOT

COUPLING = -1.5  # action effects scale with exp(-1.5 * intent): eager buyers barely respond
BUDGET = 0.3  # the share of decisions that may be treated


@pytest.mark.slow
@pytest.mark.integration
def test_targeting_by_uplift_beats_targeting_by_conversion_probability(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["nextbest"])
    effects = EffectSizes(persuadability_intent_coupling=COUPLING)
    for name, seed, customers in (("train", 21, 30_000), ("test", 22, 8_000)):
        write_world(
            simulate(SimulationConfig(n_customers=customers, seed=seed, effects=effects)), tmp_path / name
        )
    data = [f"--data.{t}={tmp_path / 'train' / t}.parquet" for t in ("events", "customers", "decisions")]
    config = str(REPO_ROOT / "configs" / "demo.yaml")
    assert main(["train", "--config", config, *data, "--trainer.max_epochs=5", "--export.baselines=[]"]) == 0

    scorer = load_scorer("models:/nextbest@champion")
    test = tmp_path / "test"
    decisions = pq.read_table(test / "decisions.parquet")
    requests = pa.table(
        {"customer_id": decisions.column("customer_id"), "as_of": decisions.column("timestamp")}
    )
    customers = load_table(test / "customers.parquet", CUSTOMERS)
    decided = decide(
        scorer,
        load_events(test / "events.parquet"),
        requests,
        customers,
        catalog=ActionCatalog.default(scorer.actions),
    )
    actions = list(scorer.actions)
    truth = pq.read_table(test / "truth.parquet").to_pandas()
    keys = list(
        zip(
            decisions.column("customer_id").to_pylist(),
            decisions.column("timestamp").to_pylist(),
            strict=True,
        )
    )
    true_p = truth.pivot_table(index=["customer_id", "as_of"], columns="action", values="p_conversion")
    true_p = true_p.loc[keys, actions].to_numpy()

    predicted = decided.scores.action_p_conversion
    rows, baseline = np.arange(len(predicted)), actions.index("no_action")
    treatments = np.array([i for i in range(len(actions)) if i != baseline])
    best = treatments[np.argmax(predicted[:, treatments], axis=1)]  # each decision's most promising action
    by_uplift = predicted[rows, best] - predicted[:, baseline]
    by_conversion = predicted[rows, best]

    def true_value(score: np.ndarray) -> float:
        treated = np.zeros(len(rows), dtype=bool)
        treated[np.argsort(-score)[: int(BUDGET * len(rows))]] = True
        return float(np.where(treated, true_p[rows, best], true_p[:, baseline]).mean())

    uplift_value, conversion_value = true_value(by_uplift), true_value(by_conversion)
    random_value = true_value(np.random.default_rng(0).random(len(rows)))
    assert uplift_value > conversion_value > random_value, (uplift_value, conversion_value, random_value)
