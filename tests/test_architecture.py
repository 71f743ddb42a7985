"""The package's shape: a small public API, explicit exports, no import cycle, no sniffing.

The layering itself (which package may import which) is import-linter's job: its contracts
are in ``pyproject.toml`` and ``lint-imports`` runs in the README's test command.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import grimp
import pytest

import bnn

PACKAGE = Path(bnn.__file__).parent
SUBPACKAGES = ("random", "nn", "likelihoods", "posterior", "infer", "evaluate", "parallel")
FAMILIES = ("training", "mcmc", "variational", "laplace", "ensembles", "gp")
"""The packages of ``bnn.infer``: the shared training loop and one per family of methods."""


def test_the_top_level_exports_at_most_25_names_and_defines_nothing() -> None:
    assert len(bnn.__all__) <= 25
    assert all(hasattr(bnn, name) for name in bnn.__all__)
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    statements = [node for node in tree.body if not isinstance(node, ast.Expr)]
    assert all(isinstance(node, ast.ImportFrom | ast.Assign) for node in statements)
    assigned = [node for node in statements if isinstance(node, ast.Assign)]
    assert [target.id for node in assigned for target in node.targets] == ["__all__"]  # type: ignore[attr-defined]


def _public_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="bnn."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


@pytest.mark.parametrize("name", _public_modules())
def test_every_public_module_declares_what_it_exports(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    missing = [item for item in exported if not hasattr(module, item)]
    assert not missing, f"{name}.__all__ names missing objects: {missing}"


def test_subpackages_are_reachable_from_the_top_level() -> None:
    for name in SUBPACKAGES:
        assert getattr(bnn, name).__name__ == f"bnn.{name}"


def _cycle(graph: grimp.ImportGraph) -> list[str] | None:
    """One import cycle among bnn's modules (package ``__init__`` files included), if any."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if not imported.startswith("bnn"):
                continue
            if state.get(imported) == 1:
                return [*path[path.index(imported) :], imported]
            if imported not in state and (found := visit(imported)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph.modules):
        if module.startswith("bnn") and module not in state and (found := visit(module)):
            return found
    return None


def test_the_module_import_graph_has_no_cycle() -> None:
    graph = grimp.build_graph("bnn")
    # A package's __init__ re-exports its modules; imports of the package itself from one of
    # its own modules would make that a cycle, so check with the re-exports removed.
    packages = [
        "bnn",
        *(f"bnn.{name}" for name in SUBPACKAGES),
        *(f"bnn.infer.{name}" for name in FAMILIES),
        "bnn.apps.datasets",
        "bnn.apps.uci",
    ]
    for package in packages:
        for imported in list(graph.find_modules_directly_imported_by(package)):
            if imported.startswith(package + "."):
                graph.remove_import(importer=package, imported=imported)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    graph = grimp.build_graph("bnn")
    graph.add_import(importer="bnn.random.rng", imported="bnn.predict")
    assert _cycle(graph) is not None


CONCRETE = {
    "SampleSet",
    "ModelPosterior",
    "PointEstimate",
    "TestTimeAugmentation",
    "DeepEnsemble",
    "SVIPosterior",
    "NeuralLinear",
    "BayesianLinearRegression",
    "MCDropout",
}


@pytest.mark.parametrize(
    "path", [PACKAGE / "predict.py", *sorted((PACKAGE / "evaluate").glob("*.py"))], ids=str
)
def test_prediction_and_evaluation_never_ask_which_method_made_a_posterior(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        # a concrete class named anywhere (isinstance(x, SampleSet), samples.SampleSet, ...)
        if isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            assert name not in CONCRETE, f"{where} names {name}"
        # a concrete class told apart by its name: type(x).__name__ == "SampleSet"
        if isinstance(node, ast.Compare):
            strings = {n.value for n in ast.walk(node) if isinstance(n, ast.Constant)}
            assert not strings & CONCRETE, f"{where} compares with {strings & CONCRETE}"
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "hasattr"):
            attribute = node.args[1] if len(node.args) >= 2 else None
            assert not (
                isinstance(attribute, ast.Constant)
                and attribute.value
                in ("memory_budget", "has_learned_likelihoods", "sample_weights", "model")
            ), f"{where} sniffs {attribute.value!r}"


