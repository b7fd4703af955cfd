"""Journey building: point-in-time windows, sequence encoding, labels from rules, serialisation."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from unittest.mock import patch

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nextbest.data import CUSTOMERS, DECISIONS, LABELS, load_events, load_table
from nextbest.journeys import (
    JourneyConfig,
    JourneyEncoder,
    LabelRules,
    Vocabulary,
    labels_from_frame,
    labels_from_rules,
    requests_at_cutoffs,
    requests_at_end,
)
from nextbest.journeys.encoder import HISTORY_FEATURES
from nextbest.journeys.vocab import MISSING, PAD, UNKNOWN
from nextbest.journeys.windows import segmented_searchsorted
from nextbest.simulate import SimulationConfig, simulate

UTC_US = pa.timestamp("us", tz="UTC")
EVENT_TYPES = ["page_view", "email_open", "purchase", "complaint", "email_sent"]
HOUR = 3_600_000_000
DAY = 24 * HOUR


def events_table(rows: list[tuple[str, int, str]]) -> pa.Table:
    """Events from (customer_id, hour offset, event_type) triples, starting 2026-01-05 (a Monday)."""
    origin = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp() * 1_000_000)
    return pa.table(
        {
            "customer_id": pa.array([r[0] for r in rows], pa.string()),
            "timestamp": pa.array([origin + r[1] * HOUR for r in rows], pa.int64()).cast(UTC_US),
            "event_type": pa.array([r[2] for r in rows], pa.string()),
            "channel": pa.array(["web" if r[1] % 2 else None for r in rows], pa.string()),
        }
    )


def requests_table(rows: list[tuple[str, int]], origin: int) -> pa.Table:
    return pa.table(
        {
            "customer_id": pa.array([r[0] for r in rows], pa.string()),
            "as_of": pa.array([origin + r[1] * HOUR for r in rows], pa.int64()).cast(UTC_US),
        }
    )


event_rows = st.lists(
    st.tuples(st.sampled_from("abcd"), st.integers(0, 200), st.sampled_from(EVENT_TYPES)),
    min_size=1,
    max_size=60,
)
request_rows = st.lists(st.tuples(st.sampled_from("abcde"), st.integers(-5, 210)), min_size=1, max_size=20)


@settings(max_examples=150, deadline=None)
@given(rows=event_rows, requests=request_rows, max_events=st.integers(1, 6))
def test_history_holds_exactly_the_last_events_strictly_before_as_of(
    rows: list[tuple[str, int, str]], requests: list[tuple[str, int]], max_events: int
) -> None:
    """Point-in-time correctness: nothing at or after as_of leaks in; nothing before it within N is lost."""
    table = events_table(rows)
    log = load_events(table)
    origin = int(pc_min_timestamp(table))
    origin -= origin % HOUR  # hour offsets in `rows` count from this instant
    encoder = JourneyEncoder.fit(log, config=JourneyConfig(max_events=max_events))
    journeys = encoder.encode(log, requests_table(requests, origin))
    batch = journeys.batch()
    frame = log.to_table().to_pandas()
    frame["micros"] = log.timestamps
    for i, (customer, hours) in enumerate(requests):
        as_of = origin + hours * HOUR
        before = frame[(frame.customer_id == customer) & (frame.micros < as_of)].tail(max_events)
        window = slice(journeys.windows.start[i], journeys.windows.end[i])
        assert list(log.timestamps[window]) == list(before.micros)
        assert (log.timestamps[window] < as_of).all()
        assert batch["length"][i] == len(before)
        decoded = encoder.vocabularies["event_type"].decode(batch["event_type"][i, : len(before)])
        assert decoded == list(before.event_type)
        all_before = ((frame.customer_id == customer) & (frame.micros < as_of)).sum()
        assert batch["history"][i, 0] == pytest.approx(np.log1p(all_before))


def pc_min_timestamp(table: pa.Table) -> int:
    return int(min(table.column("timestamp").cast(pa.int64()).to_pylist()))


@settings(max_examples=100, deadline=None)
@given(rows=event_rows, requests=request_rows, max_events=st.integers(1, 6))
def test_padded_batch_is_consistent(
    rows: list[tuple[str, int, str]], requests: list[tuple[str, int]], max_events: int
) -> None:
    """Sequence encoding: mask matches lengths, padding is zero, recency and gaps are finite and >= 0."""
    table = events_table(rows)
    log = load_events(table)
    origin = pc_min_timestamp(table)
    encoder = JourneyEncoder.fit(log, config=JourneyConfig(max_events=max_events))
    batch = encoder.encode(log, requests_table(requests, origin)).batch()
    width = batch["mask"].shape[1]
    assert width <= max_events
    assert (batch["mask"].sum(axis=1) == batch["length"]).all()
    assert (batch["mask"] == (np.arange(width)[None, :] < batch["length"][:, None])).all()
    for name in ("event_type", "channel", "action", "hour", "weekday"):
        assert (batch[name][~batch["mask"]] == PAD).all()
        assert (batch[name][batch["mask"]] != PAD).all() or name in ("hour", "weekday")
    for name in ("log_recency_seconds", "log_gap_seconds", "log_value"):
        assert np.isfinite(batch[name]).all()
        assert (batch[name][~batch["mask"]] == 0).all()
    assert (batch["log_recency_seconds"] >= 0).all()
    assert (batch["log_gap_seconds"] >= 0).all()
    assert ((batch["weekday"] >= 0) & (batch["weekday"] < 7)).all()
    # Within a history, recency never increases from older to newer events.
    recency = np.where(batch["mask"], batch["log_recency_seconds"], -np.inf)
    older, newer = recency[:, :-1], recency[:, 1:]
    assert ((older >= newer) | ~batch["mask"][:, 1:]).all()


@given(
    segments=st.lists(st.lists(st.integers(0, 50), max_size=12).map(sorted), min_size=1, max_size=8),
    targets=st.lists(st.tuples(st.integers(0, 7), st.integers(-2, 52)), min_size=1, max_size=20),
    side=st.sampled_from(["left", "right"]),
)
def test_segmented_searchsorted_equals_numpy_per_segment(
    segments: list[list[int]], targets: list[tuple[int, int]], side: str
) -> None:
    values = np.array([v for s in segments for v in s], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in segments])])
    seg = np.array([t[0] % len(segments) for t in targets])
    target = np.array([t[1] for t in targets], dtype=np.int64)
    found = segmented_searchsorted(values, offsets[seg], offsets[seg + 1], target, side)
    expected = [
        offsets[s] + np.searchsorted(np.array(segments[s], dtype=np.int64), t, side=side)  # type: ignore[call-overload]
        for s, t in zip(seg, target, strict=True)
    ]
    assert list(found) == expected


@settings(max_examples=100, deadline=None)
@given(rows=event_rows, requests=request_rows, horizon=st.integers(1, 80), inactivity=st.integers(1, 80))
def test_rule_labels_match_a_brute_force_reading(
    rows: list[tuple[str, int, str]], requests: list[tuple[str, int]], horizon: int, inactivity: int
) -> None:
    """Conversion/churn from the events after as_of; unknown (NaN) only when the window is cut off."""
    table = events_table(rows)
    log = load_events(table)
    origin = pc_min_timestamp(table)
    reqs = requests_table(requests, origin)
    as_of = np.asarray(reqs.column("as_of").cast(pa.int64()))
    rules = LabelRules("purchase", horizon / 24, inactivity / 24)
    labels = labels_from_rules(log, log.index_of(reqs.column("customer_id").combine_chunks()), as_of, rules)
    frame = log.to_table().to_pandas()
    frame["micros"] = log.timestamps
    until = int(log.timestamps.max()) + 1
    for i, (customer, _) in enumerate(requests):
        mine = frame[frame.customer_id == customer]
        conv_window = mine[(mine.micros >= as_of[i]) & (mine.micros < as_of[i] + horizon * HOUR)]
        converted = bool((conv_window.event_type == "purchase").any())
        churn_window = mine[(mine.micros >= as_of[i]) & (mine.micros < as_of[i] + inactivity * HOUR)]
        active = bool((churn_window.event_type != "email_sent").any())  # a business send is not activity
        expect_conv = 1.0 if converted else (0.0 if as_of[i] + horizon * HOUR <= until else np.nan)
        expect_churn = 0.0 if active else (1.0 if as_of[i] + inactivity * HOUR <= until else np.nan)
        np.testing.assert_equal(labels["conversion"][i], expect_conv)
        np.testing.assert_equal(labels["churn"][i], expect_churn)


def test_rule_labels_reproduce_the_simulated_outcomes() -> None:
    """The simulator's logged outcomes are exactly what the default label rules read off its events."""
    world = simulate(SimulationConfig(n_customers=500, seed=3))
    log = load_events(world.events)
    decisions = load_table(world.decisions, DECISIONS)
    as_of = np.asarray(decisions.column("timestamp").cast(pa.int64()))
    customer = log.index_of(decisions.column("customer_id").combine_chunks())
    labels = labels_from_rules(log, customer, as_of, LabelRules())
    np.testing.assert_array_equal(labels["conversion"], decisions.column("converted").to_numpy())
    np.testing.assert_array_equal(labels["churn"], decisions.column("churned").to_numpy())


