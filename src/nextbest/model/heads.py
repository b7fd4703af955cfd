"""The journey network's heads, declared once.

The network's outputs, the training losses and metrics, the calibrators a scorer saves and the
probabilities it gives are all keyed by these heads' names, and each head's rows (which training rows it
learns from and is judged on) are stated here, so every module that handles heads derives them from `HEADS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from torch import Tensor

from nextbest.journeys.labels import OUTCOMES as OUTCOMES  # the labels the heads predict

Rows = TypeVar("Rows", np.ndarray, Tensor)


@dataclass(frozen=True)
class Head:
    """One outcome the network predicts, with no action or for each candidate action.

    Attributes:
        outcome: the label it predicts (one of `OUTCOMES`).
        per_action: [N, A] logits, one per candidate action, learnt and judged at the action taken on
            decision rows; otherwise [N] logits with no action, learnt and judged on plain cutoffs.
    """

    outcome: str
    per_action: bool

    @property
    def name(self) -> str:
        """Its key in losses, metrics (`<stage>/<name>/<metric>`), calibrators and probabilities."""
        return f"action_{self.outcome}" if self.per_action else self.outcome

    @property
    def output(self) -> str:
        """The `JourneyNetwork.forward` output holding its logits."""
        return f"{self.name}_logit"

    def rows(self, decision_action: Rows) -> Rows:
        """Which rows it learns from and is judged on, given each row's action taken (-1: none)."""
        return decision_action >= 0 if self.per_action else decision_action < 0


# The no-action heads, then the per-action ones: conversion, churn, action_conversion, action_churn.
HEADS = tuple(Head(outcome, per_action) for per_action in (False, True) for outcome in OUTCOMES)
