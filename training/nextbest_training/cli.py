"""`nextbest train --config FILE [--section.key VALUE ...]`: a LightningCLI config run.

The constructor signatures of `JourneyModule`, the network and `JourneyDataModule` are the config
schema; the data-given sizes of the network (vocabularies, profile width, number of actions) are
linked from the DataModule, so configs only hold what a person chooses.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import mlflow
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger

from nextbest.registry import tracking_uri
from nextbest_training.data import JourneyDataModule
from nextbest_training.export import ExportResult, ExportSettings, export_run
from nextbest_training.module import JourneyModule
from nextbest_training.pretrain import PretrainSettings, pretrain
from nextbest_training.search_space import TuneSettings

# LightningCLI itself calls jsonargparse APIs that jsonargparse now deprecates; users can do nothing about it.
os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
# Sizes the network cannot know before the data is read.
LINKED_SIZES = (
    "event_type_vocab",
    "channel_vocab",
    "action_vocab",
    "profile_categorical_sizes",
    "profile_numeric_dim",
    "history_dim",
    "num_actions",
    "max_events",
)


class SaveConfigToMlflow(SaveConfigCallback):
    """Stores the resolved config with the MLflow run (the MLflow logger has no local log directory)."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        logger = trainer.logger
        if isinstance(logger, MLFlowLogger) and logger.run_id is not None:
            config = self.parser.dump(self.config, skip_none=False)
            logger.experiment.log_text(logger.run_id, config, "config.yaml")


class NextbestCLI(LightningCLI):
    """LightningCLI with the data-to-network links, an optional `pretrain:` section (what precedes
    training), an `export:` section (what follows it) and a `tune:` section (the search space of
    `nextbest tune`)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--pretrain",
            type=PretrainSettings | None,
            default=None,
            help="self-supervised pretraining of the encoder on every customer's history (off when absent)",
        )
        parser.add_class_arguments(ExportSettings, "export")
        parser.add_class_arguments(TuneSettings, "tune")
        for size in LINKED_SIZES:
            parser.link_arguments(
                f"data.{size}", f"model.network.init_args.config.{size}", apply_on="instantiate"
            )


def trainer_defaults() -> dict[str, Any]:
    """CPU training with early stopping on the validation loss, tracked in MLflow."""
    return {
        "accelerator": "cpu",
        "max_epochs": 20,
        # The MLflow logger has no local folder of its own: checkpoints go to checkpoints/<experiment>/<run>.
        "default_root_dir": "checkpoints",
        # Persistent callbacks: every run stops early and keeps its best checkpoint.
        "callbacks": [
            EarlyStopping(monitor="val/loss", patience=5),
            ModelCheckpoint(monitor="val/loss", save_top_k=1),
            LearningRateMonitor(logging_interval="epoch"),
        ],
        "logger": {
            "class_path": "lightning.pytorch.loggers.MLFlowLogger",
            "init_args": {
                "experiment_name": "nextbest",
                "tracking_uri": tracking_uri(),
            },
        },
    }


def train(args: Sequence[str]) -> int:
    """Fit, test the best checkpoint's weights on the held-out groups, then calibrate, compare with the
    baselines and register the model (`export_run`); prints the comparison."""
    exported = fit_and_export(args)
    if exported is None:
        print("nextbest train: no MLflow run (fast_dev_run or another logger): the model is not exported")
    else:
        print(format_export(*exported))
    return 0


def fit_and_export(args: Sequence[str]) -> tuple[ExportResult, str] | None:
    """The config run of `train` without the printing: what `export_run` did and the MLflow run id, or None
    when there is no MLflow run to export to (`fast_dev_run`, another logger)."""
    cli = build_cli("nextbest train", args, trainer_defaults())
    settings: ExportSettings = cli.config_init["export"]
    if settings.catalog is not None:  # the model's actions and profile are known now: fail before fitting
        prepared = cli.datamodule.prepared
        settings.catalog.check_model(prepared.examples.actions, prepared.encoder.profile)
    fit(cli)
    _restore_best_weights(cli.trainer, cli.model)
    if len(cli.datamodule.prepared.splits["test"]):
        cli.trainer.test(cli.model, datamodule=cli.datamodule)
    logger = cli.trainer.logger
    if _fast_dev_run(cli) or not isinstance(logger, MLFlowLogger) or logger.run_id is None:
        return None
    mlflow.set_tracking_uri(logger.experiment.tracking_uri)
    result = export_run(
        cli.model.network,
        cli.datamodule.prepared,
        settings,
        logger.run_id,
        cli.datamodule.rules,
    )
    return result, logger.run_id


def fit(cli: NextbestCLI) -> None:
    """The config's pretraining of the encoder when it has a `pretrain:` section, then its training."""
    pretraining: PretrainSettings | None = cli.config_init["pretrain"]
    if pretraining is not None:
        pretrain(
            cli.model.network,
            cli.datamodule.prepared,
            pretraining,
            logger=cli.trainer.logger or False,
            accelerator=cli.config["trainer"]["accelerator"],
            fast_dev_run=_fast_dev_run(cli),
            seed=cli.datamodule.seed,
        )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)


