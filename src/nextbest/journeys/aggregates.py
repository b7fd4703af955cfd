"""Engineered history aggregates per request: the features of the tabular (non-sequence) baselines.

Every feature is computed from the customer's FULL history strictly before the request's `as_of`
(no truncation to the last N events). Features that only need a window's ends (recency, tenure,
frequency, mean gap, recent-event counts) come from the window bounds alone; the rest expand the
windows into event rows with `np.repeat` and reduce per request with `np.bincount` and `ufunc.reduceat`.
Requests are processed in chunks of a bounded number of expanded rows, so many cutoffs per customer
never need one huge expansion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise
from typing import Any

import numpy as np
import pyarrow as pa

from nextbest.data.events import EventLog
from nextbest.data.schema import MICROS_PER_DAY, MICROS_PER_HOUR
from nextbest.journeys.vocab import PAD, Vocabulary
from nextbest.journeys.windows import Windows, history_windows, segmented_searchsorted

TOKEN_COLUMNS = ("event_type", "channel", "action")
# Columns whose distinct (non-null) values are counted exactly, not through the truncated vocabulary.
DISTINCT_COLUMNS = ("channel", "action")
RECENT_DAYS = (1, 7, 30)
SCALAR_FEATURES = (
    "has_history",
    "recency_days",
    "tenure_days",
    "log1p_event_count",
    "value_sum",
    "value_mean",
    "value_max",
    "gap_hours_mean",
    "gap_hours_min",
    "gap_hours_max",
    *(f"events_last_{days}d" for days in RECENT_DAYS),
    *(f"distinct_{column}s" for column in DISTINCT_COLUMNS),
)
# Below this spread (in signed-log units) a feature counts as constant when scaling (`ScaledAggregates`).
MIN_SCALE = 1e-3
# Bounds the memory of one chunk: a few arrays of this many int64/float64 values.
CHUNK_ROWS = 2_000_000


@dataclass(frozen=True)
class _EventColumns:
    """Per-event inputs of the aggregates, in the log's sorted row order."""

    timestamps: np.ndarray
    codes: dict[str, np.ndarray]
    raw_codes: dict[str, np.ndarray]
    values: np.ndarray
    has_value: np.ndarray
    gap_hours: np.ndarray


@dataclass(frozen=True)
class _Windows:
    """Full-history bounds of a chunk of requests and their expansion into event rows."""

    first: np.ndarray
    end: np.ndarray
    as_of: np.ndarray
    rows: np.ndarray
    request: np.ndarray
    block_start: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return self.end - self.first

    @property
    def nonempty(self) -> np.ndarray:
        return self.end > self.first


def signed_log1p(features: np.ndarray) -> np.ndarray:
    """sign(x) * log1p(|x|): tames heavy-tailed counts, durations and amounts for linear and neural models."""
    return np.sign(features) * np.log1p(np.abs(features))


