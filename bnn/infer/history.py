"""`History`: what an inference run recorded, one type for every method.

* ``metrics`` — one list per quantity, one value per epoch (``bnn.fit``) or step (SVI,
  SG-MCMC): ``loss``, ``nll``, ``kl``, ``kl_weight``, ``val_nll``, ``potential``, ...
* ``extras`` — scalars about the whole run: ``best_epoch``, ``stopped_early``, ``seconds``,
  ``gradient_evaluations``, ``divergences``, ``step_size``, ...
* ``chains`` — one `History` per chain (MCMC) or member (ensembles).
* ``sample_stats`` — per-draw sampler statistics ``[chain, draw]`` (``diverging``,
  ``step_size``, ``tree_depth``, ``acceptance_rate``, ...), ready for ArviZ's
  ``sample_stats`` group (``bnn.to_arviz(posterior, history=history)``).

Names read as attributes: ``history.loss`` is ``history.metrics["loss"]``, ``history.best_epoch``
is ``history.extras["best_epoch"]``.

Example:
    >>> posterior, history = bnn.fit(net, (x, y), likelihood=bnn.Gaussian(0.1), epochs=10)
    >>> history.loss[-1], history.method
    >>> samples, history = bnn.infer.nuts(net, (x, y), likelihood=bnn.Gaussian(0.1))
    >>> history.per_chain("divergences")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

__all__ = ["History"]


@dataclass
class History:
    """The record of one inference run (see the module docstring for the fields).

    Attributes:
        method: the inference method that wrote it (``"fit"``, ``"nuts"``, ``"svi"``, ...).
        metrics: quantity -> one value per epoch or step.
        extras: scalars about the whole run.
        chains: per-chain (or per-member) histories.
        sample_stats: quantity -> ``[chain, draw]`` tensor.
    """

    method: str
    metrics: dict[str, list[float]] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    chains: list[History] = field(default_factory=list)
    sample_stats: dict[str, Tensor] = field(default_factory=dict)

    def record(self, **values: float) -> None:
        """Append one value to each named metric (a new epoch or step)."""
        for name, value in values.items():
            self.metrics.setdefault(name, []).append(float(value))

    def per_chain(self, name: str) -> list[Any]:
        """``name`` from every chain's (or member's) history, in order."""
        return [getattr(chain, name) for chain in self.chains]

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: metrics first, then extras.
        if name.startswith("__") or name in ("metrics", "extras"):
            raise AttributeError(name)
        if name in self.metrics:
            return self.metrics[name]
        if name in self.extras:
            return self.extras[name]
        known = sorted([*self.metrics, *self.extras])
        raise AttributeError(f"this {self.method} history has no {name!r}; it records {known}.")
