"""Seed-aware hyperparameter tuning on Optuna (the optional extra ``bnn-torch[tune]``).

* ``bnn.tune.study`` — `tune` and `TuneResult`: configurations ranked by many common seeds.
* ``bnn.tune.space`` — the search space: `Float`, `Int`, `Categorical`.
* ``bnn.tune.racing`` — `Race`: seeds added to the leaders until they separate.
* ``bnn.tune.objectives`` — ready objectives for the library's own methods.
"""

from bnn.tune import objectives
from bnn.tune.racing import Race
from bnn.tune.space import Categorical, Float, Int
from bnn.tune.study import TuneResult, tune

__all__ = ["Categorical", "Float", "Int", "Race", "TuneResult", "objectives", "tune"]
