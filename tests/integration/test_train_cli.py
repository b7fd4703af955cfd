"""`nextbest train`: every config instantiates, a fast_dev_run goes through the real CLI in-process, and
bad configs fail before training with a message."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import mlflow
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

import nextbest_training.cli as training_cli
from nextbest.cli import main
from nextbest.model import HEADS
from nextbest.scoring.pyfunc import load_scorer
from nextbest.simulate import SimulationConfig, simulate, write_world
from nextbest_training.cli import NextbestCLI, trainer_defaults
from nextbest_training.data import JourneyDataModule
from nextbest_training.module import JourneyModule
from tests.conftest import REPO_ROOT, SHORT_TRAINING

CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated world, plus a label frame and a user_id profile column for label-based configs."""
    out = tmp_path_factory.mktemp("world")
    simulated = simulate(SimulationConfig(n_customers=300, seed=1))
    write_world(simulated, out)
    decisions = simulated.decisions
    labels = pa.table(
        {
            "customer_id": decisions.column("customer_id"),
            "as_of": decisions.column("timestamp"),
            "conversion": decisions.column("converted"),
        }
    )
    pq.write_table(
        labels.slice(0, len(set(labels.column("customer_id").to_pylist()))), out / "labels.parquet"
    )
    customers = simulated.customers
    user = pa.array([f"u{i // 2}" for i in range(customers.num_rows)])
    pq.write_table(customers.append_column("user_id", user), out / "customers_with_users.parquet")
    return out


@pytest.fixture(autouse=True)
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)  # checkpoints and config dumps land here
    monkeypatch.setattr(sys, "argv", ["nextbest"])  # LightningCLI compares its args with sys.argv


def data_args(world: Path, config: Path) -> list[str]:
    """Point a config's data section at the small world."""
    args = ["--data.events", str(world / "events.parquet")]
    if config.name == "cdnow.yaml":
        return [*args, "--data.labels", str(world / "labels.parquet")]
    if config.name == "criteo.yaml":
        return [
            *args,
            "--data.customers",
            str(world / "customers_with_users.parquet"),
            "--data.labels",
            str(world / "labels.parquet"),
        ]
    return [
        *args,
        "--data.customers",
        str(world / "customers.parquet"),
        "--data.decisions",
        str(world / "decisions.parquet"),
    ]


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_instantiates(config: Path, world: Path) -> None:
    cli = NextbestCLI(
        JourneyModule,
        JourneyDataModule,
        args=["--config", str(config), *data_args(world, config)],
        run=False,
        trainer_defaults=trainer_defaults(),
    )
    assert isinstance(cli.model, JourneyModule)
    assert cli.datamodule.num_actions == (0 if config.name in ("criteo.yaml", "cdnow.yaml") else 6)
    assert cli.model.network.config.event_type_vocab == cli.datamodule.event_type_vocab


@pytest.mark.slow
def test_fast_dev_run_through_the_cli(world: Path) -> None:
    config = REPO_ROOT / "configs" / "demo.yaml"
    rc = main(["train", "--config", str(config), *data_args(world, config), "--trainer.fast_dev_run", "2"])
    assert rc == 0


