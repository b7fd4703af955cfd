"""Paired comparisons of two outcome models: intervals over whole customers, exact in the degenerate
cases, antisymmetric in the two models, and pooled over seeds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nextbest.evaluation import log_loss, roc_auc
from nextbest.evaluation.ope import Estimate
from nextbest.evaluation.paired import PairedDifference, paired_differences, pool_seeds


def rows(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels, two models' probabilities (the first the sharper) and customers of ~3 rows each."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(float)
    sharp = np.clip(0.3 + 0.3 * labels + rng.normal(0, 0.15, n), 0.01, 0.99)
    blunt = np.clip(0.3 + 0.1 * labels + rng.normal(0, 0.15, n), 0.01, 0.99)
    return labels, sharp, blunt, rng.integers(0, n // 3, n)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000))
def test_identical_models_differ_by_exactly_zero(seed: int) -> None:
    labels, model, _, groups = rows(seed)
    for difference in paired_differences(labels, model, model, groups, resamples=50).values():
        assert difference.difference == Estimate(0.0, 0.0, 0.0)
        assert difference.verdict == "neither"


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000))
def test_swapping_the_models_negates_the_difference_and_its_interval(seed: int) -> None:
    labels, sharp, blunt, groups = rows(seed)
    forward = paired_differences(labels, sharp, blunt, groups, resamples=50, seed=seed)
    backward = paired_differences(labels, blunt, sharp, groups, resamples=50, seed=seed)
    for metric, there in forward.items():
        back = backward[metric].difference
        assert back.value == pytest.approx(-there.difference.value)
        assert (back.low, back.high) == pytest.approx((-there.difference.high, -there.difference.low))


def test_points_are_the_metrics_of_all_rows_and_one_customer_gives_no_spread() -> None:
    """With every row one customer's, every resample is the whole set: the interval is the point, and the
    resampled AUC and log loss are the metrics' own."""
    labels, sharp, blunt, _ = rows(1)
    result = paired_differences(labels, sharp, blunt, np.zeros(len(labels)), resamples=20)
    auc = result["roc_auc"]
    assert (auc.model, auc.baseline) == (roc_auc(labels, sharp), roc_auc(labels, blunt))
    assert auc.difference.low == pytest.approx(auc.difference.value)
    assert auc.difference.high == pytest.approx(auc.difference.value)
    loss = result["log_loss"]
    assert loss.difference.value == pytest.approx(log_loss(labels, sharp) - log_loss(labels, blunt))
    assert loss.difference.low == pytest.approx(loss.difference.value)


def test_a_customers_rows_are_resampled_together() -> None:
    """Repeating every customer's rows adds no information: the interval stays the same, where a
    row-level bootstrap would narrow it by about 1/sqrt(2)."""
    labels, sharp, blunt, groups = rows(2)
    once = paired_differences(labels, sharp, blunt, groups, resamples=200)
    twice = paired_differences(*(np.tile(a, 2) for a in (labels, sharp, blunt, groups)), resamples=200)
    for metric, difference in once.items():
        assert twice[metric].difference.low == pytest.approx(difference.difference.low)
        assert twice[metric].difference.high == pytest.approx(difference.difference.high)


def test_the_sharper_model_wins_on_both_metrics_and_unknown_labels_are_left_out() -> None:
    labels, sharp, blunt, groups = rows(3, n=3000)
    labels[:100] = np.nan
    result = paired_differences(labels, sharp, blunt, groups, resamples=200)
    assert result["roc_auc"].difference.low > 0
    assert result["log_loss"].difference.high < 0
    assert {d.verdict for d in result.values()} == {"model"}
    assert paired_differences(labels, blunt, sharp, groups, resamples=200)["roc_auc"].verdict == "baseline"


def test_missing_probabilities_and_misaligned_rows_are_refused_by_name() -> None:
    labels, sharp, blunt, groups = rows(4)
    blunt[5] = np.nan
    with pytest.raises(ValueError, match="baseline has no probability for 1 labelled rows"):
        paired_differences(labels, sharp, blunt, groups)
    with pytest.raises(ValueError, match="groups has 299 rows"):
        paired_differences(labels, sharp, sharp, groups[1:])


def difference(value: float, samples: list[float]) -> PairedDifference:
    return PairedDifference(
        "roc_auc", 0.0, 0.0, Estimate(value, min(samples), max(samples)), np.array(samples)
    )


def test_pooled_seeds_average_the_points_and_widen_with_their_spread() -> None:
    steady = pool_seeds([difference(0.01, [0.01] * 100), difference(0.01, [0.01] * 100)])
    assert steady == Estimate(0.01, 0.01, 0.01)
    spread = pool_seeds([difference(0.0, [0.0] * 100), difference(0.02, [0.02] * 100)])
    assert spread.value == pytest.approx(0.01)
    assert spread.low == pytest.approx(0.0)
    assert spread.high == pytest.approx(0.02)
    with pytest.raises(ValueError, match="different numbers of bootstrap samples"):
        pool_seeds([difference(0.0, [0.0] * 10), difference(0.0, [0.0] * 20)])
