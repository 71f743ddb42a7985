"""`CompiledCall`: a traced, Inductor-compiled function without guards, shared by code."""

from __future__ import annotations

import pytest
import torch

from bnn.infer.mcmc import _compiled_call
from bnn.infer.mcmc._compiled_call import CompiledCall


def _affine(scale: torch.Tensor, shift: torch.Tensor, factor: float):  # type: ignore[no-untyped-def]
    def function(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.tanh(t * scale + shift) * factor
        return out, out.sum(-1)

    return function


def test_bits_equal_torch_compile_and_values_the_eager_function() -> None:
    """The same Inductor kernels as ``torch.compile``; a compiled sum may round differently
    from the eager one."""
    generator = torch.Generator().manual_seed(0)
    scale, shift = torch.randn(3, 5, generator=generator), torch.randn(5, generator=generator)
    function = _affine(scale, shift, 0.5)
    call, dynamo = CompiledCall(function), torch.compile(function, dynamic=False)
    for _ in range(3):
        t = torch.randn(3, 5, generator=generator)
        for got, compiled, eager in zip(call(t), dynamo(t), function(t), strict=True):
            torch.testing.assert_close(got, compiled, rtol=0, atol=0)
            torch.testing.assert_close(got, eager)


def test_closed_over_tensors_are_inputs_not_constants() -> None:
    """Two closures with one code and one signature share a compiled graph, each with its own
    tensors; different Python numbers make different code."""
    _compiled_call._compiled_graphs.clear()
    generator = torch.Generator().manual_seed(1)
    t = torch.randn(3, 5, generator=generator)
    first = _affine(torch.randn(3, 5, generator=generator), torch.zeros(5), 2.0)
    second = _affine(torch.randn(3, 5, generator=generator), torch.ones(5), 2.0)
    third = _affine(torch.ones(3, 5), torch.ones(5), 3.0)
    results = [CompiledCall(f)(t)[0] for f in (first, second, third)]
    assert len(_compiled_call._compiled_graphs) == 2  # first and second share one graph
    for result, function in zip(results, (first, second, third), strict=True):
        torch.testing.assert_close(result, function(t)[0], rtol=0, atol=0)
    assert not torch.equal(results[0], results[1])


def test_a_new_signature_compiles_again() -> None:
    call = CompiledCall(_affine(torch.ones(5), torch.zeros(5), 1.0))
    for shape in ((2, 5), (7, 5)):
        t = torch.linspace(-1, 1, shape[0] * shape[1]).reshape(shape)
        out, total = call(t)
        assert out.shape == shape and total.shape == (shape[0],)
        torch.testing.assert_close(out, torch.tanh(t), rtol=0, atol=0)
    assert len(call._compiled) == 2


def test_a_data_dependent_branch_falls_back_to_torch_compile() -> None:
    def branching(t: torch.Tensor) -> tuple[torch.Tensor]:
        return (t * 2,) if bool(t.sum() > 0) else (t * 3,)

    call = CompiledCall(branching)
    with pytest.warns(RuntimeWarning, match="torch.compile with guards"):
        (positive,) = call(torch.ones(4))
    (negative,) = call(-torch.ones(4))  # the fallback re-checks the branch: no baked value
    torch.testing.assert_close(positive, torch.full((4,), 2.0))
    torch.testing.assert_close(negative, torch.full((4,), -3.0))
