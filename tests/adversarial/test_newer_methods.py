"""Hostile calls over the entry points added since reliability round 2 (issue 31): Laplace (every
Hessian and subset option), SWAG and MultiSWAG, GPs, stacking, boosting, evidence training,
neural-linear, conformal prediction, temperature and std scaling, tuning and seed sweeps.

Each case is a call a user could make by mistake; it must fail at once with the error type
given and a message that starts as stated (what was wrong, and what to do), not with a raw
third-party traceback or a silently wrong result. The right-answer cases are at the end.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import pytest
import torch
from torch import nn

import bnn
from bnn._jobs import JobError
from bnn.evaluate.recalibrate import conformalize, std_scale, temperature_scale
from bnn.infer import NonFiniteLossError
from bnn.random.sweep import seed_sweep

pytest.importorskip("gpytorch")
tune_module = pytest.importorskip("bnn.tune")
pytest.importorskip("optuna")


class Case(NamedTuple):
    name: str
    call: Callable[[], Any]
    error: type[Exception]
    message: str


g = torch.Generator().manual_seed(0)
X = torch.randn(40, 2, generator=g)
Y = X.sum(-1, keepdim=True) + 0.1 * torch.randn(40, 1, generator=g)
LABELS = (X[:, 0] > 0).long()
G = bnn.Gaussian(0.3)


def net(out: int = 1) -> nn.Sequential:
    with bnn.RNG(0).stream("init"):
        return nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, out))


def trained(out: int = 1) -> nn.Sequential:
    m = net(out)
    bnn.fit(
        m,
        (X, Y if out == 1 else LABELS),
        likelihood=G if out == 1 else bnn.Categorical(),
        epochs=3,
        batch_size=20,
        progress=False,
    )
    return m


Q = {"progress": False}


def laplace(**kw: Any) -> Any:
    args = dict(model=_trained(), data=(X, Y), likelihood=G) | kw
    return bnn.infer.laplace(args.pop("model"), args.pop("data"), **args, **Q)


def swag(**kw: Any) -> Any:
    args = dict(model=_trained(), data=(X, Y), likelihood=G, epochs=4, lr=1e-2, rank=2) | kw
    return bnn.infer.swag(args.pop("model"), args.pop("data"), **args, **Q)


def multi_swag(**kw: Any) -> Any:
    args = (
        dict(model=[_trained(), trained()], data=(X, Y), likelihood=G, epochs=4, lr=1e-2, rank=2)
        | kw
    )
    return bnn.infer.multi_swag(args.pop("model"), args.pop("data"), **args, **Q)


def gp(**kw: Any) -> Any:
    args = dict(model=None, data=(X, Y), likelihood=G, epochs=2) | kw
    return bnn.infer.gp(args.pop("model"), args.pop("data"), **args, **Q)


def stack(**kw: Any) -> Any:
    args = dict(posteriors=[_laplace(), _laplace()], x=X, y=Y, likelihood=G, num_samples=8) | kw
    return bnn.infer.stack(args.pop("posteriors"), args.pop("x"), args.pop("y"), **args, **Q)


def boost(**kw: Any) -> Any:
    args = dict(factory=net, data=(X, Y), likelihood=G, num_stages=2, epochs=2, noise_epochs=2) | kw
    return bnn.infer.boost(args.pop("factory"), args.pop("data"), **args, **Q)


def marglik(**kw: Any) -> Any:
    args = (
        dict(model=net(), data=(X, Y), likelihood=G, epochs=4, every=2, burn_in=1, hyper_steps=2)
        | kw
    )
    return bnn.infer.marglik_training(args.pop("model"), args.pop("data"), **args, **Q)


def neural_linear(**kw: Any) -> Any:
    args = dict(model=_trained(), data=(X, Y), likelihood=G) | kw
    return bnn.infer.neural_linear(args.pop("model"), args.pop("data"), **args, **Q)


def conformal(**kw: Any) -> Any:
    args = dict(posterior=_laplace(), x=X, y=Y, likelihood=G, num_samples=8) | kw
    return conformalize(args.pop("posterior"), args.pop("x"), args.pop("y"), **args)


def temperature(**kw: Any) -> Any:
    args = (
        dict(
            posterior=_classifier_laplace(),
            x=X,
            y=LABELS,
            likelihood=bnn.Categorical(),
            num_samples=8,
        )
        | kw
    )
    return temperature_scale(args.pop("posterior"), args.pop("x"), args.pop("y"), **args)


def tune(**kw: Any) -> Any:
    args = (
        dict(
            objective=lambda p, r: p["a"], space={"a": tune_module.Float(0, 1)}, seeds=2, n_trials=2
        )
        | kw
    )
    return tune_module.tune(args.pop("objective"), args.pop("space"), **args, **Q)


def sweep(**kw: Any) -> Any:
    args = dict(fn=lambda r: {"m": 1.0}, seeds=2) | kw
    return seed_sweep(args.pop("fn"), args.pop("seeds"), **args, **Q)


@functools.cache
def _trained() -> nn.Sequential:
    return trained()


@functools.cache
def _classifier() -> nn.Sequential:
    return trained(2)


@functools.cache
def _laplace() -> Any:
    return bnn.infer.laplace(_trained(), (X, Y), likelihood=G, progress=False)[0]


@functools.cache
def _classifier_laplace() -> Any:
    return bnn.infer.laplace(
        _classifier(), (X, LABELS), likelihood=bnn.Categorical(), progress=False
    )[0]


NAN_X = X.clone()
NAN_X[3, 1] = math.nan
NAN_Y = Y.clone()
NAN_Y[5, 0] = math.inf


def _other_names_each_call() -> Callable[[bnn.RNG], dict[str, float]]:
    counter = iter(range(100))
    return lambda rng: {f"m{next(counter)}": 1.0}


CASES = [
    # Laplace
    Case(
        "laplace: hessian bogus",
        lambda: laplace(hessian="ggn"),
        ValueError,
        "hessian must be one of ('full', 'kron', 'diag'), got 'ggn'.",
    ),
    Case(
        "laplace: subset bogus",
        lambda: laplace(subset="first_layer"),
        ValueError,
        "subset must be 'last_layer', 'all' or parameter/module names",
    ),
    Case(
        "laplace: subset unknown name",
        lambda: laplace(subset=["5.weight"]),
        ValueError,
        "no parameter of the model matches subset=['5.weight']; name ",
    ),
    Case(
        "laplace: subset empty list",
        lambda: laplace(subset=[]),
        ValueError,
        "no parameter of the model matches subset=[]; name modules as",
    ),
    Case(
        "laplace: prior precision negative",
        lambda: laplace(prior_precision=-1.0),
        ValueError,
        "prior_precision must be positive and finite, got -1.0.",
    ),
    Case(
        "laplace: prior precision nan",
        lambda: laplace(prior_precision=math.nan),
        ValueError,
        "prior_precision must be positive and finite, got nan.",
    ),
    Case(
        "laplace: prior precision wrong length",
        lambda: laplace(prior_precision=[1.0, 2.0, 3.0]),
        ValueError,
        "prior_precision must be a scalar or have one value per layer",
    ),
    Case(
        "laplace: predictive bogus",
        lambda: laplace(predictive="exact"),
        ValueError,
        "predictive must be one of ('samples', 'glm'), got 'exact'.",
    ),
    Case(
        "laplace: link bogus",
        lambda: laplace(
            likelihood=bnn.Categorical(), model=_classifier(), data=(X, LABELS), link="logit"
        ),
        ValueError,
        "link must be one of ('probit', 'mc'), got 'logit'.",
    ),
    Case(
        "laplace: batch size 0",
        lambda: laplace(batch_size=0),
        ValueError,
        "batch_size must be a positive int, got 0.",
    ),
    Case(
        "laplace: memory budget 0",
        lambda: laplace(memory_budget=0),
        ValueError,
        "memory_budget must be positive bytes, got 0.",
    ),
    Case(
        "laplace: empty data",
        lambda: laplace(data=(X[:0], Y[:0])),
        ValueError,
        "x has 0 rows and y 0; give the same number of rows (at least one).",
    ),
    Case(
        "laplace: nan x",
        lambda: laplace(data=(NAN_X, Y)),
        ValueError,
        "x contains NaN or inf; clean or impute it first.",
    ),
    Case(
        "laplace: inf y",
        lambda: laplace(data=(X, NAN_Y)),
        ValueError,
        "y contains NaN or inf; clean or impute it first.",
    ),
    Case(
        "laplace: rows differ",
        lambda: laplace(data=(X, Y[:30])),
        ValueError,
        "x has 40 rows and y 30; give the same number of rows (at least one).",
    ),
    Case(
        "laplace: y 2 columns",
        lambda: laplace(data=(X, torch.cat([Y, Y], 1))),
        ValueError,
        "targets have shape (40, 2) but the model output has shape (4",
    ),
    Case(
        "laplace: wrong features",
        lambda: laplace(data=(torch.randn(40, 3), Y)),
        ValueError,
        "the model cannot take x of shape (40, 3): mat1 and mat2 shap",
    ),
    Case(
        "laplace: int x",
        lambda: laplace(data=(X.long(), Y)),
        ValueError,
        "the model cannot take x of shape (40, 2): mat1 and mat2 must",
    ),
    Case(
        "laplace: float64 x",
        lambda: laplace(data=(X.double(), Y)),
        TypeError,
        "x has dtype torch.float64 but the model's parameters are tor",
    ),
    Case(
        "laplace: no parameters",
        lambda: laplace(model=nn.Identity()),
        ValueError,
        "the model has no parameters; subset='last_layer' found no la",
    ),
    Case(
        "laplace: likelihood not a likelihood",
        lambda: laplace(likelihood="gaussian"),
        ValueError,
        "laplace supports bnn.Gaussian (regression) and bnn.Categoric",
    ),
    Case(
        "laplace: labels out of range",
        lambda: laplace(model=_classifier(), data=(X, LABELS + 5), likelihood=bnn.Categorical()),
        ValueError,
        "class indices must lie in [0, 1].",
    ),
    Case(
        "laplace: one-hot labels",
        lambda: laplace(
            model=_classifier(),
            data=(X, nn.functional.one_hot(LABELS, 2).float()),
            likelihood=bnn.Categorical(),
        ),
        TypeError,
        "Categorical targets must be an integer tensor of class indic",
    ),
    Case(
        "laplace: data not a pair",
        lambda: laplace(data=X),
        TypeError,
        "data must be (x, y) tensors, a Dataset or a DataLoader, got Tensor.",
    ),
    Case(
        "laplace: optimize prior bogus method",
        lambda: _laplace().optimize_prior_precision(method="bogus"),
        ValueError,
        "method must be 'marglik' or 'validation', got 'bogus'.",
    ),
    Case(
        "laplace: predict nan x",
        lambda: bnn.predict_with_uncertainty(_laplace(), NAN_X, num_samples=4),
        ValueError,
        "x contains NaN or inf; clean or impute the inputs first.",
    ),
    Case(
        "laplace: predict 0 samples",
        lambda: bnn.predict_with_uncertainty(_laplace(), X, num_samples=0),
        ValueError,
        "num_samples must be a positive int, got 0.",
    ),
    Case(
        "laplace: predict 1-d x",
        lambda: bnn.predict_with_uncertainty(_laplace(), X[:, 0], num_samples=4),
        ValueError,
        "the model returned shape (1,) for the first 2 rows of x (sha",
    ),
    Case(
        "laplace: predict empty x",
        lambda: bnn.predict_with_uncertainty(_laplace(), X[:0], num_samples=4),
        ValueError,
        "x must be a non-empty batch [N, ...], got shape (0, 2).",
    ),
    # SWAG
    Case(
        "swag: epochs 0",
        lambda: swag(epochs=0),
        ValueError,
        "epochs must be a positive int, got 0.",
    ),
    Case(
        "swag: lr negative",
        lambda: swag(lr=-1.0),
        ValueError,
        "lr must be a positive number, got -1.0.",
    ),
    Case(
        "swag: lr nan",
        lambda: swag(lr=math.nan),
        ValueError,
        "lr must be a positive number, got nan.",
    ),
    Case("swag: rank 0", lambda: swag(rank=0), ValueError, "rank must be an int >= 2, got 0."),
    Case(
        "swag: collect_every 0",
        lambda: swag(collect_every=0),
        ValueError,
        "collect_every must be a positive int, got 0.",
    ),
    Case(
        "swag: burn_in >= epochs",
        lambda: swag(burn_in=4),
        ValueError,
        "swag would collect 0 models ((epochs - burn_in) // collect_e",
    ),
    Case(
        "swag: burn_in negative",
        lambda: swag(burn_in=-1),
        ValueError,
        "burn_in must be an int >= 0, got -1.",
    ),
    Case(
        "swag: scale negative",
        lambda: swag(scale=-0.5),
        ValueError,
        "scale must be a positive number, got -0.5.",
    ),
    Case(
        "swag: momentum 1.5",
        lambda: swag(momentum=1.5),
        ValueError,
        "momentum must be in [0, 1), got 1.5.",
    ),
    Case(
        "swag: weight decay negative",
        lambda: swag(weight_decay=-1.0),
        ValueError,
        "weight_decay must be a finite number >= 0, got -1.0.",
    ),
    Case(
        "swag: batch size 0",
        lambda: swag(batch_size=0),
        ValueError,
        "batch_size must be a positive int, got 0.",
    ),
    Case(
        "swag: nan x",
        lambda: swag(data=(NAN_X, Y)),
        ValueError,
        "x contains NaN or inf; clean or impute it before training.",
    ),
    Case(
        "swag: wrong features",
        lambda: swag(data=(torch.randn(40, 3), Y)),
        ValueError,
        "the model cannot take x of shape (40, 3): mat1 and mat2 shap",
    ),
    Case(
        "swag: empty data",
        lambda: swag(data=(X[:0], Y[:0])),
        ValueError,
        "x must be a non-empty batch [N, ...], got shape (0, 2).",
    ),
    Case(
        "swag: no parameters",
        lambda: swag(model=nn.Identity()),
        TypeError,
        "model must be an nn.Module with parameters, got Identity.",
    ),
    Case(
        "swag: likelihood string",
        lambda: swag(likelihood="gaussian"),
        TypeError,
        "likelihood must be a bnn Likelihood, got str.",
    ),
    Case(
        "swag: lr too large diverges",
        lambda: swag(lr=1e6, rank=2, epochs=4),
        NonFiniteLossError,
        "non-finite loss in swag epoch 3: SGD at lr diverged from the",
    ),
    Case(
        "multi_swag: no models",
        lambda: multi_swag(model=[]),
        TypeError,
        "model must be an nn.Module or a non-empty sequence of nn.Mod",
    ),
    Case(
        "multi_swag: num_runs 0",
        lambda: multi_swag(model=_trained(), num_runs=0),
        ValueError,
        "num_runs must be a positive int, got 0.",
    ),
    Case(
        "multi_swag: list and num_runs",
        lambda: multi_swag(num_runs=3),
        ValueError,
        "num_runs=3 but 2 networks were given; one run per network (l",
    ),
    Case(
        "multi_swag: different architectures",
        lambda: multi_swag(model=[_trained(), net(2)]),
        ValueError,
        "targets have shape (40, 1) but the model output has shape (4",
    ),
    Case(
        "multi_swag: not a module",
        lambda: multi_swag(model=["net"]),
        TypeError,
        "model must be an nn.Module or a non-empty sequence of nn.Mod",
    ),
    # GP
    Case(
        "gp: method bogus",
        lambda: gp(method="sparse"),
        ValueError,
        "method must be one of ('exact', 'svgp'), got 'sparse'.",
    ),
    Case(
        "gp: kernel bogus",
        lambda: gp(kernel="laplacian"),
        ValueError,
        "kernel must be one of ('rbf', 'matern12', 'matern32', 'mater",
    ),
    Case(
        "gp: mean bogus",
        lambda: gp(mean="linear"),
        ValueError,
        "mean must be one of ('constant', 'zero'), got 'linear'.",
    ),
    Case(
        "gp: num_classes with gaussian",
        lambda: gp(num_classes=3),
        ValueError,
        "num_classes is for likelihood=bnn.Categorical() (multi-class",
    ),
    Case(
        "gp: int x",
        lambda: gp(data=(X.long(), Y)),
        TypeError,
        "x must be floating point, got torch.int64.",
    ),
    Case(
        "gp: rows differ",
        lambda: gp(data=(X, Y[:10])),
        ValueError,
        "x has shape (40, 2) and y (10, 1); they need the same number",
    ),
    Case(
        "gp: nan x",
        lambda: gp(data=(NAN_X, Y)),
        ValueError,
        "x or y contains NaN or inf; clean or impute the data first.",
    ),
    Case(
        "gp: inf y",
        lambda: gp(data=(X, NAN_Y)),
        ValueError,
        "x or y contains NaN or inf; clean or impute the data first.",
    ),
    Case(
        "gp: empty",
        lambda: gp(data=(X[:0], Y[:0])),
        ValueError,
        "x has shape (0, 2) and y (0, 1); they need the same number o",
    ),
    Case(
        "gp: exact classification",
        lambda: gp(likelihood=bnn.Categorical(), data=(X, LABELS)),
        ValueError,
        "classification needs method='svgp' (the exact GP is Gaussian",
    ),
    Case("gp: lr 0", lambda: gp(lr=0.0), ValueError, "lr must be a positive number, got 0.0."),
    Case(
        "gp: num_inducing 0",
        lambda: gp(method="svgp", num_inducing=0),
        ValueError,
        "num_inducing must be a positive int, got 0.",
    ),
    Case(
        "gp: jitter negative",
        lambda: gp(method="svgp", jitter=-1e-6),
        ValueError,
        "jitter must be a positive number, got -1e-06.",
    ),
    Case(
        "gp: batch size 0",
        lambda: gp(method="svgp", batch_size=0),
        ValueError,
        "batch_size must be a positive int, got 0.",
    ),
    Case(
        "gp: min_noise 0",
        lambda: gp(min_noise=0.0),
        ValueError,
        "min_noise must be a positive number, got 0.0.",
    ),
    Case(
        "gp: likelihood heteroscedastic",
        lambda: gp(likelihood=bnn.HeteroscedasticGaussian()),
        TypeError,
        "likelihood must be bnn.Gaussian (regression), bnn.Bernoulli ",
    ),
    Case(
        "gp: model not a module",
        lambda: gp(model="mlp"),
        TypeError,
        "model must be None or a feature nn.Module, got str.",
    ),
    Case(
        "gp: exact too large",
        lambda: gp(max_exact_bytes=1000),
        ValueError,
        "an exact GP on N = 40 points needs about 0.0 GiB (4 dense N×",
    ),
    Case(
        "gp: lengthscale negative",
        lambda: gp(lengthscale=-1.0),
        ValueError,
        "lengthscale must be a positive number, got -1.0.",
    ),
    Case(
        "gp: outputscale 0",
        lambda: gp(outputscale=0.0),
        ValueError,
        "outputscale must be a positive number, got 0.0.",
    ),
    Case(
        "gp: inducing wrong features",
        lambda: gp(method="svgp", inducing_points=torch.randn(5, 3)),
        ValueError,
        "inducing_points must be [M, 2] (or [K, M, 2] for K classes):",
    ),
    Case(
        "gp: ngd_lr 0",
        lambda: gp(method="svgp", ngd_lr=0.0),
        ValueError,
        "ngd_lr must be a positive number, got 0.0.",
    ),
    Case(
        "gp: labels out of range",
        lambda: gp(
            method="svgp", likelihood=bnn.Categorical(), data=(X, LABELS + 3), num_classes=2
        ),
        ValueError,
        "class labels must lie in [0, 1] for num_classes = 2, got lab",
    ),
    Case(
        "gp: data not a pair",
        lambda: gp(data=[X, Y]),
        TypeError,
        "data must be a pair (x, y) of tensors.",
    ),
    # stack
    Case(
        "stack: no members",
        lambda: stack(posteriors=[]),
        ValueError,
        "stack needs at least one posterior.",
    ),
    Case(
        "stack: rows differ",
        lambda: stack(y=Y[:10]),
        ValueError,
        "x_val has 40 rows but y_val is (10, 1); pass the targets of ",
    ),
    Case(
        "stack: method bogus",
        lambda: stack(method="bma"),
        ValueError,
        "method must be one of ('validation', 'loo'), got 'bma'.",
    ),
    Case(
        "stack: num_samples 0",
        lambda: stack(num_samples=0),
        ValueError,
        "num_samples must be a positive int, got 0.",
    ),
    Case(
        "stack: tolerance negative",
        lambda: stack(tolerance=-1.0),
        ValueError,
        "tolerance must be a positive number, got -1.0.",
    ),
    Case(
        "stack: member not a posterior",
        lambda: stack(posteriors=[_laplace(), "mc dropout"]),
        TypeError,
        "posteriors[1] is a str, not a bnn Posterior.",
    ),
    Case(
        "stack: plain network member",
        lambda: stack(posteriors=[_laplace(), net()]),
        TypeError,
        "posteriors[1] is a Sequential, not a bnn Posterior.",
    ),
    Case(
        "stack: nan x",
        lambda: stack(x=NAN_X),
        ValueError,
        "x contains NaN or inf; clean or impute the inputs first.",
    ),
    Case(
        "stack: inf y",
        lambda: stack(y=NAN_Y),
        ValueError,
        "targets contain NaN or inf; remove or impute those rows firs",
    ),
    Case(
        "stack: mixed outputs",
        lambda: stack(posteriors=[_laplace(), _classifier_laplace()]),
        ValueError,
        "the posteriors' predictions have different shapes per input ",
    ),
    Case(
        "stack: empty validation",
        lambda: stack(x=X[:0], y=Y[:0]),
        ValueError,
        "x must be a non-empty batch [N, ...], got shape (0, 2).",
    ),
    # boost
    Case(
        "boost: num_stages 0",
        lambda: boost(num_stages=0),
        ValueError,
        "num_stages must be a positive int, got 0.",
    ),
    Case(
        "boost: shrinkage 0",
        lambda: boost(shrinkage=0.0),
        ValueError,
        "shrinkage must be a positive number, got 0.0.",
    ),
    Case(
        "boost: shrinkage 2",
        lambda: boost(shrinkage=2.0),
        ValueError,
        "shrinkage and subsample must lie in (0, 1], got 2.0 and 1.0.",
    ),
    Case(
        "boost: subsample 0",
        lambda: boost(subsample=0.0),
        ValueError,
        "subsample must be a positive number, got 0.0.",
    ),
    Case(
        "boost: subsample 1.5",
        lambda: boost(subsample=1.5),
        ValueError,
        "shrinkage and subsample must lie in (0, 1], got 0.1 and 1.5.",
    ),
    Case(
        "boost: epochs 0",
        lambda: boost(epochs=0),
        ValueError,
        "epochs must be a positive int, got 0.",
    ),
    Case(
        "boost: lr negative",
        lambda: boost(lr=-1.0),
        ValueError,
        "lr must be a positive number, got -1.0.",
    ),
    Case(
        "boost: optimizer bogus",
        lambda: boost(optimizer="sgd"),
        ValueError,
        "optimizer must be 'adam' or 'lbfgs', got 'sgd'.",
    ),
    Case(
        "boost: heteroscedastic noise never trained",
        lambda: boost(
            noise_epochs=0, likelihood=bnn.HeteroscedasticGaussian(), factory=lambda: net(2)
        ),
        ValueError,
        "noise_epochs=0 would leave the heteroscedastic noise head untrained",
    ),
    Case(
        "boost: factory not callable",
        lambda: boost(factory=net()),
        TypeError,
        "factory must be a function that builds a new network, e.g. l",
    ),
    Case(
        "boost: factory returns non-module",
        lambda: boost(factory=lambda: "net"),
        TypeError,
        "factory must return an nn.Module, got str.",
    ),
    Case(
        "boost: nan x",
        lambda: boost(data=(NAN_X, Y)),
        ValueError,
        "x or y contains NaN or inf; clean or impute the data first.",
    ),
    Case(
        "boost: rows differ",
        lambda: boost(data=(X, Y[:5])),
        ValueError,
        "x has shape (40, 2) and y (5, 1); they need the same number ",
    ),
    # marglik
    Case(
        "marglik: epochs 0",
        lambda: marglik(epochs=0),
        ValueError,
        "epochs must be a positive int, got 0.",
    ),
    Case(
        "marglik: every 0",
        lambda: marglik(every=0),
        ValueError,
        "every must be a positive int, got 0.",
    ),
    Case(
        "marglik: hessian bogus",
        lambda: marglik(hessian="ef"),
        ValueError,
        "hessian must be one of ('full', 'kron', 'diag'), got 'ef'.",
    ),
    Case(
        "marglik: prior precision 0",
        lambda: marglik(prior_precision=0.0),
        ValueError,
        "prior_precision must be a positive number, got 0.0.",
    ),
    Case(
        "marglik: lr inf",
        lambda: marglik(lr=math.inf),
        ValueError,
        "lr must be a positive number, got inf.",
    ),
    Case(
        "marglik: nan y",
        lambda: marglik(data=(X, NAN_Y)),
        ValueError,
        "y contains NaN or inf; remove or impute those rows first.",
    ),
    Case(
        "marglik: burn_in negative",
        lambda: marglik(burn_in=-1),
        ValueError,
        "burn_in must be an int >= 0, got -1.",
    ),
    # neural_linear
    Case(
        "neural_linear: learned noise",
        lambda: neural_linear(likelihood=bnn.Gaussian(0.3, learn_std=True)),
        ValueError,
        "neural_linear needs a Gaussian likelihood with a fixed std (",
    ),
    Case(
        "neural_linear: categorical",
        lambda: neural_linear(likelihood=bnn.Categorical()),
        ValueError,
        "neural_linear needs a Gaussian likelihood with a fixed std (",
    ),
    Case(
        "neural_linear: prior precision 0",
        lambda: neural_linear(prior_precision=0.0),
        ValueError,
        "prior_precision must be a positive number, got 0.0.",
    ),
    Case(
        "neural_linear: nan x",
        lambda: neural_linear(data=(NAN_X, Y)),
        ValueError,
        "x contains NaN or inf; clean or impute it first.",
    ),
    Case(
        "neural_linear: data not a pair",
        lambda: neural_linear(data=X),
        TypeError,
        "data must be (x, y) tensors, a Dataset or a DataLoader, got Tensor.",
    ),
    Case(
        "neural_linear: wrong features",
        lambda: neural_linear(data=(torch.randn(40, 3), Y)),
        ValueError,
        "the model cannot take x of shape (40, 3): mat1 and mat2 shap",
    ),
    # conformal
    Case(
        "conformal: level 0",
        lambda: conformal(level=0.0),
        ValueError,
        "level must be in (0, 1), e.g. 0.9, got 0.0.",
    ),
    Case(
        "conformal: level 1",
        lambda: conformal(level=1.0),
        ValueError,
        "level must be in (0, 1), e.g. 0.9, got 1.0.",
    ),
    Case(
        "conformal: level nan",
        lambda: conformal(level=math.nan),
        ValueError,
        "level must be in (0, 1), e.g. 0.9, got nan.",
    ),
    Case(
        "conformal: method bogus",
        lambda: conformal(method="jackknife"),
        ValueError,
        "method must be one of ('auto', 'absolute', 'normalized', 'cq",
    ),
    Case(
        "conformal: too few points",
        lambda: conformal(x=X[:5], y=Y[:5], level=0.95),
        ValueError,
        "a conformal set at level 0.95 needs at least 1/α − 1 = 19 ca",
    ),
    Case(
        "conformal: num_samples 0",
        lambda: conformal(num_samples=0),
        ValueError,
        "num_samples must be a positive int, got 0.",
    ),
    Case(
        "conformal: rows differ",
        lambda: conformal(y=Y[:10]),
        ValueError,
        "x_cal has 40 rows but y_cal has shape (10, 1); pass the targ",
    ),
    Case(
        "conformal: nan x",
        lambda: conformal(x=NAN_X),
        ValueError,
        "x contains NaN or inf; clean or impute the inputs first.",
    ),
    Case(
        "conformal: inf y",
        lambda: conformal(y=NAN_Y),
        ValueError,
        "y_cal contains NaN or inf; remove those rows first.",
    ),
    Case(
        "conformal: empty",
        lambda: conformal(x=X[:0], y=Y[:0]),
        ValueError,
        "x must be a non-empty batch [N, ...], got shape (0, 2).",
    ),
    Case(
        "conformal: classification labels out of range",
        lambda: conformal(
            posterior=_classifier_laplace(), y=LABELS + 4, likelihood=bnn.Categorical()
        ),
        ValueError,
        "class labels must lie in [0, 1], got values in [4, 5].",
    ),
    Case(
        "conformal: cqr on gaussian sets",
        lambda: conformal(
            posterior=_classifier_laplace(), y=LABELS, likelihood=bnn.Categorical(), method="cqr"
        ),
        ValueError,
        "method 'cqr' is for regression; a classifier uses 'aps' or 'raps'.",
    ),
    Case(
        "conformal: interval level 2",
        lambda: conformal().interval(X, 2.0),
        ValueError,
        "level must be in (0, 1), e.g. 0.9, got 2.0.",
    ),
    Case(
        "conformal: not a posterior",
        lambda: conformal(posterior="laplace"),
        TypeError,
        "expected a model with Bayesian layers, an MCDropout, or a Po",
    ),
    # temperature
    Case(
        "temperature: regression",
        lambda: temperature(posterior=_laplace(), y=Y, likelihood=G),
        TypeError,
        "temperature scaling needs logits: a bnn.Categorical or bnn.B",
    ),
    Case(
        "temperature: labels out of range",
        lambda: temperature(y=LABELS + 7),
        ValueError,
        "class labels must lie in [0, 1], got values in [7, 8].",
    ),
    Case(
        "temperature: num_samples 0",
        lambda: temperature(num_samples=0),
        ValueError,
        "num_samples must be a positive int, got 0.",
    ),
    Case(
        "temperature: rows differ",
        lambda: temperature(y=LABELS[:3]),
        ValueError,
        "x_cal has 40 rows but y_cal has shape (3,); pass the targets",
    ),
    Case(
        "temperature: nan x",
        lambda: temperature(x=NAN_X),
        ValueError,
        "x contains NaN or inf; clean or impute the inputs first.",
    ),
    Case(
        "temperature: float labels",
        lambda: temperature(y=LABELS.float() + 0.5),
        ValueError,
        "class labels must be whole numbers (class indices, 0/1 if bi",
    ),
    Case(
        "std_scale: classification",
        lambda: std_scale(
            _classifier_laplace(), X, LABELS, likelihood=bnn.Categorical(), num_samples=8
        ),
        TypeError,
        "std scaling is for regression; for a classifier use temperat",
    ),
    Case(
        "std_scale: nan y",
        lambda: std_scale(_laplace(), X, NAN_Y, likelihood=G, num_samples=8),
        ValueError,
        "y_cal contains NaN or inf; remove those rows first.",
    ),
    # tune
    Case(
        "tune: seeds 0", lambda: tune(seeds=0), ValueError, "seeds must be a positive int, got 0."
    ),
    Case(
        "tune: n_trials 0",
        lambda: tune(n_trials=0),
        ValueError,
        "n_trials must be a positive int, got 0.",
    ),
    Case(
        "tune: risk negative",
        lambda: tune(risk=-1.0),
        ValueError,
        "risk must be >= 0 (0: rank by the mean), got -1.0.",
    ),
    Case(
        "tune: risk with one seed",
        lambda: tune(risk=1.0, seeds=1),
        ValueError,
        "risk > 0 penalises the spread over seeds, which needs seeds ",
    ),
    Case(
        "tune: direction bogus",
        lambda: tune(direction="max"),
        ValueError,
        "direction must be 'minimize' or 'maximize', got 'max'.",
    ),
    Case(
        "tune: empty space",
        lambda: tune(space={}),
        ValueError,
        "space must be a non-empty {name: Float | Int | Categorical} ",
    ),
    Case(
        "tune: Float bounds reversed",
        lambda: tune(space={"a": tune_module.Float(1, 0)}),
        ValueError,
        "empty range [1, 0]: low must be smaller than high.",
    ),
    Case(
        "tune: Float log with 0",
        lambda: tune(space={"a": tune_module.Float(0, 1, log=True)}),
        ValueError,
        "a log-scale range needs low > 0, got 0.",
    ),
    Case(
        "tune: Int bounds reversed",
        lambda: tune(space={"a": tune_module.Int(3, 1)}),
        ValueError,
        "empty range [3, 1]: low must be smaller than high.",
    ),
    Case(
        "tune: Categorical empty",
        lambda: tune(space={"a": tune_module.Categorical(())}),
        ValueError,
        "Categorical needs at least one choice.",
    ),
    Case(
        "tune: space value not a spec",
        lambda: tune(space={"a": (0, 1)}),
        TypeError,
        "space['a'] must be bnn.tune.Float, Int or Categorical, got t",
    ),
    Case(
        "tune: pruning with executor",
        lambda: tune(pruner=True, executor=ThreadPoolExecutor(1)),
        ValueError,
        "pruning checks a trial after every seed, so one trial at a time runs its seeds",
    ),
    Case(
        "tune: objective not callable",
        lambda: tune(objective=3),
        TypeError,
        "objective must be a function (params, rng) -> float, got int",
    ),
    Case(
        "tune: every seed fails",
        lambda: tune(objective=lambda p, r: 1 / 0),
        RuntimeError,
        "no trial completed: every seed of every trial failed (the fi",
    ),
    Case(
        "tune: storage bogus",
        lambda: tune(storage="nosuchdb:///x"),
        ValueError,
        "storage 'nosuchdb:///x' cannot be opened (NoSuchModuleError:",
    ),
    Case(
        "tune: threads_per_job 0",
        lambda: tune(threads_per_job=0),
        ValueError,
        "threads_per_job must be a positive int, got 0.",
    ),
    # seed_sweep
    Case(
        "sweep: seeds 0",
        lambda: sweep(seeds=0),
        ValueError,
        "seeds must be a positive count, got 0.",
    ),
    Case(
        "sweep: seeds empty list",
        lambda: sweep(seeds=[]),
        ValueError,
        "seeds is empty: pass a count (e.g. 10) or a list of seeds.",
    ),
    Case(
        "sweep: seeds repeated",
        lambda: sweep(seeds=[1, 1]),
        ValueError,
        "seeds contain duplicates: [1, 1]; each seed should run once.",
    ),
    Case(
        "sweep: fn returns list",
        lambda: sweep(fn=lambda r: [1.0]),
        TypeError,
        "fn must return a non-empty dict of metric name -> number; fo",
    ),
    Case(
        "sweep: fn returns nan",
        lambda: sweep(fn=lambda r: {"m": math.nan}),
        ValueError,
        "metric 'm' is nan for seed 0; the run diverged or failed. Fi",
    ),
    Case(
        "sweep: fn returns str",
        lambda: sweep(fn=lambda r: {"m": "1"}),
        TypeError,
        "metric 'm' for seed 0 is str, not a number.",
    ),
    Case(
        "sweep: metric names differ",
        lambda: sweep(fn=_other_names_each_call()),
        ValueError,
        "seed 1 returned metrics ['m1'], earlier seeds ['m0']; every ",
    ),
    Case(
        "sweep: fn raises",
        lambda: sweep(fn=lambda r: 1 / 0),
        JobError,
        "2 of 2 jobs failed (seed 0, seed 1); the first, seed 0: Zero",
    ),
    Case(
        "sweep: fn not callable",
        lambda: sweep(fn=None),
        TypeError,
        "fn must be a function rng -> dict of metrics, got NoneType.",
    ),
    Case(
        "sweep: negative seed",
        lambda: sweep(seeds=[-1]),
        TypeError,
        "every seed must be a non-negative int, got -1.",
    ),
    Case(
        "sweep: threads_per_job 0",
        lambda: sweep(threads_per_job=0),
        ValueError,
        "threads_per_job must be a positive int, got 0.",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_hostile_call_fails_at_once_with_a_clear_error(case: Case) -> None:
    with pytest.raises(case.error, match=re.escape(case.message)):
        case.call()


# ----------------------------------------------------------------- unusual but right: answers
def test_laplace_with_a_learned_noise_uses_that_noise() -> None:
    likelihood = bnn.Gaussian(0.3, learn_std=True)
    with torch.no_grad():
        likelihood.log_std.fill_(math.log(0.2))
    posterior, _ = laplace(likelihood=likelihood)
    assert posterior.noise_std == pytest.approx(0.2, rel=1e-6)


def test_a_gp_with_no_epochs_keeps_its_initial_hyperparameters() -> None:
    _, history = gp(epochs=0, lengthscale=0.5, outputscale=2.0)
    assert history.loss == [] and history.lengthscale == pytest.approx([0.5, 0.5], rel=1e-5)
    assert history.outputscale == pytest.approx(2.0, rel=1e-5)


def test_stacking_without_a_likelihood_uses_the_one_the_posteriors_carry() -> None:
    stacked, history = stack(likelihood=None)
    given, _ = stack()
    assert sum(history.weights) == pytest.approx(1.0)
    x = X[:5]
    assert torch.equal(
        stacked.sample_functions(x, 8, rng=bnn.RNG(1)), given.sample_functions(x, 8, rng=bnn.RNG(1))
    )


def test_boosting_with_a_learned_noise_takes_the_residuals_rms_whatever_noise_epochs() -> None:
    posterior, _ = boost(noise_epochs=0, likelihood=bnn.Gaussian(0.3, learn_std=True))
    with torch.no_grad():
        residual = Y - posterior.sample_functions(X, 1).squeeze(0)
    rms = float(residual.pow(2).mean().sqrt())
    assert float(posterior.predictive_likelihood.std.detach()) == pytest.approx(rms, rel=1e-5)


def test_boosting_a_classifier_gives_probabilities() -> None:
    posterior, _ = boost(likelihood=bnn.Categorical(), data=(X, LABELS), factory=lambda: net(2))
    prediction = bnn.predict_with_uncertainty(posterior, X)  # it carries its Categorical
    assert torch.allclose(prediction.probs.sum(-1), torch.ones(40))