def test_every_bundled_data_file_has_its_licence_stated() -> None:
    """Only code and files listed, with their licence, in apps/datasets/README.md ship."""
    shipped = {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and path.name != "py.typed"
    }
    readme = (PACKAGE / "apps" / "datasets" / "README.md").read_text()
    listed = {"apps/datasets/README.md"} | {
        f"apps/datasets/{name}" for name in ("yacht/data.txt",) if f"`{name}`" in readme
    }
    assert shipped == listed
    assert "CC BY 4.0" in readme and "CC BY-NC" in readme  # what ships, and what does not


def test_infer_is_a_folder_of_families_with_at_most_12_entries() -> None:
    infer = PACKAGE / "infer"
    entries = sorted(p.name for p in infer.iterdir() if p.name != "__pycache__")
    assert len(entries) <= 12, entries
    packages = {p.name for p in infer.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_says_what_it_holds_and_which_file_to_read_first(family: str) -> None:
    module = importlib.import_module(f"bnn.infer.{family}")
    docstring = module.__doc__ or ""
    assert "Read first" in docstring and "Contract" in docstring, family
    named = {word.strip("`,.:;()") for word in docstring.split()}
    files = {p.name for p in (PACKAGE / "infer" / family).glob("*.py")} - {"__init__.py"}
    assert files <= named, f"{family}'s docstring does not mention {sorted(files - named)}"


def _function_body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        body = body[1:]  # the docstring
    return 0 if not body else (body[-1].end_lineno or 0) - body[0].lineno + 1


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_modules_stay_under_400_lines_and_functions_under_60(path: Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) <= 400, f"{path} holds more than one concept"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert _function_body_lines(node) <= 60, f"{path}:{node.lineno} {node.name}"


OLD_MODULE_PATHS = {
    "bnn.infer.vi": ("fit", "KLSchedule", "Validation"),
    "bnn.infer.svi": ("svi", "SVIPosterior", "pyro_model"),
    "bnn.infer.nuts": ("nuts",),
    "bnn.infer.hmc": ("hmc",),
    "bnn.infer.sgmcmc": ("sgld", "sghmc", "StepSchedule"),
    "bnn.infer.laplace": ("laplace", "LaplacePosterior"),
    "bnn.infer.marglik": ("marglik_training",),
    "bnn.infer.linear": ("neural_linear", "NeuralLinear", "BayesianLinearRegression"),
    "bnn.infer.ensemble": ("deep_ensemble", "DeepEnsemble"),
    "bnn.infer.swag": ("swag", "multi_swag", "SWAGPosterior"),
    "bnn.infer.stacking": ("stack", "StackedPosterior"),
    "bnn.infer.boosting": ("boost", "BoostedPosterior"),
    "bnn.infer.gp": ("gp", "GPPosterior"),
    "bnn.infer.history": ("History",),
    "bnn.infer.checkpoint": ("Checkpoint",),
}
"""The public module paths from before the families, with names users imported from them."""


@pytest.mark.parametrize("path", sorted(OLD_MODULE_PATHS))
def test_imports_from_the_module_paths_before_the_families_still_work(path: str) -> None:
    code = f"from {path} import {', '.join(OLD_MODULE_PATHS[path])}"
    namespace: dict[str, object] = {}
    exec(code, namespace)  # noqa: S102 - the import statement a user's script holds
    for name in OLD_MODULE_PATHS[path]:
        assert namespace[name] is getattr(importlib.import_module(path), name)
    assert all(
        namespace[name] is getattr(bnn.infer, name)
        for name in OLD_MODULE_PATHS[path]
        if name in bnn.infer.__all__
    )