def test_label_frame_outcomes_become_float_labels_with_nan_for_missing() -> None:
    frame = load_table(
        pa.table({"customer_id": ["a", "b", "c"], "as_of": ["2026-01-01"] * 3, "churn": [1, None, 0]}), LABELS
    )
    labels = labels_from_frame(frame)
    np.testing.assert_array_equal(labels["churn"], [1.0, np.nan, 0.0])
    assert np.isnan(labels["conversion"]).all()  # no conversion column: unknown for every row


def test_churn_event_rule_counts_only_that_event() -> None:
    log = load_events(events_table([("a", 0, "page_view"), ("a", 30, "complaint"), ("b", 0, "page_view")]))
    as_of = np.array([log.timestamps[0] + HOUR] * 2)
    rules = LabelRules(churn_event="complaint", churn_inactivity_days=2.0)
    labels = labels_from_rules(log, np.array([0, 1]), as_of, rules, observed_until=int(as_of[0] + 10 * DAY))
    assert list(labels["churn"]) == [1.0, 0.0]


def test_unseen_tokens_map_to_unknown_and_nulls_to_missing() -> None:
    vocab = Vocabulary.fit(pa.array(["web", "web", "app", None]))
    assert vocab.tokens == ("web", "app")
    codes = vocab.encode(pa.array(["app", "fax", None, "web"]))
    assert list(codes) == [4, UNKNOWN, MISSING, 3]
    with patch("nextbest.journeys.vocab.LOOKUP_LIMIT", 0):  # Arrow's lookup, as for large dictionaries
        assert list(vocab.encode(pa.array(["app", "fax", None, "web"]))) == list(codes)
    assert vocab.decode(codes) == ["app", "<unk>", "<none>", "web"]


