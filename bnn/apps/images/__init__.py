"""The image classification benchmark (``bnn benchmark images``): a LeNet on MNIST-style
images, judged on calibration, out-of-distribution detection and rotation.

* ``network.py`` — the LeNet-5-style CNN of Laplace Redux, the method names and the settings.
* ``methods.py`` — each method from the training images to what predicts (`SeedRun` trains the
  shared MAP network and ensemble once per seed).
* ``evaluation.py`` — test metrics, OOD detection, the rotation curve, time and peak memory.
* ``command.py`` — seeds, methods and figures of one benchmark run.
* ``report.py`` — mean ± s.e. over seeds as markdown and JSON, and the rotation figure.
* ``cli.py`` — the command line's arguments, checked before any training.
"""

__all__: list[str] = []
