"""Sampling: SGLD and MALA, the LLC estimator, its validity, its calibration."""
