"""Offline evaluation of outcome models: binary classification metrics in plain numpy."""

from nextbest.evaluation.metrics import average_precision, brier_score, evaluate_binary, log_loss, roc_auc

__all__ = ["average_precision", "brier_score", "evaluate_binary", "log_loss", "roc_auc"]
