"""Evaluation plots for a training run: ROC, precision-recall and reliability, every model on one figure."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

RELIABILITY_BINS = 10


def evaluation_figure(title: str, predictions: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Figure:
    """Three panels (ROC, precision-recall, reliability) comparing models on the same labelled rows.

    Args:
        title: what is predicted, e.g. "test: conversion".
        predictions: per model name, (0/1 labels, predicted probabilities) over the same rows.
    """
    # A bare Figure, not pyplot: no global figure state or GUI backend in a training process.
    figure = Figure(figsize=(15, 4.6), layout="constrained")
    roc, pr, reliability = figure.subplots(1, 3)
    for name, (labels, probabilities) in predictions.items():
        fpr, tpr, _ = roc_curve(labels, probabilities)
        roc.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(labels, probabilities):.3f})")
        precision, recall, _ = precision_recall_curve(labels, probabilities)
        ap = average_precision_score(labels, probabilities)
        pr.step(recall, precision, where="post", label=f"{name} (AP {ap:.3f})")
        predicted, observed = reliability_curve(labels, probabilities)
        reliability.plot(predicted, observed, marker="o", label=name)
    roc.plot([0, 1], [0, 1], color="grey", linestyle=":")
    reliability.plot([0, 1], [0, 1], color="grey", linestyle=":")
    top = max(float(np.max(p)) for _, p in predictions.values())
    reliability.set(xlim=(0, top), ylim=(0, top))
    for axes, (x, y, name) in zip(
        (roc, pr, reliability),
        (
            ("false positive rate", "true positive rate", "ROC"),
            ("recall", "precision", "precision-recall"),
            (
                "mean predicted probability",
                "observed rate",
                f"reliability ({RELIABILITY_BINS} quantile bins)",
            ),
        ),
        strict=True,
    ):
        axes.set(xlabel=x, ylabel=y, title=name)
        axes.legend(loc="best", fontsize="small")
    figure.suptitle(title)
    return figure


def reliability_curve(
    labels: np.ndarray, probabilities: np.ndarray, bins: int = RELIABILITY_BINS
) -> tuple[np.ndarray, np.ndarray]:
    """Mean predicted probability and observed rate per bin of equally many rows (sorted by prediction)."""
    order = np.argsort(probabilities, kind="stable")
    groups = [g for g in np.array_split(order, bins) if len(g)]
    predicted = np.array([probabilities[g].mean() for g in groups])
    observed = np.array([labels[g].mean() for g in groups])
    return predicted, observed
