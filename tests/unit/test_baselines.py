"""Metrics agree with scikit-learn; the aggregate baselines learn, ignore unknown labels, run on Criteo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from nextbest.adapters.criteo import read_criteo
from nextbest.data import load_events
from nextbest.data.events import EventLog
from nextbest.evaluation import evaluate_binary
from nextbest_training.baselines import KINDS, BaselineKind, BaselineModel

UTC_US = pa.timestamp("us", tz="UTC")
DAY = 86_400 * 1_000_000
START = 1_767_225_600 * 1_000_000  # 2026-01-01T00:00:00Z
# These fits are tiny: OpenMP thread synchronisation at every tree iteration costs more than it saves, and
# far more when other jobs share the cores.
THREADS = 1

# Scores from a handful of values, so that ties are common; NaN labels are unknown.
labelled = st.lists(
    st.tuples(st.sampled_from([0.0, 1.0, np.nan]), st.sampled_from([0.01, 0.2, 0.2, 0.5, 0.7, 0.99])),
    min_size=1,
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(pairs=labelled)
def test_metrics_equal_scikit_learn(pairs: list[tuple[float, float]]) -> None:
    labels, scores = (np.array(column) for column in zip(*pairs, strict=True))
    result = evaluate_binary(labels, scores)
    known = ~np.isnan(labels)
    y, p = labels[known], scores[known]
    assert result["count"] == known.sum()
    if len(np.unique(y)) == 2:
        assert result["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    else:
        assert np.isnan(result["roc_auc"])
    if y.sum() > 0:
        assert result["average_precision"] == pytest.approx(skm.average_precision_score(y, p))
    else:
        assert np.isnan(result["average_precision"])
    if len(y):
        assert result["log_loss"] == pytest.approx(skm.log_loss(y, p, labels=[0, 1]))
        assert result["brier"] == pytest.approx(skm.brier_score_loss(y, p, pos_label=1))


def test_metrics_on_many_random_scores_with_ties_and_extreme_probabilities() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(5_000) < 0.2).astype(float)
    p = np.clip(np.round(rng.random(5_000) * 0.6 + 0.4 * y, 2), 0.0, 1.0)  # rounded: ties; 0 and 1 occur
    result = evaluate_binary(y, p)
    assert result["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert result["average_precision"] == pytest.approx(skm.average_precision_score(y, p))
    assert result["log_loss"] == pytest.approx(skm.log_loss(y, p))
    assert result["brier"] == pytest.approx(skm.brier_score_loss(y, p))


def test_metrics_without_labels_are_nan() -> None:
    result = evaluate_binary(np.array([np.nan, np.nan]), np.array([0.3, 0.4]))
    assert result["count"] == 0
    assert all(np.isnan(result[name]) for name in ("roc_auc", "average_precision", "log_loss", "brier"))


def synthetic(num_customers: int, seed: int) -> tuple[EventLog, np.ndarray, np.ndarray, np.ndarray]:
    """Customers who go on to convert click e-mails more and were active more recently.

    Returns:
        The log, per request its customer index and as_of, and the conversion labels.
    """
    rng = np.random.default_rng(seed)
    converts = rng.random(num_customers) < 0.3
    lengths = rng.integers(1, 9, num_customers)
    customer = np.repeat(np.arange(num_customers), lengths)
    will_convert = converts[customer]
    clicks = rng.random(len(customer)) < np.where(will_convert, 0.6, 0.15)
    days_before = rng.exponential(np.where(will_convert, 3.0, 12.0))
    as_of = START + 60 * DAY
    table = pa.table(
        {
            "customer_id": pa.array([f"c{c:05d}" for c in customer], pa.string()),
            "timestamp": pa.array(as_of - (days_before * DAY).astype(np.int64) - 1, pa.int64()).cast(UTC_US),
            "event_type": pa.array(np.where(clicks, "email_click", "page_view"), pa.string()),
            "channel": pa.array(np.where(clicks, "email", "web"), pa.string()),
        }
    )
    log = load_events(table)
    index = log.index_of(pa.array([f"c{c:05d}" for c in range(num_customers)], pa.string()))
    return log, index, np.full(num_customers, as_of, dtype=np.int64), converts.astype(np.float64)


@pytest.mark.parametrize("kind", KINDS)
def test_baseline_learns_a_simple_signal(kind: BaselineKind) -> None:
    log, index, as_of, y = synthetic(3_000, seed=1)
    train, test = slice(0, 2_000), slice(2_000, None)
    labels = {"conversion": y[train], "churn": np.full(2_000, np.nan)}
    model = BaselineModel(kind, n_threads=THREADS).fit(log, index[train], as_of[train], labels)
    assert model.outcomes == ("conversion",)
    assert "churn" in model.skipped  # no known label
    probabilities = model.predict_proba(log, index[test], as_of[test])["conversion"]
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    assert evaluate_binary(y[test], probabilities)["roc_auc"] > 0.8


def test_windowed_counts_reach_the_baselines_features() -> None:
    log, index, as_of, y = synthetic(300, seed=4)
    model = BaselineModel("logistic", window_days=(7, 30), n_threads=THREADS).fit(
        log, index, as_of, {"conversion": y}
    )
    assert model.featurizer is not None
    assert model.featurizer.window_days == (7, 30)
    assert any(name.startswith("count_30d:") for name in model.featurizer.feature_names)


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_labels_are_left_out_of_the_fit(kind: BaselineKind) -> None:
    """Fitting with NaN labels equals fitting on the labelled requests alone."""
    log, index, as_of, y = synthetic(1_500, seed=2)
    unknown = np.random.default_rng(3).random(len(y)) < 0.3
    with_nan = BaselineModel(kind, n_threads=THREADS).fit(
        log, index, as_of, {"conversion": np.where(unknown, np.nan, y)}
    )
    known = ~unknown
    labelled_only = BaselineModel(kind, n_threads=THREADS).fit(
        log, index[known], as_of[known], {"conversion": y[known]}
    )
    np.testing.assert_allclose(
        with_nan.predict_proba(log, index, as_of)["conversion"],
        labelled_only.predict_proba(log, index, as_of)["conversion"],
    )


def test_no_requests_get_no_probabilities_and_unknown_kinds_are_rejected() -> None:
    log, index, as_of, y = synthetic(300, seed=4)
    model = BaselineModel("logistic", n_threads=THREADS).fit(log, index, as_of, {"conversion": y})
    empty = model.predict_proba(log, index[:0], as_of[:0])
    assert empty["conversion"].shape == (0,)
    with pytest.raises(ValueError, match="unknown baseline kind"):
        BaselineModel("forest")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="before fit"):
        BaselineModel("gbt").predict_proba(log, index, as_of)


def test_baselines_fit_and_predict_on_a_criteo_slice(shared_data: Path) -> None:
    """Both classes subsampled from the whole file (it lists every unconverted journey first)."""
    ds = read_criteo(shared_data / "criteo_attribution" / "train_journeys.jsonl")
    rng = np.random.default_rng(0)
    converted = np.asarray(ds.labels["conversion"].to_numpy()) == 1
    picked = np.concatenate(
        [
            rng.choice(np.flatnonzero(converted), 600, replace=False),
            rng.choice(np.flatnonzero(~converted), 1_800),
        ]
    )
    labels = ds.labels.take(pa.array(np.sort(picked)))
    ids = labels["customer_id"].combine_chunks()
    log = load_events(ds.events.filter(pc.is_in(ds.events["customer_id"], value_set=ids)))
    index = log.index_of(ids)
    as_of = np.asarray(pc.cast(labels["as_of"], pa.int64()).to_numpy())
    y = np.asarray(labels["conversion"].to_numpy(), dtype=np.float64)
    # Held out by user: a user's journeys overlap in time.
    assert ds.customers is not None
    users = ds.customers["user_id"].take(pc.index_in(ids, value_set=ds.customers["customer_id"]))
    test = np.asarray(users.to_numpy()) % 4 == 0
    for kind in KINDS:
        model = BaselineModel(kind, n_threads=THREADS).fit(
            log, index[~test], as_of[~test], {"conversion": y[~test]}
        )
        probabilities = model.predict_proba(log, index[test], as_of[test])["conversion"]
        assert probabilities.shape == (int(test.sum()),)
        assert evaluate_binary(y[test], probabilities)["roc_auc"] > 0.75, kind
