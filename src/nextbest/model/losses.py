"""Losses of the journey network with partially known labels, and logits to probabilities."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from nextbest.model.heads import HEADS

NO_DECISION = -1


def masked_bce_with_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean binary cross-entropy over the known (non-NaN) labels.

    Args:
        logits: Logits, any shape.
        labels: 0/1 labels of the same shape, NaN where unknown.

    Returns:
        A scalar; 0 (still attached to the graph, so `backward` works) when no label is known.
    """
    known = ~torch.isnan(labels)
    # Zero-filled unknown labels keep every element finite; the mask then removes them from the mean.
    per_element = F.binary_cross_entropy_with_logits(
        logits, torch.where(known, labels, 0.0), reduction="none"
    )
    weights = known.to(per_element.dtype)
    return (per_element * weights).sum() / weights.sum().clamp(min=1.0)


def journey_losses(outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Losses of the cutoff heads and of the action heads at the action actually taken.

    Rows with `decision_action` = -1 are plain cutoffs and train the no-action heads (`conversion`,
    `churn`); rows with a decision (index 0..A-1) train the action heads at that action
    (`action_conversion`, `action_churn`). A missing `decision_action` means every row is a plain cutoff;
    a missing label means it is unknown everywhere.

    Args:
        outputs: `JourneyNetwork.forward` outputs.
        batch: Holds `decision_action` [B] int and the labels `conversion`, `churn` [B] float (NaN =
            unknown), each optional as described above.

    Returns:
        Per head of `HEADS` (`conversion`, `churn`, `action_conversion`, `action_churn`), its loss (0 when
        no label is known), and their sum `total`.
    """
    some_logits = outputs[HEADS[0].output]  # [B] or [B, A]: every head has a row per request
    rows, device = some_logits.shape[:1], some_logits.device
    decision = batch.get("decision_action")
    if decision is None:
        decision = torch.full(rows, NO_DECISION, dtype=torch.long, device=device)
    losses: dict[str, Tensor] = {}
    for head in HEADS:
        labels = batch.get(head.outcome)
        if labels is None:
            labels = torch.full(rows, float("nan"), dtype=some_logits.dtype, device=device)
        logits = outputs[head.output]  # [B, A] or [B]
        if head.per_action:
            logits = _at_taken_action(logits, decision)  # [B]
        labels = torch.where(head.rows(decision), labels, float("nan"))  # [B]: unknown off the head's rows
        losses[head.name] = masked_bce_with_logits(logits, labels)
    # Heads without known labels contribute an exact 0, so the plain sum is the sum over known ones.
    losses["total"] = torch.stack(list(losses.values())).sum()
    return losses


def _at_taken_action(logits: Tensor, decision: Tensor) -> Tensor:
    """`logits[b, decision[b]]` [B] from [B, A]; arbitrary (but attached to the graph) where no decision."""
    if logits.shape[1] == 0:
        # Without candidate actions no row can have a decision; the empty sum is a zero in the graph.
        if bool((decision >= 0).any()):
            raise ValueError("decision_action refers to an action, but the model has no candidate actions")
        return logits.sum(dim=1)
    return logits.gather(1, decision.clamp(min=0).long()[:, None]).squeeze(1)


def probabilities(outputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Sigmoid of every head's logits, keyed by the head's name (e.g. `action_conversion` [B, A])."""
    return {head.name: torch.sigmoid(outputs[head.output]) for head in HEADS}
