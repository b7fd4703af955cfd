"""The LightningModule: losses, metrics, logging and the optimiser around a journey network.

The network (a pure `nn.Module` from the core) is a constructor argument, so its architecture is
configured on its own and this class stays about training.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Literal, cast

import lightning as L
import torch
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import nn
from torchmetrics import MeanMetric, MeanSquaredError, MetricCollection
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision, BinaryCalibrationError

from nextbest.model.heads import HEADS, Head
from nextbest.model.losses import journey_losses

STAGES = ("train", "val", "test")


def _head_metrics() -> MetricCollection:
    return MetricCollection(
        {
            "auroc": BinaryAUROC(),
            "average_precision": BinaryAveragePrecision(),
            "brier": MeanSquaredError(),
            "ece": BinaryCalibrationError(n_bins=15),
            "log_loss": MeanMetric(),
        }
    )


class JourneyModule(L.LightningModule):
    """Trains a journey network on conversion and churn, at cutoffs and conditioned on actions.

    Args:
        network: the journey network (e.g. `nextbest.model.JourneyNetwork`).
        learning_rate: AdamW peak learning rate.
        weight_decay: AdamW weight decay.
        lr_schedule: "cosine": linear warm-up, then cosine decay to zero over the run's `max_epochs`;
            "constant": the peak rate throughout.
        warmup_fraction: share of the run's steps spent warming up (cosine only).
    """

    def __init__(
        self,
        network: nn.Module,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        lr_schedule: Literal["cosine", "constant"] = "cosine",
        warmup_fraction: float = 0.05,
    ) -> None:
        super().__init__()
        if not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(f"model.warmup_fraction must be in [0, 1), got {warmup_fraction}")
        self.save_hyperparameters(ignore=["network"])
        self.network = network
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.warmup_fraction = warmup_fraction
        # Keyed "<stage>_metrics": a bare "train" would shadow nn.Module.train.
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_metrics": nn.ModuleDict({head.name: _head_metrics() for head in HEADS})
                for stage in STAGES
            }
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.network(batch)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        outputs = self(batch)
        loss = journey_losses(outputs, batch)["total"]
        # Per-head log losses are epoch metrics (`<stage>/<head>/log_loss`), over the rows each head scores;
        # a per-batch loss of a head with no rows in the batch would read as a misleading 0.
        size = len(batch["length"])
        self.log(f"{stage}/loss", loss, batch_size=size, on_step=False, on_epoch=True, prog_bar=True)
        self._update_metrics(outputs, batch, stage)
        return loss

    def _update_metrics(
        self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], stage: str
    ) -> None:
        for head in HEADS:
            logits, labels = head_predictions(head, outputs, batch)
            if labels.numel() == 0:
                continue
            logits = logits.detach()
            probabilities = torch.sigmoid(logits)
            metrics = self._metrics_of(stage)[head.name]
            for name in ("auroc", "average_precision", "ece"):
                metrics[name].update(probabilities, labels.long())
            metrics["brier"].update(probabilities, labels)
            metrics["log_loss"].update(
                nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
            )

    def _metrics_of(self, stage: str) -> dict[str, MetricCollection]:
        """Each head's metrics at `stage` (torch types a ModuleDict's values as any Module)."""
        stage_metrics = cast(nn.ModuleDict, self.metrics[f"{stage}_metrics"])
        return {head: cast(MetricCollection, metrics) for head, metrics in stage_metrics.items()}

    def _log_epoch_metrics(self, stage: str) -> None:
        for head, metrics in self._metrics_of(stage).items():
            for name, metric in metrics.items():
                if metric.update_called:
                    self.log(f"{stage}/{head}/{name}", metric.compute())
                metric.reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig | torch.optim.Optimizer:
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        if self.lr_schedule == "constant":
            return optimizer
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        factor = partial(warmup_cosine, warmup=int(self.warmup_fraction * total), total=total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor at `step`: linear from 0 to 1 over `warmup` steps, then a cosine to 0 at `total`.

    Decaying to zero settles the weights, so the last epochs' validation loss is far less noisy than at a
    constant rate, and early stopping and checkpoint selection pick from a smoother curve.
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def head_predictions(
    head: Head, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """`head`'s logits and labels on the rows it is scored on (`Head.rows`), unknown labels left out.

    Per-action heads are read at the action taken.
    """
    logits, labels, decision_action = outputs[head.output], batch[head.outcome], batch["decision_action"]
    if head.per_action:
        if logits.shape[1] == 0:  # no candidate actions (data without decisions)
            return logits.new_zeros(0), labels.new_zeros(0)
        logits = logits.gather(1, decision_action.clamp(min=0).unsqueeze(1)).squeeze(1)  # [B, A] -> [B]
    known = head.rows(decision_action) & ~torch.isnan(labels)
    return logits[known], labels[known]
