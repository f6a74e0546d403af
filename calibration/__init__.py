"""Calibration: thresholds from good parts, measured with the same backend the line runs."""
