"""Binary classification metrics in numpy, defined as scikit-learn defines them (tests pin the match).

The core stays free of scikit-learn: serving and batch scoring report the same figures as training
without it. Every metric takes 0/1 labels and scores of the same length; `evaluate_binary` also drops
unknown (NaN) labels first.
"""

from __future__ import annotations

import numpy as np

from nextbest.model.calibration import expected_calibration_error


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: the Mann-Whitney statistic, tied scores counted as half.

    Returns:
        NaN when only one class is present (the curve is undefined).
    """
    positive = np.asarray(labels) == 1
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(np.asarray(scores, dtype=np.float64))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Precision averaged over the recall steps of each distinct score threshold (no interpolation).

    Returns:
        NaN without positives (recall is undefined).
    """
    positive = np.asarray(labels) == 1
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    sorted_scores, hits = np.asarray(scores, dtype=np.float64)[order], positive[order]
    # Tied scores form one threshold: only the last position of each run of ties is a curve point.
    last_of_tie = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    true_pos = np.cumsum(hits)[last_of_tie]
    predicted_pos = (np.flatnonzero(last_of_tie) + 1).astype(np.float64)
    recall_steps = np.diff(true_pos, prepend=0) / n_pos
    return float(np.sum(recall_steps * true_pos / predicted_pos))


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean negative log-likelihood, probabilities clipped to [eps, 1 - eps] (float64 eps)."""
    eps = np.finfo(np.float64).eps
    p = np.clip(np.asarray(probabilities, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    if len(y) == 0:
        return float("nan")
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def brier_score(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean squared difference between probability and outcome."""
    y = np.asarray(labels, dtype=np.float64)
    if len(y) == 0:
        return float("nan")
    return float(np.mean((np.asarray(probabilities, dtype=np.float64) - y) ** 2))


def evaluate_binary(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """ROC-AUC, average precision, log loss, Brier score and expected calibration error (15 equal-width
    bins, as in training) over the requests with a known label.

    Args:
        labels: 0/1 outcomes, NaN where unknown (those requests are left out).
        probabilities: predicted probabilities of the outcome being 1.

    Returns:
        The five metrics plus `count` (labelled requests) and `positive_rate`; metrics that are
        undefined for the labelled set (one class only, nothing labelled) are NaN.
    """
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"labels and probabilities differ in shape: {y.shape} vs {p.shape}")
    known = ~np.isnan(y)
    y, p = y[known], p[known]
    return {
        "roc_auc": roc_auc(y, p),
        "average_precision": average_precision(y, p),
        "log_loss": log_loss(y, p),
        "brier": brier_score(y, p),
        "ece": expected_calibration_error(p, y),
        "count": float(len(y)),
        "positive_rate": float(y.mean()) if len(y) else float("nan"),
    }


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, ties given the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    # Group g spans ranks (ends[g] - counts[g] + 1) .. ends[g]; their mean is ends[g] - (counts[g] - 1) / 2.
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse]
