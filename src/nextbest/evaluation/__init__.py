"""Offline evaluation: binary classification metrics of outcome models, paired comparisons of two of
them, and off-policy estimates of decision policies, in plain numpy."""

from nextbest.evaluation.metrics import average_precision, brier_score, evaluate_binary, log_loss, roc_auc
from nextbest.evaluation.ope import (
    Estimate,
    LoggedDecisions,
    constant_policy,
    estimate_policy_value,
    uniform_policy,
)
from nextbest.evaluation.paired import PairedDifference, paired_differences, pool_seeds

__all__ = [
    "Estimate",
    "LoggedDecisions",
    "PairedDifference",
    "average_precision",
    "brier_score",
    "constant_policy",
    "estimate_policy_value",
    "evaluate_binary",
    "log_loss",
    "paired_differences",
    "pool_seeds",
    "roc_auc",
    "uniform_policy",
]
