"""Gaussian processes on GPyTorch: exact regression, sparse variational GPs, deep kernels.

Needs the optional extra: ``pip install bnn-torch[gp]`` (GPyTorch).

* ``method="exact"`` — exact GP regression: ``f | y ~ N(K_*ᵀ (K + σ² I)⁻¹ y,
  K_** − K_*ᵀ (K + σ² I)⁻¹ K_*)`` (Rasmussen & Williams 2006, eq. 2.22–2.24), hyper-parameters
  by the exact marginal likelihood. Dense ``N × N`` Cholesky (no conjugate gradients: answers
  are exact to rounding), so ``N`` up to a few thousand; ``max_exact_bytes`` guards memory.
* ``method="svgp"`` — sparse variational GP (Hensman et al. 2013/2015): ``M`` inducing points,
  mini-batches, ELBO; the variational distribution is trained by natural gradients
  (Salimbeni et al. 2018; one step of ``ngd_lr=1`` on the full batch is the optimum for a
  Gaussian likelihood) and everything else by Adam (``ngd_lr=None``: Adam for all of it, on a
  Cholesky-parameterised distribution). Regression (``bnn.Gaussian``), binary
  classification (``bnn.Bernoulli``, logit link, Gauss–Hermite expected log-likelihood) and
  multi-class classification (``bnn.Categorical``: ``K`` independent latent GPs, one per class,
  each with its own kernel, mean and inducing points, softmax link — GPyTorch's
  ``SoftmaxLikelihood`` without mixing weights — and a Monte Carlo expected log-likelihood
  drawn in the stream ``"gp"`` of ``rng``; Hensman et al. 2015).
* **Deep kernel learning** (Wilson et al. 2016): pass any ``nn.Module`` as ``model``; the GP
  runs on its features ``model(x)`` and the network trains jointly with the kernel.

The result, `GPPosterior` (``_posterior.py``), is a `bnn.Posterior` whose per-input
predictive is closed form: ``bnn.predict_with_uncertainty`` gets the exact Gaussian
``N(μ(x), σ_f²(x) + σ²)`` of each input for regression (Monte Carlo through the link for
classification) from the mean and the *diagonal* of the posterior covariance, in blocks of
inputs sized to the memory budget (``_predictive.py``). Only ``sample_functions`` draws joint
function samples ``[S, N, 1]`` (``[S, N, K]`` logits for ``K`` classes, the classes
independent) from the posterior over ``f`` at the given inputs (a Cholesky factor of the
``N × N`` posterior covariance of each latent GP, standard normals from the ``"predict"``
generator of ``rng``), for callers that need samples coherent across inputs. It carries its
observation model (``bnn.Gaussian`` with the learned noise, ``bnn.Bernoulli``,
``bnn.Categorical``), so ``bnn.predict_with_uncertainty(gp_posterior, x)``
needs no likelihood.

Example:
    >>> posterior, history = bnn.infer.gp(None, (x, y), likelihood=bnn.Gaussian(0.1,
    ...                                   learn_std=True), method="exact", epochs=100, rng=0)
    >>> bnn.predict_with_uncertainty(posterior, x_test, rng=0).interval(0.95)
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from bnn._checks import check_positive
from bnn.infer._indexed_data import model_device, whole_data
from bnn.infer.gp._checks import (
    KERNELS,
    MEANS,
    METHODS,
    check_components,
    check_exact,
    check_learned_noise,
    check_options,
)
from bnn.infer.gp._data import GPData, read_data
from bnn.infer.gp._models import (
    _carried,
    _exact_model,
    _features,
    _gp_likelihood,
    _initialise,
    _svgp_model,
    _train_exact,
    _train_svgp,
    gpytorch_module,
)
from bnn.infer.gp._outputs import IndependentOutputsGP, output_count, train_outputs
from bnn.infer.gp._posterior import GPPosterior
from bnn.infer.history import History
from bnn.likelihoods import Gaussian, Likelihood, require_one_std
from bnn.posterior._evaluate import eval_mode
from bnn.random.default import RNGLike, resolve_rng
from bnn.random.rng import RNG

__all__ = ["KERNELS", "MEANS", "METHODS", "GPPosterior", "gp", "gpytorch_module"]


def gp(
    model: nn.Module | None,
    data: tuple[Tensor, Tensor] | Dataset[Any] | DataLoader[Any],
    *,
    likelihood: Likelihood,
    num_classes: int | None = None,
    method: str = "exact",
    kernel: str | Any = "rbf",
    mean: str | Any = "constant",
    lengthscale: float | None = None,
    outputscale: float | None = None,
    train_hyperparameters: bool = True,
    epochs: int = 100,
    lr: float = 0.05,
    num_inducing: int = 128,
    inducing_points: Tensor | None = None,
    learn_inducing: bool = True,
    ngd_lr: float | None = 0.1,
    jitter: float | None = None,
    batch_size: int | None = None,
    max_exact_bytes: int = 2**31,
    min_noise: float = 1e-4,
    noise_prior: Any = None,
    rng: RNGLike = None,
    progress: bool = True,
) -> tuple[GPPosterior | IndependentOutputsGP, History]:
    """Fit a GP (exact or sparse variational, optionally on deep-kernel features).

    Args:
        model: ``None`` (a GP on ``x``) or a feature network ``nn.Module`` (deep kernel
            learning: the GP runs on ``model(x)`` ``[N, F]``; trained jointly, in place).
        data: ``(x, y)``: inputs ``[N, D]`` (any shape ``[N, ...]`` with a feature network),
            targets ``[N]`` or ``[N, 1]`` (0/1 for ``Bernoulli``; class indices
            ``0 … K−1`` for ``Categorical``, integer or whole-number floats, not one-hot),
            or ``[N, D]`` for ``D`` independent regression outputs (one GP per column, each
            with its own hyper-parameters and noise: `IndependentOutputsGP`, see
            ``bnn.infer.gp._outputs``; a kernel or mean object and a feature network are then
            copied for each output, not trained in place; ``bnn.Gaussian`` may give one std
            per output); a ``Dataset`` of such pairs is read whole. For
            ``method="svgp"`` also a ``DataLoader`` of such ``(x, y)`` batches over a
            map-style dataset: each epoch reads it once (its batches and shuffling; seed its
            ``generator``), ``N = len(dataset)``; ``num_classes`` is then required for
            ``Categorical`` and ``batch_size`` must be ``None``.
        likelihood: ``bnn.Gaussian(std)`` (fixed noise) or ``bnn.Gaussian(std,
            learn_std=True)`` (noise learned from ``std``), ``bnn.Bernoulli()`` (binary, logit
            link) or ``bnn.Categorical()`` (``K`` classes: ``K`` independent latent GPs,
            softmax link); the classifiers need ``method="svgp"``.
        num_classes: ``K`` for ``bnn.Categorical`` (at least 2; ``None``: the largest label
            plus one — pass it when some classes are missing from the training data).
        method: ``"exact"`` or ``"svgp"``.
        kernel: ``"rbf"``, ``"matern12"``, ``"matern32"`` or ``"matern52"``, scaled by an
            output scale; one lengthscale per input feature (ARD); with ``K`` classes each
            latent GP has its own. Or any ``gpytorch.kernels.Kernel`` object — sums,
            products, ``PeriodicKernel``, ``LinearKernel``, ARD, priors registered on its
            hyper-parameters (``lengthscale_prior=...``): used as given and trained in place;
            for ``K`` classes built with ``batch_shape=torch.Size([K])``.
        mean: ``"constant"`` (learned) or ``"zero"``, or a ``gpytorch.means.Mean`` object
            (``batch_shape=[K]`` for ``K`` classes).
        lengthscale: initial lengthscale (``None``: GPyTorch's default, ≈ 0.69).
        outputscale: initial output scale, the prior variance (``None``: GPyTorch's
            default, ≈ 0.69).
        train_hyperparameters: ``False`` keeps kernel, mean and noise fixed (exact: nothing
            is trained; SVGP: only the variational distribution).
        epochs: passes over the data (exact: full-batch steps).
        lr: Adam's learning rate (hyper-parameters, inducing locations, features).
        num_inducing: ``M`` inducing points for SVGP, initialised at ``M`` training inputs
            drawn without replacement from the generator ``"inducing"`` of ``rng``.
        inducing_points: explicit initial inducing locations ``[M, F]`` (in feature space;
            for ``K`` classes repeated for each class, or ``[K, M, F]``).
        learn_inducing: optimise the inducing locations.
        ngd_lr: natural-gradient step of the variational distribution (1 is exact in one
            full-batch step for a Gaussian likelihood; smaller for mini-batches and the
            classifiers); ``None``: no natural gradients — the distribution is parameterised
            by its mean and Cholesky factor and trained by Adam with everything else (``lr``).
        jitter: diagonal jitter SVGP adds to ``K_zz`` and the predictive covariance
            (``None``: GPyTorch's ``variational_cholesky_jitter``, 1e-6 in float64, 1e-4 in
            float32); SVGP's moments differ from the exact ones by about this much.
        batch_size: SVGP mini-batch size (``None``: full batch); shuffled by the generator
            ``"data"`` of ``rng``.
        max_exact_bytes: refuse an exact GP whose ``N × N`` matrices would need more memory.
        min_noise: the smallest noise variance ``σ²`` a learned Gaussian noise may reach
            (GPyTorch's default constraint, ``1e-4``; a fixed ``bnn.Gaussian(σ)`` is kept as
            given). A learned noise at this floor or below 1 % of the targets' standard
            deviation warns: the GP then interpolates its training data (duplicated inputs,
            rounded targets), and its predictive density spikes at training inputs.
        noise_prior: a ``gpytorch.priors.Prior`` on the Gaussian noise variance ``σ²``
            (``None``: none). Priors on hyper-parameters enter the training objective
            (GPyTorch adds their log densities to the marginal likelihood or the ELBO).
        rng: randomness: inducing points (generator ``"inducing"``), shuffling (generator
            ``"data"``), GPyTorch's draws in training (stream ``"gp"``: the variational
            initialisation and, for ``Categorical``, the Monte Carlo samples of the expected
            log-likelihood), so the same ``rng`` trains the same posterior; the feature
            network's initialisation is the caller's (build it in ``rng.stream("init")``).
        progress: show a tqdm bar.

    Returns:
        ``(GPPosterior, History)`` (``(IndependentOutputsGP, History)`` for ``D`` outputs,
        with output ``d``'s history in ``history.chains[d]``); ``history.loss`` per epoch
        (negative marginal log-likelihood or negative ELBO per datum), ``history.seconds``,
        and the learned ``noise_std``, ``lengthscale`` (a list of ``F``), ``outputscale``
        (a float); for ``K`` classes ``lengthscale`` is ``K`` lists of ``F`` and
        ``outputscale`` a list of ``K``. ``hyperparameters``: every kernel hyper-parameter
        by name (constrained values as nested lists), also for kernel objects.
        ``posterior.sample_functions(x, S)`` gives ``[S, N, 1]`` (``[S, N, K]`` logits for
        ``K`` classes).

    Raises:
        ImportError: GPyTorch is not installed (``pip install bnn-torch[gp]``).
        ValueError: an exact GP larger than ``max_exact_bytes`` (with the memory it needs),
            a classifier with ``method="exact"``, invalid data (labels outside ``0 … K−1``,
            one-hot targets) or options.

    Example:
        >>> posterior, _ = gp(None, (x, y), likelihood=bnn.Gaussian(0.1, learn_std=True),
        ...                   method="svgp", num_inducing=64, batch_size=256, epochs=20, rng=0)
    """
    settings = {k: v for k, v in locals().items() if k not in ("model", "data", "rng")}
    data = whole_data(data, model_device(model)) if isinstance(data, Dataset) else data
    if output_count(data, likelihood) is not None:
        return _several_outputs(model, data, settings, rng)
    start = time.perf_counter()
    require_one_std(likelihood, "a GP with one output")
    training = read_data(model, data, likelihood, method, kernel, mean, num_classes, batch_size)
    x, y, num_classes = training.x, training.y, training.num_classes
    check_options(epochs, num_inducing, lr, ngd_lr, jitter, batch_size)
    check_positive("min_noise", min_noise)
    if method == "exact":
        check_exact(x, likelihood, max_exact_bytes)
    gpytorch = gpytorch_module()
    initial = {"lengthscale": lengthscale, "outputscale": outputscale}
    check_components(gpytorch, kernel, mean, num_classes, initial)
    generator = resolve_rng(rng)
    features = nn.Identity() if model is None else model
    gp_likelihood = _gp_likelihood(gpytorch, likelihood, num_classes, min_noise, noise_prior)
    if method == "exact":
        gp_model = _exact_model(gpytorch, x, y, features, kernel, mean, gp_likelihood)
    else:
        inducing = _inducing_points(
            model, features, training, inducing_points, num_inducing, generator
        )
        gp_model = _svgp_model(
            gpytorch,
            inducing,
            features,
            kernel,
            mean,
            learn_inducing,
            jitter,
            num_classes,
            natural=ngd_lr is not None,
        )
    gp_model, gp_likelihood = _placed(gp_model, gp_likelihood, likelihood, x, initial)
    history = History("gp", metrics={"loss": []}, extras={"method": method})
    train = _train_exact if method == "exact" else _train_svgp
    with generator.stream("gp"):  # GPyTorch's own draws (variational initialisation)
        train(
            gpytorch,
            gp_model,
            gp_likelihood,
            x,
            y,
            epochs=epochs,
            lr=lr,
            ngd_lr=ngd_lr,
            batch_size=batch_size,
            data=training,
            train_hyperparameters=train_hyperparameters,
            rng=generator,
            progress=progress,
            history=history,
        )
    posterior = _trained_posterior(gp_model, features, likelihood, gp_likelihood, num_classes, x)
    if isinstance(likelihood, Gaussian) and likelihood.learn_std:
        check_learned_noise(float(gp_likelihood.noise.detach()) ** 0.5, y, min_noise)
    _record_hyperparameters(history, gp_model, posterior.likelihood, num_classes, start)
    return posterior, history


def _several_outputs(
    model: nn.Module | None, data: Any, settings: dict[str, Any], rng: RNGLike
) -> tuple[IndependentOutputsGP, History]:
    """``gp`` with regression targets ``[N, D]``: one GP per column (``_outputs.py``), each
    call with ``settings`` (``gp``'s arguments); one progress bar over the outputs."""
    components = {k: settings.pop(k) for k in ("likelihood", "kernel", "mean", "noise_prior")}
    progress = settings.pop("progress")
    return train_outputs(
        lambda features, column, own, child: gp(
            features, column, **settings, **own, rng=child, progress=False
        ),
        model,
        data,
        components,
        rng,
        progress,
    )


def _placed(
    gp_model: Any,
    gp_likelihood: Any,
    likelihood: Likelihood,
    x: Tensor,
    initial: dict[str, float | None],
) -> tuple[Any, Any]:
    """Model and likelihood on the data's device and dtype, with their initial values: a
    Gaussian's noise set in that dtype (not rounded via float32), lengthscale, output scale."""
    gp_model = gp_model.to(device=x.device, dtype=x.dtype)
    gp_likelihood = gp_likelihood.to(device=x.device, dtype=x.dtype)
    if isinstance(likelihood, Gaussian):
        gp_likelihood.noise = likelihood.std.detach().to(x.dtype) ** 2
    _initialise(gp_model, initial["lengthscale"], initial["outputscale"])
    return gp_model, gp_likelihood


def _trained_posterior(
    gp_model: Any,
    features: nn.Module,
    likelihood: Likelihood,
    gp_likelihood: Any,
    num_classes: int | None,
    x: Tensor,
) -> GPPosterior:
    """The trained model in eval mode as a `GPPosterior` carrying its observation model."""
    gp_model.eval()
    gp_likelihood.eval()
    return GPPosterior(
        gp_model,
        features,
        _carried(likelihood, gp_likelihood),
        gp_likelihood,
        num_classes=num_classes,
        input_shape=tuple(x.shape[1:]),
    )


def _inducing_points(
    model: nn.Module | None,
    features: nn.Module,
    training: GPData,
    given: Tensor | None,
    num_inducing: int,
    generator: RNG,
) -> Tensor:
    """``given``, or ``num_inducing`` training inputs (in feature space) drawn without
    replacement; the features in eval mode (no dropout draws, no batch-norm updates)."""
    x = training.x
    if given is not None:
        with torch.no_grad(), eval_mode(features):
            dims = (_features(features, x[:1]) if model is not None else x[:1]).shape[-1]
        if not isinstance(given, Tensor) or given.dim() not in (2, 3) or given.shape[-1] != dims:
            shape = tuple(given.shape) if isinstance(given, Tensor) else type(given).__name__
            raise ValueError(
                f"inducing_points must be [M, {dims}] (or [K, M, {dims}] for K classes): "
                f"locations in the {dims}-dimensional feature space; got {shape}."
            )
        return given
    n = training.size
    chosen = torch.randperm(n, generator=generator.torch_generator("inducing"))
    chosen = chosen[: min(num_inducing, n)]
    if training.loader is not None:  # only the chosen rows are read from the dataset
        x, chosen = training.rows(chosen), torch.arange(len(chosen))
    with torch.no_grad(), eval_mode(features):
        inputs = _features(features, x) if model is not None else x
    return inputs[chosen.to(x.device)]


def _record_hyperparameters(
    history: History, gp_model: Any, carried: Likelihood, num_classes: int | None, start: float
) -> None:
    """Seconds since ``start``, every kernel hyper-parameter by name, the named kernels'
    lengthscales and output scales, and the Gaussian noise, in ``history.extras``."""
    kernel_module = gp_model.covar_module
    history.extras.update(
        seconds=time.perf_counter() - start, hyperparameters=kernel_hyperparameters(kernel_module)
    )
    named = getattr(kernel_module, "base_kernel", None)
    if (
        named is not None
        and hasattr(named, "lengthscale")
        and hasattr(kernel_module, "outputscale")
    ):
        lengthscales = named.lengthscale.detach()
        outputscales = kernel_module.outputscale.detach()
        history.extras.update(
            lengthscale=lengthscales.flatten().tolist()
            if num_classes is None
            else lengthscales.reshape(num_classes, -1).tolist(),
            outputscale=float(outputscales) if num_classes is None else outputscales.tolist(),
        )
    if isinstance(carried, Gaussian):
        history.extras["noise_std"] = float(carried.std)


def kernel_hyperparameters(kernel: Any) -> dict[str, Any]:
    """``{name: value}`` of a GPyTorch kernel's hyper-parameters, constrained (``raw_``
    dropped from the names: ``"kernels.0.base_kernel.lengthscale"``), as nested lists."""
    values = {}
    for name, parameter, constraint in kernel.named_parameters_and_constraints():
        value = parameter if constraint is None else constraint.transform(parameter)
        values[name.replace("raw_", "")] = value.detach().squeeze().tolist()
    return values
