"""Evaluation a paper can rely on: bootstrap confidence intervals, ROC/PR curves, calibration and temperature
scaling, paired model comparison (DeLong) and an HTML report.

Only numpy (and scipy/torch inside the functions that need them) at import; matplotlib is imported by the
figure functions alone.
"""

from .summary import summarise

__all__ = ["summarise"]
