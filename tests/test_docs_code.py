"""Every ```python block of README.md and docs/*.md runs as written.

A page's blocks run in order in one namespace, in a temporary working directory. A block is a
complete program (its own imports and data) unless its first line is
``# continues the previous block``; a block whose first line starts with
``# not run by the tests`` (only where it needs several processes, see ``NOT_RUN_ALLOWED``) is
compiled and checked, not executed. Tracebacks point at the page and line:
``File "docs/mcmc.md:block@21", line 25`` is line 25 of docs/mcmc.md.
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

import bnn

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]  # not docs/api/
CONTINUES = "# continues the previous block"
NOT_RUN = "# not run by the tests"
NOT_RUN_ALLOWED = {"docs/distributed.md"}  # torchrun scripts need several processes
FENCE = re.compile(r'^```python(?:\s+title="[^"]*")?\s*$')


@dataclass(frozen=True)
class Block:
    """One ```python block: its code and the page line of its first code line."""

    page: str
    line: int
    code: str

    @property
    def continues(self) -> bool:
        return self.code.startswith(CONTINUES)

    @property
    def runs(self) -> bool:
        return not self.code.startswith(NOT_RUN)

    @property
    def filename(self) -> str:
        return f"{self.page}:block@{self.line}"

    def compile(self) -> Any:
        """Compiled so that traceback line numbers are the page's own line numbers."""
        return compile("\n" * (self.line - 1) + self.code, self.filename, "exec")


def blocks_of(path: Path) -> list[Block]:
    """The ```python blocks of a markdown file (```python title="..." included)."""
    page = path.relative_to(ROOT).as_posix()
    lines = path.read_text().splitlines()
    blocks, start = [], None
    for number, line in enumerate(lines, start=1):
        if start is None and FENCE.match(line):
            start = number + 1
        elif start is not None and line.strip() == "```":
            blocks.append(Block(page, start, "\n".join(lines[start - 1 : number - 1]) + "\n"))
            start = None
    assert start is None, f"{page}: unterminated ```python block at line {start - 1}"
    return blocks


def _bound_names(tree: ast.AST) -> set[str]:
    """Every name the code binds anywhere (a deliberate over-approximation of scopes)."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            bound.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, ast.MatchAs | ast.MatchStar) and node.name:
            bound.add(node.name)
    return bound


def problems_of_a_standalone_block(block: Block) -> list[str]:
    """Why a block that does not continue another is not a complete program (empty: it is)."""
    tree = ast.parse(block.code, block.filename)
    used = {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
    }
    missing = sorted(used - _bound_names(tree) - set(dir(builtins)))
    problems = [f"uses {', '.join(missing)} without importing or defining it"] if missing else []
    for node in ast.walk(tree):
        values = []
        if isinstance(node, ast.Call):
            values = [*node.args, *(keyword.value for keyword in node.keywords)]
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            values = [node.value]
        if any(isinstance(v, ast.Constant) and v.value is Ellipsis for v in values):
            problems.append(f"line {block.line + node.lineno - 1}: `...` as a placeholder value")
    return problems


@pytest.mark.parametrize("path", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_block_is_a_complete_program_or_marked(path: Path) -> None:
    """Each block compiles; one without the continuation marker imports and defines all it uses."""
    blocks = blocks_of(path)
    problems = []
    for index, block in enumerate(blocks):
        block.compile()  # a SyntaxError names the page and line
        if block.continues:
            if index == 0 or not blocks[index - 1].runs:
                problems.append(f"{block.filename}: continues no runnable block")
            continue
        problems += [f"{block.filename}: {p}" for p in problems_of_a_standalone_block(block)]
        if not block.runs and block.page not in NOT_RUN_ALLOWED:
            problems.append(f"{block.filename}: not-run blocks are for {sorted(NOT_RUN_ALLOWED)}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_page_code_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's runnable blocks, in order, in one namespace, in a fresh working directory.

    ``use_rng`` restores the default RNG and the global generators afterwards, so a page that
    calls ``bnn.seed_everything`` leaves no trace in the tests that run after it.
    """
    blocks = [block for block in blocks_of(path) if block.runs]
    if not blocks:
        pytest.skip("no python blocks")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict[str, Any] = {"__name__": "__main__"}
    lines = path.read_text().splitlines()
    problems = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the pages' numbers are those of one thread, whatever ran before
    try:
        with bnn.random.use_rng(bnn.RNG(0)):
            for index, block in enumerate(blocks):
                exec(block.compile(), namespace)
                end = blocks[index + 1].line if index + 1 < len(blocks) else len(lines) + 1
                prose = "\n".join(lines[block.line - 1 : end - 1])
                problems += prose_number_problems(prose, namespace, block.filename)
    finally:
        torch.set_num_threads(threads)
    assert not problems, "\n".join(problems)


def test_the_collector_finds_blocks_and_checks_them() -> None:
    """The parser sees titled blocks, and the standalone check catches placeholders."""
    readme = blocks_of(ROOT / "README.md")
    assert len(readme) >= 2 and all(not block.continues for block in readme)
    distributed = blocks_of(ROOT / "docs" / "distributed.md")
    assert any(not block.runs for block in distributed)
    fake = Block("page.md", 3, "import torch\nx, y = ...\nprint(torch.zeros(1) + z)\n")
    problems = problems_of_a_standalone_block(fake)
    assert problems == [
        "uses z without importing or defining it",
        "line 4: `...` as a placeholder value",
    ]


PROSE_NUMBER = re.compile(r"([−-]?\d[\d.,]*)<!-- = (.+?) -->")
"""A number in prose that describes an output, and the expression (in the page's namespace,
after the block before it ran) that formats the value it states: ``0.69<!-- = f"{std:.2f}" -->``.
The comment does not render; the test fails when the code's output and the prose drift."""


def prose_number_problems(prose: str, namespace: dict[str, Any], where: str) -> list[str]:
    """Each ``number<!-- = expression -->`` in ``prose`` whose expression gives another text."""
    problems = []
    for stated, expression in PROSE_NUMBER.findall(prose):
        produced = str(eval(expression, namespace))  # noqa: S307 - the page's own expression
        if produced.replace("-", "−") != stated.replace("-", "−"):
            problems.append(f"{where}: the prose says {stated}, the code gives {produced}")
    return problems


def test_the_prose_check_catches_a_drifted_number() -> None:
    namespace = {"spread": 0.1538}
    prose = 'a spread of 0.15<!-- = f"{spread:.2f}" --> and −0.2<!-- = f"{-spread:.1f}" -->'
    assert prose_number_problems(prose, namespace, "page") == []
    drifted = 'a spread of 0.06<!-- = f"{spread:.2f}" -->'
    assert prose_number_problems(drifted, namespace, "page") == [
        "page: the prose says 0.06, the code gives 0.15"
    ]


EXECUTORS = re.compile(r"ProcessPoolExecutor|LocalCluster|get_executor|executor=")


def problems_of_a_script_with_workers(block: Block) -> list[str]:
    """A block that starts worker processes must work saved as a script: workers import it, so
    it is complete by itself and runs nothing but definitions outside its ``__main__`` guard."""
    if not EXECUTORS.search(block.code):
        return []
    if block.continues:
        return [f"{block.filename}: starts workers but continues a block (workers re-run it)"]
    problems = []
    for node in ast.parse(block.code).body:
        definition = isinstance(
            node, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.ClassDef
        ) or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
        guard = isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
        if not (definition or guard):
            problems.append(f"{block.filename}: line {block.line + node.lineno - 1} runs on import")
    return problems


@pytest.mark.parametrize("path", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_blocks_that_start_workers_work_as_scripts(path: Path) -> None:
    problems = [p for block in blocks_of(path) for p in problems_of_a_script_with_workers(block)]
    assert not problems, "\n".join(problems)


def test_the_worker_check_catches_work_outside_the_guard() -> None:
    block = Block("page.md", 1, "import bnn\nresult = bnn.tune.tune(f, s, executor=pool)\n")
    assert problems_of_a_script_with_workers(block) == ["page.md:block@1: line 2 runs on import"]
    continuing = Block("page.md", 1, "# continues the previous block\nrun(executor=pool)\n")
    assert "continues a block" in problems_of_a_script_with_workers(continuing)[0]
