"""The Lightning DataModule: contract tables in, padded journey batches out.

Its constructor signature is the `data:` section of a training config. Tables are loaded, validated
and encoded once, on first use; the model's data-given sizes (vocabularies, profile width, number of
actions) are read from it by the CLI's argument links, before the network is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import lightning as L
import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader

from nextbest.data import CUSTOMERS, DECISIONS, LABELS, ValidationReport, load_events, load_table
from nextbest.data.events import EventLog
from nextbest.journeys import EncodedJourneys, JourneyConfig, JourneyEncoder, LabelRules
from nextbest.journeys.examples import TrainingExamples, build_examples, split_groups
from nextbest.journeys.tensors import as_tensors


@dataclass(frozen=True)
class PreparedData:
    """Everything derived from the tables: the log, the profile features, the fitted encoder, encoded
    examples, the splits."""

    log: EventLog
    report: ValidationReport
    profiles: pa.Table | None
    encoder: JourneyEncoder
    examples: TrainingExamples
    journeys: EncodedJourneys
    splits: dict[str, np.ndarray]


class JourneyDataModule(L.LightningDataModule):
    """Journeys at point-in-time cutoffs from the contract tables, split by group (customer by default).

    Args:
        events: events table (Parquet or CSV).
        customers: optional customers table (profile features; `group_by` column).
        decisions: optional decisions table: one example per decision, conditioned on its action.
        labels: optional label frame (`customer_id`, `as_of`, `conversion` / `churn`).
        rules: how outcomes are read off later events where no label is given.
        cutoffs: ISO times at which every customer is labelled by the rules; default: the last fully
            observed cutoff, used only when there is neither a label frame nor decisions.
        group_by: customers column that groups customers for the split (e.g. `user_id`); never a feature.
        ignore_columns: customers columns that are not features (ids, free text, leaks).
        journey: encoding knobs (history length, vocabulary limits).
        validation_fraction: share of groups held out for validation (early stopping, calibration).
        test_fraction: share of groups held out for the final test metrics.
        batch_size: examples per batch.
        seed: seed of the split.
    """

    def __init__(
        self,
        events: str,
        customers: str | None = None,
        decisions: str | None = None,
        labels: str | None = None,
        rules: LabelRules = LabelRules(),
        cutoffs: list[str] | None = None,
        group_by: str | None = None,
        ignore_columns: list[str] | None = None,
        journey: JourneyConfig = JourneyConfig(),
        validation_fraction: float = 0.2,
        test_fraction: float = 0.1,
        batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not (validation_fraction > 0 and test_fraction >= 0 and validation_fraction + test_fraction < 1):
            raise ValueError(
                "data.validation_fraction must be > 0, data.test_fraction >= 0, and their sum below 1"
            )
        self.save_hyperparameters()
        self.paths = {"events": events, "customers": customers, "decisions": decisions, "labels": labels}
        self.rules = rules
        self.cutoffs = [datetime.fromisoformat(c) for c in cutoffs or []]
        self.group_by = group_by
        self.ignore_columns = [*(ignore_columns or []), *([group_by] if group_by else [])]
        self.journey = journey
        self.fractions = (validation_fraction, test_fraction)
        self.batch_size = batch_size
        self.seed = seed

    @cached_property
    def prepared(self) -> PreparedData:
        """Load, validate, label, encode and split (once; the CLI's links trigger it early)."""
        report = ValidationReport()
        log = load_events(self.paths["events"], report)
        customers = self._optional_table("customers", CUSTOMERS, report)
        examples = build_examples(
            log,
            self.rules,
            labels=self._optional_table("labels", LABELS, report),
            decisions=self._optional_table("decisions", DECISIONS, report),
            cutoffs=self.cutoffs,
            customers=customers,
            group_by=self.group_by,
        )
        profiles = (
            None
            if customers is None
            else customers.drop_columns([c for c in self.ignore_columns if c in customers.column_names])
        )
        encoder = JourneyEncoder.fit(log, profiles, self.journey)
        journeys = encoder.encode(log, examples.requests, profiles, examples.labels)
        train, validation, test = split_groups(examples.groups, self.fractions, self.seed)
        splits = {"train": train, "validation": validation, "test": test}
        return PreparedData(log, report, profiles, encoder, examples, journeys, splits)

    def _optional_table(self, name: str, spec: Any, report: ValidationReport) -> Any:
        path = self.paths[name]
        return None if path is None else load_table(path, spec, report)

    # Sizes the network needs, linked into `model.network.init_args.config` by the CLI.
    @property
    def event_type_vocab(self) -> int:
        return len(self.prepared.encoder.vocabularies["event_type"])

    @property
    def channel_vocab(self) -> int:
        return len(self.prepared.encoder.vocabularies["channel"])

    @property
    def action_vocab(self) -> int:
        return len(self.prepared.encoder.vocabularies["action"])

    @property
    def profile_categorical_sizes(self) -> tuple[int, ...]:
        return tuple(self.prepared.encoder.profile.categorical_sizes)

    @property
    def profile_numeric_dim(self) -> int:
        return self.prepared.encoder.profile.num_numeric

    @property
    def history_dim(self) -> int:
        return self.prepared.encoder.history_dim

    @property
    def num_actions(self) -> int:
        return len(self.prepared.examples.actions)

    @property
    def max_events(self) -> int:
        return self.journey.max_events

    def train_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
        return self._loader("validation", shuffle=False)

    def test_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
        return self._loader("test", shuffle=False)

    def _loader(self, split: str, shuffle: bool) -> DataLoader[dict[str, torch.Tensor]]:
        indices = self.prepared.splits[split]
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            indices.tolist(),
            batch_size=self.batch_size,
            shuffle=shuffle,
            collate_fn=self._collate,
            generator=generator,
        )

    def _collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        rows = np.asarray(indices, dtype=np.int64)
        batch = self.prepared.journeys.batch(rows)
        batch["decision_action"] = self.prepared.examples.decision_action[rows]
        return as_tensors(batch)
