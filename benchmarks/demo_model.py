"""The demo model of the speed benchmarks: the architecture of `configs/demo.yaml`, untrained (speed does
not depend on the weights), with the demo catalog, registered in a temporary MLflow store."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pyarrow as pa
import torch
import yaml

from nextbest.data.events import EventLog
from nextbest.decisioning.catalog import ActionCatalog
from nextbest.journeys import JourneyConfig, JourneyEncoder, requests_at_end
from nextbest.model import HEADS, OUTCOMES, JourneyNetwork, ModelConfig
from nextbest.model.stacking import HeadBlend, Stacking
from nextbest.registry import MODEL_NAME, assign_aliases
from nextbest.scoring.pyfunc import log_model
from nextbest.scoring.scorer import JourneyScorer
from nextbest.scoring.tables import records_from_tables
from nextbest_training.baselines import make_estimator
from nextbest_training.stacking import tree_features, trees_from_sklearn

REPO_ROOT = Path(__file__).resolve().parents[1]
CATALOG = REPO_ROOT / "configs" / "catalogs" / "demo.yaml"


def demo_config() -> dict[str, Any]:
    """The demo training configuration (`configs/demo.yaml`)."""
    config: dict[str, Any] = yaml.safe_load((REPO_ROOT / "configs" / "demo.yaml").read_text())
    return config


def demo_architecture() -> dict[str, Any]:
    """The network settings of the demo training configuration (d_model, n_layers, ...)."""
    settings: dict[str, Any] = demo_config()["model"]["network"]["init_args"]["config"]
    return settings


def demo_scorer(log: EventLog, customers: pa.Table, hybrid_trees: int = 0) -> JourneyScorer:
    """An untrained demo-architecture scorer whose encoder is fitted on `log`; with `hybrid_trees`, stacked
    with that many trees per outcome (`export.hybrid`)."""
    encoder = JourneyEncoder.fit(log, customers, JourneyConfig(**demo_config()["data"].get("journey", {})))
    catalog = ActionCatalog.from_yaml(CATALOG)
    config = ModelConfig(**encoder.network_sizes(), num_actions=len(catalog.ids), **demo_architecture())
    torch.manual_seed(0)
    scorer = JourneyScorer(JourneyNetwork(config), encoder, catalog.ids, catalog=catalog)
    return stacked(scorer, log, customers, hybrid_trees) if hybrid_trees else scorer


def stacked(scorer: JourneyScorer, log: EventLog, customers: pa.Table, trees: int) -> JourneyScorer:
    """`scorer` stacked with `trees` trees of the tree baseline's size (31 leaves) per outcome, every head
    blended. Speed depends on the trees' number and depth, not on what they learnt: they are fitted to
    random labels on the customers' history blocks, every iteration kept."""
    history = scorer.encoder.encode(log, requests_at_end(log), customers).static["history"]
    rng = np.random.default_rng(0)
    actions = rng.integers(-1, len(scorer.actions), len(history))
    features = tree_features(history, actions, len(scorer.actions))
    estimator = make_estimator("gbt").set_params(max_iter=trees, early_stopping=False)
    fitted = {
        outcome: trees_from_sklearn(estimator.fit(features, rng.integers(0, 2, len(history))))
        for outcome in OUTCOMES
    }
    blends = {head.name: HeadBlend(network=1.0, trees=1.0) for head in HEADS}
    return dataclasses.replace(scorer, stacking=Stacking(fitted, blends, len(scorer.actions)))


def register(scorer: JourneyScorer, log: EventLog, folder: Path) -> str:
    """Registers `scorer` as nextbest@champion in an SQLite store under `folder`; returns the store's URI."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    example = records_from_tables(log, requests_at_end(log).slice(0, 1))
    with mlflow.start_run():
        info = log_model(scorer, example, registered_model_name=MODEL_NAME)
    assign_aliases(mlflow.MlflowClient(uri), MODEL_NAME, str(info.registered_model_version))
    return uri


def long_histories(log: EventLog, customers: pa.Table, length: int) -> list[dict[str, Any]]:
    """Request bodies of the customers with at least `length` events: their last `length` events."""
    long = np.flatnonzero(np.diff(log.offsets) >= length)
    records = records_from_tables(log, requests_at_end(log).take(long), customers, max_events=length)
    return [r.model_dump(exclude_none=True) for r in records]
