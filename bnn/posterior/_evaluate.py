"""Split a vectorised evaluation of ``S`` function samples on ``N`` inputs to a memory budget.

A chunk is a block of samples times a block of inputs. Samples are grouped first; only when
even ``MIN_VECTORISED_SAMPLES`` samples on all ``N`` inputs would exceed the budget are the
inputs split as well. Small chunks are also fast: their activations stay in the CPU caches,
where a chunk over all of a large batch would be bound by memory traffic.

Per-sample randomness that defines a function (the weights of a Bayesian layer, a stored
parameter sample) is drawn once per block of samples and shared by every block of inputs, so
each sample is one function of all ``N`` inputs. Splitting the inputs assumes the model treats
examples independently (as any model in eval mode without batch-coupling layers does).

Example:
    >>> plan = plan_chunks(100, 10_000, bytes_per_input=6_400, bytes_per_sample=0,
    ...                    budget=64 * 2**20)
    >>> plan.samples, plan.inputs
    (8, 1250)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from bnn.random import GLOBAL_STATE_LOCK

__all__ = [
    "MIN_VECTORISED_SAMPLES",
    "PROBE_INPUTS",
    "ChunkPlan",
    "activation_bytes",
    "eval_mode",
    "evaluate_in_chunks",
    "evaluate_parameter_samples",
    "evaluate_parameter_samples_chunked",
    "plan_chunks",
]

PROBE_INPUTS = 64
"""Inputs of the probe forward pass that measures memory per input."""

MIN_VECTORISED_SAMPLES = 8
"""Samples a chunk holds before the inputs are split (fewer leave vectorisation unused)."""

SampleState = TypeVar("SampleState")


@dataclass(frozen=True)
class ChunkPlan:
    """How many samples and inputs one vectorised call evaluates."""

    samples: int
    inputs: int


def plan_chunks(
    num_samples: int,
    num_inputs: int,
    *,
    bytes_per_input: int,
    bytes_per_sample: int,
    budget: int,
    split_inputs: bool = True,
) -> ChunkPlan:
    """The chunk for ``S`` samples on ``N`` inputs whose memory stays under ``budget`` bytes.

    Args:
        num_samples: ``S``.
        num_inputs: ``N``.
        bytes_per_input: memory one sample needs per input (activations, dropout masks).
        bytes_per_sample: memory one sample needs regardless of the inputs (weight draws).
        budget: bytes one chunk may use.
        split_inputs: whether the inputs may be split (not when a sample's randomness is
            shared by all inputs in a way the caller cannot repeat per block).

    Returns:
        A `ChunkPlan` with at least one sample and one input; inputs are split into blocks of
        near-equal size only when ``MIN_VECTORISED_SAMPLES`` samples would not fit otherwise.
    """

    def per_sample(inputs: int) -> int:
        return bytes_per_sample + inputs * bytes_per_input

    wanted = min(num_samples, MIN_VECTORISED_SAMPLES)
    inputs = num_inputs
    if split_inputs and wanted * per_sample(num_inputs) > budget and bytes_per_input > 0:
        room = budget // wanted - bytes_per_sample
        largest = max(1, min(num_inputs, room // bytes_per_input))
        blocks = -(-num_inputs // largest)
        inputs = -(-num_inputs // blocks)  # equal blocks: at most two distinct block sizes
    samples = max(1, min(num_samples, budget // max(per_sample(inputs), 1)))
    return ChunkPlan(samples=samples, inputs=inputs)


def evaluate_in_chunks(
    x: Tensor,
    num_samples: int,
    plan: ChunkPlan,
    draw: Callable[[int, int], SampleState],
    evaluate: Callable[[SampleState, Tensor], Tensor],
) -> Tensor:
    """Evaluate ``S`` samples on ``x`` chunk by chunk into one ``[S, N, ...]`` tensor.

    Args:
        x: inputs ``[N, ...]``.
        num_samples: ``S``.
        plan: chunk sizes (see ``plan_chunks``).
        draw: ``draw(start, stop)`` returns what defines samples ``start..stop-1`` (called once
            per block of samples, in order).
        evaluate: ``evaluate(state, x_block)`` returns ``[stop - start, len(x_block), ...]``.

    Returns:
        ``[S, N, ...]`` (``[S, ...]`` as the model returns it when the inputs are not split),
        written in place (no concatenation copy).

    Raises:
        ValueError: if the inputs are split and the model's output has no input dimension.
    """
    output: Tensor | None = None
    num_inputs = x.shape[0]
    split = plan.inputs < num_inputs
    for start in range(0, num_samples, plan.samples):
        stop = min(start + plan.samples, num_samples)
        state = draw(start, stop)
        for first in range(0, num_inputs, plan.inputs):
            last = min(first + plan.inputs, num_inputs)
            block = evaluate(state, x[first:last])
            if split and (block.dim() < 2 or block.shape[1] != last - first):
                raise ValueError(
                    f"the model's output for {last - first} inputs has shape "
                    f"{tuple(block.shape[1:])}, not [{last - first}, ...], so the inputs cannot "
                    "be evaluated in blocks; raise memory_budget to keep the batch whole."
                )
            if output is None:
                trailing = block.shape[2:] if split else block.shape[1:]
                leading = (num_samples, num_inputs) if split else (num_samples,)
                check_output_fits((*leading, *trailing), block)
                output = block.new_empty((*leading, *trailing))
            if split:
                output[start:stop, first:last] = block
            else:
                output[start:stop] = block
    assert output is not None  # num_samples >= 1 and N >= 1 are checked by the callers
    return output


def available_memory_bytes(device: torch.device) -> int | None:
    """Memory that can still be allocated on ``device`` (``None`` where it cannot be read).

    On the CPU the smallest of free RAM, the memory cgroup's remaining limit and the address
    space left under ``RLIMIT_AS``: the limits a container or a cluster job sees.
    """
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    limits = [_meminfo_available(), _cgroup_available(), _address_space_available()]
    known = [limit for limit in limits if limit is not None]
    return min(known) if known else None


def _meminfo_available() -> int | None:
    """The kernel's estimate of allocatable RAM (``MemAvailable``)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_number(path: str) -> int | None:
    try:
        with open(path) as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (cgroup v2): no limit


