"""`nextbest tune --config FILE [--trials N] [--timeout S] [--out FILE] [--section.key VALUE ...]`.

A small Optuna search over the config's `tune.space` (`search_space.py`). Each trial is the config run of
`nextbest train` with the trial's values as dotted overrides, fitted on the train split and scored by its
best validation loss (the test split is never read); trials whose validation loss trails the median of
earlier trials at the same epoch are pruned. The search is one MLflow run with a nested run per trial, and
the winning values are written into a copy of the config that `nextbest train --config` takes. When the
config's own values lie in the space they are the first trial, so the search says whether it beat them.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import mlflow
import optuna
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from nextbest.errors import NextbestError
from nextbest_training.cli import NextbestCLI, build_cli, fit, trainer_defaults
from nextbest_training.search_space import Parameter, parse_space, suggest

PROGRAM = "nextbest tune"
MONITOR = "val/loss"
LOGGER_ARGS = "trainer.logger.init_args"


class ParsedConfig(NextbestCLI):
    """Parses and checks a config run without building the data, model or trainer."""

    def instantiate_classes(self) -> None:
        """Nothing to build: the search only reads the parsed config."""


class PruneOnValidation(Callback):
    """Reports each epoch's validation loss to the trial and stops the fit when the pruner says so.

    Stopping (rather than raising `optuna.TrialPruned` inside Lightning) lets the trial's MLflow run end
    cleanly; `tune` raises it after the fit.
    """

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        value = trainer.callback_metrics.get(MONITOR)
        if trainer.sanity_checking or value is None:
            return
        self.trial.report(float(value), step=trainer.current_epoch)
        if self.trial.should_prune():
            self.pruned_at = trainer.current_epoch
            trainer.should_stop = True


@dataclass(frozen=True)
class Search:
    """What every trial shares: the user's arguments, the space, and where the runs go."""

    args: tuple[str, ...]
    parameters: list[Parameter]
    tracking_uri: str
    experiment_id: str
    parent_run_id: str


def tune(args: Sequence[str], trials: int, timeout: float | None, out: Path) -> int:
    """Run up to `trials` trials (or until `timeout` seconds), then write and print the best config."""
    if trials < 1:
        raise NextbestError(f"{PROGRAM}: --trials must be at least 1, got {trials}")
    config = build_cli(PROGRAM, args, trainer_defaults(), ParsedConfig).config
    parameters = parse_space(config["tune.space"], lambda key: key in config)
    tracking_uri, experiment = config[f"{LOGGER_ARGS}.tracking_uri"], config[f"{LOGGER_ARGS}.experiment_name"]
    client = mlflow.MlflowClient(tracking_uri)
    experiment_id = _experiment_id(client, experiment)
    parent = client.create_run(experiment_id, run_name="tune")
    search = Search(tuple(args), parameters, tracking_uri, experiment_id, parent.info.run_id)
    keys = ", ".join(p.key for p in parameters)
    print(f"{PROGRAM}: up to {trials} trials over {keys}; the lowest {MONITOR} wins")
    try:
        with _quiet():
            study = optuna.create_study(
                direction="minimize",
                sampler=optuna.samplers.TPESampler(seed=config["seed_everything"]),
                # Two full trials set the median; the first two epochs are too noisy to judge a trial by.
                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2),
            )
            current = {p.key: config[p.key] for p in parameters}
            enqueued = all(p.contains(current[p.key]) for p in parameters)
            if enqueued:
                study.enqueue_trial(current)
            study.optimize(
                partial(_trial, search=search), n_trials=trials, timeout=timeout, callbacks=[_print_trial]
            )
    except BaseException:
        client.set_terminated(parent.info.run_id, "FAILED")
        raise
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        client.set_terminated(parent.info.run_id, "FAILED")
        raise NextbestError(f"{PROGRAM}: no trial completed; give more --trials or a longer --timeout")
    best = study.best_trial
    out.write_text(best_config(_config_files(args), best.params, _header(args, best, len(study.trials))))
    _log_search(client, search, study, out)
    print(f"best: trial {best.number}, {MONITOR} {best.value:.4f}{_against_current(study, enqueued)}")
    print(yaml.safe_dump(_nested(best.params), sort_keys=False).rstrip())
    print(f"written to {out}: nextbest train --config {out}")
    return 0


