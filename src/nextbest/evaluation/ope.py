"""Off-policy evaluation: what a new policy would have earned, estimated from decisions another policy logged.

For logged decision i the logging policy chose action a_i with probability p_i (its propensity) and reward
r_i followed. A target policy gives every action a probability pi(a | x_i); the importance weight is
w_i = pi(a_i | x_i) / p_i.

* IPS (inverse propensity scoring): mean(w_i r_i). Unbiased when propensities are right; noisy when
  weights are large.
* SNIPS (self-normalised IPS): sum(w_i r_i) / sum(w_i). A little biased, much less variable.
* DR (doubly robust): mean(sum_a pi(a | x_i) q(x_i, a) + w_i (r_i - q(x_i, a_i))), with q the model's
  predicted reward (the direct method), corrected by the weighted residual. Unbiased if either the
  propensities or the model are right.

Confidence intervals are percentile bootstraps over decisions, every estimator on the same resamples. Two
policies are compared paired (`estimate_paired_values`): the difference of their estimates on the same
decisions, resampled together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nextbest.evaluation.bootstrap import percentile_interval, resampled_sums

ESTIMATORS = ("ips", "snips", "dr")


@dataclass(frozen=True)
class LoggedDecisions:
    """What the logging policy did: per decision, the action index, its propensity and the reward."""

    action: np.ndarray
    propensity: np.ndarray
    reward: np.ndarray

    def __post_init__(self) -> None:
        if not (len(self.action) == len(self.propensity) == len(self.reward)):
            raise ValueError("action, propensity and reward must have one value per decision")
        if len(self.propensity) and not ((self.propensity > 0) & (self.propensity <= 1)).all():
            raise ValueError("propensities must be in (0, 1]")


@dataclass(frozen=True)
class Estimate:
    """A policy value estimate with its bootstrap confidence interval."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def estimate_policy_value(
    logged: LoggedDecisions,
    target: np.ndarray,
    predicted_reward: np.ndarray,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Estimate]:
    """IPS, SNIPS and DR estimates of the target policy's value per decision, with bootstrap intervals.

    Args:
        logged: the logged decisions.
        target: [N, A] the target policy's action probabilities at each logged decision.
        predicted_reward: [N, A] the model's expected reward of each action (for DR).
        resamples: bootstrap resamples.
        level: confidence level of the intervals.
        seed: seed of the resampling.
    """
    terms = _decision_terms(logged, target, predicted_reward)  # [3, N]
    n = len(logged.action)
    point = _estimators(terms.sum(axis=1), n)
    samples = _estimators(resampled_sums(terms, resamples, seed), n)  # [3, resamples]
    return _estimates(point, samples, level)


@dataclass(frozen=True)
class PairedEstimates:
    """Two policies' estimates on the same logged decisions and bootstrap resamples, and the estimates of
    the target's value minus the baseline's (per estimator name, as `estimate_policy_value` gives them)."""

    target: dict[str, Estimate]
    baseline: dict[str, Estimate]
    difference: dict[str, Estimate]


def estimate_paired_values(
    logged: LoggedDecisions,
    target: tuple[np.ndarray, np.ndarray],
    baseline: tuple[np.ndarray, np.ndarray],
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> PairedEstimates:
    """IPS, SNIPS and DR estimates of two policies and of the difference of their values, paired.

    Both policies are valued on the same logged decisions, and every bootstrap resample draws the same
    decisions for both, so the difference's interval is its own: where the policies agree their terms
    cancel. Comparing the ends of the two separate intervals instead ignores that the two estimates err
    together, and a worse policy whose estimate varies less can look the better one.

    Args:
        logged: the logged decisions.
        target, baseline: each policy's [N, A] action probabilities and [N, A] predicted rewards (for DR),
            as in `estimate_policy_value`.
        resamples, level, seed: as in `estimate_policy_value`.
    """
    n = len(logged.action)
    terms = np.concatenate([_decision_terms(logged, *target), _decision_terms(logged, *baseline)])  # [6, N]
    point = _estimators(terms[:3].sum(axis=1), n), _estimators(terms[3:].sum(axis=1), n)
    sums = resampled_sums(terms, resamples, seed)  # [6, resamples]
    samples = _estimators(sums[:3], n), _estimators(sums[3:], n)
    return PairedEstimates(
        target=_estimates(point[0], samples[0], level),
        baseline=_estimates(point[1], samples[1], level),
        difference=_estimates(point[0] - point[1], samples[0] - samples[1], level),
    )


def support_problem(logged: LoggedDecisions, target: np.ndarray) -> str | None:
    """Why `logged` cannot value the target policy ([N, A] action probabilities), or None when it can.

    Off-policy estimates learn what an action is worth only from decisions that took it while another
    could have been taken: a log whose every propensity is 1 never explored, so it values only the
    policy that logged it (a target that takes every logged action for certain); a target policy that
    never takes a logged action has no decision to learn from at all.
    """
    agrees = target[np.arange(len(logged.action)), logged.action]  # [N] P(target takes the logged action)
    if not (logged.propensity < 1).any() and (agrees < 1).any():
        return (
            "no logged decision has a propensity below 1: the logging policy never explored, and such a log "
            "values only the policy that logged it"
        )
    if not (agrees > 0).any():
        return "the policy never takes the action that was logged (no logged decision supports it)"
    return None


def mean_estimate(
    values: np.ndarray, *, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> Estimate:
    """The mean of `values` with its bootstrap interval (e.g. a policy's on-policy value from its own log)."""
    samples = resampled_sums(values[None, :], resamples, seed)[0] / len(values)
    return Estimate(float(values.mean()), *percentile_interval(samples, level))


def _decision_terms(logged: LoggedDecisions, target: np.ndarray, predicted_reward: np.ndarray) -> np.ndarray:
    """[3, N] per decision: the weighted reward w_i r_i, the weight w_i and the DR term."""
    n = len(logged.action)
    if target.shape != predicted_reward.shape or target.shape[0] != n:
        raise ValueError(
            f"target {target.shape} and predicted_reward {predicted_reward.shape} must be [{n}, A]"
        )
    rows = np.arange(n)
    weight = target[rows, logged.action] / logged.propensity
    direct = (target * predicted_reward).sum(axis=1)
    residual = logged.reward - predicted_reward[rows, logged.action]
    return np.stack([weight * logged.reward, weight, direct + weight * residual])


def _estimators(sums: np.ndarray, n: int) -> np.ndarray:
    """[3, ...] IPS, SNIPS and DR from the sums of `_decision_terms` over n decisions (or resamples of them).

    SNIPS is undefined (NaN) where no decision took an action the target policy would take.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([sums[0] / n, sums[0] / sums[1], sums[2] / n])


def _estimates(point: np.ndarray, samples: np.ndarray, level: float) -> dict[str, Estimate]:
    return {
        name: Estimate(float(point[i]), *percentile_interval(samples[i], level))
        for i, name in enumerate(ESTIMATORS)
    }


def constant_policy(action: int, n: int, num_actions: int) -> np.ndarray:
    """[n, A] the policy that always takes `action`."""
    policy = np.zeros((n, num_actions))
    policy[:, action] = 1.0
    return policy


def uniform_policy(n: int, num_actions: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """[n, A] the policy that picks every action with the same probability, or every allowed one ([n, A]
    bool) where `allowed` is given; a row with nothing allowed is all 0, like a served decision's."""
    if allowed is None:
        return np.full((n, num_actions), 1.0 / num_actions)
    return np.where(allowed, 1.0 / np.maximum(allowed.sum(axis=1, keepdims=True), 1), 0.0)
