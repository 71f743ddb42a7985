"""How good and how honest is a prediction: metrics, calibration, ArviZ diagnostics, plots.

* ``bnn.evaluate.metrics`` — RMSE, NLL, CRPS, coverage, accuracy, Brier, ECE.
* ``bnn.evaluate.calibration`` — calibration reports (``calibration``).
* ``bnn.evaluate.diagnostics`` — ArviZ conversion and convergence (``to_arviz``,
  ``summary``); the only ArviZ importer.
* ``bnn.evaluate.plots`` — figures (needs the ``plots`` extra); the only matplotlib
  importer.
"""

from bnn.evaluate import metrics as metrics
from bnn.evaluate import plots as plots
from bnn.evaluate.calibration import CalibrationReport, calibration
from bnn.evaluate.diagnostics import ConvergenceWarning, Summary, loo, summary, to_arviz

__all__ = [
    "CalibrationReport",
    "ConvergenceWarning",
    "Summary",
    "calibration",
    "loo",
    "summary",
    "to_arviz",
]
