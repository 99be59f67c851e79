"""Calibrators and calibration metrics (moved to :mod:`duolabel.core.calibration`) and the
calibration stage (moved to :mod:`duolabel.stages.calibrate`)."""

# temporary shim: removed when the layers are merged
from __future__ import annotations

from duolabel.core.calibration import (
    CALIBRATORS,
    HistogramBinning,
    Identity,
    IsotonicCalibration,
    TemperatureScaling,
    VectorScaling,
    calibration_metrics,
    confidence_signals,
    cross_validated,
    error_detection_auroc,
    expected_calibration_error,
    reliability_diagram,
    select_calibrator,
)
from duolabel.stages.calibrate import CalibrationResult, calibrate_project, ensemble_version

__all__ = [
    "CALIBRATORS",
    "CalibrationResult",
    "HistogramBinning",
    "Identity",
    "IsotonicCalibration",
    "TemperatureScaling",
    "VectorScaling",
    "calibrate_project",
    "calibration_metrics",
    "confidence_signals",
    "cross_validated",
    "ensemble_version",
    "error_detection_auroc",
    "expected_calibration_error",
    "reliability_diagram",
    "select_calibrator",
]
