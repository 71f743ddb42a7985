"""A Gaussian over (a subset of) a network's parameters: the posterior of Laplace and SWAG.

``θ_sel ~ N(θ̄, Σ)`` over the selected parameters (say the last layer), every other parameter
fixed at its trained value. ``Σ`` is a structured `CovarianceFactor` (dense, diagonal,
per-layer Kronecker, diagonal plus low rank). Function samples are evaluated in one
``vmap`` per memory-budgeted chunk (``functional_call`` over stacked parameter draws); the
linearised (GLM) predictive is available in closed form (``predictive = "glm"``).

Example:
    >>> posterior, _ = bnn.infer.laplace(net, (x, y), likelihood=bnn.Gaussian(0.1))
    >>> posterior.sample_functions(x_test, 100, rng=0).shape     # [100, N, 1]
    >>> posterior.predictive = "glm"
    >>> bnn.predict_with_uncertainty(posterior, x_test).std       # closed form
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

from bnn.likelihoods import Likelihood, Prediction
from bnn.posterior._covariance import CovarianceFactor
from bnn.posterior._evaluate import eval_mode, evaluate_parameter_samples_chunked
from bnn.posterior._glm import check_glm_likelihood, glm_prediction
from bnn.posterior._linearise import output_jacobians, unflatten_parameters
from bnn.posterior._model_input import check_model_input
from bnn.posterior.protocol import Draws, check_inputs, check_memory_budget
from bnn.random.default import RNGLike, resolve_rng
from bnn.random.rng import RNG

__all__ = ["GaussianMixturePosterior", "GaussianPosterior", "Predictive"]

Predictive = Literal["samples", "glm"]
_PREDICTIVES = ("samples", "glm")
_LINKS = ("probit", "mc")


class GaussianPosterior:
    """``N(θ̄, Σ)`` over the parameters ``names`` of ``model``; the rest stay as trained.

    A `bnn.posterior.ParameterPosterior`, a `bnn.posterior.CarriesLikelihood` (when given a
    likelihood) and a `bnn.posterior.closed_form.ClosedFormPredictive`.

    Args:
        model: the network (its selected parameters are not modified).
        names: selected parameter names (``named_parameters`` order), defining the flat order.
        mean: ``θ̄`` ``[P]``.
        factor: ``Σ`` (a `bnn.posterior._covariance.CovarianceFactor` over ``P``).
        likelihood: the observation model to carry (``None``: the caller passes one).
        predictive: ``"samples"`` (networks with sampled weights) or ``"glm"`` (linearised).
        link: for ``"glm"`` with a categorical likelihood, ``"probit"`` or ``"mc"``.
        batchnorm_data: inputs ``[M, ...]`` whose batch statistics every weight sample's
            BatchNorm layers are reset to (as SWAG does); ``None`` keeps the stored ones.
    """

    def __init__(
        self,
        model: nn.Module,
        names: Sequence[str],
        mean: Tensor,
        factor: CovarianceFactor,
        *,
        likelihood: Likelihood | None = None,
        predictive: Predictive = "samples",
        link: str = "probit",
        batchnorm_data: Tensor | None = None,
    ) -> None:
        parameters = dict(model.named_parameters())
        missing = [name for name in names if name not in parameters]
        if missing or not names:
            raise ValueError(f"names must be parameters of the model; unknown: {missing}.")
        if mean.shape != (factor.num_parameters,):
            raise ValueError(
                f"mean has shape {tuple(mean.shape)}, the factor {factor.num_parameters} "
                "parameters."
            )
        self._model = model
        self.names = list(names)
        self.shapes = [parameters[name].shape for name in self.names]
        self.mean = mean
        self.factor = factor
        self.likelihood = likelihood
        self.link = link
        self.predictive = predictive
        self.batchnorm_data = batchnorm_data

    # ------------------------------------------------------------------ settings
    @property
    def predictive(self) -> Predictive:
        """``"samples"`` or ``"glm"``; what ``predict_with_uncertainty`` uses."""
        return self._predictive

    @predictive.setter
    def predictive(self, value: Predictive) -> None:
        if value not in _PREDICTIVES:
            raise ValueError(f"predictive must be one of {_PREDICTIVES}, got {value!r}.")
        if value == "glm":
            check_glm_likelihood(self.likelihood)
        if self.link not in _LINKS:
            raise ValueError(f"link must be one of {_LINKS}, got {self.link!r}.")
        self._predictive = value

    @property
    def model(self) -> nn.Module:
        """The network the weight draws belong to."""
        return self._model

    @property
    def covariance(self) -> Tensor:
        """``Σ`` ``[P, P]`` (dense: for small selections)."""
        return self.factor.dense()

    @property
    def variance(self) -> Tensor:
        """``diag Σ`` ``[P]``."""
        return self.factor.variance()

    @property
    def predictive_likelihood(self) -> Likelihood | None:
        """The carried observation model (``None``: pass ``likelihood=`` to predict)."""
        return self.likelihood

    # ------------------------------------------------------------------ sampling
    def sample_flat(self, num_samples: int, *, rng: RNGLike = None) -> Tensor:
        """Parameter draws ``[S, P]`` in flat order from generator ``"predict"`` of ``rng``."""
        generator = resolve_rng(rng).torch_generator("predict", self.mean.device)
        noise = torch.randn(
            (num_samples, self.factor.noise_size),
            generator=generator,
            dtype=self.mean.dtype,
            device=self.mean.device,
        )
        return self.mean + self.factor.transform(noise)

    def sample_parameters(self, num_samples: int, *, rng: RNGLike = None) -> dict[str, Tensor]:
        """Draws of the selected parameters: name -> ``[1, S, *shape]`` (chain, draw)."""
        flat = self.sample_flat(num_samples, rng=rng)
        return {k: v.unsqueeze(0) for k, v in self._unflatten(flat).items()}

    def sample_functions(
        self,
        x: Tensor,
        num_samples: int,
        *,
        rng: RNGLike = None,
        memory_budget: int | None = None,
    ) -> Tensor:
        """Network outputs under ``S`` parameter draws: ``[S, N, ...]``.

        Draws come from generator ``"predict"`` of ``rng`` (same seed, same bits) and are
        evaluated in one ``vmap`` per chunk of ``memory_budget`` bytes; with
        ``batchnorm_data`` each draw's BatchNorm statistics are recomputed (a loop over draws).
        """
        self.check_inputs(x, num_samples)
        budget = check_memory_budget(memory_budget, x.device)
        flat = self.sample_flat(num_samples, rng=rng)
        return self.evaluate(flat, x, budget)

    def evaluate(self, flat: Tensor, x: Tensor, memory_budget: int) -> Tensor:
        """Outputs ``[S, N, ...]`` of the network with selected parameters ``flat`` ``[S, P]``."""
        parameters = self._unflatten(flat)
        if self.batchnorm_data is not None and _has_batchnorm(self._model):
            return _evaluate_with_batchnorm(self._model, parameters, x, self.batchnorm_data)
        with torch.no_grad():
            return evaluate_parameter_samples_chunked(self._model, parameters, x, memory_budget)

    def draws(
        self, num_samples: int | None = None, *, x: Tensor | None = None, rng: RNGLike = None
    ) -> Draws:
        """``num_samples`` (default 100) fresh draws, and ``f`` at ``x`` from the same draws."""
        count = 100 if num_samples is None else num_samples
        flat = self.sample_flat(count, rng=rng)
        parameters = {k: v.unsqueeze(0) for k, v in self._unflatten(flat).items()}
        functions = None
        if x is not None:
            self.check_inputs(x, count)
            budget = check_memory_budget(None, x.device)
            functions = self.evaluate(flat, x, budget).unsqueeze(0)
        return Draws(parameters=parameters, functions=functions, is_mcmc=False)

    def _unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        return unflatten_parameters(flat, self.names, self.shapes)

    def check_inputs(self, x: Tensor, num_samples: int) -> None:
        """Refuse inputs the network cannot take (features, dtype, device, NaN) by name,
        before any Jacobian or vmapped evaluation turns the mismatch into a raw error."""
        check_inputs(x, self.mean, num_samples)
        check_model_input(self._model, x)

    # ------------------------------------------------------------------ linearised predictive
    def functional_moments(
        self, x: Tensor, *, memory_budget: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Mean ``f(x, θ̄)`` ``[N, *out]`` and covariance ``J Σ Jᵀ`` ``[N, C, C]``."""
        self.check_inputs(x, 1)
        budget = check_memory_budget(memory_budget, x.device)
        outputs, jacobian = output_jacobians(
            self._model, self.names, x, budget, at=self._unflatten(self.mean)
        )
        return outputs.detach(), self.factor.functional(jacobian.detach())

    def closed_form_prediction(
        self,
        x: Tensor,
        *,
        likelihood: Likelihood | None,
        num_samples: int,
        rng: RNG,
        memory_budget: int,
    ) -> Prediction | None:
        """The GLM predictive when ``predictive == "glm"``, else ``None`` (sample instead)."""
        if self._predictive != "glm":
            return None
        check_glm_likelihood(likelihood)
        mean, covariance = self.functional_moments(x, memory_budget=memory_budget)
        generator = rng.torch_generator("predict", x.device)
        return glm_prediction(mean, covariance, likelihood, num_samples, generator, self.link)