def _cgroup_available() -> int | None:
    """What the process's memory cgroup (a container's or a batch job's limit) still allows."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",  # cgroup v1
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        limit, usage = _read_number(limit_file), _read_number(usage_file)
        if limit is not None and usage is not None and limit < 2**60:  # v1's "no limit"
            return max(limit - usage, 0)
    return None


def _address_space_available() -> int | None:
    """What ``ulimit -v`` (``RLIMIT_AS``, as batch schedulers set it) still allows."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return max(soft - int(line.split()[1]) * 1024, 0)
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_output_fits(shape: tuple[int, ...], like: Tensor) -> None:
    """Refuse an ``[S, N, ...]`` result larger than half the memory left on its device.

    ``memory_budget`` bounds the working set of each chunk; the returned samples are kept
    whole, and a prediction then needs about as much again for its summaries.
    """
    needed = like.element_size()
    for size in shape:
        needed *= int(size)
    available = available_memory_bytes(like.device)
    if available is None or needed <= available // 2:
        return
    raise MemoryError(
        f"the {shape[0]} function samples would need {_size(needed)} as one "
        f"{list(shape)} tensor, more than half of the {_size(available)} this process may "
        f"still allocate on {like.device} (free memory, cgroup and ulimit -v limits); ask for "
        "fewer samples (a few thousand give Monte Carlo errors well "
        "below 1 %), or predict on fewer inputs per call and keep only the summaries you need."
    )


def _size(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def activation_bytes(model: nn.Module, x: Tensor) -> int:
    """Bytes of all module outputs in one forward pass on ``x`` (a per-sample memory estimate).

    Runs one forward pass without gradients in eval mode; a model that cannot take ``x``
    raises a ``ValueError`` naming the input shape.
    """
    total = 0

    def count(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        if isinstance(output, Tensor):
            total += output.numel() * output.element_size()

    handles = [m.register_forward_hook(count) for m in model.modules()]
    try:
        with torch.no_grad(), eval_mode(model):
            output = model(x)
    except RuntimeError as error:
        raise ValueError(
            f"the model failed on x of shape {tuple(x.shape)}: {error}. Check that x has the "
            "feature dimensions the model expects."
        ) from error
    finally:
        for handle in handles:
            handle.remove()
    check_output(output)
    return total


def check_output(output: object) -> Tensor:
    """``output`` if it is a tensor; a model returning a tuple, dict, ... gets a ``TypeError``."""
    if not isinstance(output, Tensor):
        raise TypeError(
            f"the model returns a {type(output).__name__}, not a tensor; bnn needs "
            "forward(x) -> Tensor. Wrap the model in a module whose forward returns the one "
            "output to model (e.g. output[0] or output['logits'])."
        )
    return output


def evaluate_parameter_samples(
    model: nn.Module, parameters: dict[str, Tensor], x: Tensor
) -> Tensor:
    """``functional_call(model, {name: p[s]}, x)`` for every sample ``s`` in one ``vmap``.

    Args:
        model: the network; parameters not in ``parameters`` keep their current values.
        parameters: name -> ``[S, *shape]`` stacked parameter samples.
        x: inputs ``[N, ...]``.

    Returns:
        ``[S, N, ...]``.
    """

    def one_function(sample: dict[str, Tensor]) -> Tensor:
        return functional_call(model, sample, (x,))  # type: ignore[no-any-return]

    with eval_mode(model):
        output: Tensor = vmap(one_function, randomness="different")(parameters)
    return output


def evaluate_parameter_samples_chunked(
    model: nn.Module, parameters: dict[str, Tensor], x: Tensor, memory_budget: int
) -> Tensor:
    """``evaluate_parameter_samples`` in chunks of samples (and inputs) under a budget.

    Args:
        model: the network.
        parameters: name -> ``[S, *shape]`` stacked parameter samples.
        x: inputs ``[N, ...]``.
        memory_budget: bytes one vectorised call may use (activations plus parameters).

    Returns:
        ``[S, N, ...]``.
    """
    total = next(iter(parameters.values())).shape[0]
    probe = x[:PROBE_INPUTS]
    plan = plan_chunks(
        total,
        x.shape[0],
        bytes_per_input=-(-activation_bytes(model, probe) // probe.shape[0]),
        bytes_per_sample=sum(v[0].numel() * v.element_size() for v in parameters.values()),
        budget=memory_budget,
    )

    def draw(start: int, stop: int) -> dict[str, Tensor]:
        return {name: value[start:stop] for name, value in parameters.items()}

    def evaluate(chunk: dict[str, Tensor], block: Tensor) -> Tensor:
        return evaluate_parameter_samples(model, chunk, block)

    return evaluate_in_chunks(x, total, plan, draw, evaluate)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode inside the block; restore every module's flag afterwards.

    Holds the process-wide lock of ``bnn.random`` for the block, so two threads predicting with
    one model never see each other's switch (or restore a flag the other one set).
    """
    with GLOBAL_STATE_LOCK:
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            yield
        finally:
            for module, mode in modes:
                module.training = mode
