"""Several independent outputs: one GP per target column, as one `bnn.Posterior`.

``gp(model, (x, y), ...)`` with regression targets ``y [N, D]``, ``D > 1``, trains ``D``
independent GPs — output ``d`` on ``y[:, d]`` with its own kernel hyper-parameters, mean and
noise, from ``rng.spawn(f"output-{d}")`` (GPyTorch's "batch independent multi-output GP",
trained one output at a time). A kernel or mean object, and a feature network, are copied
for each output. The predictive of output ``d`` is that GP's exact Gaussian (closed form),
so the outputs are independent given ``x``; joint function samples are drawn per output.

Example:
    >>> posterior, history = bnn.infer.gp(None, (x, y), likelihood=bnn.Gaussian(0.1,
    ...     learn_std=True))                                   # y: [N, 3]
    >>> bnn.predict_with_uncertainty(posterior, x_test).std    # [N_test, 3]
    >>> history.chains[2].noise_std                            # output 2's learned noise
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from bnn._progress import progress_bar
from bnn.infer.gp._posterior import GPPosterior
from bnn.infer.history import History
from bnn.likelihoods import Gaussian, Likelihood, Prediction
from bnn.posterior._glm import glm_prediction
from bnn.random.default import RNGLike, resolve_rng
from bnn.random.rng import RNG

__all__ = ["IndependentOutputsGP", "output_count", "train_outputs"]


def output_count(data: object, likelihood: Likelihood) -> int | None:
    """``D`` when ``data`` are tensors with regression targets ``[N, D]``, ``D > 1``."""
    if not isinstance(likelihood, Gaussian) or not isinstance(data, tuple) or len(data) != 2:
        return None
    y = data[1]
    if isinstance(y, Tensor) and y.dim() == 2 and y.shape[1] > 1:
        return int(y.shape[1])
    return None


def train_outputs(
    fit_one: Callable[[nn.Module | None, tuple[Tensor, Tensor], dict[str, Any], RNG], Any],
    model: nn.Module | None,
    data: tuple[Tensor, Tensor],
    components: dict[str, Any],
    rng: RNGLike,
    progress: bool,
) -> tuple[IndependentOutputsGP, History]:
    """One GP per column of ``data[1]``: ``fit_one(model_copy, (x, y_d), components_copy,
    rng.spawn(f"output-{d}"))`` returns output ``d``'s ``(GPPosterior, History)``."""
    x, y = data
    parent = resolve_rng(rng)
    posteriors, histories = [], []
    for d in progress_bar(range(y.shape[1]), desc="gp (outputs)", disable=not progress):
        features = None if model is None else copy.deepcopy(model)
        own = {name: _own(value, d, y.shape[1]) for name, value in components.items()}
        posterior, history = fit_one(features, (x, y[:, d]), own, parent.spawn(f"output-{d}"))
        posteriors.append(posterior)
        histories.append(history)
    seconds = sum(float(h.extras.get("seconds", 0.0)) for h in histories)
    combined = History("gp", chains=histories, extras={"outputs": len(histories)})
    combined.extras["seconds"] = seconds
    combined.extras["noise_std"] = [h.extras.get("noise_std") for h in histories]
    return IndependentOutputsGP(posteriors), combined


def _own(value: Any, output: int, outputs: int) -> Any:
    """What output ``output`` of ``outputs`` gets: a GPyTorch kernel or mean object copied;
    of a `bnn.Gaussian` with one std per output, its own std (one std: a copy)."""
    if isinstance(value, Gaussian) and value.log_std.dim():
        if len(value.log_std) != outputs:
            raise ValueError(
                f"the likelihood has {len(value.log_std)} noise stds but y has {outputs} "
                "columns; give one std per output (or one for all)."
            )
        std = float(value.std.detach()[output])
        return Gaussian(std, learn_std=value.learn_std)
    return copy.deepcopy(value) if isinstance(value, nn.Module) else value


class IndependentOutputsGP(nn.Module):
    """``D`` independent GPs, one per output; a `bnn.Posterior` with outputs ``[N, D]``.

    Attributes:
        outputs: the ``D`` `GPPosterior` objects (output ``d`` is ``outputs[d]``).
    """

    def __init__(self, outputs: list[GPPosterior]) -> None:
        super().__init__()
        self.outputs = nn.ModuleList(outputs)

    def _posteriors(self) -> list[GPPosterior]:
        return [output for output in self.outputs if isinstance(output, GPPosterior)]

    @property
    def predictive_likelihood(self) -> Likelihood:
        """``bnn.Gaussian([σ_1, …, σ_D])``: each output's noise std (learned or given)."""
        stds = []
        for output in self._posteriors():
            assert isinstance(output.likelihood, Gaussian)
            stds.append(float(output.likelihood.std))
        return Gaussian(stds)

    def functional_moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Each output's posterior mean ``[D, N]`` and covariance ``[D, N, N]`` of ``f`` at
        ``x`` (the layout of a ``K``-class `GPPosterior`; the outputs are independent)."""
        moments = [output.functional_moments(x) for output in self._posteriors()]
        return torch.stack([m for m, _ in moments]), torch.stack([c for _, c in moments])

    def marginal_moments(
        self, x: Tensor, *, memory_budget: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Posterior mean and variance of ``f`` at each input and output: ``[N, D]`` each."""
        moments = [
            output.marginal_moments(x, memory_budget=memory_budget) for output in self._posteriors()
        ]
        return torch.stack([m for m, _ in moments], -1), torch.stack([v for _, v in moments], -1)

    def closed_form_prediction(
        self,
        x: Tensor,
        *,
        likelihood: Likelihood | None,
        num_samples: int,
        rng: RNG,
        memory_budget: int,
    ) -> Prediction:
        """Per input and output the exact Gaussian ``N(μ_d, σ²_f,d + σ_d²)`` (``[N, D]``)."""
        mean, variance = self.marginal_moments(x, memory_budget=memory_budget)
        generator = rng.torch_generator("predict", x.device)
        covariance = torch.diag_embed(variance)  # [N, D, D]: independent outputs
        return glm_prediction(mean, covariance, likelihood, num_samples, generator, "probit")

    def sample_functions(
        self,
        x: Tensor,
        num_samples: int,
        *,
        rng: RNGLike = None,
        memory_budget: int | None = None,
    ) -> Tensor:
        """Joint posterior samples per output, ``[S, N, D]`` (output ``d`` from
        ``rng.spawn(f"output-{d}")``; one ``N × N`` factor per output)."""
        parent = resolve_rng(rng)
        samples = [
            output.sample_functions(
                x, num_samples, rng=parent.spawn(f"output-{d}"), memory_budget=memory_budget
            )
            for d, output in enumerate(self._posteriors())
        ]
        return torch.cat(samples, -1)
