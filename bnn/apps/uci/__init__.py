"""The UCI regression benchmark: ``bnn benchmark uci`` (Hernández-Lobato & Adams 2015).

Read first: ``command.py`` (the protocol, ``run_uci`` over splits). Then:

- ``common.py``: what every method shares — the defaults, the prepared (standardised) split,
  the fitted result, the 50-unit network and the noise chosen on the validation split.
- ``methods.py``: one function per ``--method`` that trains on the prepared split.
- ``posthoc.py``: the methods built on a trained network (Laplace, SWAG, MultiSWAG, GP).
- ``tune.py``: ``--tune``, the seed-aware search of a method's hyper-parameters.
- ``report.py``: mean ± standard error per method beside the published row; ``uci.md``
  and ``uci.json``.

The data sets and their splits are read by ``bnn.apps.datasets``.
"""

from bnn.apps.uci.command import run_uci
from bnn.apps.uci.common import Defaults
from bnn.apps.uci.report import write_report

__all__ = ["Defaults", "run_uci", "write_report"]
