"""From an event log (and customer profiles) to model-ready journeys at point-in-time cutoffs.

Per-event features are computed once for the whole log, vectorised; a request is then only a slice of
the log's sorted rows (its customer's events strictly before `as_of`, the last `max_events` of them), so
many cutoffs per customer cost no copies. `EncodedJourneys.batch` pads a set of requests into dense
arrays for the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from nextbest.data.events import EventLog
from nextbest.data.schema import MICROS_PER_DAY, MICROS_PER_HOUR, MICROS_PER_SECOND
from nextbest.journeys.aggregates import ScaledAggregates
from nextbest.journeys.profile import ProfileEncoder
from nextbest.journeys.requests import ResolvedRequests
from nextbest.journeys.vocab import PAD, Vocabulary
from nextbest.journeys.windows import Windows

TOKEN_COLUMNS = ("event_type", "channel", "action")
# History aggregates per request: a model sees these even when truncation hides old events.
HISTORY_FEATURES = ("log_events_before", "log_days_since_last", "log_days_since_first", "has_history")


@dataclass(frozen=True)
class JourneyConfig:
    """Knobs of the journey encoding.

    Attributes:
        max_events: the most recent events kept per history (older ones still count in the aggregates).
        min_token_count: tokens seen fewer times in training map to the unknown token.
        max_vocabulary: the most frequent tokens kept per vocabulary.
        max_profile_categories: the most frequent categories kept per profile column.
        aggregate_features: add the engineered history aggregates (counts, shares, first and last touch,
            gaps, recency per token; see `nextbest.journeys.aggregates`) to the per-request features.
        aggregate_tokens: the most frequent tokens per column that get aggregate features.
        aggregate_window_days: add each such token's count in the last that many days, per window (e.g.
            `[7, 30, 90]`); none by default.
    """

    max_events: int = 100
    min_token_count: int = 1
    max_vocabulary: int = 10_000
    max_profile_categories: int = 1_000
    aggregate_features: bool = True
    aggregate_tokens: int = 50
    aggregate_window_days: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        # YAML and JSON give lists; the frozen config keeps a hashable tuple.
        object.__setattr__(self, "aggregate_window_days", tuple(self.aggregate_window_days))


@dataclass(frozen=True)
class EventFeatures:
    """Per-event features of a log's sorted rows (int32 codes, float32 values)."""

    tokens: dict[str, np.ndarray]
    timestamps: np.ndarray
    log_gap_seconds: np.ndarray
    hour: np.ndarray
    weekday: np.ndarray
    log_value: np.ndarray
    has_value: np.ndarray


