"""Self-supervised pretraining of the journey encoder (CoLES: contrastive learning of event sequences).

Random contiguous sub-sequences of one customer's history are positive pairs and every other customer's
sub-sequences in the batch are negatives; an InfoNCE loss on the encoder's pooled history, through a
small projection head, pulls a customer's sub-sequences together (Babaev et al., "CoLES", SIGMOD 2022;
pytorch-lifestream's `ptls.frames.coles`). It needs no labels, so it reads every customer's history,
and the supervised run then starts from the pretrained event embedding and history encoder: the
pretraining module holds the supervised network's own encoder modules and trains them in place.

Held-out customers (validation and test examples) are read only up to their first example's cutoff:
an encoder that had seen the events after it could carry their outcomes into the test metrics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import Logger
from torch import Tensor, nn
from torch.utils.data import DataLoader

from nextbest.journeys.encoder import EventFeatures, event_batch
from nextbest.journeys.tensors import as_tensors
from nextbest.journeys.windows import Windows, history_windows
from nextbest.model.network import JourneyNetwork
from nextbest_training.data import PreparedData

# No cutoff: a customer's whole history counts.
_NO_CUTOFF = np.iinfo(np.int64).max


@dataclass(frozen=True)
class PretrainSettings:
    """The `pretrain:` section of a training config; without it the run does not pretrain.

    Args:
        epochs: passes over every customer's history.
        views: sub-sequences drawn per customer in each batch (CoLES's `split_count`); every two views
            of one customer are a positive pair.
        min_length: shortest sub-sequence, in events; shorter histories are used whole.
        max_length: longest sub-sequence, in events.
        temperature: InfoNCE temperature of the cosine similarities.
        projection_dim: output width of the projection head (dropped after pretraining).
        batch_size: customers per batch (each contributes `views` sub-sequences).
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
    """

    epochs: int = 5
    views: int = 2
    min_length: int = 5
    max_length: int = 50
    temperature: float = 0.1
    projection_dim: int = 64
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        for name, minimum in (("epochs", 1), ("views", 2), ("min_length", 1), ("projection_dim", 1)):
            if getattr(self, name) < minimum:
                raise ValueError(f"pretrain.{name} must be >= {minimum}, got {getattr(self, name)}")
        if self.batch_size < 2:  # a single customer has no negatives
            raise ValueError(f"pretrain.batch_size must be >= 2, got {self.batch_size}")
        if self.max_length < self.min_length:
            raise ValueError(
                f"pretrain.max_length ({self.max_length}) must be >= pretrain.min_length ({self.min_length})"
            )
        for name in ("temperature", "learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"pretrain.{name} must be > 0, got {getattr(self, name)}")


def sample_sub_sequences(
    histories: Windows, views: int, min_length: int, max_length: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`views` random contiguous sub-sequences of each history `histories.start[i]:histories.end[i]`.

    A length is drawn uniformly from [min_length, max_length] (capped at the history's length), then a
    start uniformly among the positions where it fits, as CoLES's `SampleSlices` does.

    Returns:
        start, end [views · N]: row `v · N + i` is view v of history i (view-major, as `info_nce` reads).
    """
    size = np.tile(histories.lengths, views)  # [V·N]
    length = rng.integers(np.minimum(min_length, size), np.minimum(max_length, size) + 1)  # [V·N]
    start = np.tile(histories.start, views) + rng.integers(0, size - length + 1)  # [V·N]
    return start, start + length


def info_nce(embeddings: Tensor, views: int, temperature: float) -> Tensor:
    """Mean InfoNCE loss of view-major embeddings [V·N, P] of N customers (row `v · N + i`: view v of i).

    Each view's positives are the customer's other views and its negatives every other row, compared by
    cosine similarity over `temperature` (the supervised-contrastive form, which is NT-Xent for 2 views).
    """
    z = F.normalize(embeddings, dim=-1)  # [V·N, P]
    count = z.shape[0]
    itself = torch.eye(count, dtype=torch.bool, device=z.device)  # [V·N, V·N]
    logits = (z @ z.T / temperature).masked_fill(itself, float("-inf"))  # [V·N, V·N]
    customer = torch.arange(count, device=z.device) % (count // views)  # [V·N]
    positive = (customer[:, None] == customer[None, :]) & ~itself  # [V·N, V·N]
    log_probability = logits - logits.logsumexp(dim=1, keepdim=True)  # [V·N, V·N]
    per_view = log_probability.masked_fill(~positive, 0.0).sum(dim=1) / positive.sum(dim=1)  # [V·N]
    return -per_view.mean()


def pretraining_histories(prepared: PreparedData) -> Windows:
    """Every customer's history in the log, held-out customers' cut before their first example's cutoff;
    customers left without events are left out."""
    log, journeys = prepared.log, prepared.journeys
    held_out = np.concatenate([prepared.splits["validation"], prepared.splits["test"]])
    customer, as_of = journeys.requests.customer[held_out], journeys.as_of[held_out]
    known = customer >= 0
    cutoff = np.full(log.num_customers, _NO_CUTOFF, dtype=np.int64)
    np.minimum.at(cutoff, customer[known], as_of[known])
    histories = history_windows(log.timestamps, log.offsets, np.arange(log.num_customers), cutoff)
    kept = histories.lengths > 0
    return Windows(start=histories.start[kept], end=histories.end[kept], first=histories.first[kept])


class SubSequenceBatches:
    """DataLoader collate function: customer indices → the event batch of their random sub-sequences,
    each seen just after its last event (as a journey scored at that moment is)."""

    def __init__(
        self, events: EventFeatures, histories: Windows, settings: PretrainSettings, seed: int
    ) -> None:
        self.events = events
        self.histories = histories
        self.settings = settings
        self.rng = np.random.default_rng(seed)

    def __call__(self, indices: list[int]) -> dict[str, Tensor]:
        rows = np.asarray(indices, dtype=np.int64)
        chosen = Windows(
            start=self.histories.start[rows], end=self.histories.end[rows], first=self.histories.first[rows]
        )
        s = self.settings
        start, end = sample_sub_sequences(chosen, s.views, s.min_length, s.max_length, self.rng)
        as_of = self.events.timestamps[end - 1] + 1
        return as_tensors(event_batch(self.events, start, end, as_of))


class ContrastivePretraining(L.LightningModule):
    """Trains a journey network's event embedding and history encoder, in place, with `info_nce`.

    Args:
        network: the supervised run's network; its `event_embedding` and `history_encoder` are trained.
        settings: the `pretrain:` section.
    """

    def __init__(self, network: JourneyNetwork, settings: PretrainSettings) -> None:
        super().__init__()
        self.event_embedding = network.event_embedding
        self.history_encoder = network.history_encoder
        d = network.config.d_model
        # Scored through a projection, so the loss's invariances need not all reach the encoder's output
        # (SimCLR's finding, kept by CoLES); the head is not part of the network and is dropped.
        self.projection = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, settings.projection_dim))
        self.settings = settings

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        events = self.event_embedding(batch)  # [V·N, L, D]
        pooled = self.history_encoder(events, batch["mask"])  # [V·N, D]
        loss = info_nce(self.projection(pooled), self.settings.views, self.settings.temperature)
        size = len(batch["length"]) // self.settings.views
        self.log("pretrain/loss", loss, batch_size=size, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.parameters(), lr=self.settings.learning_rate, weight_decay=self.settings.weight_decay
        )


