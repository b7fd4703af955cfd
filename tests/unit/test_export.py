"""Pure pieces of the training side: the learning-rate schedule and the per-head calibration and metrics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nextbest.model import NoCalibration, TemperatureScaling
from nextbest_training.export import (
    at_taken_action,
    fit_head_calibrators,
    head_metrics,
    observed_action_probabilities,
)
from nextbest_training.module import warmup_cosine


@given(st.integers(0, 50), st.integers(1, 500), st.integers(0, 600))
def test_warmup_cosine_rises_then_decays_within_zero_and_one(warmup: int, extra: int, step: int) -> None:
    total = warmup + extra
    factor = warmup_cosine(step, warmup, total)
    assert 0.0 <= factor <= 1.0
    if step >= warmup:
        assert warmup_cosine(step + 1, warmup, total) <= factor
    else:
        assert warmup_cosine(step + 1, warmup, total) >= factor
    assert warmup_cosine(warmup, warmup, total) == pytest.approx(1.0)
    assert warmup_cosine(total, warmup, total) == pytest.approx(0.0, abs=1e-12)


DECISIONS = np.array([-1, -1, 0, 2, 1, -1])


def test_action_values_are_read_at_the_action_taken() -> None:
    values = np.arange(18, dtype=float).reshape(6, 3)
    np.testing.assert_array_equal(
        at_taken_action(values, DECISIONS), [np.nan, np.nan, 6.0, 11.0, 13.0, np.nan]
    )
    observed = observed_action_probabilities(
        {
            "conversion": np.full(6, 0.5),
            "churn": np.full(6, 0.25),
            "action_conversion": values / 100,
            "action_churn": values / 200,
        },
        DECISIONS,
    )
    np.testing.assert_allclose(observed["conversion"], [0.5, 0.5, 0.06, 0.11, 0.13, 0.5])
    np.testing.assert_allclose(observed["churn"], [0.25, 0.25, 0.03, 0.055, 0.065, 0.25])


def test_heads_are_calibrated_and_scored_on_their_own_rows() -> None:
    rng = np.random.default_rng(0)
    n = 4_000
    decisions = np.where(rng.random(n) < 0.5, rng.integers(0, 3, n), -1)
    logits = {
        "conversion": rng.normal(size=n),
        "churn": rng.normal(size=n),
        "action_conversion": rng.normal(size=(n, 3)),
        "action_churn": rng.normal(size=(n, 3)),
    }
    conversion = (rng.random(n) < 0.3).astype(float)
    churn = np.full(n, np.nan)  # no churn labels at all
    calibrators = fit_head_calibrators(
        "temperature", logits, {"conversion": conversion, "churn": churn}, decisions
    )
    assert isinstance(calibrators["conversion"], TemperatureScaling)
    assert isinstance(calibrators["action_conversion"], TemperatureScaling)
    assert isinstance(calibrators["churn"], NoCalibration)
    assert isinstance(calibrators["action_churn"], NoCalibration)
    # Random logits carry no signal: calibration flattens them towards the base rate of each head's rows.
    base = conversion[decisions == -1].mean()
    calibrated = calibrators["conversion"].calibrate(logits["conversion"])
    assert abs(calibrated.mean() - base) < 0.02
    assert calibrated.std() < 0.05

    observed = {"conversion": np.full(n, 0.3), "churn": np.full(n, 0.5)}
    metrics = head_metrics(observed, {"conversion": conversion, "churn": churn}, decisions)
    assert set(metrics) == {"conversion", "action_conversion"}
    assert metrics["conversion"]["count"] == (decisions == -1).sum()
    assert metrics["action_conversion"]["count"] == (decisions >= 0).sum()
