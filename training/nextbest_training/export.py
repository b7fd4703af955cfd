"""After training: calibrate, compare with the baselines, log the evidence, register the deployable model.

All of it lands in the training run's MLflow record: the data set's description and vocabularies, the
exported model's test metrics (`test/scored/<head>/<metric>`) beside those of the network alone when the
hybrid is exported and of each baseline (one child run each, same metric names, same test rows), each of
our models' ROC-AUC and log loss minus every later model's with a paired bootstrap interval over test
customers (`test/compare/<model>_vs_<reference>/<head>/<metric>_diff`, `_low`, `_high`), ROC /
precision-recall / reliability plots of every model together, and the pyfunc model, registered with
alias `challenger` (and `champion` when the name has none yet), carrying the distributions of its inputs on
the training requests (the reference `nextbest monitor` measures drift against).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient

from nextbest.decisioning.catalog import ActionCatalog
from nextbest.discovery.summary import DiscoveryOptions, summarise, write_report
from nextbest.evaluation import PairedDifference, evaluate_binary, paired_differences
from nextbest.journeys.labels import LabelRules
from nextbest.model.calibration import CalibrationKind, Calibrator, NoCalibration, fit_calibrator
from nextbest.model.heads import HEADS, OUTCOMES, Head
from nextbest.model.network import JourneyNetwork
from nextbest.model.stacking import Stacking
from nextbest.monitoring.reference import training_reference
from nextbest.registry import MODEL_NAME, assign_aliases
from nextbest.scoring.pyfunc import log_model
from nextbest.scoring.schemas import ScoringRequest
from nextbest.scoring.scorer import JourneyScorer
from nextbest.scoring.tables import records_from_tables
from nextbest_training.baselines import BaselineKind, BaselineModel
from nextbest_training.data import PreparedData
from nextbest_training.plots import evaluation_figure
from nextbest_training.stacking import fit_blend, fit_trees, tree_features

SEQUENCE_MODEL = "sequence"
HYBRID_MODEL = "hybrid"
# Bootstrap resamples of the test customers behind each paired comparison.
COMPARISON_RESAMPLES = 1000
# The input example logged with the model: one real test request, its history cut to this many events.
EXAMPLE_EVENTS = 20


class ExportSettings:
    """The `export:` section of a training config: what follows training.

    Args:
        calibration: post-hoc calibration of each head, fitted on the validation split.
        baselines: engineered-feature baselines fitted on the training split and compared with the
            sequence model on the test split ("logistic", "gbt").
        register: register the model in the MLflow model registry (else it is only logged to the run).
        model_name: the registered model's name.
        catalog: action catalog (YAML) packaged with the model; None: every action, value 1, cost 0.
        journey_report: log the journey discovery report of the training events (`nextbest journeys`,
            with the trained model's moments of truth and segments) to the run, under `journeys/`.
        hybrid: export the network stacked with gradient-boosted trees on its history block (`fit_hybrid`)
            instead of the network alone, which is still compared on the test split beside it.
    """

    def __init__(
        self,
        calibration: CalibrationKind = "temperature",
        baselines: list[BaselineKind] | None = None,
        register: bool = True,
        model_name: str = MODEL_NAME,
        catalog: str | None = None,
        journey_report: bool = True,
        hybrid: bool = False,
    ) -> None:
        self.calibration = calibration
        self.journey_report = journey_report
        self.baselines = list(baselines or [])
        self.register = register
        self.model_name = model_name
        self.hybrid = hybrid
        # Read now, when the CLI builds the config, so that a bad catalog fails before training.
        self.catalog = None if catalog is None else ActionCatalog.from_yaml(catalog)


# Per head and metric ("roc_auc", "log_loss"), one model's paired difference with another.
HeadComparisons = dict[str, dict[str, PairedDifference]]


@dataclass
class ExportResult:
    """What `export_run` did: the test metrics per model and head, the paired differences per (model,
    reference) pair (the hybrid with the network and the baselines, the network with the baselines), and
    the registered version."""

    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    comparisons: dict[tuple[str, str], HeadComparisons] = field(default_factory=dict)
    model_uri: str = ""
    version: str | None = None
    aliases: list[str] = field(default_factory=list)


def export_run(
    network: JourneyNetwork,
    prepared: PreparedData,
    settings: ExportSettings,
    run_id: str,
    rules: LabelRules | None = None,
) -> ExportResult:
    """Calibrates `network`, evaluates it and the baselines on the test split, and logs and registers the
    model, all into the MLflow run `run_id` (the tracking URI must already be set). `rules` name the
    conversion event and churn window of the journey report."""
    scorer = JourneyScorer(
        network,
        prepared.encoder,
        prepared.examples.actions,
        metadata={"run_id": run_id, "calibration": settings.calibration},
        catalog=settings.catalog,
    )
    validation = prepared.splits["validation"]
    scorer.calibrators = fit_head_calibrators(
        settings.calibration,
        scorer.logits(prepared.journeys, validation),
        _take(prepared.examples.labels, validation),
        prepared.examples.decision_action[validation],
    )
    compared = {SEQUENCE_MODEL: scorer}
    if settings.hybrid:
        compared = {HYBRID_MODEL: fit_hybrid(scorer, prepared), **compared}
    exported = next(iter(compared.values()))
    exported.reference = training_reference(
        exported, prepared.log, prepared.examples.requests, prepared.profiles
    )
    result = ExportResult()
    with mlflow.start_run(run_id=run_id):
        _log_dataset(prepared)
        if len(prepared.splits["test"]):
            result.metrics, result.comparisons = _compare_on_test(compared, prepared, settings.baselines)
        info = log_model(
            exported,
            _input_example(prepared),
            registered_model_name=settings.model_name if settings.register else None,
        )
        if settings.journey_report:
            _log_journey_report(prepared, exported, rules or LabelRules())
    result.model_uri = info.model_uri
    if settings.register and info.registered_model_version is not None:
        result.version = str(info.registered_model_version)
        # The store of the run (the logger's tracking URI), where the model was just registered.
        result.aliases = assign_aliases(MlflowClient(), settings.model_name, result.version)
    return result


def fit_head_calibrators(
    kind: CalibrationKind,
    logits: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    decision_action: np.ndarray,
) -> dict[str, Calibrator]:
    """One calibrator per head (by name), fitted on the rows the head is trained on (`Head.rows`); a head
    without both classes among its labelled rows keeps the plain sigmoid."""
    calibrators: dict[str, Calibrator] = {}
    for head in HEADS:
        values, outcome = _on_head_rows(head, logits, labels, decision_action)
        if _both_classes(outcome):
            calibrators[head.name] = fit_calibrator(kind, values, outcome)
        else:
            calibrators[head.name] = NoCalibration()
    return calibrators


def fit_hybrid(scorer: JourneyScorer, prepared: PreparedData) -> JourneyScorer:
    """`scorer` stacked with gradient-boosted trees on its history block and the action taken.

    The trees are fitted on the training split, like the network; each head's blend of the two logits on
    the validation split, which neither saw. A blend is a logistic regression fitted there, so it is the
    stacked head's calibration: the network's calibrator stays only on heads left without a blend.
    """
    examples, journeys = prepared.examples, prepared.journeys
    train, validation = prepared.splits["train"], prepared.splits["validation"]
    history = journeys.static["history"]
    features = tree_features(history, examples.decision_action, len(examples.actions))
    stacking = Stacking(fit_trees(features[train], _take(examples.labels, train)), {}, len(examples.actions))
    network = scorer.logits(journeys, validation)
    trees = stacking.tree_logits(history[validation])
    labels = _take(examples.labels, validation)
    decision_action = examples.decision_action[validation]
    blends = {}
    for head in HEADS:
        if head.name not in trees:
            continue
        from_network, outcome = _on_head_rows(head, network, labels, decision_action)
        from_trees, _ = _on_head_rows(head, trees, labels, decision_action)
        if _both_classes(outcome):
            blends[head.name] = fit_blend(from_network, from_trees, outcome)
    calibrators = {h: c for h, c in scorer.calibrators.items() if h not in blends}
    stacking = dataclasses.replace(stacking, blends=blends)
    metadata = {**scorer.metadata, "stacking": "gbt"}
    return dataclasses.replace(scorer, calibrators=calibrators, metadata=metadata, stacking=stacking)


def _on_head_rows(
    head: Head,
    logits: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    decision_action: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """A head's logits and labels on the rows it is fitted on (`Head.rows`); per-action heads' logits are
    read at the action taken."""
    rows = head.rows(decision_action)
    values = logits[head.name]
    if head.per_action:
        values = at_taken_action(values, decision_action)
    return values[rows], labels[head.outcome][rows]


def _both_classes(labels: np.ndarray) -> bool:
    return len(np.unique(labels[~np.isnan(labels)])) == 2


def observed_action_probabilities(
    probabilities: Mapping[str, np.ndarray], decision_action: np.ndarray
) -> dict[str, np.ndarray]:
    """Per outcome, the probability of the situation each row is in: the outcome's per-action head at the
    action taken on decision rows, its no-action head elsewhere."""
    return {
        outcome: np.where(
            decision_action >= 0,
            at_taken_action(probabilities[Head(outcome, per_action=True).name], decision_action),
            probabilities[Head(outcome, per_action=False).name],
        )
        for outcome in OUTCOMES
    }


def head_metrics(
    observed: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], decision_action: np.ndarray
) -> dict[str, dict[str, float]]:
    """`evaluate_binary` per head, on the rows the head is scored on; heads without labelled rows omitted."""
    metrics = {}
    for head in HEADS:
        rows = head.rows(decision_action)
        if np.isnan(labels[head.outcome][rows]).all():
            continue
        metrics[head.name] = evaluate_binary(labels[head.outcome][rows], observed[head.outcome][rows])
    return metrics


def at_taken_action(values: np.ndarray, decision_action: np.ndarray) -> np.ndarray:
    """[N, A] per-action values read at each row's action taken ([N]; NaN on rows without a decision)."""
    taken = np.full(len(decision_action), np.nan)
    rows = np.flatnonzero(decision_action >= 0)
    taken[rows] = values[rows, decision_action[rows]]
    return taken


def _take(arrays: Mapping[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {name: values[rows] for name, values in arrays.items()}


def _compare_on_test(
    scorers: Mapping[str, JourneyScorer], prepared: PreparedData, baselines: list[BaselineKind]
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[tuple[str, str], HeadComparisons]]:
    """Test metrics of `scorers` (the exported model first: its metrics land in the run itself; the others
    get a child run each) and of the baselines (a child run each), and each scorer's paired differences
    with every model after it."""
    test = prepared.splits["test"]
    labels = _take(prepared.examples.labels, test)
    decision_action = prepared.examples.decision_action[test]
    observed = {
        name: observed_action_probabilities(
            scorer.probabilities(scorer.logits(prepared.journeys, test)), decision_action
        )
        for name, scorer in scorers.items()
    }
    for kind in baselines:
        observed[kind] = _baseline_probabilities(kind, prepared)
    metrics = {name: head_metrics(probs, labels, decision_action) for name, probs in observed.items()}
    exported, *others = scorers
    _log_metrics(metrics[exported])
    parent = mlflow.active_run()
    assert parent is not None
    for name in others:
        with mlflow.start_run(run_name=name, nested=True, experiment_id=parent.info.experiment_id):
            mlflow.log_params({"model": name})
            _log_metrics(metrics[name])
    for kind in baselines:
        # A nested run lands in the default experiment unless told otherwise.
        with mlflow.start_run(
            run_name=f"baseline-{kind}", nested=True, experiment_id=parent.info.experiment_id
        ):
            mlflow.log_params({"baseline": kind, "features": "history aggregates + action taken"})
            _log_metrics(metrics[kind])
    groups = np.asarray(prepared.examples.groups.to_numpy(zero_copy_only=False))[test]
    names = [*scorers, *baselines]
    comparisons = {
        (model, reference): _paired(observed[model], observed[reference], labels, decision_action, groups)
        for position, model in enumerate(scorers)
        for reference in names[position + 1 :]
    }
    _log_comparisons(comparisons)
    for head in HEADS:
        outcome = labels[head.outcome]
        known = head.rows(decision_action) & ~np.isnan(outcome)
        if len(np.unique(outcome[known])) == 2:
            curves = {name: (outcome[known], probs[head.outcome][known]) for name, probs in observed.items()}
            mlflow.log_figure(evaluation_figure(f"test: {head.name}", curves), f"plots/test_{head.name}.png")
    return metrics, comparisons


def _paired(
    model: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    decision_action: np.ndarray,
    groups: np.ndarray,
) -> HeadComparisons:
    """Per head, `model`'s paired differences with `reference` (probabilities per outcome) on the head's
    labelled rows (heads the reference gives no probability for omitted), customers resampled by their
    split group."""
    paired = {}
    for head in HEADS:
        outcome = labels[head.outcome]
        rows = head.rows(decision_action) & ~np.isnan(outcome)
        ours, theirs = model[head.outcome][rows], reference[head.outcome][rows]
        if rows.any() and not np.isnan(theirs).any():
            paired[head.name] = paired_differences(
                outcome[rows], ours, theirs, groups[rows], resamples=COMPARISON_RESAMPLES
            )
    return paired


def _log_comparisons(comparisons: Mapping[tuple[str, str], HeadComparisons]) -> None:
    mlflow.log_metrics(
        {
            f"test/compare/{model}_vs_{reference}/{head}/{name}_{part}": value
            for (model, reference), heads in comparisons.items()
            for head, metrics in heads.items()
            for name, paired in metrics.items()
            for part, value in zip(("diff", "low", "high"), paired.difference.to_dict().values(), strict=True)
            if np.isfinite(value)
        }
    )


def _baseline_probabilities(kind: BaselineKind, prepared: PreparedData) -> dict[str, np.ndarray]:
    """The baseline fitted on the training split (with the windowed counts the network's aggregates have);
    its probabilities on the test split per outcome."""
    examples, log = prepared.examples, prepared.log
    customer_index = log.index_of(examples.requests.column("customer_id").combine_chunks())
    as_of = np.asarray(examples.requests.column("as_of").combine_chunks().cast("int64"))
    train, test = prepared.splits["train"], prepared.splits["test"]
    model = BaselineModel(kind, window_days=prepared.encoder.config.aggregate_window_days).fit(
        log,
        customer_index[train],
        as_of[train],
        _take(examples.labels, train),
        examples.decision_action[train],
        len(examples.actions),
    )
    predicted = model.predict_proba(log, customer_index[test], as_of[test], examples.decision_action[test])
    return {outcome: predicted.get(outcome, np.full(len(test), np.nan)) for outcome in examples.labels}


def _log_metrics(metrics: Mapping[str, Mapping[str, float]]) -> None:
    mlflow.log_metrics(
        {
            f"test/scored/{head}/{name}": value
            for head, values in metrics.items()
            for name, value in values.items()
            if np.isfinite(value)
        }
    )


def _log_dataset(prepared: PreparedData) -> None:
    """The data behind the run: sizes and label rates per split as params and JSON, the validation report,
    and the fitted vocabularies."""
    examples = prepared.examples
    summary: dict[str, Any] = {
        "events": prepared.log.num_events,
        "customers": prepared.log.num_customers,
        "examples": len(examples),
        "decisions": int((examples.decision_action >= 0).sum()),
        "actions": list(examples.actions),
    }
    for split, rows in prepared.splits.items():
        summary[f"{split}_examples"] = len(rows)
        for outcome, values in examples.labels.items():
            known = values[rows][~np.isnan(values[rows])]
            summary[f"{split}_{outcome}_rate"] = float(known.mean()) if len(known) else None
    mlflow.log_params({f"dataset.{k}": v for k, v in summary.items() if k != "actions"})
    mlflow.log_dict(summary, "data/dataset.json")
    mlflow.log_dict(prepared.report.to_dict(), "data/validation.json")
    mlflow.log_dict(prepared.encoder.to_dict(), "data/encoder.json")


def _log_journey_report(prepared: PreparedData, scorer: JourneyScorer, rules: LabelRules) -> None:
    """The journey discovery report of the training events, as run artifacts `journeys/report.html` and
    `journeys/summary.json`."""
    options = DiscoveryOptions(
        conversion_event=rules.conversion_event,
        churn_days=max(1, round(rules.churn_inactivity_days)),
        model_sample=1000,
    )
    summary = summarise(prepared.log, options, scorer, prepared.profiles)
    with tempfile.TemporaryDirectory() as folder:
        write_report(summary, Path(folder))
        mlflow.log_artifacts(folder, "journeys")


def _input_example(prepared: PreparedData) -> list[ScoringRequest]:
    rows = prepared.splits["test"] if len(prepared.splits["test"]) else prepared.splits["validation"]
    request = prepared.examples.requests.slice(int(rows[0]), 1)
    return records_from_tables(prepared.log, request, prepared.profiles, max_events=EXAMPLE_EVENTS)
