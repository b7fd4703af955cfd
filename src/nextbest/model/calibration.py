"""Post-hoc probability calibration (pure numpy) and the expected calibration error.

Every calibrator maps model logits to probabilities with `calibrate`, serialises with `to_dict`, and is
rebuilt by `calibrator_from_dict`, so an exported model carries its calibration. Labels are 0/1 with NaN
for unknown; unknown labels are ignored everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import numpy as np

CalibrationKind = Literal["temperature", "isotonic", "none"]

# Newton's method on a convex 2-parameter problem converges in a handful of steps; the cap is a safeguard.
_MAX_NEWTON_STEPS = 100
_TOLERANCE = 1e-10
# The slope 1/T stays positive, so calibration never reverses the model's ranking.
_MIN_SLOPE, _MAX_SLOPE = 1e-3, 1e3
_MAX_ABS_BIAS = 50.0


class Calibrator(Protocol):
    """What the scoring code needs of a fitted calibrator."""

    @property
    def kind(self) -> str:
        """`temperature`, `isotonic` or `none`."""
        ...

    def calibrate(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for model `logits`."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description, `kind` included."""
        ...


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Logistic function, without overflow warnings for large negative logits."""
    x = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))


@dataclass(frozen=True)
class NoCalibration:
    """The identity: probabilities are the sigmoid of the logits."""

    kind: ClassVar[str] = "none"

    def calibrate(self, logits: np.ndarray) -> np.ndarray:
        return sigmoid(logits)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}


@dataclass(frozen=True)
class TemperatureScaling:
    """p = sigmoid(logit / temperature + bias) (Guo et al. 2017; with the bias, Platt scaling).

    Attributes:
        temperature: Divides the logits; > 1 softens overconfident models.
        bias: Shifts the scaled logits; 0 unless fitted with `fit_bias=True`.
    """

    temperature: float = 1.0
    bias: float = 0.0
    kind: ClassVar[str] = "temperature"

    @classmethod
    def fit(cls, logits: np.ndarray, labels: np.ndarray, *, fit_bias: bool = False) -> TemperatureScaling:
        """Minimises the log loss of the known labels by damped Newton steps (the problem is convex).

        Returns the identity (temperature 1, bias 0) when no label is known.
        """
        x, y = _known(logits, labels)
        params = np.array([1.0, 0.0])  # slope = 1 / temperature, bias
        for _ in range(_MAX_NEWTON_STEPS):
            step = _newton_step(x, y, params, fit_bias)
            updated = _line_search(x, y, params, step)
            converged = np.abs(updated - params).max() < _TOLERANCE
            params = updated
            if converged:
                break
        return cls(temperature=float(1.0 / params[0]), bias=float(params[1]))

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for `logits`."""
        return sigmoid(np.asarray(logits, dtype=np.float64) / self.temperature + self.bias)

    def calibrate(self, logits: np.ndarray) -> np.ndarray:
        return self.apply(logits)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "temperature": self.temperature, "bias": self.bias}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TemperatureScaling:
        return cls(temperature=float(data["temperature"]), bias=float(data["bias"]))


def _scaled_loss(x: np.ndarray, y: np.ndarray, params: np.ndarray) -> float:
    z = params[0] * x + params[1]
    return float(np.sum(np.logaddexp(0.0, z) - y * z))


def _newton_step(x: np.ndarray, y: np.ndarray, params: np.ndarray, fit_bias: bool) -> np.ndarray:
    """Newton direction for (slope, bias); the bias component is 0 when it is not fitted."""
    p = sigmoid(params[0] * x + params[1])
    residual, curvature = p - y, p * (1.0 - p)
    gradient = np.array([np.sum(residual * x), np.sum(residual)])
    hessian = np.array(
        [[np.sum(curvature * x * x), np.sum(curvature * x)], [np.sum(curvature * x), np.sum(curvature)]]
    )
    # A tiny ridge keeps the system solvable when every logit is 0 or the labels are all one class.
    hessian += 1e-9 * np.eye(2)
    if not fit_bias:
        return np.array([-gradient[0] / hessian[0, 0], 0.0])
    return -np.linalg.solve(hessian, gradient)