def encoder_state(network: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights that pretraining trains: the event embedding and the history encoder."""
    parts = {"event_embedding": network.event_embedding, "history_encoder": network.history_encoder}
    return {
        f"{part}.{name}": value.detach().clone()
        for part, module in parts.items()
        for name, value in module.state_dict().items()
    }


@pytest.mark.slow
def test_a_pretrain_section_pretrains_the_encoder_the_supervised_run_starts_from(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    states: dict[str, dict[str, torch.Tensor]] = {}
    real_pretrain = training_cli.pretrain

    def pretrain(network: nn.Module, *args: Any, **kwargs: Any) -> None:
        states["initial"] = encoder_state(network)
        real_pretrain(network, *args, **kwargs)
        states["pretrained"] = encoder_state(network)

    def on_train_start(module: JourneyModule) -> None:
        states["supervised start"] = encoder_state(module.network)

    monkeypatch.setattr(training_cli, "pretrain", pretrain)
    monkeypatch.setattr(JourneyModule, "on_train_start", on_train_start)
    section = tmp_path / "pretrain.yaml"
    section.write_text("pretrain:\n  epochs: 1\n  batch_size: 64\n  min_length: 2\n  max_length: 10\n")
    config = REPO_ROOT / "configs" / "demo.yaml"
    args = ["--config", str(config), "--config", str(section), *data_args(world, config)]
    quick_export = ["--export.journey_report", "false", "--export.register", "false"]
    assert main(["train", *args, *SHORT_TRAINING, *quick_export]) == 0

    initial, pretrained, started = states["initial"], states["pretrained"], states["supervised start"]
    assert any(not torch.equal(initial[name], pretrained[name]) for name in initial)
    assert all(torch.equal(pretrained[name], started[name]) for name in pretrained)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("nextbest").experiment_id])
    (run,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert {"pretrain/loss", "val/loss"} <= run.data.metrics.keys()
    assert run.data.params["pretrain.batch_size"] == "64"
    assert int(run.data.params["pretrain.customers"]) > 0


@pytest.mark.slow
def test_a_hybrid_run_exports_the_stacked_model_and_compares_the_network_beside_it(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = REPO_ROOT / "configs" / "demo.yaml"
    export = ["--export.hybrid", "true", "--export.baselines", "[]", "--export.journey_report", "false"]
    assert main(["train", "--config", str(config), *data_args(world, config), *SHORT_TRAINING, *export]) == 0
    table = capsys.readouterr().out
    assert "  hybrid " in table
    assert "  sequence " in table
    assert "  hybrid - sequence" in table  # the paired difference that says what stacking adds
    scorer = load_scorer("models:/nextbest@champion")
    assert scorer.stacking is not None
    assert set(scorer.stacking.blends) <= {head.name for head in HEADS}
    assert scorer.metadata["stacking"] == "gbt"
    # The exported model carries its inputs' training distributions, which `nextbest monitor` reads.
    assert scorer.reference is not None
    assert {"event_type", "channel", "history_length", "gap_hours", "score"} <= set(scorer.reference.bins)
    assert any(name.startswith("profile.") for name in scorer.reference.bins)


@pytest.mark.slow
def test_an_epoch_is_tracked_in_mlflow_and_registered(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real (short) run logs its resolved config, parameters, namespaced metrics, data set, plots and
    baselines, and registers a model that loads by alias and scores; a second run is only the challenger."""
    config = REPO_ROOT / "configs" / "demo.yaml"
    catalog = ["--export.catalog", str(REPO_ROOT / "configs" / "catalogs" / "demo.yaml")]
    assert main(["train", "--config", str(config), *data_args(world, config), *SHORT_TRAINING, *catalog]) == 0
    printed = capsys.readouterr().out
    assert "test split, the calibrated models vs baselines" in printed
    assert "sequence - gbt" in printed
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("nextbest").experiment_id])
    (run,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert "val/loss" in run.data.metrics
    assert "test/action_conversion/auroc" in run.data.metrics
    assert "test/scored/action_conversion/roc_auc" in run.data.metrics
    compared = run.data.metrics
    assert (
        compared["test/compare/sequence_vs_gbt/action_conversion/roc_auc_low"]
        <= compared["test/compare/sequence_vs_gbt/action_conversion/roc_auc_high"]
    )
    assert run.data.params["learning_rate"] == "0.002"
    assert int(run.data.params["dataset.test_examples"]) > 0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "data", "plots", "journeys"} <= artifacts
    journeys = {a.path for a in client.list_artifacts(run.info.run_id, "journeys")}
    assert journeys == {"journeys/report.html", "journeys/summary.json"}
    data = {a.path for a in client.list_artifacts(run.info.run_id, "data")}
    assert data == {"data/dataset.json", "data/encoder.json", "data/validation.json"}
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/test_action_conversion.png" in plots
    baselines = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == run.info.run_id}
    assert set(baselines) == {"baseline-logistic", "baseline-gbt"}
    assert all("test/scored/action_conversion/roc_auc" in b.data.metrics for b in baselines.values())

    champion = client.get_model_version_by_alias("nextbest", "champion")
    assert champion.run_id == run.info.run_id
    assert client.get_model_version_by_alias("nextbest", "challenger").version == champion.version
    out = tmp_path / "scores.parquet"
    score = ["score", "--model", "models:/nextbest@champion", "--events", str(world / "events.parquet")]
    customers = ["--customers", str(world / "customers.parquet")]
    assert main([*score, *customers, "--out", str(out)]) == 0
    scored = pq.read_table(out)
    assert scored.num_rows == pq.read_table(world / "customers.parquet").num_rows
    # The packaged demo catalog's rules are at work: e.g. call_back is for gold and silver customers only.
    reasons = {s["reason"] for row in scored.column("suppressed").to_pylist() for s in row}
    assert 'not eligible: profile.segment in ["gold", "silver"]' in reasons

    assert main(["train", "--config", str(config), *data_args(world, config), *SHORT_TRAINING]) == 0
    challenger = client.get_model_version_by_alias("nextbest", "challenger")
    assert int(challenger.version) == int(champion.version) + 1
    assert client.get_model_version_by_alias("nextbest", "champion").version == champion.version


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--data.no_such_key", "1"], "no_such_key"),
        (["--data.batch_size", "many"], "batch_size"),
        (["--model.network.init_args.config.d_model", "-8"], "d_model"),
    ],
    ids=["unknown-key", "wrong-type", "bad-value"],
)
def test_bad_configs_fail_with_a_message(
    override: list[str], message: str, world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = REPO_ROOT / "configs" / "demo.yaml"
    try:
        status = main(["train", "--config", str(config), *data_args(world, config), *override])
    except SystemExit as exit_:  # the config parser's own usage errors
        status = exit_.code
    assert status not in (0, None)
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_a_catalog_that_does_not_fit_the_data_fails_before_training(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        "actions:\n  - {id: email_offer, eligible_if: 'profile.email_opt_in == 1'}\n"
        "  - {id: call_back, eligible_if: 'profile.segmnet == \"gold\"'}\n"
    )
    config = REPO_ROOT / "configs" / "demo.yaml"
    args = ["train", "--config", str(config), *data_args(world, config), "--export.catalog", str(catalog)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"{catalog}: actions[1] (call_back): eligible_if: `profile.segmnet`: unknown profile name" in err
    assert "Traceback" not in err
    assert not (tmp_path / "checkpoints").exists()  # no training started


def test_missing_data_file_is_a_message(world: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = REPO_ROOT / "configs" / "demo.yaml"
    rc = main(["train", "--config", str(config), "--data.events", str(world / "absent.parquet")])
    assert rc == 1
    assert "absent.parquet" in capsys.readouterr().err
