"""Array aliases and small vectorised helpers shared by the simulator modules."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

DAY = 86_400  # simulator time is integer seconds after the world's start
HOUR = 3_600


def sigmoid(x: FloatArray) -> FloatArray:
    """The logistic function, stable for large |x|."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def sample_rows(rng: np.random.Generator, probs: FloatArray) -> IntArray:
    """One categorical draw per row of a (n, k) matrix of probabilities (rows sum to 1)."""
    cumulative = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0]) * cumulative[:, -1]
    picks: IntArray = (cumulative <= u[:, None]).sum(axis=1).astype(np.int64)
    return np.minimum(picks, probs.shape[1] - 1)


def positions_within(counts: IntArray) -> IntArray:
    """0, 1, ..., c-1 for each count c, concatenated: the rank of each repeated item inside its group."""
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total, dtype=np.int64) - starts


def uniform_days(rng: np.random.Generator, low: float, high: float, size: int) -> IntArray:
    """Uniform instants in [low, high) days, as integer seconds."""
    return np.floor(rng.uniform(low, high, size) * DAY).astype(np.int64)
