"""The statistics of the monitor, in plain numpy: population stability, tests that guard it against small
samples, rate differences with a customer bootstrap, and reliability bins.

Each function takes counts or arrays and returns numbers; nothing here reads tables or files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

# The two tails only: importing scipy.stats costs a second more.
from scipy.special import chdtrc, ndtr  # type: ignore[import-untyped]

from nextbest.evaluation.bootstrap import percentile_interval, resampled_sums
from nextbest.evaluation.ope import Estimate

# A bin empty on one side would make the PSI infinite; a proportion this small stands in for zero.
PSI_FLOOR = 1e-4

DriftStatus = Literal["too few", "stable", "shifted", "drifted"]


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index of two histograms over the same bins: sum (c - r) ln(c / r) over the
    bins' proportions. 0 for equal proportions, and never negative (each term has the sign of c - r twice).
    """
    r, c = _proportions(reference), _proportions(current)
    return float(np.sum((c - r) * np.log(c / r)))


def _proportions(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        raise ValueError("a histogram without counts has no proportions")
    return np.maximum(counts / total, PSI_FLOOR)


def homogeneity_p_value(reference: np.ndarray, current: np.ndarray) -> float:
    """P-value of the chi-square test that both histograms come from one distribution (bins empty on
    both sides left out; 1.0 when fewer than two bins are left)."""
    table = np.vstack([reference, current]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    return float(chdtrc(table.shape[1] - 1, statistic))


@dataclass(frozen=True)
class DriftThresholds:
    """When an input's shift is reported.

    PSI measures the size of a shift whatever the sample size, so a large sample does not turn a trivial
    shift into an alarm; the chi-square test keeps a small sample's noise (which inflates the PSI by about
    bins/n) from reading as a shift.

    Attributes:
        shifted: PSI from which an input is "shifted" (the usual 0.1).
        drifted: PSI from which it is "drifted" and alerts (the usual 0.25).
        alpha: the test's significance level both need.
        min_count: fewer current observations than this: "too few" to judge.
    """

    shifted: float = 0.1
    drifted: float = 0.25
    alpha: float = 0.001
    min_count: int = 100

    def status(self, psi_value: float, p_value: float, count: int) -> DriftStatus:
        """The status of an input with this PSI, test p-value and current count."""
        if count < self.min_count:
            return "too few"
        if p_value >= self.alpha or psi_value < self.shifted:
            return "stable"
        return "drifted" if psi_value >= self.drifted else "shifted"


Rates = tuple[np.ndarray, np.ndarray]  # (successes, trials) per unit


def rate_differences(
    pairs: Sequence[tuple[Rates, Rates]], *, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> list[Estimate]:
    """Per pair, the first group's rate minus the second's, with a bootstrap interval over units
    (customers); every pair is computed on the same resamples, drawn once (the cost is in the drawing).

    Args:
        pairs: (first, second) groups, each (successes, trials) per unit, all over the same units (a
            unit outside a group has 0 trials in it); a customer's decisions are resampled together, as
            they are not independent.
    """
    columns = np.vstack([part for first, second in pairs for part in (*first, *second)]).astype(np.float64)
    sums = resampled_sums(columns, resamples, seed)  # [4 * pairs, resamples]
    totals = columns.sum(axis=1)
    estimates = []
    for k in range(0, len(columns), 4):
        if totals[k + 1] == 0 or totals[k + 3] == 0:
            estimates.append(Estimate(float("nan"), float("nan"), float("nan")))
            continue
        with np.errstate(invalid="ignore", divide="ignore"):  # NaN where a resample drew no unit of a group
            samples = sums[k] / sums[k + 1] - sums[k + 2] / sums[k + 3]
        low, high = percentile_interval(samples, level)
        value = totals[k] / totals[k + 1] - totals[k + 2] / totals[k + 3]
        estimates.append(Estimate(float(value), low, high))
    return estimates


def proportion_drop_p_value(before: tuple[int, int], after: tuple[int, int]) -> float:
    """One-sided p-value of a two-proportion z-test that the rate fell from `before` to `after`
    ((successes, trials) each); 1.0 when either has no trials or the pooled rate is 0 or 1."""
    (s1, n1), (s2, n2) = before, after
    pooled = (s1 + s2) / max(n1 + n2, 1)
    if min(n1, n2) == 0 or pooled in (0.0, 1.0):
        return 1.0
    z = (s1 / n1 - s2 / n2) / np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return float(ndtr(-z))


def reliability_bins(
    probabilities: np.ndarray, outcomes: np.ndarray, bins: int = 10
) -> list[dict[str, float]]:
    """Equal-width bins of predicted probability with their count, mean prediction and observed rate
    (empty bins left out)."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(outcomes, dtype=np.float64)
    # Bin i holds (i/bins, (i+1)/bins], as in `expected_calibration_error`.
    index = np.clip(np.ceil(p * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    predicted = np.bincount(index, weights=p, minlength=bins)
    observed = np.bincount(index, weights=y, minlength=bins)
    return [
        {
            "low": i / bins,
            "high": (i + 1) / bins,
            "decisions": int(counts[i]),
            "mean_predicted": float(predicted[i] / counts[i]),
            "observed_rate": float(observed[i] / counts[i]),
        }
        for i in np.flatnonzero(counts)
    ]


def calibration_in_the_large(probabilities: np.ndarray, outcomes: np.ndarray) -> tuple[float, float]:
    """Observed over expected outcomes and the two-sided p-value that they agree (normal approximation
    of the sum of Bernoulli outcomes); (NaN, 1.0) without predictions."""
    p = np.asarray(probabilities, dtype=np.float64)
    expected, variance = p.sum(), (p * (1 - p)).sum()
    if expected <= 0 or variance <= 0:
        return float("nan"), 1.0
    observed = float(np.sum(outcomes))
    z = abs(observed - expected) / np.sqrt(variance)
    return observed / float(expected), float(2 * ndtr(-z))
