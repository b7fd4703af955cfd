"""Percentile bootstrap helpers shared by the off-policy estimates and the paired model comparisons.

Resamples are drawn as multinomial counts over the n units (decisions, customers): row b of a chunk says
how often each unit appears in resample b, so a statistic that sums over units is a matrix product, and
two statistics computed from the same chunk are paired.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

# Bound on the cells of one chunk of counts (or of what a caller expands it to), to bound memory.
CHUNK_CELLS = 20_000_000


def resample_counts(n: int, resamples: int, seed: int, *, width: int | None = None) -> Iterator[np.ndarray]:
    """Chunks [size, n] of bootstrap counts of n units, `resamples` rows in all, reproducible per seed.

    Args:
        n: units resampled.
        resamples: bootstrap resamples.
        seed: seed of the resampling.
        width: the columns a caller expands each chunk to (e.g. rows of the resampled customers), for
            sizing the chunks; default n.
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, CHUNK_CELLS // max(width or n, 1)))
    for start in range(0, resamples, chunk):
        yield rng.multinomial(n, np.full(n, 1.0 / n), size=min(chunk, resamples - start))


def resampled_sums(columns: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """[columns, resamples] the sum of each row of `columns` ([columns, n]) over the same bootstrap
    resamples of the n units."""
    parts = [
        counts.astype(np.float64) @ columns.T  # [size, columns]
        for counts in resample_counts(columns.shape[1], resamples, seed)
    ]
    return np.concatenate(parts).T


def percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    """The central `level` interval of the bootstrap samples (NaN samples ignored; NaN when all are)."""
    tail = (1.0 - level) / 2 * 100
    if np.isnan(samples).all():
        return float("nan"), float("nan")
    low, high = np.nanpercentile(samples, [tail, 100 - tail])
    return float(low), float(high)
