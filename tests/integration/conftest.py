"""Integration fixtures: a real (SQLite) MLflow tracking store and registry in a temporary directory."""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow
import pytest

from nextbest.cli import main
from nextbest.data import load_events
from nextbest.data.events import EventLog
from nextbest.journeys import requests_at_end
from nextbest.registry import assign_aliases
from nextbest.scoring.pyfunc import log_model
from nextbest.scoring.scorer import JourneyScorer
from nextbest.scoring.tables import records_from_tables
from nextbest.simulate import SimulatedWorld, SimulationConfig, simulate, write_world
from tests.conftest import REPO_ROOT
from tests.unit.test_scoring import make_scorer


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> mlflow.MlflowClient:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # the local artifact store
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri)


def registered_world(
    registry: mlflow.MlflowClient, tmp_path: Path, n_customers: int, seed: int
) -> tuple[SimulatedWorld, EventLog, JourneyScorer]:
    """A simulated world written to tmp_path/world and a scorer for it registered as nextbest@champion."""
    world = simulate(SimulationConfig(n_customers=n_customers, seed=seed))
    write_world(world, tmp_path / "world")
    log = load_events(world.events)
    scorer = make_scorer(log, world.customers)
    with mlflow.start_run():
        info = log_model(scorer, records_from_tables(log, requests_at_end(log).slice(0, 1)), "nextbest")
    assign_aliases(registry, "nextbest", str(info.registered_model_version))
    return world, log, scorer


def train_demo_model(folder: Path) -> None:
    """What `make demo` does, small: a 300-customer world in folder/world and the demo config trained on it
    for one epoch into the MLflow store folder/mlflow.db (nextbest@challenger and @champion)."""
    write_world(simulate(SimulationConfig(n_customers=300, seed=3)), folder / "world")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        patch.chdir(folder)  # the local artifact store, folder/mlruns
        patch.setattr(sys, "argv", ["nextbest"])  # LightningCLI compares its args with sys.argv
        data = [
            f"--data.{t}={folder / 'world' / f'{t}.parquet'}" for t in ("events", "customers", "decisions")
        ]
        quick = ["--trainer.max_epochs=1", "--trainer.log_every_n_steps=1", "--export.baselines=[]"]
        catalog = f"--export.catalog={REPO_ROOT / 'configs' / 'catalogs' / 'demo.yaml'}"
        assert (
            main(["train", "--config", str(REPO_ROOT / "configs" / "demo.yaml"), *data, *quick, catalog]) == 0
        )
