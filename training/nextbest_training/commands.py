"""The `train` subcommand of `nextbest` (registered through the `nextbest.commands` entry points)."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Train a journey model from a config (LightningCLI): `nextbest train --config configs/demo.yaml`.
Any config value can be overridden with a dotted option, e.g. `--data.events events.parquet`,
`--trainer.max_epochs 5`, `--model.network.init_args.config.encoder gru`; `nextbest train --help`
lists them all. Runs are tracked in MLflow (MLFLOW_TRACKING_URI, default sqlite:///mlflow.db).
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model from a config run (LightningCLI), tracked in MLflow",
        description=DESCRIPTION,
        usage="nextbest train --config FILE [--section.key VALUE ...]",
        add_help=False,  # --help goes to LightningCLI, which knows every option
    )
    parser.set_defaults(handler=run, passes_through=True)


def run(args: argparse.Namespace) -> int:
    from nextbest_training.cli import train

    return train(args.passthrough)
