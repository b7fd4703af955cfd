"""The deployable scoring unit: a trained journey network with its encoder, actions and calibrators.

Online, batch and offline evaluation all score through `JourneyScorer`, so they cannot drift apart. It
saves to a directory (weights as a plain state dict, everything else as JSON), which the MLflow pyfunc
model carries as an artifact.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from nextbest.data.events import EventLog
from nextbest.decisioning.catalog import NO_ACTION, ActionCatalog
from nextbest.journeys.encoder import EncodedJourneys, JourneyEncoder
from nextbest.journeys.tensors import as_tensors
from nextbest.model.calibration import Calibrator, NoCalibration, calibrator_from_dict
from nextbest.model.config import ModelConfig
from nextbest.model.heads import HEADS
from nextbest.model.network import JourneyNetwork
from nextbest.model.stacking import Stacking
from nextbest.monitoring.reference import InputReference

WEIGHTS_FILE = "weights.pt"
SCORER_FILE = "scorer.json"
DEFAULT_BATCH_SIZE = 1024


@dataclass(frozen=True)
class Scores:
    """Calibrated probabilities per request.

    Attributes:
        customer_ids: the requests' customers.
        as_of: the requests' cutoffs (int64 µs since the Unix epoch).
        p_conversion, p_churn: [N] outcome probabilities with no action: the model's `no_action` action's
            when it has one (what uplift is measured from, and what every answer reports), else its
            no-action heads'.
        action_p_conversion, action_p_churn: [N, A] outcome probabilities if action a is taken.
    """

    customer_ids: pa.Array
    as_of: np.ndarray
    p_conversion: np.ndarray
    p_churn: np.ndarray
    action_p_conversion: np.ndarray
    action_p_churn: np.ndarray

    def __len__(self) -> int:
        return len(self.as_of)


@dataclass
class JourneyScorer:
    """A journey network in evaluation mode with everything needed to score raw contract tables.

    Attributes:
        network: the trained network.
        encoder: the journey encoding it was trained with.
        actions: candidate actions, in the order of the network's action heads.
        calibrators: per head (`nextbest.model.HEADS` names), the map from logits to probabilities; a
            head without one is the plain sigmoid.
        metadata: free-form facts about the model (training run, data), saved with it.
        catalog: the packaged action catalog (values, costs, rules); None: the default catalog (every
            action, value 1, cost 0).
        stacking: the hybrid's trees and blends, which turn the network's logits into the hybrid's (the
            calibrators then apply to those); None: the network alone.
        reference: its inputs' distributions on the training requests, which the monitor measures drift
            against; None for models saved before training recorded them.
    """

    network: JourneyNetwork
    encoder: JourneyEncoder
    actions: tuple[str, ...]
    calibrators: dict[str, Calibrator] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    catalog: ActionCatalog | None = None
    stacking: Stacking | None = None
    reference: InputReference | None = None

    def __post_init__(self) -> None:
        self.network.eval()
        if len(self.actions) != self.network.config.num_actions:
            raise ValueError(
                f"{len(self.actions)} actions given for a network with {self.network.config.num_actions}"
            )
        if self.catalog is not None:
            self.check_catalog(self.catalog)
        if self.stacking is not None:
            self._check_stacking(self.stacking)

    def _check_stacking(self, stacking: Stacking) -> None:
        """The trees must read this encoder's history block and one column per action."""
        width = self.encoder.history_dim + len(self.actions)
        for outcome, trees in stacking.trees.items():
            if trees.num_features != width:
                raise ValueError(
                    f"stacking.trees[{outcome!r}] reads {trees.num_features} features; this model's history "
                    f"block and actions give {width}"
                )

    def check_catalog(self, catalog: ActionCatalog) -> None:
        """Raises `CatalogError`, naming the entry, unless `catalog` ranks this model's actions with rules
        that read what it knows (see `ActionCatalog.check_model`)."""
        catalog.check_model(self.actions, self.encoder.profile)

    @property
    def action_catalog(self) -> ActionCatalog:
        """The packaged catalog, or the default one."""
        return self.catalog if self.catalog is not None else ActionCatalog.default(self.actions)

    def logits(
        self,
        journeys: EncodedJourneys,
        indices: np.ndarray | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: bool = False,
    ) -> dict[str, np.ndarray]:
        """Uncalibrated logits of every head (by name) for the requests `indices` of `journeys` (all when
        None): [N, A] for per-action heads, [N] for the others; the hybrid's when the model is stacked."""
        outputs = self._outputs(journeys, indices, {h.name: h.output for h in HEADS}, batch_size, progress)
        for head in HEADS:  # an empty batch has no action axis to concatenate
            if not len(outputs[head.name]):
                outputs[head.name] = np.zeros((0, len(self.actions)) if head.per_action else 0)
        if self.stacking is None:
            return outputs
        history = journeys.static["history"]
        return self.stacking.combine(outputs, history if indices is None else history[indices])

    def embeddings(self, journeys: EncodedJourneys, *, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """[N, d_model] the network's representation of each request (what its heads read)."""
        embedded = self._outputs(journeys, None, {"embedding": "embedding"}, batch_size, False)["embedding"]
        return embedded if len(embedded) else np.zeros((0, self.network.config.d_model), np.float32)

    def _outputs(
        self,
        journeys: EncodedJourneys,
        indices: np.ndarray | None,
        names: Mapping[str, str],
        batch_size: int,
        progress: bool,
    ) -> dict[str, np.ndarray]:
        """The network outputs `names` (key: output name) for the requests `indices`, in request order.

        Requests are batched by history length: a batch is padded to its longest history, so batching
        similar lengths together skips most of the padding.
        """
        rows = np.arange(len(journeys)) if indices is None else np.asarray(indices, dtype=np.int64)
        windows = journeys.windows
        by_length = np.argsort(windows.end[rows] - windows.start[rows], kind="stable")
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        with torch.inference_mode():
            for batch in _batches(rows[by_length], batch_size, progress):
                outputs = self.network(as_tensors(journeys.batch(batch)))
                for name, output in names.items():
                    parts[name].append(outputs[output].numpy())
        results = {}
        for name, chunks in parts.items():
            if not chunks:
                results[name] = np.zeros(0, np.float32)
                continue
            in_length_order = np.concatenate(chunks)
            results[name] = np.empty_like(in_length_order)
            results[name][by_length] = in_length_order
        return results

    def probabilities(self, logits: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Calibrated probabilities (float64) from the output of `logits`."""
        return {
            head: self.calibrators.get(head, NoCalibration()).calibrate(values).reshape(values.shape)
            for head, values in logits.items()
        }

    def score(
        self,
        log: EventLog,
        requests: pa.Table,
        customers: pa.Table | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: bool = False,
    ) -> Scores:
        """Scores `requests` (`customer_id`, `as_of`) from the events in `log` strictly before each as_of."""
        journeys = self.encoder.encode(log, requests, customers)
        return self.score_encoded(journeys, batch_size=batch_size, progress=progress)

    def score_encoded(
        self, journeys: EncodedJourneys, *, batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False
    ) -> Scores:
        """Scores requests already encoded with this scorer's encoder."""
        p = self.probabilities(self.logits(journeys, batch_size=batch_size, progress=progress))
        if NO_ACTION in self.actions:  # "no action" has one figure: the action's, not a second estimate
            taken = self.actions.index(NO_ACTION)
            p["conversion"], p["churn"] = p["action_conversion"][:, taken], p["action_churn"][:, taken]
        return Scores(
            customer_ids=journeys.customer_ids,
            as_of=journeys.as_of,
            p_conversion=p["conversion"],
            p_churn=p["churn"],
            action_p_conversion=p["action_conversion"],
            action_p_churn=p["action_churn"],
        )

    def save(self, directory: str | Path) -> Path:
        """Writes the weights and a JSON description to `directory` (created if needed)."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.network.state_dict(), path / WEIGHTS_FILE)
        description = {
            "model_config": self.network.config.to_dict(),
            "encoder": self.encoder.to_dict(),
            "actions": list(self.actions),
            "calibrators": {head: c.to_dict() for head, c in self.calibrators.items()},
            "metadata": self.metadata,
            "catalog": None if self.catalog is None else self.catalog.to_dict(),
            "stacking": None if self.stacking is None else self.stacking.to_dict(),
            "reference": None if self.reference is None else self.reference.to_dict(),
        }
        (path / SCORER_FILE).write_text(json.dumps(description, indent=1))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> JourneyScorer:
        """Rebuilds a scorer written by `save`; weights load as plain tensors (no pickled code)."""
        path = Path(directory)
        description = json.loads((path / SCORER_FILE).read_text())
        network = JourneyNetwork(ModelConfig.from_dict(description["model_config"]))
        network.load_state_dict(torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True))
        return cls(
            network=network,
            encoder=JourneyEncoder.from_dict(description["encoder"]),
            actions=tuple(description["actions"]),
            calibrators={h: calibrator_from_dict(c) for h, c in description["calibrators"].items()},
            metadata=description["metadata"],
            catalog=None
            if description["catalog"] is None
            else ActionCatalog.from_dict(description["catalog"]),
            # Scorers saved before the hybrid existed have no "stacking" entry: they are the network alone.
            stacking=None
            if description.get("stacking") is None
            else Stacking.from_dict(description["stacking"]),
            # Nor a reference before the monitor existed.
            reference=None
            if description.get("reference") is None
            else InputReference.from_dict(description["reference"]),
        )


def _batches(rows: np.ndarray, batch_size: int, progress: bool) -> Iterator[np.ndarray]:
    starts: Iterable[int] = range(0, len(rows), batch_size)
    if progress:  # a disabled bar still costs a tenth of scoring one online request's batch
        starts = tqdm(starts, desc="scoring", unit="batch")
    for start in starts:
        yield rows[start : start + batch_size]
