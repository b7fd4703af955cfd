"""`nextbest monitor` as a scheduler runs it: a registered model, its decision log and the events that
followed; the report opens in headless Chromium like the journey report (a full-page screenshot is kept
in `test-artifacts/`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import mlflow
import pyarrow.parquet as pq
import pytest

from nextbest.cli import main
from nextbest.data import load_events
from nextbest.journeys import requests_at_end
from nextbest.registry import assign_aliases
from nextbest.scoring.pyfunc import log_model
from nextbest.scoring.scorer import JourneyScorer
from nextbest.scoring.tables import records_from_tables
from nextbest.simulate import SimulationConfig, simulate, write_world
from tests.integration.test_journey_report import ARTIFACTS, render
from tests.store.test_store_monitor import served_into_store
from tests.unit.test_monitoring import CONTROL, WORLD_SIZE, scorer_with_reference, serve

pytestmark = pytest.mark.integration


def register(scorer: JourneyScorer, registry: mlflow.MlflowClient) -> str:
    log = load_events(simulate(SimulationConfig(n_customers=20, seed=9)).events)
    with mlflow.start_run():
        info = log_model(scorer, records_from_tables(log, requests_at_end(log).slice(0, 1)), "nextbest")
    assign_aliases(registry, "nextbest", str(info.registered_model_version))
    return "models:/nextbest@champion"


def monitor_args(world: Path, log: Path, out: Path, model: str) -> list[str]:
    tables = ["--events", str(world / "events.parquet"), "--customers", str(world / "customers.parquet")]
    return ["monitor", "--decisions", str(log), *tables, "--model", model, "--out", str(out)]


@pytest.fixture
def served_world(tmp_path: Path) -> tuple[Path, Path, JourneyScorer]:
    """A world written to tmp_path/world and the decision log of a scorer with a reference serving it."""
    scorer = scorer_with_reference()
    world = simulate(SimulationConfig(n_customers=WORLD_SIZE, seed=5))
    write_world(world, tmp_path / "world")
    return tmp_path / "world", serve(scorer, world, world.events, tmp_path / "log"), scorer


def test_the_monitor_writes_its_summary_and_fails_on_an_alert(
    registry: mlflow.MlflowClient, served_world: tuple[Path, Path, JourneyScorer], tmp_path: Path
) -> None:
    world, log, scorer = served_world
    model = register(scorer, registry)
    assert main(monitor_args(world, log, tmp_path / "out", model)) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert set(summary) == {"decisions", "outcomes", "lift", "calibration", "drift", "alerts"}
    assert summary["drift"]["available"]
    assert {entry["status"] for entry in summary["drift"]["inputs"].values()} <= {"stable", "shifted"}
    assert all({"name", "severity", "message"} <= set(alert) for alert in summary["alerts"])
    # The untrained scorer's probabilities are far off what happened: an alert, and a failing status.
    assert "calibration_off" in {alert["name"] for alert in summary["alerts"]}
    assert main([*monitor_args(world, log, tmp_path / "again", model), "--fail-on-alert"]) == 1


@pytest.mark.slow  # needs a Chromium (.ci/run installs one), like the journey report's test
def test_the_report_renders_without_errors(
    registry: mlflow.MlflowClient, served_world: tuple[Path, Path, JourneyScorer], tmp_path: Path
) -> None:
    world, log, scorer = served_world
    assert main(monitor_args(world, log, tmp_path / "out", register(scorer, registry))) == 0
    problems, text = render(tmp_path / "out" / "report.html", ARTIFACTS / "monitor-report.png")
    assert problems == []
    for heading in ("Alerts", "Decisions", "Outcomes", "Lift against the control group", "Calibration"):
        assert heading in text


def test_a_model_without_a_reference_says_so_and_the_rest_is_measured(
    registry: mlflow.MlflowClient,
    served_world: tuple[Path, Path, JourneyScorer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    world, log, scorer = served_world
    scorer.reference = None  # as every model trained before the monitor existed
    assert main(monitor_args(world, log, tmp_path / "out", register(scorer, registry))) == 0
    assert "carries no input reference" in capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert not summary["drift"]["available"]
    assert "Retrain it to measure drift" in summary["drift"]["message"]
    assert summary["outcomes"]["overall"]["decisions"] == summary["decisions"]["total"] > 0


def test_a_store_and_the_models_control_group_measure_what_the_log_measures(
    registry: mlflow.MlflowClient, served_world: tuple[Path, Path, JourneyScorer], tmp_path: Path
) -> None:
    """The model registered with the catalog that served the log, control group included: `--store`
    recomputes each customer's membership and measures the log's lift and drift (the score's aside)."""
    world, log, scorer = served_world
    scorer.catalog = dataclasses.replace(scorer.action_catalog, control=CONTROL)
    model = register(scorer, registry)
    store = f"sqlite:///{tmp_path / 'store.db'}"
    served_into_store(
        store, log, pq.read_table(world / "events.parquet"), pq.read_table(world / "customers.parquet")
    )
    assert main(monitor_args(world, log, tmp_path / "log", model)) == 0
    assert main(["monitor", "--store", store, "--model", model, "--out", str(tmp_path / "store")]) == 0
    from_log = json.loads((tmp_path / "log" / "summary.json").read_text())
    from_store = json.loads((tmp_path / "store" / "summary.json").read_text())
    assert from_store["decisions"]["control"] == from_log["decisions"]["control"] > 0
    assert from_store["lift"] == from_log["lift"]
    assert from_store["drift"]["inputs"].pop("score")["status"] == "not measured"
    assert from_store["drift"]["inputs"] == {
        n: e for n, e in from_log["drift"]["inputs"].items() if n != "score"
    }