def pretrain(
    network: nn.Module,
    prepared: PreparedData,
    settings: PretrainSettings,
    logger: Logger | bool,
    accelerator: str,
    fast_dev_run: int | bool,
    seed: int,
) -> None:
    """Pretrains `network`'s encoder on every customer's history (`pretraining_histories`), in place, on
    one device of `accelerator`, logging `pretrain/loss` and the settings (`pretrain.<name>`) to `logger`.
    """
    if not isinstance(network, JourneyNetwork):
        raise TypeError(f"pretrain: needs model.network to be a JourneyNetwork, got {type(network).__name__}")
    histories = pretraining_histories(prepared)
    if isinstance(logger, Logger):
        params = {f"pretrain.{name}": value for name, value in asdict(settings).items()}
        logger.log_hyperparams({**params, "pretrain.customers": len(histories.start)})
    customers: np.ndarray = np.arange(len(histories.start))
    loader: DataLoader[dict[str, Tensor]] = DataLoader(
        customers.tolist(),
        batch_size=settings.batch_size,
        shuffle=True,
        collate_fn=SubSequenceBatches(prepared.journeys.events, histories, settings, seed),
        generator=torch.Generator().manual_seed(seed),
    )
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=settings.epochs,
        logger=logger,
        fast_dev_run=fast_dev_run,
        # Only epoch metrics are logged: a step interval longer than a small data set's epoch only warns.
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(ContrastivePretraining(network, settings), train_dataloaders=loader)