@dataclass(frozen=True)
class EncodedJourneys:
    """Requests (customer, as_of) with their model windows, profile and history features and labels.

    Attributes:
        requests: the requests as resolved against the log and profiles they were encoded from.
        windows: their histories cut to the model's `max_events`.
    """

    requests: ResolvedRequests
    windows: Windows
    events: EventFeatures
    static: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    max_events: int

    @property
    def customer_ids(self) -> pa.Array:
        return self.requests.customer_ids

    @property
    def as_of(self) -> np.ndarray:
        return self.requests.as_of

    def __len__(self) -> int:
        return len(self.requests)

    def batch(self, indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Dense arrays for requests `indices` (all when None); events left-aligned, oldest first.

        Keys: `event_type`, `channel`, `action` [B, L] int32 (0 = padding); `log_gap_seconds`,
        `log_recency_seconds`, `log_value`, `has_value` [B, L] float32; `hour`, `weekday` [B, L] int32;
        `mask` [B, L] bool; `length` [B] int32; the static blocks (`profile_categorical` [B, C] int32,
        `profile_numeric` [B, F] float32, `history` [B, H] float32) and the labels [B] float32
        (NaN = unknown).
        L is the longest history in the batch, at most `max_events`.
        """
        idx = np.arange(len(self)) if indices is None else np.asarray(indices)
        out = event_batch(self.events, self.windows.start[idx], self.windows.end[idx], self.as_of[idx])
        out.update({name: block[idx] for name, block in self.static.items()})
        out.update({name: values[idx] for name, values in self.labels.items()})
        return out


def event_batch(
    events: EventFeatures, start: np.ndarray, end: np.ndarray, as_of: np.ndarray
) -> dict[str, np.ndarray]:
    """The per-event keys of `EncodedJourneys.batch` of the sorted rows `start[i]:end[i]` seen at `as_of[i]`.

    Any slices of a customer's rows will do (self-supervised pretraining reads random sub-sequences).
    """
    lengths = end - start
    width = int(lengths.max(initial=0))
    positions = start[:, None] + np.arange(width)[None, :]
    mask = positions < end[:, None]
    rows = np.where(mask, positions, 0)
    out: dict[str, np.ndarray] = {
        name: np.where(mask, codes[rows], PAD).astype(np.int32) for name, codes in events.tokens.items()
    }
    recency = (as_of[:, None] - events.timestamps[rows]) / MICROS_PER_SECOND
    out["log_recency_seconds"] = np.where(mask, np.log1p(np.maximum(recency, 0.0)), 0.0).astype(np.float32)
    for name in ("log_gap_seconds", "log_value", "has_value"):
        out[name] = np.where(mask, getattr(events, name)[rows], 0.0).astype(np.float32)
    for name in ("hour", "weekday"):
        out[name] = np.where(mask, getattr(events, name)[rows], 0).astype(np.int32)
    out["mask"] = mask
    out["length"] = lengths.astype(np.int32)
    return out


@dataclass(frozen=True)
class JourneyEncoder:
    """Vocabularies and profile encoding learned from training data; applied to any later data.

    Serialisable with `to_dict`/`from_dict`, so the deployed model carries the exact encoding it
    was trained with.
    """

    config: JourneyConfig
    vocabularies: dict[str, Vocabulary]
    profile: ProfileEncoder
    aggregates: ScaledAggregates | None = None

    @property
    def history_dim(self) -> int:
        """Width of the per-request `history` block: `HISTORY_FEATURES` plus the aggregates, if any."""
        return len(HISTORY_FEATURES) + (self.aggregates.width if self.aggregates else 0)

    def network_sizes(self) -> dict[str, Any]:
        """The `ModelConfig` fields this encoding fixes: vocabulary sizes and input block widths."""
        return {
            "event_type_vocab": len(self.vocabularies["event_type"]),
            "channel_vocab": len(self.vocabularies["channel"]),
            "action_vocab": len(self.vocabularies["action"]),
            "profile_categorical_sizes": tuple(self.profile.categorical_sizes),
            "profile_numeric_dim": self.profile.num_numeric,
            "history_dim": self.history_dim,
        }

    @classmethod
    def fit(
        cls, log: EventLog, customers: pa.Table | None = None, config: JourneyConfig | None = None
    ) -> JourneyEncoder:
        config = config or JourneyConfig()
        vocabularies = {
            name: Vocabulary.fit(_token_column(log, name), config.min_token_count, config.max_vocabulary)
            for name in TOKEN_COLUMNS
        }
        aggregates = (
            ScaledAggregates.fit(log, config.aggregate_tokens, window_days=config.aggregate_window_days)
            if config.aggregate_features
            else None
        )
        return cls(
            config, vocabularies, ProfileEncoder.fit(customers, config.max_profile_categories), aggregates
        )

    def event_features(self, log: EventLog) -> EventFeatures:
        """Per-event features for every row of `log` (computed once, shared by all requests)."""
        tokens = {
            name: vocab.encode_codes(*log.token_codes(name)) for name, vocab in self.vocabularies.items()
        }
        hour, weekday = _calendar(log.timestamps)
        log_value, has_value = _value_features(log)
        return EventFeatures(
            tokens=tokens,
            timestamps=log.timestamps,
            log_gap_seconds=_log_gap_seconds(log.timestamps, log.offsets),
            hour=hour,
            weekday=weekday,
            log_value=log_value,
            has_value=has_value,
        )

    def encode(
        self,
        log: EventLog,
        requests: pa.Table,
        customers: pa.Table | None = None,
        labels: dict[str, np.ndarray] | None = None,
        events: EventFeatures | None = None,
    ) -> EncodedJourneys:
        """Journeys for `requests` (`customer_id`, `as_of`), built only from events before each `as_of`.

        Args:
            events: per-event features of `log`, when already computed for other requests.
        """
        return self.encode_resolved(ResolvedRequests.of(log, requests, customers), labels, events)

    def encode_resolved(
        self,
        requests: ResolvedRequests,
        labels: dict[str, np.ndarray] | None = None,
        events: EventFeatures | None = None,
    ) -> EncodedJourneys:
        """`encode` of requests already resolved against their log and profiles."""
        log, as_of = requests.log, requests.as_of
        events = events if events is not None else self.event_features(log)
        windows = requests.history.last(self.config.max_events)
        static = self.profile.encode(requests.customers, requests.profile_rows, as_of)
        static["history"] = _history_features(windows, log.timestamps, as_of)
        if self.aggregates is not None:
            aggregates = self.aggregates.transform(log, requests.customer, as_of, history=requests.history)
            static["history"] = np.concatenate([static["history"], aggregates], axis=1)
        return EncodedJourneys(
            requests=requests,
            windows=windows,
            events=events,
            static=static,
            labels=labels or {},
            max_events=self.config.max_events,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "vocabularies": {k: v.to_dict() for k, v in self.vocabularies.items()},
            "profile": self.profile.to_dict(),
            "aggregates": None if self.aggregates is None else self.aggregates.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JourneyEncoder:
        return cls(
            JourneyConfig(**data["config"]),
            {k: Vocabulary.from_dict(v) for k, v in data["vocabularies"].items()},
            ProfileEncoder.from_dict(data["profile"]),
            None if data["aggregates"] is None else ScaledAggregates.from_dict(data["aggregates"]),
        )


def _token_column(log: EventLog, name: str) -> pa.ChunkedArray | pa.Array:
    if name in log.source.column_names:
        return log.source.column(name)
    return pa.nulls(log.source.num_rows, pa.string())


def _log_gap_seconds(timestamps: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """log1p(seconds since the customer's previous event); 0 for a customer's first event.

    Seconds, not hours: touches minutes apart (a quarter of the Criteo gaps are under 10 minutes) would all
    squeeze into [0, 0.15) on an hours scale; on seconds they spread over [0, 6.5).
    """
    gaps = np.zeros(len(timestamps), dtype=np.float32)
    if len(timestamps) > 1:
        gaps[1:] = np.diff(timestamps) / MICROS_PER_SECOND
    gaps[offsets[:-1][np.diff(offsets) > 0]] = 0.0
    return np.log1p(gaps, out=gaps)


def _calendar(timestamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hour of day (0-23) and weekday (Monday = 0) in UTC, as int8."""
    # One int64 division, then cheap int32 arithmetic (hours since 1970 fit int32 until the year 2215).
    hours = (timestamps // MICROS_PER_HOUR).astype(np.int32)
    weekday = (hours // 24 + 3) % 7  # 1970-01-01 was a Thursday
    return (hours % 24).astype(np.int8), weekday.astype(np.int8)


def _value_features(log: EventLog) -> tuple[np.ndarray, np.ndarray]:
    """Signed log1p of the monetary value and a has-value flag, float32, in sorted order."""
    values, present = log.values
    log_value = np.sign(values) * np.log1p(np.abs(values))
    return log_value.astype(np.float32), present.astype(np.float32)


def _history_features(windows: Windows, timestamps: np.ndarray, as_of: np.ndarray) -> np.ndarray:
    has_history = windows.end > windows.first
    last = timestamps[np.maximum(windows.end - 1, 0)] if len(timestamps) else np.zeros_like(as_of)
    first = timestamps[np.minimum(windows.first, max(len(timestamps) - 1, 0))] if len(timestamps) else last
    days_since_last = np.where(has_history, (as_of - last) / MICROS_PER_DAY, 0.0)
    days_since_first = np.where(has_history, (as_of - first) / MICROS_PER_DAY, 0.0)
    features = np.stack(
        [
            np.log1p(windows.total_before),
            np.log1p(np.maximum(days_since_last, 0.0)),
            np.log1p(np.maximum(days_since_first, 0.0)),
            has_history,
        ],
        axis=1,
    )
    return features.astype(np.float32)
