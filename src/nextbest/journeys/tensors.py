"""Padded journey batches (numpy) as the torch tensors the network reads."""

from __future__ import annotations

import numpy as np
import torch

# Integer inputs index embedding tables, which want int64.
_INDEX_KEYS = frozenset(
    {"event_type", "channel", "action", "hour", "weekday", "profile_categorical", "decision_action"}
)


def as_tensors(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Convert a batch from `EncodedJourneys.batch` (plus `decision_action`) to tensors, sharing memory
    where the dtype already fits."""
    tensors = {}
    for name, values in batch.items():
        if name in _INDEX_KEYS:
            tensors[name] = torch.from_numpy(np.ascontiguousarray(values, dtype=np.int64))
        elif values.dtype == np.bool_:
            tensors[name] = torch.from_numpy(np.ascontiguousarray(values))
        else:
            tensors[name] = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    return tensors
