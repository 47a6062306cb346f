"""The layers of ARCHITECTURE.md hold: every import in fastq/ points down, and none forms a cycle.

Every import counts, at module level or inside a function, except those under
``if TYPE_CHECKING:`` (never executed: annotations only). Cython files count too: a
``.pyx``'s imports and cimports, and a ``.pxd``'s, which run when the module of its name
is imported. A plain ``.py`` that setup.py compiles a second time under another name
(``PURE_PYTHON_SPEEDUPS``) is also a module of that name, importing what the file
imports: the compiled build runs the same lines from another place in the package.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "fastq"
#: the files a module is made of: Python, Cython code, Cython declarations
SOURCE_SUFFIXES = (".py", ".pyx", ".pxd")


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


def twice_built() -> dict[str, Path]:
    """setup.py's ``PURE_PYTHON_SPEEDUPS``: compiled module name -> the .py it is built from."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [
                "PURE_PYTHON_SPEEDUPS"]:
            assert isinstance(node.value, ast.Dict), "PURE_PYTHON_SPEEDUPS is no longer a dict"
            return {ast.literal_eval(key): ROOT.joinpath(*_path_parts(value))
                    for key, value in zip(node.value.keys, node.value.values)}
    raise AssertionError("setup.py has no PURE_PYTHON_SPEEDUPS")


def _path_parts(node: ast.expr) -> list[str]:
    """``"a/b.py"`` or ``os.path.join("a", "b.py")`` as its parts."""
    if isinstance(node, ast.Call):
        return [ast.literal_eval(arg) for arg in node.args]
    return [ast.literal_eval(node)]


def all_modules() -> dict[str, list[Path]]:
    """Every module of the package and the files it is built from."""
    modules: dict[str, list[Path]] = {}
    for path in sorted(PACKAGE.rglob("*")):
        if path.suffix in SOURCE_SUFFIXES:
            modules.setdefault(module_name(path), []).append(path)
    for name, source in twice_built().items():
        modules.setdefault(name, []).append(source)
    return modules


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


def imports_of(name: str, path: Path, modules: dict[str, list[Path]]) -> set[str]:
    """The fastq modules ``name`` imports when it runs, as the file ``path`` says."""
    is_package = path.stem == "__init__"
    text = path.read_text()
    statements = (_cython_imports(text) if path.suffix in (".pyx", ".pxd")
                  else _python_imports(ast.parse(text, str(path))))
    found = set()
    for level, module, names in statements:
        if level:
            base = name.split(".") if is_package else name.split(".")[:-1]
            base = base[:len(base) - level + 1]
            target = ".".join(base + ([module] if module else []))
        else:
            target = module
        if names is None:  # import a.b
            found.add(target)
            continue
        for alias in names:
            submodule = f"{target}.{alias}"
            # ``from . import serialization`` imports a module, ``from fastq import App``
            # an attribute of the package
            found.add(submodule if submodule in modules else target)
    return {target for target in found if target == "fastq" or target.startswith("fastq.")}


def _python_imports(tree: ast.AST):
    """(level, module, names or None) for each import a Python module runs."""
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield 0, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            yield node.level, node.module or "", [alias.name for alias in node.names]


_TRIPLE_QUOTED = re.compile(r"(\"{3}|'{3}).*?\1", re.S)
_PARENTHESIZED_NAMES = re.compile(r"^(\s*from\s+\S+\s+c?import\s*)\(([^)]*)\)", re.M)
_CYTHON_IMPORT = re.compile(
    r"^\s*(?:c?import\s+(?P<modules>.+)"
    r"|from\s+(?P<dots>\.*)(?P<module>[\w.]*)\s+c?import\s+(?P<names>.+))$", re.M)