class GaussianMixturePosterior:
    """An equally weighted mixture of `GaussianPosterior`s of one architecture (MultiSWAG).

    ``S`` function samples take ``⌈S/M⌉`` or ``⌊S/M⌋`` draws from each of the ``M``
    components (component ``m`` draws with ``rng.spawn(m)``). Components of one network are
    evaluated in one pass; components of different networks (independently trained ones, as
    in Wilson & Izmailov 2020) each through their own network — they must select parameters
    of the same names and shapes.

    Args:
        components: posteriors over the same parameters of one network, or of networks of one
            architecture.
    """

    def __init__(self, components: Sequence[GaussianPosterior]) -> None:
        if not components:
            raise ValueError("a mixture needs at least one component.")
        first = components[0]
        if any(c.names != first.names or c.shapes != first.shapes for c in components):
            raise ValueError(
                "mixture components must select parameters of the same names and shapes "
                "(networks of one architecture)."
            )
        self.components = list(components)
        self._one_network = all(c.model is first.model for c in components)

    @property
    def model(self) -> nn.Module:
        """The first component's network."""
        return self.components[0].model

    @property
    def predictive_likelihood(self) -> Likelihood | None:
        """The first component's carried likelihood."""
        return self.components[0].likelihood

    def _sample_parts(self, num_samples: int, rng: RNGLike) -> tuple[list[Tensor], Tensor]:
        """Per-component draws ``[S_m, P]`` and, for their concatenation, the draw order."""
        parent = resolve_rng(rng)
        m = len(self.components)
        counts = [len(range(i, num_samples, m)) for i in range(m)]
        parts = [
            component.sample_flat(count, rng=parent.spawn(i))
            for i, (component, count) in enumerate(zip(self.components, counts, strict=True))
            if count > 0
        ]
        order = torch.cat([torch.arange(i, num_samples, m) for i in range(m)])
        return parts, order.to(parts[0].device)

    def sample_flat(self, num_samples: int, *, rng: RNGLike = None) -> Tensor:
        """Draws ``[S, P]``: component ``m`` gives draws ``m, m+M, ...`` (round robin order)."""
        return _in_order(*self._sample_parts(num_samples, rng))

    def sample_parameters(self, num_samples: int, *, rng: RNGLike = None) -> dict[str, Tensor]:
        """Draws of the selected parameters: name -> ``[1, S, *shape]``."""
        flat = self.sample_flat(num_samples, rng=rng)
        return {k: v.unsqueeze(0) for k, v in self.components[0]._unflatten(flat).items()}

    def sample_functions(
        self,
        x: Tensor,
        num_samples: int,
        *,
        rng: RNGLike = None,
        memory_budget: int | None = None,
    ) -> Tensor:
        """``[S, N, ...]`` outputs under draws from the mixture (see ``sample_flat``)."""
        self.components[0].check_inputs(x, num_samples)
        budget = check_memory_budget(memory_budget, x.device)
        return self._evaluate(*self._sample_parts(num_samples, rng), x, budget)

    def draws(
        self, num_samples: int | None = None, *, x: Tensor | None = None, rng: RNGLike = None
    ) -> Draws:
        """``num_samples`` (default 100) draws from the mixture and ``f`` at ``x``."""
        count = 100 if num_samples is None else num_samples
        parts, order = self._sample_parts(count, rng)
        flat = _in_order(parts, order)
        parameters = {k: v.unsqueeze(0) for k, v in self.components[0]._unflatten(flat).items()}
        functions = None
        if x is not None:
            self.components[0].check_inputs(x, count)
            budget = check_memory_budget(None, x.device)
            functions = self._evaluate(parts, order, x, budget).unsqueeze(0)
        return Draws(parameters=parameters, functions=functions, is_mcmc=False)

    def _evaluate(self, parts: list[Tensor], order: Tensor, x: Tensor, budget: int) -> Tensor:
        """Outputs ``[S, N, ...]`` of the draws ``parts`` (in ``order``): one pass when the
        components share a network, else each part through its component's network."""
        if self._one_network:
            return self.components[0].evaluate(_in_order(parts, order), x, budget)
        # ``parts`` lacks the components without draws (S < M), which come last.
        outputs = [c.evaluate(p, x, budget) for c, p in zip(self.components, parts, strict=False)]
        return _in_order(outputs, order)


