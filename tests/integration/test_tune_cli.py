"""`nextbest tune`: a bad search space fails before any training with a message naming its key, and a
two-trial search through the real CLI, starting from the config's own values, logs nested MLflow runs and
writes a config that `nextbest train` runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from nextbest.cli import main
from nextbest.simulate import SimulationConfig, simulate, write_world
from tests.conftest import REPO_ROOT, SHORT_TRAINING

CONFIG = REPO_ROOT / "configs" / "demo.yaml"
SPACE = {
    "model.network.init_args.config.encoder": ["transformer", "gru"],
    "model.learning_rate": {"low": 1.0e-3, "high": 1.0e-2, "log": True},
}


@pytest.fixture(scope="module")
def data_args(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = tmp_path_factory.mktemp("world")
    write_world(simulate(SimulationConfig(n_customers=200, seed=1)), out)
    tables = [f"--data.{table}={out / f'{table}.parquet'}" for table in ("events", "customers", "decisions")]
    # 200 customers: demo.yaml's 10% and 5% would leave held-out batches without a single positive.
    return [*tables, "--data.validation_fraction=0.2", "--data.test_fraction=0.1"]


@pytest.fixture(autouse=True)
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)  # checkpoints land here
    monkeypatch.setattr(sys, "argv", ["nextbest"])  # LightningCLI compares its args with sys.argv


def test_a_bad_search_space_names_the_key(data_args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    space = json.dumps({"model.network.init_args.config.dmodel": [16, 32]})
    rc = main(["tune", "--config", str(CONFIG), *data_args, f"--tune.space={space}"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "tune.space.model.network.init_args.config.dmodel: `model.network.init_args.config.dmodel`" in err
    assert "Traceback" not in err
    assert not Path("checkpoints").exists()  # no trial started


@pytest.mark.slow
def test_two_trials_write_a_config_that_train_runs(
    data_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tuned.yaml"
    space = f"--tune.space={json.dumps(SPACE)}"
    search = ["tune", "--config", str(CONFIG), "--trials", "2", "--out", str(out)]
    rc = main([*search, *data_args, *SHORT_TRAINING, space])
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed.count("val/loss") >= 3  # the header, a line per trial, the best
    assert f"written to {out}" in printed
    assert "the config's own values (trial 0)" in printed  # demo.yaml's values lie in SPACE: tried first

    tuned = yaml.safe_load(out.read_text())
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("nextbest").experiment_id])
    (search,) = [r for r in runs if r.info.run_name == "tune"]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == search.info.run_id]
    assert sorted(r.info.run_name for r in trials) == ["trial-0", "trial-1"]
    assert all("val/loss" in r.data.metrics for r in trials)
    best_rate = float(search.data.params["best.model.learning_rate"])
    assert tuned["model"]["learning_rate"] == pytest.approx(best_rate)
    encoder = tuned["model"]["network"]["init_args"]["config"]["encoder"]
    assert encoder == search.data.params["best.model.network.init_args.config.encoder"]
    assert tuned["model"]["network"]["class_path"] == "nextbest.model.JourneyNetwork"  # the rest of demo.yaml

    assert main(["train", "--config", str(out), *data_args, "--trainer.fast_dev_run", "1"]) == 0