def _cython_imports(text: str):
    """(level, module, names or None) for each ``import``, ``cimport`` and ``from ...
    (c)import`` line of a .pyx or .pxd, at any indentation (Cython files have no
    ``TYPE_CHECKING`` block to skip). A cimport counts: the module's import runs it."""
    text = _TRIPLE_QUOTED.sub("", text)  # docstrings
    text = re.sub(r"#.*", "", text)
    text = text.replace("\\\n", " ")
    text = _PARENTHESIZED_NAMES.sub(lambda m: m.group(1) + " ".join(m.group(2).split()), text)
    for match in _CYTHON_IMPORT.finditer(text):
        if match["modules"]:
            for clause in match["modules"].split(","):
                yield 0, clause.split()[0], None
        else:
            names = [clause.split()[0] for clause in match["names"].split(",") if clause.strip()]
            yield len(match["dots"]), match["module"], names


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
def modules() -> dict[str, list[Path]]:
    return all_modules()


@pytest.fixture(scope="module")
def graph(modules) -> dict[str, set[str]]:
    return {name: set().union(*(imports_of(name, path, modules) for path in paths)) - {name}
            for name, paths in modules.items()}


def _files(paths: list[Path]) -> str:
    return ", ".join(str(path.relative_to(ROOT)) for path in paths)


def test_every_module_has_a_layer(graph):
    layers = declared_layers()
    unplaced = sorted(name for name in graph if layer_of(name, layers) is None)
    assert not unplaced, f"not in ARCHITECTURE.md's layers: {unplaced}"


def test_imports_point_down(graph, modules):
    layers = declared_layers()
    upward = []
    for name, targets in sorted(graph.items()):
        here = layer_of(name, layers)
        for target in sorted(targets):
            there = layer_of(target, layers)
            if here is not None and there is not None and there < here:
                upward.append(f"{name} (layer {here}; {_files(modules[name])}) imports "
                              f"{target} (layer {there})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_imports_name_modules_that_exist(graph, modules):
    """A relative import in a twice-built file resolves from its compiled name too
    (``from .pools.base import X`` in worker/_consumer_loop.py would be
    ``fastq._speedups.pools.base`` in the C build): every import must name a real module."""
    missing = [f"{name} ({_files(modules[name])}) imports {target}, which does not exist"
               for name, targets in sorted(graph.items())
               for target in sorted(targets) if target not in modules]
    assert not missing, "\n".join(missing)


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


def test_the_checker_reads_cython_imports_and_cimports(tmp_path):
    source = tmp_path / "mod.pyx"
    source.write_text(
        '"""A docstring is not code:\nfrom fastq.cli import main\n"""\n'
        "# from fastq.demo import run\n"
        "cimport cython\n"
        "from libc.stdint cimport (int8_t,\n    uint64_t)\n"
        "from fastq._speedups.includes cimport rabbitmq as rmq\n"
        "from fastq._speedups._amqp_decisions cimport ConfirmTracker\n"
        "import fastq.protocol as protocol, time\n"
        "from ..exceptions import (AMQPError,\n    BrokerConnectionLost)\n"
        "cdef extern from 'amqp.h' nogil:\n    pass\n"
        "cdef class Loop:\n    def run(self):\n        from fastq.worker import executor\n")
    modules = {name: [source] for name in (
        "fastq._speedups.includes.rabbitmq", "fastq._speedups._amqp_decisions",
        "fastq.protocol", "fastq.exceptions", "fastq.worker.executor")}
    assert imports_of("fastq._speedups.mod", source, modules) == {
        "fastq._speedups.includes.rabbitmq", "fastq._speedups._amqp_decisions",
        "fastq.protocol", "fastq.exceptions", "fastq.worker.executor"}


def test_twice_built_modules_are_checked_under_their_compiled_names(graph, modules):
    built = twice_built()
    assert built["fastq._speedups._consumer_loop"] == PACKAGE / "worker" / "_consumer_loop.py"
    for name, source in built.items():
        assert source in modules[name]
    # the compiled consumer loop imports what its source does, from _speedups' place
    assert "fastq.worker.pools.base" in graph["fastq._speedups._consumer_loop"]
    # a relative import resolves from the compiled name (here to the same module)
    assert graph["fastq._speedups._amqp_decisions"] == {"fastq.exceptions"}