def test_vocabulary_respects_min_count_and_max_size() -> None:
    values = pa.array(["a"] * 5 + ["b"] * 3 + ["c"] * 3 + ["d"])
    assert Vocabulary.fit(values, min_count=2).tokens == ("a", "b", "c")
    assert Vocabulary.fit(values, max_size=2).tokens == ("a", "b")


def test_profile_features_cover_categories_numbers_tenure_and_missing_customers() -> None:
    log = load_events(events_table([("a", 0, "page_view"), ("b", 1, "purchase")]))
    customers = load_table(
        pa.table(
            {
                "customer_id": ["a", "b"],
                "segment": ["gold", "silver"],
                "age": [30.0, None],
                "signup": pa.array([datetime(2025, 1, 5), datetime(2025, 12, 31)], pa.timestamp("us")),
            }
        ),
        CUSTOMERS,
    )
    encoder = JourneyEncoder.fit(log, customers)
    requests = requests_table([("a", 100), ("b", 100), ("z", 100)], pc_min_timestamp(log.to_table()))
    batch = encoder.encode(log, requests, customers).batch()
    segment = encoder.profile.categorical["segment"]
    assert encoder.profile.categorical_sizes == [len(segment)]
    assert batch["profile_categorical"][:, 0].tolist() == [
        segment.encode(pa.array(["gold"]))[0],
        segment.encode(pa.array(["silver"]))[0],
        MISSING,
    ]
    numeric = batch["profile_numeric"]
    assert numeric.shape == (3, 4)  # (age, missing flag, days since signup, missing flag)
    assert numeric[:, 1].tolist() == [0.0, 1.0, 1.0]
    assert numeric[:, 3].tolist() == [0.0, 0.0, 1.0]
    assert numeric[0, 2] > numeric[1, 2]  # a signed up earlier: longer tenure
    assert batch["length"].tolist() == [1, 1, 0]
    assert batch["history"].shape == (3, encoder.history_dim)
    assert batch["history"][2, : len(HISTORY_FEATURES)].tolist() == [0.0, 0.0, 0.0, 0.0]
    # A profile table without a column the encoder knows reads as that attribute missing for everyone.
    without = encoder.encode(log, requests, customers.drop_columns(["signup", "age"])).batch()
    assert without["profile_numeric"][:, 1::2].tolist() == [[1.0, 1.0]] * 3
    assert without["profile_numeric"][:, 0::2].tolist() == [[0.0, 0.0]] * 3


