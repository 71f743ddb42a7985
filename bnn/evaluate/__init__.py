"""How good and how honest is a prediction: metrics, calibration, ArviZ diagnostics, plots.

* ``bnn.evaluate.metrics`` — RMSE, NLL, CRPS, coverage, accuracy, Brier, ECE.
* ``bnn.evaluate.calibration`` — calibration reports (``calibration``).
* ``bnn.evaluate.diagnostics`` — ArviZ conversion (``to_arviz``, ``loo``); the only ArviZ
  importer.
* ``bnn.evaluate.convergence`` — R-hat, ESS, divergences and stuck samplers (``summary``).
* ``bnn.evaluate.recalibrate`` — temperature (per sample or pooled), vector and std scaling,
  isotonic recalibration of regression CDFs, conformal intervals and prediction sets, CV+,
  jackknife+ and jackknife+-after-bootstrap (``temperature_scale``,
  ``pooled_temperature_scale``, ``vector_scale``, ``std_scale``, ``isotonic_recalibrate``,
  ``conformalize``, ``cv_plus``, ``jackknife_plus``, ``jackknife_plus_after_bootstrap``; each
  also here, as ``bnn.evaluate.<name>``).
* ``bnn.evaluate.ood`` — out-of-distribution detection: AUROC, AUPR, FPR at 95 % TPR of an
  uncertainty score (``ood_detection``, ``ood_table``).
* ``bnn.evaluate.shift`` — image rotation and accuracy/NLL/ECE against the angle
  (``rotate``, ``shift_curve``).
* ``bnn.evaluate.plots`` — figures (needs the ``plots`` extra); the only matplotlib
  importer.
"""

from bnn.evaluate import metrics as metrics
from bnn.evaluate import ood as ood
from bnn.evaluate import plots as plots
from bnn.evaluate import recalibrate as recalibrate
from bnn.evaluate import shift as shift
from bnn.evaluate.calibration import CalibrationReport, calibration
from bnn.evaluate.convergence import ConvergenceWarning, Summary, summary
from bnn.evaluate.diagnostics import loo, to_arviz
from bnn.evaluate.ood import OODReport, ood_detection
from bnn.evaluate.recalibrate import (
    conformalize,
    cv_plus,
    isotonic_recalibrate,
    jackknife_plus,
    jackknife_plus_after_bootstrap,
    pooled_temperature_scale,
    std_scale,
    temperature_scale,
    vector_scale,
)
from bnn.evaluate.shift import ShiftCurve, rotate, shift_curve

__all__ = [
    "CalibrationReport",
    "ConvergenceWarning",
    "OODReport",
    "ShiftCurve",
    "Summary",
    "calibration",
    "conformalize",
    "cv_plus",
    "isotonic_recalibrate",
    "jackknife_plus",
    "jackknife_plus_after_bootstrap",
    "loo",
    "ood_detection",
    "pooled_temperature_scale",
    "rotate",
    "shift_curve",
    "std_scale",
    "summary",
    "temperature_scale",
    "to_arviz",
    "vector_scale",
]
