"""Programming, read calibration and device-model fitting."""
