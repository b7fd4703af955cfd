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
        "snips": float(terms["ips"].sum() / weight.sum()),
        "dr": float(terms["dr"].mean()),
    }
    samples = _bootstrap(terms["ips"], weight, terms["dr"], resamples, seed)
    tail = (1.0 - level) / 2 * 100
    return {
        name: Estimate(point[name], *(float(q) for q in np.nanpercentile(samples[name], [tail, 100 - tail])))
        for name in ESTIMATORS
    }


def _bootstrap(
    weighted_reward: np.ndarray, weight: np.ndarray, dr_terms: np.ndarray, resamples: int, seed: int
) -> dict[str, np.ndarray]:
    """Every estimator on the same resamples (drawn as multinomial counts, a chunk of resamples at a time)."""
    n = len(weight)
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {name: [] for name in ESTIMATORS}
    chunk = max(1, min(resamples, 20_000_000 // max(n, 1)))
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)  # [size, n]
        out["ips"].append(counts @ weighted_reward / n)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["snips"].append((counts @ weighted_reward) / (counts @ weight))
        out["dr"].append(counts @ dr_terms / n)
    return {name: np.concatenate(parts) for name, parts in out.items()}


def constant_policy(action: int, n: int, num_actions: int) -> np.ndarray:
    """[n, A] the policy that always takes `action`."""
    policy = np.zeros((n, num_actions))
    policy[:, action] = 1.0
    return policy


def uniform_policy(n: int, num_actions: int) -> np.ndarray:
    """[n, A] the policy that picks every action with the same probability."""
    return np.full((n, num_actions), 1.0 / num_actions)
