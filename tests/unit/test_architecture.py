"""The layers of ARCHITECTURE.md hold: every import in fastq/ points down, and none forms a cycle.

Every import counts, at module level or inside a function, except those under
``if TYPE_CHECKING:`` (never executed: annotations only).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "fastq"


def declared_layers() -> list[list[str]]:
    """The ``layers`` block of ARCHITECTURE.md: one line a layer, top first; each word a
    module or package under fastq (``.`` is the package itself)."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    block = re.search(r"```layers\n(.*?)```", text, re.S)
    assert block, "ARCHITECTURE.md has no ```layers block"
    layers = []
    for line in block.group(1).splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            layers.append(words)
    return layers


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST):
    """Every node but those inside an ``if TYPE_CHECKING:`` body."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The fastq modules ``name`` imports when it runs."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                # ``from . import serialization`` imports a module, ``from fastq import App``
                # an attribute of the package
                found.add(submodule if submodule in modules else target)
    return {target for target in found if target == "fastq" or target.startswith("fastq.")}


def layer_of(name: str, layers: list[list[str]]) -> int | None:
    """The index of the layer whose longest entry names ``name`` or a package holding it."""
    best, best_len = None, -1
    for index, entries in enumerate(layers):
        for entry in entries:
            full = "fastq" if entry == "." else f"fastq.{entry}"
            if (name == full or name.startswith(full + ".")) and len(full) > best_len:
                best, best_len = index, len(full)
    return best


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, modules) - {name} for name, path in modules.items()}


def test_every_module_has_a_layer(graph):
    layers = declared_layers()
    unplaced = sorted(name for name in graph if layer_of(name, layers) is None)
    assert not unplaced, f"not in ARCHITECTURE.md's layers: {unplaced}"


def test_imports_point_down(graph):
    layers = declared_layers()
    upward = []
    for name, targets in sorted(graph.items()):
        here = layer_of(name, layers)
        for target in sorted(targets):
            there = layer_of(target, layers)
            if here is not None and there is not None and there < here:
                upward.append(f"{name} (layer {here}) imports {target} (layer {there})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycles(graph):
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_checker_sees_function_level_and_ignores_type_checking(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from fastq.app import App\n"
        "def f():\n    from fastq.worker import executor\n")
    modules = {"fastq.worker.executor": source, "fastq.app": source}
    assert imports_of("fastq.mod", source, modules) == {"fastq.worker.executor"}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
