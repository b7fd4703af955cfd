"""History aggregates: equal to a brute-force pandas computation, point-in-time, empty cases, round trip."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from unittest import mock

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from nextbest.data.events import EventLog
from nextbest.journeys import aggregates
from nextbest.journeys.aggregates import AggregateFeaturizer

UTC_US = pa.timestamp("us", tz="UTC")
HOUR = 3_600_000_000
DAY = 24 * HOUR
ORIGIN = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp() * 1_000_000)

# (customer, hour offset, event_type, channel, action, value); offsets in 0..5 make ties frequent.
Row = tuple[str, int, str, str | None, str | None, float | None]
event_row = st.tuples(
    st.sampled_from("abc"),
    st.one_of(st.integers(0, 5), st.integers(0, 1_000)),
    st.sampled_from(["page_view", "email_open", "purchase"]),
    st.sampled_from(["web", "app", "email", None]),
    st.sampled_from(["offer", "discount", "call_back", None]),
    st.one_of(st.none(), st.floats(-100, 1_000, allow_nan=False)),
)
event_rows = st.lists(event_row, min_size=1, max_size=40)
# Customer "d" never has events; offsets reach before the first and after the last possible event.
request_rows = st.lists(st.tuples(st.sampled_from("abcd"), st.integers(-5, 1_010)), max_size=12)


def make_log(rows: list[Row]) -> EventLog:
    table = pa.table(
        {
            "customer_id": pa.array([r[0] for r in rows], pa.string()),
            "timestamp": pa.array([ORIGIN + r[1] * HOUR for r in rows], pa.int64()).cast(UTC_US),
            "event_type": pa.array([r[2] for r in rows], pa.string()),
            "channel": pa.array([r[3] for r in rows], pa.string()),
            "action": pa.array([r[4] for r in rows], pa.string()),
            "value": pa.array([r[5] for r in rows], pa.float64()),
        }
    )
    return EventLog.from_normalised(table)


def transform(
    featurizer: AggregateFeaturizer, log: EventLog, requests: list[tuple[str, int]]
) -> tuple[np.ndarray, list[str]]:
    customers = pa.array([r[0] for r in requests], pa.string())
    as_of = np.array([ORIGIN + r[1] * HOUR for r in requests], dtype=np.int64)
    return featurizer.transform(log, log.index_of(customers), as_of)


def brute_force(
    frame: pd.DataFrame, featurizer: AggregateFeaturizer, customer: str, as_of: int
) -> dict[str, float]:
    """Every feature of one request, straight from its definition on the events before `as_of`."""
    features = dict.fromkeys(featurizer.feature_names, 0.0)
    history = frame[(frame["customer_id"] == customer) & (frame["micros"] < as_of)]
    n = len(history)
    if n == 0:
        return features
    micros = history["micros"]
    values = history["value"].dropna()
    gaps = micros.diff().dropna() / HOUR
    features.update(
        {
            "has_history": 1.0,
            "recency_days": (as_of - micros.max()) / DAY,
            "tenure_days": (as_of - micros.min()) / DAY,
            "log1p_event_count": np.log1p(n),
            "value_sum": values.sum(),
            "value_mean": values.mean() if len(values) else 0.0,
            "value_max": values.max() if len(values) else 0.0,
            "gap_hours_mean": gaps.mean() if len(gaps) else 0.0,
            "gap_hours_min": gaps.min() if len(gaps) else 0.0,
            "gap_hours_max": gaps.max() if len(gaps) else 0.0,
            "distinct_channels": history["channel"].nunique(),
            "distinct_actions": history["action"].nunique(),
        }
    )
    for days in (1, 7, 30):
        features[f"events_last_{days}d"] = float((micros >= as_of - days * DAY).sum())
    for column, vocab in featurizer.vocabularies.items():
        tokens = [
            "<none>" if t is None else t if t in vocab.tokens else "<unk>" for t in history[column].tolist()
        ]
        for token, count in pd.Series(tokens).value_counts().items():
            features[f"count:{column}={token}"] = float(count)
            features[f"share:{column}={token}"] = count / n
        # The first and last events in the log's order: by time, ties in file order.
        features[f"first:{column}={tokens[0]}"] = 1.0
        features[f"last:{column}={tokens[-1]}"] = 1.0
        for days in featurizer.window_days:
            recent = [t for t, m in zip(tokens, micros, strict=True) if m >= as_of - days * DAY]
            for token, count in pd.Series(recent, dtype=object).value_counts().items():
                features[f"count_{days}d:{column}={token}"] = float(count)
    return features


@settings(max_examples=150, deadline=None)
@given(
    rows=event_rows,
    requests=request_rows,
    max_tokens=st.integers(0, 3),
    chunk_rows=st.integers(1, 50),
    window_days=st.sampled_from([(), (1, 30)]),
)
def test_every_aggregate_equals_a_brute_force_computation(
    rows: list[Row],
    requests: list[tuple[str, int]],
    max_tokens: int,
    chunk_rows: int,
    window_days: tuple[int, ...],
) -> None:
    """max_tokens 0 gives empty vocabularies; small chunks split the requests into several chunks."""
    log = make_log(rows)
    featurizer = AggregateFeaturizer.fit(log, max_tokens=max_tokens, window_days=window_days)
    with mock.patch.object(aggregates, "CHUNK_ROWS", chunk_rows):
        matrix, names = transform(featurizer, log, requests)
    assert matrix.dtype == np.float32
    assert matrix.shape == (len(requests), len(names))
    assert len(set(names)) == len(names)
    # The log's own sorted, de-duplicated rows are the ground truth (identical rows are kept once).
    frame = log.to_table().to_pandas()
    frame["micros"] = log.timestamps
    for row, (customer, hours) in enumerate(requests):
        expected = brute_force(frame, featurizer, customer, ORIGIN + hours * HOUR)
        np.testing.assert_allclose(
            matrix[row], [expected[name] for name in names], rtol=1e-6, atol=1e-6, err_msg=str(requests[row])
        )


@settings(max_examples=100, deadline=None)
@given(
    rows=event_rows,
    request=st.tuples(st.sampled_from("abcd"), st.integers(-5, 1_010)),
    later=st.lists(st.tuples(st.integers(0, 500), st.sampled_from(["purchase", "complaint"])), min_size=1),
)
def test_events_at_or_after_as_of_never_change_the_features(
    rows: list[Row], request: tuple[str, int], later: list[tuple[int, str]]
) -> None:
    customer, hours = request
    log = make_log(rows)
    featurizer = AggregateFeaturizer.fit(log)
    future: list[Row] = [(customer, hours + delay, kind, "sms", "offer", 1e6) for delay, kind in later]
    before, _ = transform(featurizer, log, [request])
    after, _ = transform(featurizer, make_log(rows + future), [request])
    np.testing.assert_array_equal(before, after)


def test_requests_without_history_get_zeros_and_no_requests_an_empty_matrix() -> None:
    log = make_log([("a", 10, "page_view", "web", None, 5.0), ("a", 20, "purchase", "web", "offer", 9.0)])
    featurizer = AggregateFeaturizer.fit(log)
    # Unknown customer; before the first event; exactly at the first event (strictly before is empty).
    matrix, names = transform(featurizer, log, [("z", 30), ("a", 5), ("a", 10), ("a", 11)])
    assert not matrix[:3].any()
    assert matrix[3, names.index("has_history")] == 1.0
    assert matrix[3, names.index("count:event_type=page_view")] == 1.0
    empty, empty_names = transform(featurizer, log, [])
    assert empty.shape == (0, len(names))
    assert empty_names == names


def test_recent_windows_include_their_first_instant() -> None:
    """An event exactly 1, 7 or 30 days before as_of is in the last 1, 7 or 30 days."""
    as_of_hours = 1_000
    rows: list[Row] = [
        ("a", as_of_hours - 24 * days, "page_view", "web", None, None) for days in (1, 7, 30, 31)
    ]
    log = make_log(rows)
    matrix, names = transform(AggregateFeaturizer.fit(log), log, [("a", as_of_hours)])
    features = dict(zip(names, matrix[0], strict=True))
    assert [features[f"events_last_{days}d"] for days in (1, 7, 30)] == [1.0, 2.0, 3.0]
    assert features["recency_days"] == 1.0
    assert features["tenure_days"] == 31.0


def test_an_empty_log_gives_empty_vocabularies_and_zero_features() -> None:
    table = pa.table(
        {
            "customer_id": pa.array([], pa.string()),
            "timestamp": pa.array([], UTC_US),
            "event_type": pa.array([], pa.string()),
        }
    )
    log = EventLog.from_normalised(table)
    featurizer = AggregateFeaturizer.fit(log)
    assert all(len(vocab.tokens) == 0 for vocab in featurizer.vocabularies.values())
    matrix, names = transform(featurizer, log, [("a", 0), ("b", 3)])
    assert matrix.shape == (2, len(names))
    assert not matrix.any()


def test_missing_optional_columns_count_as_nulls() -> None:
    table = pa.table(
        {
            "customer_id": pa.array(["a", "a"], pa.string()),
            "timestamp": pa.array([ORIGIN, ORIGIN + HOUR], pa.int64()).cast(UTC_US),
            "event_type": pa.array(["page_view", "purchase"], pa.string()),
        }
    )
    log = EventLog.from_normalised(table)
    featurizer = AggregateFeaturizer.fit(log)
    matrix, names = transform(featurizer, log, [("a", 2)])
    features = dict(zip(names, matrix[0], strict=True))
    assert features["count:channel=<none>"] == 2.0
    assert features["value_sum"] == 0.0
    assert features["distinct_actions"] == 0.0
    assert features["gap_hours_max"] == 1.0


@settings(max_examples=30, deadline=None)
@given(rows=event_rows, requests=request_rows, max_tokens=st.integers(0, 3))
def test_serialisation_round_trip_gives_the_same_features(
    rows: list[Row], requests: list[tuple[str, int]], max_tokens: int
) -> None:
    log = make_log(rows)
    featurizer = AggregateFeaturizer.fit(log, max_tokens=max_tokens, window_days=(7,))
    restored = AggregateFeaturizer.from_dict(json.loads(json.dumps(featurizer.to_dict())))
    assert restored == featurizer
    assert restored.feature_names == featurizer.feature_names
    np.testing.assert_array_equal(
        transform(restored, log, requests)[0], transform(featurizer, log, requests)[0]
    )


def test_a_featurizer_saved_before_windowed_counts_has_none() -> None:
    log = make_log([("a", 10, "page_view", "web", None, 5.0)])
    saved = AggregateFeaturizer.fit(log).to_dict()
    del saved["window_days"]
    assert AggregateFeaturizer.from_dict(saved) == AggregateFeaturizer.fit(log)


def test_windowed_counts_include_their_first_instant() -> None:
    rows: list[Row] = [("a", 1_000 - 24 * days, "page_view", "web", None, None) for days in (7, 8)]
    log = make_log(rows)
    matrix, names = transform(AggregateFeaturizer.fit(log, window_days=(7,)), log, [("a", 1_000)])
    features = dict(zip(names, matrix[0], strict=True))
    assert features["count_7d:event_type=page_view"] == 1.0
    assert features["count:event_type=page_view"] == 2.0