@dataclass(frozen=True)
class AggregateFeaturizer:
    """RFM, token counts and shares, first/last touch, gaps and recent activity per request.

    Serialisable with `to_dict`/`from_dict`, so a deployed baseline carries the vocabularies it was
    trained with.

    Attributes:
        vocabularies: one `Vocabulary` per token column (event_type, channel, action); per-token
            features exist for the unknown token, the missing token and every vocabulary token.
        window_days: per window, each token's count in the last that many days before `as_of` (e.g.
            emails received this week, app sessions this month): what an action's effect often hinges
            on, and what attention, which pools averages, reads poorly off the events.
    """

    vocabularies: dict[str, Vocabulary]
    window_days: tuple[int, ...] = ()

    @classmethod
    def fit(
        cls, log: EventLog, max_tokens: int = 50, min_count: int = 1, window_days: Sequence[int] = ()
    ) -> AggregateFeaturizer:
        """Vocabularies of the `max_tokens` most frequent tokens (seen `min_count` times) per column."""
        return cls(
            {name: Vocabulary.fit(_column(log, name), min_count, max_tokens) for name in TOKEN_COLUMNS},
            tuple(window_days),
        )

    @cached_property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the columns of `transform`'s matrix, in order.

        Cached: building the few hundred names took 0.13 ms, a tenth of encoding one online request."""
        names = list(SCALAR_FEATURES)
        prefixes = ("count", "share", "first", "last", *(f"count_{days}d" for days in self.window_days))
        for prefix in prefixes:
            for column, vocab in self.vocabularies.items():
                names += [f"{prefix}:{column}={token}" for token in _token_names(vocab)]
        return tuple(names)

    def transform(
        self, log: EventLog, customer_index: np.ndarray, as_of: np.ndarray, *, history: Windows | None = None
    ) -> tuple[np.ndarray, tuple[str, ...]]:
        """Features of each request from its customer's events strictly before `as_of`.

        Args:
            log: the event log.
            customer_index: per request, the customer's index in `log` (-1: no events).
            as_of: per request, the cutoff time (int64 µs since the Unix epoch).
            history: the requests' full histories in `log` (`ResolvedRequests.history`), when the caller
                has found them already; else found here from `customer_index` and `as_of`.

        Returns:
            The float32 matrix [requests, features] (all zeros, `has_history` included, for a request
            without earlier events) and the feature names.
        """
        as_of = np.asarray(as_of, dtype=np.int64)
        if history is None:
            customer_index = np.asarray(customer_index, dtype=np.int64)
            history = history_windows(log.timestamps, log.offsets, customer_index, as_of)
        first, end = history.first, history.end
        events = self._event_columns(log)
        names = self.feature_names
        # Blocks are written straight into the result: stacking them first would copy the whole matrix
        # once more, which on Criteo took longer than computing the features.
        matrix = np.empty((len(as_of), len(names)), dtype=np.float32)
        for a, b in _chunk_bounds(end - first, CHUNK_ROWS):
            column = 0
            for block in self._blocks(events, _expand(first[a:b], end[a:b], as_of[a:b])):
                block = block if block.ndim == 2 else block[:, None]
                matrix[a:b, column : column + block.shape[1]] = block
                column += block.shape[1]
        return matrix, names

    def to_dict(self) -> dict[str, Any]:
        return {
            "vocabularies": {name: vocab.to_dict() for name, vocab in self.vocabularies.items()},
            "window_days": list(self.window_days),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AggregateFeaturizer:
        # Models saved before windowed counts existed have no `window_days`: they had none.
        return cls(
            {name: Vocabulary.from_dict(v) for name, v in data["vocabularies"].items()},
            tuple(data.get("window_days", ())),
        )

    def _event_columns(self, log: EventLog) -> _EventColumns:
        timestamps = log.timestamps
        values, has_value = log.values
        return _EventColumns(
            timestamps=timestamps,
            codes={n: v.encode_codes(*log.token_codes(n)) for n, v in self.vocabularies.items()},
            raw_codes={n: log.token_codes(n)[1] for n in DISTINCT_COLUMNS},
            values=values,
            has_value=has_value,
            gap_hours=np.diff(timestamps, prepend=timestamps[:1]) / MICROS_PER_HOUR,
        )

    def _blocks(self, events: _EventColumns, windows: _Windows) -> list[np.ndarray]:
        """The feature blocks of one chunk of requests, in the order of `feature_names`."""
        vocabularies = self.vocabularies.items()
        counts = [_token_counts(events.codes[name], len(vocab), windows) for name, vocab in vocabularies]
        shares = [block / np.maximum(windows.lengths, 1)[:, None] for block in counts]
        touches = [
            _one_hot(events.codes[name], len(vocab), rows, windows.nonempty)
            for rows in (windows.first, windows.end - 1)
            for name, vocab in vocabularies
        ]
        recent = [
            _token_counts(events.codes[name], len(vocab), windows, within)
            for within in (_within_days(events.timestamps, windows, days) for days in self.window_days)
            for name, vocab in vocabularies
        ]
        return [*_scalar_blocks(events, windows), *counts, *shares, *touches, *recent]


def _column(log: EventLog, name: str) -> pa.Array | pa.ChunkedArray:
    """A token column of the log's source, all nulls when the optional column is absent."""
    if name in log.source.column_names:
        return log.source.column(name)
    return pa.nulls(log.source.num_rows, pa.string())


def _token_names(vocab: Vocabulary) -> list[str]:
    """Names of the codes that get a feature: every code but padding (which no event has)."""
    return vocab.decode(np.arange(PAD + 1, len(vocab)))


def _chunk_bounds(lengths: np.ndarray, max_rows: int) -> list[tuple[int, int]]:
    """Consecutive request ranges of about `max_rows` expanded rows each (at least one range)."""
    cumulative = np.cumsum(lengths)
    total = int(cumulative[-1]) if len(cumulative) else 0
    if total <= max_rows:  # the usual case (an online request, a training batch): one chunk
        return [(0, len(lengths))]
    cuts = np.searchsorted(cumulative, np.arange(max_rows, total, max_rows), side="right")
    bounds = np.unique(np.concatenate([[0], cuts, [len(lengths)]]))
    if len(bounds) == 1:
        return [(0, 0)]
    return [(int(a), int(b)) for a, b in pairwise(bounds)]


