"""What the image benchmark measures of one trained method: test metrics, OOD detection, the
rotation curve, prediction time and the process's peak memory.

Peak memory is the largest resident set size of the process while the method trains and is
evaluated (sampled every 5 ms from ``/proc/self/statm``; elsewhere the process's lifetime peak,
``getrusage``), plus, on a GPU, the peak of CUDA memory allocated. It includes the data held in
memory (about 0.25 GB for 60,000 28×28 images in float32).
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from bnn.apps.datasets.images import ImageSet
from bnn.apps.images.methods import Trained
from bnn.apps.images.network import Settings
from bnn.evaluate.metrics import accuracy, brier_score, expected_calibration_error, nll
from bnn.evaluate.ood import SCORES, auroc, ood_detection, uncertainty_score
from bnn.evaluate.shift import shift_curve
from bnn.likelihoods import Categorical, ClassificationPrediction
from bnn.random.rng import RNG

__all__ = ["Evaluation", "PeakMemory", "evaluate"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _resident_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except OSError:
        return None


class PeakMemory:
    """Context manager: the peak resident memory (bytes) of this process inside the block.

    Example:
        >>> with PeakMemory() as peak:
        ...     work()
        >>> peak.bytes
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.bytes = max(self.bytes, _resident_bytes() or 0)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        if _resident_bytes() is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
            self.bytes = max(self.bytes, _resident_bytes() or 0)
        else:  # no /proc: the lifetime peak (kilobytes on Linux, bytes on macOS)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.bytes = peak if sys.platform == "darwin" else peak * 1024
        if torch.cuda.is_available():
            self.bytes += torch.cuda.max_memory_allocated()


@dataclass
class Evaluation:
    """One method's measurements on one seed (JSON-ready) and its predictions for figures."""

    metrics: dict[str, float]
    ood: dict[str, dict[str, Any]]
    shift: dict[str, list[float]]
    predictions: dict[str, ClassificationPrediction] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "ood": self.ood, "shift": self.shift}


def evaluate(
    trained: Trained,
    validation: ImageSet,
    test: ImageSet,
    ood_sets: dict[str, Tensor],
    settings: Settings,
    rng: RNG,
    *,
    keep_predictions: bool = False,
    progress: bool = True,
) -> Evaluation:
    """Test accuracy, NLL, ECE (15 bins), Brier; OOD detection per set; the rotation curve.

    Args:
        trained: the method.
        validation: the validation split (its NLL, ``val_nll``, chooses among methods; for
            ``temperature`` it is in-sample: the temperature was fitted there).
        test: the in-distribution test set.
        ood_sets: ``{name: images}`` of each out-of-distribution set.
        settings: the number of rotated images and the angles.
        rng: randomness of every prediction (one named child per set).
        keep_predictions: keep the test and OOD predictives (for figures).
        progress: show a bar over the rotation angles.
    """
    start = time.perf_counter()
    prediction = trained.predict(test.x, rng.spawn("test"))
    predict_seconds = time.perf_counter() - start
    metrics = {
        "accuracy": accuracy(prediction, test.y),
        "nll": nll(prediction, test.y),
        "ece": expected_calibration_error(prediction, test.y, num_bins=15),
        "brier": brier_score(prediction, test.y),
        "train_seconds": trained.seconds,
        "predict_seconds": predict_seconds,
        "num_samples": float(trained.num_samples),
    }
    if len(validation) > 0:
        held_out = trained.predict(validation.x, rng.spawn("validation"))
        metrics["val_nll"] = nll(held_out, validation.y)
    predictions = {"test": prediction} if keep_predictions else {}
    ood: dict[str, dict[str, Any]] = {}
    for name, images in ood_sets.items():
        outside = trained.predict(images, rng.spawn(f"ood {name}"))
        report = ood_detection(prediction, outside, score="entropy").as_dict()
        for score in SCORES:  # the AUROC of every score, for the record
            report[f"auroc_{score}"] = auroc(
                uncertainty_score(prediction, score), uncertainty_score(outside, score)
            )
        ood[name] = report
        if keep_predictions:
            predictions[name] = outside
    shifted = test.x[: settings.shift_images], test.y[: settings.shift_images]
    curve = shift_curve(
        trained.posterior,
        *shifted,
        angles=settings.angles,
        likelihood=Categorical(),
        num_samples=trained.num_samples,
        rng=rng.spawn("shift"),
        progress=progress,
    )
    return Evaluation(metrics, ood, curve.as_dict(), predictions)
