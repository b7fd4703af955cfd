"""The sequence model: a pure-PyTorch journey network, its losses and post-hoc calibration.

Nothing here imports Lightning or BentoML; training and serving wrap these pieces.
"""

from nextbest.model.calibration import (
    CalibrationKind,
    Calibrator,
    IsotonicCalibration,
    NoCalibration,
    TemperatureScaling,
    calibrator_from_dict,
    expected_calibration_error,
    fit_calibrator,
)
from nextbest.model.config import EncoderKind, ModelConfig, ModelConfigError
from nextbest.model.heads import HEADS, OUTCOMES, Head
from nextbest.model.losses import journey_losses, masked_bce_with_logits, probabilities
from nextbest.model.network import JourneyNetwork

__all__ = [
    "HEADS",
    "OUTCOMES",
    "CalibrationKind",
    "Calibrator",
    "EncoderKind",
    "Head",
    "IsotonicCalibration",
    "JourneyNetwork",
    "ModelConfig",
    "ModelConfigError",
    "NoCalibration",
    "TemperatureScaling",
    "calibrator_from_dict",
    "expected_calibration_error",
    "fit_calibrator",
    "journey_losses",
    "masked_bce_with_logits",
    "probabilities",
]
