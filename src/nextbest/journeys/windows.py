"""Point-in-time history windows: for each request, the customer's events strictly before `as_of`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Windows:
    """Per-request slices into an event log's sorted rows.

    Attributes:
        start: first row of the (truncated) history window.
        end: one past the last row; every row in `start:end` is strictly before the request's `as_of`.
        first: first row of the customer's full history (before truncation).
    """

    start: np.ndarray
    end: np.ndarray
    first: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return self.end - self.start

    @property
    def total_before(self) -> np.ndarray:
        """Number of the customer's events before `as_of`, truncation ignored."""
        return self.end - self.first

    def last(self, max_events: int) -> Windows:
        """The same windows cut to their most recent `max_events` events."""
        return Windows(start=np.maximum(self.start, self.end - max_events), end=self.end, first=self.first)


def ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The integers of every range [starts[i], ends[i]), concatenated in order (int64)."""
    lengths = np.asarray(ends, dtype=np.int64) - starts
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(np.asarray(starts, dtype=np.int64), lengths) + np.arange(int(lengths.sum())) - offsets


# Below this many targets, one np.searchsorted per segment beats the vectorised search's fixed cost.
_FEW_TARGETS = 8


def segmented_searchsorted(
    values: np.ndarray, lo: np.ndarray, hi: np.ndarray, targets: np.ndarray, side: str = "left"
) -> np.ndarray:
    """`np.searchsorted` of each target within its own sorted segment `values[lo:hi]`, vectorised.

    A binary search that advances every request one step per iteration, so the Python loop runs
    log2(longest segment) times whatever the number of requests.

    Returns:
        For side="left", the first position in `lo..hi` whose value is >= target; for "right", > target.
    """
    if len(targets) <= _FEW_TARGETS:  # a handful of searches: numpy's own, one per segment, is cheaper
        return np.array(
            [
                start + np.searchsorted(values[start:stop], target, side=side)  # type: ignore[call-overload]
                for start, stop, target in zip(lo.tolist(), hi.tolist(), targets.tolist(), strict=True)
            ],
            dtype=np.int64,
        )
    lo, hi = lo.astype(np.int64).copy(), hi.astype(np.int64).copy()
    active = lo < hi
    while active.any():
        mid = (lo + hi) // 2
        probe = values[np.where(active, mid, 0)] if len(values) else np.zeros_like(mid)
        go_right = (probe <= targets) if side == "right" else (probe < targets)
        go_right &= active
        lo = np.where(go_right, mid + 1, lo)
        hi = np.where(active & ~go_right, mid, hi)
        active = lo < hi
    return lo


def customer_segments(offsets: np.ndarray, customer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and one-past-last sorted row of each request's customer; empty (0, 0) for -1 (no events).

    Args:
        offsets: customer `i` owns rows `offsets[i]:offsets[i+1]`.
        customer: the customer index of each request, -1 for customers without events.
    """
    known = customer >= 0
    index = np.where(known, customer, 0)
    # `index + 1` is clipped only for a log without customers, where no request is known.
    first = np.where(known, offsets[np.minimum(index, len(offsets) - 1)], 0).astype(np.int64)
    last = np.where(known, offsets[np.minimum(index + 1, len(offsets) - 1)], 0).astype(np.int64)
    return first, last


def history_windows(
    timestamps: np.ndarray,
    offsets: np.ndarray,
    customer: np.ndarray,
    as_of: np.ndarray,
    max_events: int | None = None,
) -> Windows:
    """Windows of the events strictly before `as_of` for each request, the last `max_events` of them.

    Args:
        timestamps: sorted event times of the log (int64 µs), ordered by time within each customer.
        offsets: customer `i` owns rows `offsets[i]:offsets[i+1]`.
        customer: the customer index of each request, -1 for customers without events.
        as_of: the request times (int64 µs).
        max_events: the most recent events kept per window; None: every one (the full history).
    """
    first, last = customer_segments(offsets, customer)
    end = segmented_searchsorted(timestamps, first, last, as_of, side="left")
    full = Windows(start=first, end=end, first=first)
    return full if max_events is None else full.last(max_events)