def _line_search(x: np.ndarray, y: np.ndarray, params: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Backtracking from the full Newton step, within bounds; keeps `params` if no step improves."""
    current = _scaled_loss(x, y, params)
    scale = 1.0
    for _ in range(30):
        candidate = params + scale * step
        candidate[0] = np.clip(candidate[0], _MIN_SLOPE, _MAX_SLOPE)
        candidate[1] = np.clip(candidate[1], -_MAX_ABS_BIAS, _MAX_ABS_BIAS)
        if _scaled_loss(x, y, candidate) <= current:
            return candidate
        scale /= 2.0
    return params


@dataclass(frozen=True)
class IsotonicCalibration:
    """Monotone non-decreasing map from probabilities to calibrated probabilities (isotonic regression).

    Fitted by pool-adjacent-violators; between the knots the map interpolates linearly, and beyond them
    it is constant.

    Attributes:
        x: Knot inputs (probabilities), strictly increasing.
        y: Knot outputs, non-decreasing.
    """

    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    kind: ClassVar[str] = "isotonic"

    @classmethod
    def fit(cls, probabilities: np.ndarray, labels: np.ndarray) -> IsotonicCalibration:
        """Fits the map on the known labels; no known label gives an empty map (the identity)."""
        p, y = _known(probabilities, labels)
        if len(y) == 0:
            return cls()
        # Knots closer than 1e-12 would make the interpolation's slope overflow; no calibration needs them.
        values, inverse = np.unique(np.round(p, 12), return_inverse=True)
        # Equal inputs must get equal outputs: pool them first, weighted by their count.
        weights = np.bincount(inverse, minlength=len(values)).astype(np.float64)
        means = np.bincount(inverse, weights=y, minlength=len(values)) / np.maximum(weights, 1.0)
        starts, block_means = _pool_adjacent_violators(means, weights)
        ends = np.append(starts[1:], len(values)) - 1
        knots_x = np.stack([values[starts], values[ends]], axis=1).ravel()
        knots_y = np.repeat(block_means, 2)
        # A single-value block gives two equal knots; keep one so the inputs strictly increase.
        keep = np.append(True, np.diff(knots_x) > 0)
        return cls(tuple(knots_x[keep].tolist()), tuple(knots_y[keep].tolist()))

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for model `probabilities`."""
        p = np.asarray(probabilities, dtype=np.float64)
        if not self.x:
            return p
        return np.interp(p, np.asarray(self.x), np.asarray(self.y))

    def calibrate(self, logits: np.ndarray) -> np.ndarray:
        return self.apply(sigmoid(logits))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IsotonicCalibration:
        return cls(tuple(float(v) for v in data["x"]), tuple(float(v) for v in data["y"]))


def _pool_adjacent_violators(means: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-decreasing least-squares fit of `means`; returns each block's first index and its mean."""
    starts: list[int] = []
    block_means: list[float] = []
    block_weights: list[float] = []
    for i, (mean, weight) in enumerate(zip(means.tolist(), weights.tolist(), strict=True)):
        starts.append(i)
        block_means.append(mean)
        block_weights.append(weight)
        # Merge backwards while the newest block violates the order.
        while len(block_means) > 1 and block_means[-2] >= block_means[-1]:
            mean, weight = block_means.pop(), block_weights.pop()
            starts.pop()
            total = block_weights[-1] + weight
            block_means[-1] = (block_means[-1] * block_weights[-1] + mean * weight) / total
            block_weights[-1] = total
    return np.asarray(starts, dtype=np.int64), np.asarray(block_means, dtype=np.float64)


def fit_calibrator(kind: CalibrationKind, logits: np.ndarray, labels: np.ndarray) -> Calibrator:
    """Fits a calibrator of `kind` on model `logits` and 0/1 `labels` (NaN = unknown).

    `temperature` fits a temperature and a bias (Platt scaling), since a shift of the base rate between
    training and calibration data is as common as overconfidence; `isotonic` fits on the sigmoid of the
    logits.
    """
    if kind == "temperature":
        return TemperatureScaling.fit(logits, labels, fit_bias=True)
    if kind == "isotonic":
        return IsotonicCalibration.fit(sigmoid(logits), labels)
    if kind == "none":
        return NoCalibration()
    raise ValueError(f"calibration kind must be 'temperature', 'isotonic' or 'none', got {kind!r}")


def calibrator_from_dict(data: dict[str, Any]) -> Calibrator:
    """Rebuilds a calibrator from its `to_dict`."""
    kind = data.get("kind")
    if kind == "temperature":
        return TemperatureScaling.from_dict(data)
    if kind == "isotonic":
        return IsotonicCalibration.from_dict(data)
    if kind == "none":
        return NoCalibration()
    raise ValueError(f"unknown calibrator kind {kind!r}")


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error over `bins` equal-width probability bins.

    The mean over bins of |mean probability - observed rate|, weighted by the share of samples in the bin.
    NaN labels are ignored; NaN when no label is known.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    p, y = _known(probabilities, labels)
    if len(y) == 0:
        return float("nan")
    # Bin i holds (i/bins, (i+1)/bins]; probability 0 falls in the first bin.
    index = np.clip(np.ceil(p * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    gap = np.abs(
        np.bincount(index, weights=p, minlength=bins) - np.bincount(index, weights=y, minlength=bins)
    )
    return float(gap.sum() / counts.sum())


def _known(values: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flattened float64 `values` and `labels` where the label is known."""
    v = np.asarray(values, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if v.shape != y.shape:
        raise ValueError(f"got {v.size} values but {y.size} labels")
    known = ~np.isnan(y)
    return v[known], y[known]
