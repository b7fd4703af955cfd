"""Integration fixtures: a real (SQLite) MLflow tracking store and registry in a temporary directory."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from nextbest.data import load_events
from nextbest.data.events import EventLog
from nextbest.journeys import requests_at_end
from nextbest.registry import assign_aliases
from nextbest.scoring.pyfunc import log_model
from nextbest.scoring.scorer import JourneyScorer
from nextbest.scoring.tables import records_from_tables
from nextbest.simulate import SimulatedWorld, SimulationConfig, simulate, write_world
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