def _expand(first: np.ndarray, end: np.ndarray, as_of: np.ndarray) -> _Windows:
    """Every request's history rows, concatenated: `rows[block_start[r]:][:lengths[r]]` are request r's."""
    lengths = end - first
    block_start = np.cumsum(lengths) - lengths
    request = np.repeat(np.arange(len(first)), lengths)
    rows = np.arange(int(lengths.sum())) - (block_start - first)[request]
    return _Windows(first, end, as_of, rows, request, block_start)


def _segment_reduce(ufunc: np.ufunc, values: np.ndarray, windows: _Windows) -> np.ndarray:
    """`ufunc` over each non-empty request's expanded values; 0 for empty requests.

    `reduceat` gives a wrong answer for an empty segment (the next element) and fails at the end of the
    array, so only non-empty segments, whose starts are strictly increasing, are reduced.
    """
    out = np.zeros(len(windows.end))
    nonempty = windows.nonempty
    if nonempty.any():
        out[nonempty] = ufunc.reduceat(values, windows.block_start[nonempty])
    return out


def _take(values: np.ndarray, rows: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """`values[rows]` where `valid`, else 0 (also safe when `values` is empty and nothing is valid)."""
    if len(values) == 0:
        return np.zeros(len(rows), dtype=values.dtype)
    return np.where(valid, values[np.where(valid, rows, 0)], 0)


def _scalar_blocks(events: _EventColumns, windows: _Windows) -> list[np.ndarray]:
    """The blocks of `SCALAR_FEATURES`, in order."""
    return [
        windows.nonempty,
        _recency_tenure(events, windows),
        np.log1p(windows.lengths),
        _monetary(events, windows),
        _gaps(events, windows),
        _recent_counts(events, windows),
        *(_distinct(events.raw_codes[name], windows) for name in DISTINCT_COLUMNS),
    ]


def _recency_tenure(events: _EventColumns, windows: _Windows) -> np.ndarray:
    """Days since the last and since the first event before `as_of`."""
    nonempty = windows.nonempty
    last = _take(events.timestamps, windows.end - 1, nonempty)
    first = _take(events.timestamps, windows.first, nonempty)
    recency = np.where(nonempty, (windows.as_of - last) / MICROS_PER_DAY, 0.0)
    tenure = np.where(nonempty, (windows.as_of - first) / MICROS_PER_DAY, 0.0)
    return np.stack([recency, tenure], axis=1)


def _monetary(events: _EventColumns, windows: _Windows) -> np.ndarray:
    """Sum, mean and max of the non-null values (0 when there are none)."""
    n = len(windows.end)
    has_value = events.has_value[windows.rows]
    total = np.bincount(windows.request, weights=events.values[windows.rows], minlength=n)
    count = np.bincount(windows.request, weights=has_value, minlength=n)
    mean = total / np.maximum(count, 1)
    # Null values must not win the max, so they enter as -inf; a request with no value at all gets 0.
    largest = _segment_reduce(np.maximum, np.where(has_value, events.values[windows.rows], -np.inf), windows)
    largest = np.where(count > 0, largest, 0.0)
    return np.stack([total, mean, largest], axis=1)


def _gaps(events: _EventColumns, windows: _Windows) -> np.ndarray:
    """Mean, min and max hours between consecutive events (0 with fewer than two events)."""
    lengths = windows.lengths
    several = lengths >= 2
    # The mean of consecutive gaps telescopes to (last - first) / (n - 1): no expansion needed.
    last = _take(events.timestamps, windows.end - 1, several)
    first = _take(events.timestamps, windows.first, several)
    mean = np.where(several, (last - first) / MICROS_PER_HOUR / np.maximum(lengths - 1, 1), 0.0)
    gaps = events.gap_hours[windows.rows]
    # A window's first row has no previous event inside the window: it must not count as a gap.
    opens = np.zeros(len(gaps), dtype=bool)
    opens[windows.block_start[windows.nonempty]] = True
    smallest = _segment_reduce(np.minimum, np.where(opens, np.inf, gaps), windows)
    largest = _segment_reduce(np.maximum, np.where(opens, -np.inf, gaps), windows)
    return np.stack([mean, np.where(several, smallest, 0.0), np.where(several, largest, 0.0)], axis=1)


def _recent_counts(events: _EventColumns, windows: _Windows) -> np.ndarray:
    """Events in the last 1, 7 and 30 days before `as_of`: a binary search per window, no expansion."""
    columns = []
    for days in RECENT_DAYS:
        since = windows.as_of - days * MICROS_PER_DAY
        start = segmented_searchsorted(events.timestamps, windows.first, windows.end, since, side="left")
        columns.append(windows.end - start)
    return np.stack(columns, axis=1)


def _distinct(raw_codes: np.ndarray, windows: _Windows) -> np.ndarray:
    """Number of distinct non-null values per request (exact, whatever the vocabulary keeps)."""
    codes = raw_codes[windows.rows]
    present = codes >= 0
    width = int(raw_codes.max(initial=0)) + 1
    # Sorting the (request, value) keys and keeping the first of each run is np.unique without its
    # hashing, which is several times slower here.
    keys = np.sort(windows.request[present] * width + codes[present])
    distinct = keys[np.diff(keys, prepend=-1) != 0]
    return np.bincount(distinct // width, minlength=len(windows.end))


def _token_counts(
    codes: np.ndarray, size: int, windows: _Windows, within: np.ndarray | None = None
) -> np.ndarray:
    """Events per vocabulary code and request [requests, codes], padding left out; of the expanded rows
    where `within` (bool) only, when given."""
    n = len(windows.end)
    request, rows = windows.request, windows.rows
    if within is not None:
        request, rows = request[within], rows[within]
    flat = np.bincount(request * size + codes[rows], minlength=n * size)
    return flat.reshape(n, size)[:, PAD + 1 :]


def _within_days(timestamps: np.ndarray, windows: _Windows, days: int) -> np.ndarray:
    """[expanded rows] whether each event is less than `days` days before its request's `as_of`."""
    return timestamps[windows.rows] >= windows.as_of[windows.request] - days * MICROS_PER_DAY


def _one_hot(codes: np.ndarray, size: int, rows: np.ndarray, nonempty: np.ndarray) -> np.ndarray:
    """One-hot of the code at `rows` (one row per request), padding left out; zeros for empty requests."""
    out = np.zeros((len(rows), size), dtype=np.float32)
    picked = np.flatnonzero(nonempty)
    out[picked, codes[rows[picked]]] = 1.0
    return out[:, PAD + 1 :]


@dataclass(frozen=True)
class ScaledAggregates:
    """The aggregates as neural-network inputs: signed log1p, then standardised per feature.

    Attention pools averages well but counts poorly; handing the network the engineered counts, shares and
    gaps lets the sequence model see at least what the tabular baselines see.
    """

    featurizer: AggregateFeaturizer
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(
        cls,
        log: EventLog,
        max_tokens: int = 50,
        sample: int = 100_000,
        seed: int = 0,
        window_days: Sequence[int] = (),
    ) -> ScaledAggregates:
        """Vocabularies from `log`; scale from (at most `sample`) customers as of the end of their events,
        a stand-in for training requests, which are not known at fit time."""
        featurizer = AggregateFeaturizer.fit(log, max_tokens=max_tokens, window_days=window_days)
        customers = np.arange(log.num_customers)
        if len(customers) > sample:
            customers = np.sort(np.random.default_rng(seed).choice(customers, sample, replace=False))
        after_last = log.timestamps[log.offsets[customers + 1] - 1] + 1
        raw = signed_log1p(featurizer.transform(log, customers, after_last)[0].astype(np.float64))
        width = len(featurizer.feature_names)
        mean = raw.mean(axis=0) if len(raw) else np.zeros(width)
        std = raw.std(axis=0) if len(raw) else np.ones(width)
        # A feature (nearly) constant at fit time, e.g. recency just after the last event, keeps its scale:
        # dividing by a rounding-error spread would blow its later, real values up.
        std = np.where(std > MIN_SCALE, std, 1.0)
        return cls(featurizer, tuple(mean.tolist()), tuple(std.tolist()))

    @property
    def width(self) -> int:
        return len(self.mean)

    def transform(
        self, log: EventLog, customer_index: np.ndarray, as_of: np.ndarray, *, history: Windows | None = None
    ) -> np.ndarray:
        """[requests, width] float32 standardised features (see `AggregateFeaturizer.transform`)."""
        raw, _ = self.featurizer.transform(log, customer_index, as_of, history=history)
        mean, std = self._scale
        return ((signed_log1p(raw.astype(np.float64)) - mean) / std).astype(np.float32)

    @cached_property
    def _scale(self) -> tuple[np.ndarray, np.ndarray]:
        """`mean` and `std` as arrays: converting the tuples cost 15 µs per call."""
        return np.asarray(self.mean), np.asarray(self.std)

    def to_dict(self) -> dict[str, Any]:
        return {"featurizer": self.featurizer.to_dict(), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScaledAggregates:
        return cls(AggregateFeaturizer.from_dict(data["featurizer"]), tuple(data["mean"]), tuple(data["std"]))
