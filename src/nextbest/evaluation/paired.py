"""Two outcome models compared on the same rows: the difference of their ROC-AUC and log loss, with a
paired bootstrap interval over customers.

Rows of one customer (or of whatever group the split kept together) are not independent, so the bootstrap
resamples whole customers: every row of a drawn customer enters the resample as often as the customer was
drawn. Both models are scored on the same resample, so the interval is that of the difference itself:
where the models err together their errors cancel. "The model beats the baseline" means the interval
excludes zero on the model's side.

Training runs differ by seed as well as by customers; `pool_seeds` combines the comparisons of several
seeds into one interval that carries both sources of variation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from nextbest.evaluation.bootstrap import percentile_interval, resample_counts
from nextbest.evaluation.metrics import log_loss, roc_auc
from nextbest.evaluation.ope import Estimate

# The metrics compared, and whether a higher value is the better one.
HIGHER_IS_BETTER = {"roc_auc": True, "log_loss": False}

Verdict = Literal["model", "baseline", "neither"]


@dataclass(frozen=True)
class PairedDifference:
    """One metric of a model and a baseline on the same rows, and the model's value minus the baseline's
    with its paired bootstrap interval.

    Attributes:
        metric: "roc_auc" or "log_loss".
        model, baseline: each model's value on all the rows.
        difference: model minus baseline, with the interval.
        samples: [resamples] the bootstrap differences (what `pool_seeds` combines).
    """

    metric: str
    model: float
    baseline: float
    difference: Estimate
    samples: np.ndarray = field(repr=False, compare=False)

    @property
    def verdict(self) -> Verdict:
        """Which model is better with the interval's confidence: the interval excludes zero on its side."""
        low, high = self.difference.low, self.difference.high
        if low > 0 or high < 0:
            model_higher = low > 0
            return "model" if model_higher == HIGHER_IS_BETTER[self.metric] else "baseline"
        return "neither"


def paired_differences(
    labels: np.ndarray,
    model: np.ndarray,
    baseline: np.ndarray,
    groups: np.ndarray,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, PairedDifference]:
    """ROC-AUC and log loss of `model` minus those of `baseline`, with bootstrap intervals over groups.

    Args:
        labels: [N] 0/1 outcomes, NaN where unknown (those rows are left out).
        model, baseline: [N] each model's probability of the outcome.
        groups: [N] the customer (or other group) of each row; a group's rows are resampled together.
        resamples: bootstrap resamples.
        level: confidence level of the intervals.
        seed: seed of the resampling (the same seed draws the same customers).

    Returns:
        One `PairedDifference` per metric of `HIGHER_IS_BETTER`.
    """
    y = np.asarray(labels, dtype=np.float64)
    arrays = {"model": model, "baseline": baseline, "groups": groups}
    for name, values in arrays.items():
        if len(values) != len(y):
            raise ValueError(f"{name} has {len(values)} rows, labels {len(y)}")
    known = ~np.isnan(y)
    y = y[known]
    scores = np.stack([np.asarray(model, dtype=np.float64), np.asarray(baseline, dtype=np.float64)])[:, known]
    for name, row in zip(("model", "baseline"), scores, strict=True):
        if np.isnan(row).any():
            raise ValueError(f"{name} has no probability for {int(np.isnan(row).sum())} labelled rows")
    _, group_index = np.unique(np.asarray(groups)[known], return_inverse=True)
    samples = _resampled_metrics(y, scores, group_index, resamples, seed)  # metric -> [2, resamples]
    points = {"roc_auc": [roc_auc(y, s) for s in scores], "log_loss": [log_loss(y, s) for s in scores]}
    result = {}
    for metric in HIGHER_IS_BETTER:
        difference = samples[metric][0] - samples[metric][1]
        point = points[metric][0] - points[metric][1]
        result[metric] = PairedDifference(
            metric=metric,
            model=points[metric][0],
            baseline=points[metric][1],
            difference=Estimate(point, *percentile_interval(difference, level)),
            samples=difference,
        )
    return result


def pool_seeds(differences: Sequence[PairedDifference], *, level: float = 0.95, seed: int = 0) -> Estimate:
    """The mean over training seeds of one metric's difference, with an interval over seeds and customers.

    Each pooled resample draws as many seeds as there are, with replacement, and averages the drawn
    seeds' differences on their own b-th customer resample (a two-level bootstrap): seed-to-seed spread
    and the sampling of test customers both widen it.

    Args:
        differences: one metric's `PairedDifference` per seed, all with the same number of resamples.
        level: confidence level of the interval.
        seed: seed of the drawing of seeds.
    """
    if not differences:
        raise ValueError("differences is empty: nothing to pool")
    if len({len(d.samples) for d in differences}) != 1:
        raise ValueError("differences have different numbers of bootstrap samples: resample each alike")
    samples = np.stack([d.samples for d in differences])  # [S, B]
    n_seeds, n_resamples = samples.shape
    drawn = np.random.default_rng(seed).integers(n_seeds, size=(n_resamples, n_seeds))  # [B, S]
    pooled = samples[drawn, np.arange(n_resamples)[:, None]].mean(axis=1)  # [B]
    point = float(np.mean([d.difference.value for d in differences]))
    return Estimate(point, *percentile_interval(pooled, level))


def _resampled_metrics(
    labels: np.ndarray, scores: np.ndarray, group_index: np.ndarray, resamples: int, seed: int
) -> dict[str, np.ndarray]:
    """Per metric, [models, resamples] each model's value on the same resamples of the groups."""
    n_groups = int(group_index.max()) + 1 if len(group_index) else 0
    if n_groups == 0:
        return {metric: np.full((len(scores), resamples), np.nan) for metric in HIGHER_IS_BETTER}
    eps = np.finfo(np.float64).eps
    p = np.clip(scores, eps, 1 - eps)
    losses = -(labels * np.log(p) + (1 - labels) * np.log1p(-p))  # [models, N]
    orders = [np.argsort(s, kind="stable") for s in scores]
    parts: dict[str, list[np.ndarray]] = {metric: [] for metric in HIGHER_IS_BETTER}
    for counts in resample_counts(n_groups, resamples, seed, width=len(labels)):
        weights = counts[:, group_index].astype(np.float64)  # [size, N] how often each row is drawn
        parts["log_loss"].append((weights @ losses.T / weights.sum(axis=1, keepdims=True)).T)
        parts["roc_auc"].append(
            np.stack(
                [_weighted_auc(labels[o], s[o], weights[:, o]) for s, o in zip(scores, orders, strict=True)]
            )
        )
    return {metric: np.concatenate(chunks, axis=1) for metric, chunks in parts.items()}


def _weighted_auc(labels: np.ndarray, sorted_scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[size] the Mann-Whitney AUC of each weighted copy of the rows (rows in ascending score order; a
    row of weight k counts as k rows; tied scores count as half), NaN without both classes."""
    # Rows of equal score form one group: positives beat the negatives of lower groups, tie with their own.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    positive = np.add.reduceat(weights * labels, starts, axis=1)  # [size, tie groups]
    negative = np.add.reduceat(weights * (1 - labels), starts, axis=1)
    below = np.cumsum(negative, axis=1) - negative
    wins = (positive * (below + 0.5 * negative)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return wins / (positive.sum(axis=1) * negative.sum(axis=1))
