"""Off-policy estimators: exact on a hand-made log, unbiased and covering the truth on simulated logs; two
policies compared paired; logs that cannot value a policy said so; the promotion rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nextbest.evaluation.ope import (
    Estimate,
    LoggedDecisions,
    constant_policy,
    estimate_paired_values,
    estimate_policy_value,
    support_problem,
    uniform_policy,
)
from nextbest.evaluation.policies import Assessment, Comparison, cannot_value, promotion_verdict


def test_estimators_on_a_hand_computed_log() -> None:
    logged = LoggedDecisions(
        action=np.array([0, 1, 1, 0]),
        propensity=np.array([0.5, 0.5, 0.25, 0.5]),
        reward=np.array([1.0, 0, 1, 0]),
    )
    target = constant_policy(1, 4, 2)
    q = np.array([[0.2, 0.4]] * 4)
    result = estimate_policy_value(logged, target, q, resamples=50)
    # Weights: 0, 2, 4, 0. IPS = (0 + 0 + 4 + 0) / 4; SNIPS = 4 / 6.
    assert result["ips"].value == pytest.approx(1.0)
    assert result["snips"].value == pytest.approx(4 / 6)
    # DR: 0.4 each, plus weighted residuals 2 * (0 - 0.4) and 4 * (1 - 0.4) on rows 2 and 3.
    assert result["dr"].value == pytest.approx(0.4 + (2 * -0.4 + 4 * 0.6) / 4)
    for estimate in result.values():
        assert estimate.low <= estimate.high


def simulated_bandit(seed: int, n: int = 4_000) -> tuple[LoggedDecisions, np.ndarray, np.ndarray]:
    """Contexts with known reward probabilities per action, logged by a non-uniform random policy."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, 2))
    truth = 1 / (
        1
        + np.exp(-(np.array([-1.0, -1.2, -0.8]) + features @ np.array([[0.5, -0.3, 0.8], [0.2, 0.9, -0.4]])))
    )
    logging = np.array([0.5, 0.3, 0.2])
    action = rng.choice(3, size=n, p=logging)
    reward = (rng.random(n) < truth[np.arange(n), action]).astype(float)
    return LoggedDecisions(action, logging[action], reward), truth, features


def test_confidence_intervals_cover_the_true_value_of_a_policy() -> None:
    """Over 40 simulated logs, each 95% interval covers the target policy's true value about 95% of the
    time (at least 85% allows for the finite count), and the estimates centre on it."""
    covered = {"ips": 0, "snips": 0, "dr": 0}
    errors = {"ips": [], "snips": [], "dr": []}
    runs = 40
    for seed in range(runs):
        logged, truth, features = simulated_bandit(seed)
        target = constant_policy(0, len(truth), 3)
        target[features[:, 0] > 0] = [0.0, 0.0, 1.0]  # a context-dependent deterministic policy
        true_value = (target * truth).sum(axis=1).mean()
        noisy_model = np.clip(truth + np.random.default_rng(seed).normal(0, 0.05, truth.shape), 0, 1)
        result = estimate_policy_value(logged, target, noisy_model, resamples=300, seed=seed)
        for name, estimate in result.items():
            covered[name] += estimate.low <= true_value <= estimate.high
            errors[name].append(estimate.value - true_value)
    for name in covered:
        assert covered[name] / runs >= 0.85, (name, covered[name])
        assert abs(np.mean(errors[name])) < 0.01, name
    # The model's help shows: DR varies less than IPS.
    assert np.std(errors["dr"]) < np.std(errors["ips"])


def test_uniform_policy_and_input_checks() -> None:
    np.testing.assert_allclose(uniform_policy(2, 4), 0.25)
    allowed = np.array([[True, False, True], [False, False, False]])
    np.testing.assert_allclose(uniform_policy(2, 3, allowed), [[0.5, 0, 0.5], [0, 0, 0]])
    with pytest.raises(ValueError, match="propensities"):
        LoggedDecisions(np.array([0]), np.array([0.0]), np.array([1.0]))
    logged, truth, _ = simulated_bandit(0, n=10)
    with pytest.raises(ValueError, match="must be"):
        estimate_policy_value(logged, uniform_policy(10, 3), truth[:5])


def test_the_paired_difference_covers_the_true_difference() -> None:
    """Two policies that differ on a third of the contexts: over 40 simulated logs, the paired 95% interval
    of their difference covers the true difference about 95% of the time, and it is narrower than the
    spread of the two separate intervals' ends that the old gate compared."""
    covered = {"ips": 0, "snips": 0, "dr": 0}
    runs = 40
    for seed in range(runs):
        logged, truth, features = simulated_bandit(seed)
        target = constant_policy(0, len(truth), 3)
        target[features[:, 0] > 0] = [0.0, 0.0, 1.0]
        baseline = target.copy()
        baseline[features[:, 1] > 0.5] = [0.0, 1.0, 0.0]
        true_difference = ((target - baseline) * truth).sum(axis=1).mean()
        model = np.clip(truth + np.random.default_rng(seed).normal(0, 0.05, truth.shape), 0, 1)
        paired = estimate_paired_values(logged, (target, model), (baseline, model), resamples=300, seed=seed)
        for name, estimate in paired.difference.items():
            covered[name] += estimate.low <= true_difference <= estimate.high
            separate = (paired.target[name].high - paired.baseline[name].low) - (
                paired.target[name].low - paired.baseline[name].high
            )
            assert estimate.high - estimate.low < separate / 2, name
    for name in covered:
        assert covered[name] / runs >= 0.85, (name, covered[name])


