"""The `train` and `tune` subcommands of `nextbest` (registered through the `nextbest.commands` entry
points)."""

from __future__ import annotations

import argparse
from pathlib import Path

TRAIN_DESCRIPTION = """\
Train a journey model from a config (LightningCLI): `nextbest train --config configs/demo.yaml`.
Any config value can be overridden with a dotted option, e.g. `--data.events events.parquet`,
`--trainer.max_epochs 5`, `--model.network.init_args.config.encoder gru`; `nextbest train --help`
lists them all. Runs are tracked in MLflow (MLFLOW_TRACKING_URI, default sqlite:///mlflow.db).
"""

TUNE_DESCRIPTION = """\
Search the config's `tune.space` (encoder, sizes, history length, learning rate by default) with Optuna:
each trial is a `nextbest train` run of the config with the trial's values, fitted on the train split and
judged by its best validation loss (the test split is not read); trials trailing the median are pruned.
The search and its trials are nested MLflow runs; the best values are printed and written into a copy of
the config for `nextbest train --config OUT`. Dotted options apply to every trial, e.g.
`nextbest tune --config configs/cdnow.yaml --trials 20 --trainer.max_epochs 10`.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a model from a config run (LightningCLI), tracked in MLflow",
        description=TRAIN_DESCRIPTION,
        usage="nextbest train --config FILE [--section.key VALUE ...]",
        add_help=False,  # --help goes to LightningCLI, which knows every option
    )
    train.set_defaults(handler=run_train, passes_through=True)
    tune = subparsers.add_parser(
        "tune",
        help="search a config's encoder and training settings on the validation split (Optuna)",
        description=TUNE_DESCRIPTION,
        usage="nextbest tune --config FILE [--trials N] [--timeout S] [--out FILE] [--section.key VALUE ...]",
        allow_abbrev=False,  # `--t...` belongs to the config run (`--trainer.*`), not to `--trials`
    )
    tune.add_argument("--trials", type=int, default=20, help="number of trials (default 20)")
    tune.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    tune.add_argument(
        "--out", type=Path, default=Path("tuned.yaml"), help="best config written here (default tuned.yaml)"
    )
    tune.set_defaults(handler=run_tune, passes_through=True)


def run_train(args: argparse.Namespace) -> int:
    from nextbest_training.cli import train

    return train(args.passthrough)


def run_tune(args: argparse.Namespace) -> int:
    from nextbest_training.tune import tune

    return tune(args.passthrough, args.trials, args.timeout, args.out)
