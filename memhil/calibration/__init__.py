"""Programming, read calibration and device-model fitting (issues 3 and 6)."""