def test_history_aggregates_are_standardised_and_optional() -> None:
    rows = [("a", 0, "page_view"), ("a", 5, "purchase"), ("b", 1, "purchase"), ("c", 2, "email_open")]
    log = load_events(events_table(rows))
    requests = requests_table([("a", 100), ("b", 100), ("c", 100)], pc_min_timestamp(log.to_table()))
    encoder = JourneyEncoder.fit(log)
    assert encoder.aggregates is not None
    history = encoder.encode(log, requests).batch()["history"]
    assert history.shape == (3, len(HISTORY_FEATURES) + encoder.aggregates.width)
    assert np.isfinite(history).all()
    # Scaled on every customer as of the end of its events: there, each column has mean 0.
    at_end = encoder.encode(log, requests_at_end(log)).batch()["history"][:, len(HISTORY_FEATURES) :]
    np.testing.assert_allclose(at_end.mean(axis=0), 0.0, atol=1e-5)
    plain = JourneyEncoder.fit(log, config=JourneyConfig(aggregate_features=False))
    assert plain.history_dim == len(HISTORY_FEATURES)
    assert plain.encode(log, requests).batch()["history"].shape == (3, len(HISTORY_FEATURES))


def test_encoder_round_trips_through_json() -> None:
    log = load_events(events_table([("a", 0, "page_view"), ("a", 5, "purchase"), ("b", 1, "complaint")]))
    encoder = JourneyEncoder.fit(log, config=JourneyConfig(max_events=3))
    restored = JourneyEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))
    assert restored == encoder
    requests = requests_at_end(log)
    first, second = encoder.encode(log, requests).batch(), restored.encode(log, requests).batch()
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])


def test_request_builders() -> None:
    log = load_events(events_table([("a", 0, "page_view"), ("a", 48, "purchase"), ("b", 30, "page_view")]))
    at_end = requests_at_end(log).to_pandas()
    assert at_end.customer_id.tolist() == ["a", "b"]
    # Just after each customer's last event, so that every event counts in its history.
    assert at_end.as_of.tolist() == [
        pd.Timestamp("2026-01-07T00:00:00.000001Z"),
        pd.Timestamp("2026-01-06T06:00:00.000001Z"),
    ]
    cutoff = datetime(2026, 1, 6, tzinfo=UTC)  # 24 h after the first event: only a is active by then
    assert requests_at_cutoffs(log, [cutoff]).column("customer_id").to_pylist() == ["a"]
    naive = requests_at_cutoffs(log, [cutoff.replace(tzinfo=None)])  # a naive cutoff is UTC, as in the data
    assert naive.equals(requests_at_cutoffs(log, [cutoff]))
    journeys = JourneyEncoder.fit(log).encode(log, requests_at_end(log))
    assert journeys.batch()["length"].tolist() == [2, 1]
