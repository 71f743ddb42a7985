"""A pure tensor function compiled once per input signature, called without Dynamo's guards.

`torch.compile` checks its guards on every call (~35–55 µs for the lock-step NUTS leaf, whose
closure reaches the user's module) and wraps the compiled graph in Dynamo's frame handling.
A sampler calls the same function hundreds of thousands of times with tensors of one shape,
so `CompiledCall` traces it once with `make_fx` (a data-dependent branch, such as ``if
t.sum() > 0``, fails the trace instead of being baked in) and hands the graph to Inductor
directly; later calls only compare the arguments' shapes, strides, dtypes and devices with the
traced ones. The generated kernels are Inductor's, the same as `torch.compile`'s for the graph.

The tensors the function closes over (data, buffers, prior parameters) become inputs of the
graph rather than constants in it, so two samplers whose graphs print the same code and whose
inputs have the same signature share one compiled graph (a process-wide cache of the last
`CACHE_SIZE` graphs). Inductor compiles from fake copies of the inputs under a shape
environment (static shapes), as Dynamo hands it graphs, so its on-disk graph cache also hits
in a new process. Python numbers the
function closes over are part of the code. Whatever the function closes over is read at the
first call, as `torch.compile` would assume for one sampler run.

When tracing or compiling fails (a module that `make_fx` cannot trace), `CompiledCall` falls
back to ``torch.compile(function, dynamic=False)`` and warns.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, fx

__all__ = ["CACHE_SIZE", "CompiledCall"]

CACHE_SIZE = 16

Signature = tuple[tuple[torch.Size, tuple[int, ...], torch.dtype, torch.device], ...]
Compiled = Callable[..., Sequence[Tensor]]

_compiled_graphs: OrderedDict[tuple[str, Signature], Compiled] = OrderedDict()


def _signature(args: Sequence[Tensor]) -> Signature:
    return tuple((a.shape, a.stride(), a.dtype, a.device) for a in args)


def _lift_constants(graph: fx.GraphModule) -> list[Tensor]:
    """Turn the graph's tensor constants into trailing inputs (in place); return them."""
    last_input = [node for node in graph.graph.nodes if node.op == "placeholder"][-1]
    lifted: dict[str, fx.Node] = {}
    constants: list[Tensor] = []
    for node in list(graph.graph.nodes):
        if node.op != "get_attr" or not isinstance(getattr(graph, node.target), Tensor):
            continue
        if node.target not in lifted:
            with graph.graph.inserting_after(last_input):
                last_input = graph.graph.placeholder(f"constant_{len(constants)}")
            lifted[node.target] = last_input
            constants.append(getattr(graph, node.target))
        node.replace_all_uses_with(lifted[node.target])
        graph.graph.erase_node(node)
    for name in lifted:
        delattr(graph, name)
    graph.recompile()
    return constants


def _compile_graph(graph: fx.GraphModule, inputs: list[Tensor]) -> Compiled:
    key = (graph.code, _signature(inputs))
    compiled = _compiled_graphs.get(key)
    if compiled is None:
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.fx.experimental.symbolic_shapes import ShapeEnv

        # Without a shape environment Inductor bypasses its on-disk graph cache.
        mode = FakeTensorMode(shape_env=ShapeEnv())
        fakes = [mode.from_tensor(t, static_shapes=True) for t in inputs]
        compiled = torch._inductor.compile(graph, list[Any](fakes))
        _compiled_graphs[key] = compiled
        while len(_compiled_graphs) > CACHE_SIZE:
            _compiled_graphs.popitem(last=False)
    _compiled_graphs.move_to_end(key)
    return compiled


class CompiledCall:
    """``CompiledCall(f)(*tensors)`` returns what ``f(*tensors)`` returns, as a tuple of tensors.

    Example:
        >>> import torch
        >>> from bnn.infer.mcmc._compiled_call import CompiledCall
        >>> offset = torch.tensor([1.0, 2.0, 3.0])
        >>> shift = CompiledCall(lambda t: (t + offset, t.sum()))
        >>> [r.tolist() for r in shift(torch.ones(3))]
        [[2.0, 3.0, 4.0], 3.0]
    """

    def __init__(self, function: Callable[..., tuple[Tensor, ...]]) -> None:
        self.function = function
        self._compiled: dict[Signature, tuple[Compiled, list[Tensor]]] = {}

    def __call__(self, *args: Tensor) -> tuple[Tensor, ...]:
        signature = _signature(args)
        entry = self._compiled.get(signature)
        if entry is None:
            entry = self._compile(list(args))
            self._compiled[signature] = entry
        compiled, constants = entry
        return tuple(compiled(*args, *constants))

    def _compile(self, args: list[Tensor]) -> tuple[Compiled, list[Tensor]]:
        from torch.fx.experimental.proxy_tensor import make_fx

        try:
            graph = make_fx(self.function)(*args)
            constants = _lift_constants(graph)
            return _compile_graph(graph, [*args, *constants]), constants
        except Exception as error:  # noqa: BLE001 - any tracing failure falls back
            warnings.warn(
                f"Tracing the compiled step failed ({type(error).__name__}: {error}); using "
                "torch.compile with guards instead (slower per call, same results).",
                RuntimeWarning,
                stacklevel=3,
            )
            return torch.compile(self.function, dynamic=False), []
