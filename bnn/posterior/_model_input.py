"""The probe of a model on a batch of inputs: one forward pass on its first rows, before any
long work, so that a wrong feature count, layout or dtype is reported as such (training, MCMC,
and prediction from posteriors that differentiate the network, e.g. Laplace and SWAG)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bnn.posterior._evaluate import check_output, eval_mode
from bnn.posterior.protocol import check_inputs
from bnn.random import GLOBAL_STATE_LOCK

__all__ = ["PROBE_ROWS", "check_model_input"]


PROBE_ROWS = 2
"""Rows of the data that ``check_model_input`` passes through the model."""


def check_model_input(model: nn.Module, x: Tensor) -> Tensor:
    """Check, before any long work, that ``model`` takes ``x`` and returns one tensor.

    Runs one forward pass on the first ``PROBE_ROWS`` rows of ``x`` (moved to the model's
    device) in eval mode, without gradients, leaving every generator as it was; those rows are
    validated as prediction validates its inputs (``check_inputs``). The caller checks the
    whole of ``x`` (finite values, devices it accepts).

    Returns:
        The model's output on those rows.

    Raises:
        TypeError: ``x`` has another floating dtype than the model's parameters, or the model
            returns a tuple, dict or anything else that is not a tensor.
        ValueError: ``x`` is empty, or the model cannot take it (e.g. a wrong number of
            features), or returns other than one output per input row (e.g. ``x`` of shape
            ``[N]`` where the model wants ``[N, 1]``).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}.")
    reference = next(model.parameters(), None)
    probe = x[:PROBE_ROWS] if reference is None else x[:PROBE_ROWS].to(reference.device)
    check_inputs(probe, reference, 1)
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    accelerator = probe.device.type not in ("cpu", "meta")
    index = probe.device.index if probe.device.index is not None else 0
    try:
        with (
            GLOBAL_STATE_LOCK,  # the process's generators are forked and restored below
            torch.random.fork_rng(
                devices=[index] if accelerator else [],
                device_type=probe.device.type if accelerator else "cuda",
            ),
            torch.no_grad(),
            eval_mode(inner),
        ):
            output = inner(probe)
    except RuntimeError as error:
        raise ValueError(
            f"the model cannot take x of shape {tuple(x.shape)}: {error}. Check that x has "
            "the number of features, layout and dtype the model's first layer expects."
        ) from error
    output = check_output(output)
    if output.dim() == 0 or output.shape[0] != probe.shape[0]:
        raise ValueError(
            f"the model returned shape {tuple(output.shape)} for the first {probe.shape[0]} "
            f"rows of x (shape {tuple(x.shape)}): one output per input is needed. x must be "
            "[N, features] (a single feature as [N, 1]), with inputs along its first dimension."
        )
    return output