def _in_order(parts: list[Tensor], order: Tensor) -> Tensor:
    """The rows of ``parts`` concatenated, row ``i`` of the concatenation moved to ``order[i]``."""
    joined = torch.cat(parts)
    return torch.empty_like(joined).index_copy_(0, order, joined)


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _evaluate_with_batchnorm(
    model: nn.Module, parameters: dict[str, Tensor], x: Tensor, data: Tensor
) -> Tensor:
    """Per draw: reset BatchNorm statistics to those of ``data``, then evaluate ``x``.

    The statistics are cumulative averages over ``data`` in blocks of 256 (SWAG's
    ``bn_update``); other modules stay in eval mode. A loop over draws.
    """
    replica = copy.deepcopy(model)
    norms = [m for m in replica.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    outputs = []
    num_samples = next(iter(parameters.values())).shape[0]
    with torch.no_grad(), eval_mode(replica):
        for s in range(num_samples):
            draw = {name: value[s] for name, value in parameters.items()}
            for norm in norms:
                norm.reset_running_stats()
                norm.momentum = None
                norm.train()
            for block in torch.split(data, 256):
                functional_call(replica, draw, (block,))
            for norm in norms:
                norm.eval()
            outputs.append(functional_call(replica, draw, (x,)))
    return torch.stack(outputs)
