"""How good and how honest is a prediction: metrics, calibration, ArviZ diagnostics, plots.

* ``bnn.evaluate.metrics`` — RMSE, NLL, CRPS, coverage, accuracy, Brier, ECE.
* ``bnn.evaluate.calibration`` — calibration reports (``calibration``).
* ``bnn.evaluate.diagnostics`` — ArviZ conversion (``to_arviz``, ``loo``); the only ArviZ
  importer.
* ``bnn.evaluate.convergence`` — R-hat, ESS, divergences and stuck samplers (``summary``).
* ``bnn.evaluate.recalibrate`` — temperature, vector and std scaling, isotonic recalibration
  of regression CDFs, conformal intervals and prediction sets (``temperature_scale``,
  ``std_scale``, ``isotonic_recalibrate``, ``conformalize``).
* ``bnn.evaluate.plots`` — figures (needs the ``plots`` extra); the only matplotlib
  importer.
"""

from bnn.evaluate import metrics as metrics
from bnn.evaluate import plots as plots
from bnn.evaluate import recalibrate as recalibrate
from bnn.evaluate.calibration import CalibrationReport, calibration
from bnn.evaluate.convergence import ConvergenceWarning, Summary, summary
from bnn.evaluate.diagnostics import loo, to_arviz
from bnn.evaluate.recalibrate import (
    conformalize,
    isotonic_recalibrate,
    std_scale,
    temperature_scale,
)

__all__ = [
    "CalibrationReport",
    "ConvergenceWarning",
    "Summary",
    "calibration",
    "conformalize",
    "isotonic_recalibrate",
    "loo",
    "std_scale",
    "summary",
    "temperature_scale",
    "to_arviz",
]
