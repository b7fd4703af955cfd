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

Confidence intervals are percentile bootstraps over decisions, every estimator on the same resamples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    n = len(logged.action)
    if target.shape != predicted_reward.shape or target.shape[0] != n:
        raise ValueError(
            f"target {target.shape} and predicted_reward {predicted_reward.shape} must be [{n}, A]"
        )
    rows = np.arange(n)
    weight = target[rows, logged.action] / logged.propensity
    direct = (target * predicted_reward).sum(axis=1)
    residual = logged.reward - predicted_reward[rows, logged.action]
    terms = {"ips": weight * logged.reward, "dr": direct + weight * residual}
    point = {
        "ips": float(terms["ips"].mean()),
        # Undefined (NaN) when no logged decision took an action the target policy would take.
        "snips": float(terms["ips"].sum() / weight.sum()) if weight.sum() > 0 else float("nan"),
        "dr": float(terms["dr"].mean()),
    }
    sums = _resampled_sums([terms["ips"], weight, terms["dr"]], resamples, seed)  # [3, resamples]
    with np.errstate(invalid="ignore", divide="ignore"):
        samples = {"ips": sums[0] / n, "snips": sums[0] / sums[1], "dr": sums[2] / n}
    return {name: Estimate(point[name], *_interval(samples[name], level)) for name in ESTIMATORS}


def mean_estimate(
    values: np.ndarray, *, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> Estimate:
    """The mean of `values` with its bootstrap interval (e.g. a policy's on-policy value from its own log)."""
    samples = _resampled_sums([values], resamples, seed)[0] / len(values)
    return Estimate(float(values.mean()), *_interval(samples, level))


def _resampled_sums(columns: list[np.ndarray], resamples: int, seed: int) -> np.ndarray:
    """[columns, resamples] the sum of each column over the same bootstrap resamples of its rows (drawn as
    multinomial counts, a chunk of resamples at a time to bound memory)."""
    n = len(columns[0])
    stacked = np.stack(columns, axis=1)  # [n, columns]
    rng = np.random.default_rng(seed)
    parts = []
    chunk = max(1, min(resamples, 20_000_000 // max(n, 1)))
    for start in range(0, resamples, chunk):
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(chunk, resamples - start))  # [size, n]
        parts.append(counts.astype(np.float64) @ stacked)  # [size, columns]
    return np.concatenate(parts).T


def _interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2 * 100
    if np.isnan(samples).all():
        return float("nan"), float("nan")
    low, high = np.nanpercentile(samples, [tail, 100 - tail])
    return float(low), float(high)


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