def _trial(trial: optuna.Trial, search: Search) -> float:
    """One config run with the trial's values, logged as a child of the search's MLflow run."""
    values = suggest(trial, search.parameters)
    client = mlflow.MlflowClient(search.tracking_uri)
    run = client.create_run(
        search.experiment_id,
        run_name=f"trial-{trial.number}",
        tags={MLFLOW_PARENT_RUN_ID: search.parent_run_id},
    )
    pruning = PruneOnValidation(trial)
    defaults = trainer_defaults()
    defaults["callbacks"].append(pruning)
    defaults |= {"enable_progress_bar": False, "enable_model_summary": False}
    overrides = [f"--{key}={value}" for key, value in values.items()]
    overrides.append(f"--{LOGGER_ARGS}.run_id={run.info.run_id}")
    cli = build_cli(PROGRAM, [*search.args, *overrides], defaults)
    fit(cli)  # a config that pretrains pretrains in every trial, as `nextbest train` would
    if pruning.pruned_at is not None:
        client.set_terminated(run.info.run_id, "KILLED")
        raise optuna.TrialPruned(f"pruned after epoch {pruning.pruned_at}")
    return _best_validation_loss(cli.trainer)


def _against_current(study: optuna.Study, enqueued: bool) -> str:
    """How the config's own values (the enqueued first trial) did, when they were tried to the end."""
    first = study.trials[0]
    if not enqueued or first.state != optuna.trial.TrialState.COMPLETE:
        return ""
    return f"; the config's own values (trial 0): {first.value:.4f}"


def _best_validation_loss(trainer: Trainer) -> float:
    """The lowest epoch validation loss (the checkpoint that `nextbest train` would keep)."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.best_model_score is not None:
        return float(callback.best_model_score)
    value = trainer.callback_metrics.get(MONITOR)  # no checkpointing (e.g. fast_dev_run): the last epoch's
    if value is None:
        raise NextbestError(f"{PROGRAM}: the trial logged no {MONITOR}: is there a validation split?")
    return float(value)


def best_config(files: Sequence[Path], values: Mapping[str, Any], header: str) -> str:
    """The config files merged in order (as `--config A --config B` reads them), with `values` set at
    their dotted keys, as YAML under a comment `header`."""
    merged: dict[str, Any] = {}
    for file in files:
        _merge(merged, yaml.safe_load(file.read_text()) or {})
    _merge(merged, _nested(values))
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + yaml.safe_dump(merged, sort_keys=False)


def _nested(values: Mapping[str, Any]) -> dict[str, Any]:
    """`{"a.b": 1}` -> `{"a": {"b": 1}}`."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _merge(into: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _config_files(args: Sequence[str]) -> list[Path]:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--config", action="append", type=Path, default=[])
    files: list[Path] = parser.parse_known_args(list(args))[0].config
    return files


def _header(args: Sequence[str], best: optuna.trial.FrozenTrial, count: int) -> str:
    return (
        f"{PROGRAM} {' '.join(args)}\n"
        f"best of {count} trials: trial {best.number}, {MONITOR} {best.value:.4f}; "
        "command-line overrides above are not part of this file"
    )


def _log_search(client: mlflow.MlflowClient, search: Search, study: optuna.Study, out: Path) -> None:
    """The search's run: the best values as params, the best loss, trial counts and the written config."""
    run_id, best = search.parent_run_id, study.best_trial
    for key, value in best.params.items():
        client.log_param(run_id, f"best.{key}", value)
    client.log_metric(run_id, f"best/{MONITOR}", float(best.value or math.nan))
    for state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
        count = sum(t.state == state for t in study.trials)
        client.log_metric(run_id, f"trials/{state.name.lower()}", count)
    client.log_artifact(run_id, str(out))
    client.set_terminated(run_id)


def _experiment_id(client: mlflow.MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment is not None else client.create_experiment(name)


def _print_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """One line per trial: its outcome, the best so far, its values and its time."""
    seconds = trial.duration.total_seconds() if trial.duration else math.nan
    values = "  ".join(f"{key.rsplit('.', 1)[-1]}={_short(v)}" for key, v in trial.params.items())
    if trial.state == optuna.trial.TrialState.COMPLETE:
        best = study.best_trial
        outcome = f"{MONITOR} {trial.value:.4f}  (best {best.value:.4f}, trial {best.number})"
    else:
        outcome = f"{trial.state.name.lower():<8} at step {trial.last_step}".ljust(40)
    print(f"trial {trial.number:>3}  {outcome}  {values}  {seconds:.0f} s", flush=True)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


@contextmanager
def _quiet() -> Iterator[None]:
    """Lightning's start-up notices and Optuna's own trial lines would bury the one line per trial."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    verbosity = optuna.logging.get_verbosity()
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        optuna.logging.set_verbosity(verbosity)