def _fast_dev_run(cli: NextbestCLI) -> bool:
    # Lightning sets `fast_dev_run` on the trainer at run time; its class does not declare it.
    return bool(getattr(cli.trainer, "fast_dev_run", False))


def build_cli(
    program: str, args: Sequence[str], defaults: dict[str, Any], cli_class: type[NextbestCLI] = NextbestCLI
) -> NextbestCLI:
    """The config run of `args` (parsed, and its model, data and trainer built unless `cli_class` skips
    that), seeded by `seed_everything` (default 0)."""
    # Raised inside Lightning by torch 2.13 on every step; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    with _command_line(program, args):
        return cli_class(
            JourneyModule,
            JourneyDataModule,
            run=False,
            seed_everything_default=0,
            trainer_defaults=defaults,
            save_config_callback=SaveConfigToMlflow,
            save_config_kwargs={"save_to_log_dir": False},
        )


def format_export(result: ExportResult, run_id: str) -> str:
    """The comparison on the test split, model by model, and where the model went."""
    lines = []
    for name, heads in result.metrics.items():
        for head, metrics in heads.items():
            figures = "  ".join(f"{k} {metrics[k]:.4f}" for k in ("roc_auc", "log_loss", "brier", "ece"))
            lines.append(f"  {name:<10} {head:<18} {figures}  (n={int(metrics['count']):,})")
    header = ["test split, the calibrated models vs baselines:"] if lines else []
    lines += _format_comparisons(result)
    where = f"model logged to run {run_id}: {result.model_uri}"
    if result.version is not None:
        where += f"; registered version {result.version} ({', '.join(result.aliases)})"
    return "\n".join([*header, *lines, where])


def _format_comparisons(result: ExportResult) -> list[str]:
    """Per pair of models and head, the first one's ROC-AUC and log loss minus the second's with their
    95% paired intervals, and which model each interval calls better."""
    lines = []
    for (model, reference), heads in result.comparisons.items():
        better = {"model": f"{model} better", "baseline": f"{reference} better", "neither": "no difference"}
        for head, metrics in heads.items():
            figures = "  ".join(
                f"{name} {d.difference.value:+.4f} [{d.difference.low:+.4f}, {d.difference.high:+.4f}]"
                f" {better[d.verdict]}"
                for name, d in metrics.items()
            )
            lines.append(f"  {model} - {reference:<8} {head:<18} {figures}")
    if lines:
        lines.insert(0, "paired differences (95% bootstrap over test customers):")
    return lines


def _restore_best_weights(trainer: Trainer, module: LightningModule) -> None:
    """Loads the best checkpoint's weights (lowest val/loss) into `module`: they are the ones tested and
    exported, not the last epoch's."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.best_model_path:
        # Our own checkpoint, written by this process: its hyperparameters are plain Python objects.
        checkpoint = torch.load(callback.best_model_path, map_location="cpu", weights_only=False)
        module.load_state_dict(checkpoint["state_dict"])


@contextmanager
def _command_line(program: str, args: Sequence[str]) -> Iterator[None]:
    """Present `args` as the process's command line: LightningCLI reads `sys.argv` (and names the
    program after it in its help), and warns when given arguments that differ from it."""
    saved = sys.argv
    sys.argv = [program, *args]
    try:
        yield
    finally:
        sys.argv = saved
