"""The package's layering and size limits, read from the source with ``ast`` (nothing is imported).

Subpackages import only downward, in the order ``core < study < data < models < dictionaries < analysis <
report``; ``costs`` sits beside ``report`` and imports ``core``, ``study``, ``data`` and ``models`` only. The top-level
``layershift.config`` and ``layershift.cli`` may import everything and are imported by no subpackage. Every
import statement counts, also those inside functions or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "src" / "layershift"
LAYERS = ["core", "study", "data", "models", "dictionaries", "analysis", "report"]
ALLOWED_IMPORTS = {layer: set(LAYERS[:rank]) for rank, layer in enumerate(LAYERS)} | {
    "costs": {"core", "study", "data", "models"}
}
TOP_LEVEL_ONLY = {"config", "cli"}  # may import every subpackage; no subpackage imports them
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


@dataclass(frozen=True)
class Import:
    """One imported ``layershift`` module: who imports it and where."""

    source: str  # dotted name of the importing module, e.g. "layershift.models.extract"
    target: str  # dotted name of what it imports, e.g. "layershift.data.shards"
    line: int

    def where(self) -> str:
        return f"{self.source}:{self.line} imports {self.target}"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: Path) -> str:
    """The package a module's relative imports start from (a package's ``__init__`` is its own)."""
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def modules() -> list[Path]:
    return sorted(PACKAGE_DIR.rglob("*.py"))


def imported_names(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    """Dotted names an import statement brings in; ``from a import b`` yields ``a.b`` (b may be a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: climb level - 1 packages up from the importing module's package
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        stem = ".".join([*base, node.module] if node.module else base)
    else:
        stem = node.module or ""
    return [f"{stem}.{alias.name}" if alias.name != "*" else stem for alias in node.names]


def layershift_imports() -> list[Import]:
    """Every import of a layershift module by a layershift module, at any depth of the source."""
    found = []
    for path in modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for name in imported_names(node, package_of(path)):
                if name == "layershift" or name.startswith("layershift."):
                    found.append(Import(module_name(path), name, node.lineno))
    return found


def subpackage(dotted: str) -> str | None:
    """``layershift.<sub>.…`` -> ``<sub>`` for a subpackage directory, else None (top level, or unknown)."""
    parts = dotted.split(".")
    if len(parts) < 2 or not (PACKAGE_DIR / parts[1] / "__init__.py").is_file():
        return None
    return parts[1]


def top_level_module(dotted: str) -> str | None:
    """``layershift.config`` / ``layershift.cli`` (or a name inside them) -> ``config`` / ``cli``."""
    parts = dotted.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in TOP_LEVEL_ONLY else None


def cross_package_imports() -> list[tuple[str, str, Import]]:
    """(importing subpackage, imported subpackage, the import) for imports between two subpackages."""
    edges = []
    for found in layershift_imports():
        source, target = subpackage(found.source), subpackage(found.target)
        if source and target and source != target:
            edges.append((source, target, found))
    return edges


def test_every_subpackage_is_placed_in_the_layering():
    """A new subpackage must be given its place here before the other checks can judge its imports."""
    present = {path.parent.name for path in PACKAGE_DIR.glob("*/__init__.py")}
    assert present == set(ALLOWED_IMPORTS), f"unplaced: {present - set(ALLOWED_IMPORTS)}"


def test_imports_between_subpackages_point_downward():
    upward = [
        f"{found.where()} ({source} may import {', '.join(sorted(ALLOWED_IMPORTS[source])) or 'nothing'})"
        for source, target, found in cross_package_imports()
        if target not in ALLOWED_IMPORTS[source]
    ]
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_no_subpackage_imports_the_top_level_config_or_cli():
    offending = [
        found.where()
        for found in layershift_imports()
        if subpackage(found.source) and top_level_module(found.target)
    ]
    assert not offending, "a subpackage imports layershift.config / layershift.cli:\n" + "\n".join(offending)


def test_no_import_cycles_between_subpackages():
    graph: dict[str, set[str]] = {}
    for source, target, _ in cross_package_imports():
        graph.setdefault(source, set()).add(target)
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for successor in sorted(graph.get(node, ())):
            if successor in path:
                cycle = path[path.index(successor) :] + [successor]
                if min(cycle[:-1]) == cycle[0]:  # each cycle once, from its smallest member
                    cycles.append(" -> ".join(cycle))
            else:
                visit(successor, [*path, successor])

    for start in sorted(graph):
        visit(start, [start])
    assert not cycles, "import cycles between subpackages:\n" + "\n".join(sorted(set(cycles)))


@pytest.mark.parametrize("package", sorted(ALLOWED_IMPORTS))
def test_every_subpackage_init_has_a_docstring(package):
    tree = ast.parse((PACKAGE_DIR / package / "__init__.py").read_text(encoding="utf-8"))
    docstring = ast.get_docstring(tree)
    assert docstring and docstring.strip(), f"layershift/{package}/__init__.py has no docstring"


def test_no_module_is_longer_than_the_limit():
    lengths = {path: len(path.read_text(encoding="utf-8").splitlines()) for path in modules()}
    too_long = [
        f"{path.relative_to(PACKAGE_DIR.parent)}: {length} lines"
        for path, length in lengths.items()
        if length > MAX_MODULE_LINES
    ]
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(too_long)


def test_no_function_is_longer_than_the_limit():
    """Every function and method, nested ones too, from its ``def`` line to its last line."""
    too_long = []
    for path in modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(
                        f"{path.relative_to(PACKAGE_DIR.parent)}:{node.lineno} {node.name}: {length} lines"
                    )
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(too_long)


def test_the_import_reader_sees_relative_and_nested_imports():
    """The checks above are only as good as ``imported_names``: relative imports resolve from the module's
    package, ``from a import b`` names the submodule, and imports inside functions are read too."""
    source = "from .shards import ShardReader\nfrom .. import core\ndef f():\n    import layershift.study.targets\n"
    tree = ast.parse(source)
    names = [
        name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for name in imported_names(node, "layershift.data")
    ]
    assert sorted(names) == [
        "layershift.core",
        "layershift.data.shards.ShardReader",
        "layershift.study.targets",
    ]
    assert subpackage("layershift.data.shards.ShardReader") == "data"
    assert top_level_module("layershift.config") == "config" and subpackage("layershift.config") is None