def _policy(num_actions: int) -> st.SearchStrategy[np.ndarray]:
    """[6, A] action probabilities: each row a distribution (some all on one action)."""
    weights = arrays(np.float64, (6, num_actions), elements=st.sampled_from([0.0, 0.5, 1.0, 3.0]))
    return weights.filter(lambda w: (w.sum(axis=1) > 0).all()).map(lambda w: w / w.sum(axis=1, keepdims=True))


@settings(max_examples=60, deadline=None)
@given(
    action=arrays(np.int64, 6, elements=st.integers(0, 2)),
    propensity=arrays(np.float64, 6, elements=st.sampled_from([0.1, 0.25, 0.5, 1.0])),
    reward=arrays(np.float64, 6, elements=st.sampled_from([-4.0, 0.0, 1.0, 40.0])),
    target=_policy(3),
    baseline=_policy(3),
    model=arrays(np.float64, (6, 3), elements=st.sampled_from([-1.0, 0.0, 2.5, 30.0])),
)
def test_paired_estimates_are_each_policys_own_and_their_difference(
    action: np.ndarray,
    propensity: np.ndarray,
    reward: np.ndarray,
    target: np.ndarray,
    baseline: np.ndarray,
    model: np.ndarray,
) -> None:
    logged = LoggedDecisions(action, propensity, reward)
    paired = estimate_paired_values(logged, (target, model), (baseline, model), resamples=30, seed=3)
    swapped = estimate_paired_values(logged, (baseline, model), (target, model), resamples=30, seed=3)
    assert paired.target == estimate_policy_value(logged, target, model, resamples=30, seed=3)
    for name, difference in paired.difference.items():
        np.testing.assert_allclose(
            difference.value, paired.target[name].value - paired.baseline[name].value, atol=1e-9
        )
        mirrored = swapped.difference[name]
        np.testing.assert_allclose(
            [mirrored.low, mirrored.high], [-difference.high, -difference.low], atol=1e-9
        )
    same = estimate_paired_values(logged, (target, model), (target, model), resamples=30).difference
    assert all((e.value, e.low, e.high) == (0.0, 0.0, 0.0) for e in same.values() if np.isfinite(e.value))


def test_a_log_without_exploration_values_only_the_policy_that_logged_it() -> None:
    logged = LoggedDecisions(action=np.array([0, 1, 0]), propensity=np.ones(3), reward=np.ones(3))
    itself = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert support_problem(logged, itself) is None
    other = support_problem(logged, uniform_policy(3, 2))
    assert other is not None
    assert "no logged decision has a propensity below 1" in other
    explored = LoggedDecisions(
        action=np.zeros(3, dtype=np.int64), propensity=np.full(3, 0.5), reward=np.ones(3)
    )
    never = support_problem(explored, constant_policy(1, 3, 2))
    assert never is not None
    assert "never takes the action that was logged" in never
    assert support_problem(explored, uniform_policy(3, 2)) is None
    lines = cannot_value({"learned": other, "random": other, "always b": never})
    assert lines == [
        f"This log cannot value learned, random: {other}, so the estimates are undefined (NaN) or biased.",
        f"This log cannot value always b: {never}, so the estimates are undefined (NaN) or biased.",
    ]


def comparison(low: float, challenger_ece: float, unsupported: dict[str, str] | None = None) -> Comparison:
    champion = Assessment(Estimate(0.6, 0.5, 0.7), calibration_error=0.02)
    challenger = Assessment(Estimate(0.55, 0.45, 0.65), calibration_error=challenger_ece)
    return Comparison(champion, challenger, Estimate(low + 0.1, low, low + 0.2), unsupported or {})


@pytest.mark.parametrize(
    ("low", "margin", "challenger_ece", "promoted"),
    [
        (0.0, 0.0, 0.02, True),  # shown not worse
        (-0.01, 0.0, 0.02, False),  # possibly worse
        (-0.01, 0.05, 0.02, True),  # possibly worse, by less than the margin
        (-0.06, 0.05, 0.02, False),  # possibly worse by more than the margin
        (float("nan"), 0.05, 0.02, False),  # undefined
        (0.1, 0.0, 0.026, False),  # better, but calibration worse by more than the tolerance
        (0.1, 0.0, 0.024, True),  # calibration worse within the tolerance
    ],
)
def test_promotion_needs_the_difference_not_worse_than_the_margin_and_calibration_not_worse(
    low: float, margin: float, challenger_ece: float, promoted: bool
) -> None:
    verdict, reasons = promotion_verdict(comparison(low, challenger_ece), margin=margin, ece_tolerance=0.005)
    assert verdict is promoted
    assert len(reasons) == 2
    assert "policy value difference (DR, challenger - champion)" in reasons[0]


def test_promotion_is_refused_on_a_log_that_cannot_value_the_policies() -> None:
    reason = "no logged decision has a propensity below 1"
    verdict, reasons = promotion_verdict(comparison(0.1, 0.02, {"champion": reason, "challenger": reason}))
    assert not verdict
    assert reasons[0].startswith(f"This log cannot value champion, challenger: {reason}")


def test_snips_without_support_is_nan_not_a_warning() -> None:
    """A deterministic log never took the action a constant target policy takes: SNIPS is undefined."""
    logged = LoggedDecisions(action=np.zeros(5, dtype=np.int64), propensity=np.ones(5), reward=np.ones(5))
    estimates = estimate_policy_value(logged, constant_policy(1, 5, 2), np.zeros((5, 2)), resamples=20)
    assert np.isnan(estimates["snips"].value)
    assert np.isnan(estimates["snips"].low)
    assert estimates["ips"].value == 0.0
