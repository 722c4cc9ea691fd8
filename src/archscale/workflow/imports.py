"""The archscale modules a source file imports, read with `ast` without importing anything.

One reading of imports for the two places that follow them: the per-stage code hash
(workflow/code_versions.py), which hashes the modules a stage's entry points reach, and the
import-layer test (tests/test_import_layers.py). An import counts wherever it is written: at
module top, inside a function, under `if TYPE_CHECKING:`. Reading the source, not importing
it, runs none of the modules' code and needs none of their dependencies.

An import is an arrow to the module it names: `from archscale.a import b` points at
archscale.a.b when that is a module, else at archscale.a (its __init__.py). Imports made at run
time (importlib) are no arrow, except with `dynamic=True`, which adds the two kinds the source
names: a string constant that is exactly an archscale module's dotted name (`-m
archscale.throughput.measure`, the engine registry's table of modules), and a package whose
code lists its own folder with `pkgutil.iter_modules(__path__)` (a registry that imports every
module in it, as fit/forms/ does).
"""
from __future__ import annotations

import ast
import contextlib
import gc
from pathlib import Path
from typing import Collection, Iterable, Iterator, NamedTuple


def module_name(path: Path, package: Path) -> str:
    """archscale.a.b for <package>/a/b.py, archscale.a for <package>/a/__init__.py."""
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(package: Path) -> dict[str, Path]:
    """module name -> file, for every .py file under the package folder (src/archscale)."""
    return {module_name(path, package): path for path in sorted(package.rglob("*.py"))
            if "__pycache__" not in path.parts}


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Parsing makes many objects and no cycles; in a big process (Snakemake, with pandas
    loaded) the garbage collector's passes over them take a third of the parse."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def _scans_own_folder(node: ast.AST) -> bool:
    """A call pkgutil.iter_modules(__path__) (or iter_modules(__path__))."""
    if not isinstance(node, ast.Call) or not node.args:
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    first = node.args[0]
    return name == "iter_modules" and isinstance(first, ast.Name) and first.id == "__path__"


def _statements(tree: ast.Module) -> Iterator[ast.AST]:
    """Every statement, nested ones included, without visiting expressions: imports are
    statements, and most of a module's nodes are expressions (this is the slow part)."""
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        yield node
        todo += [child for child in ast.iter_child_nodes(node)
                 if isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case))]


def _may_import_at_run_time(source: str) -> bool:
    """Whether a source could name a module in a string or scan its folder: only then are its
    expressions read too."""
    return "\"archscale." in source or "'archscale." in source or "iter_modules" in source


def _runs_code(tree: ast.Module) -> bool:
    """False for a file that holds only a docstring."""
    body = [node for node in tree.body
            if not (isinstance(node, ast.ImportFrom) and node.module == "__future__")]
    return not all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                   and isinstance(node.value.value, str) for node in body)


class Reading(NamedTuple):
    """What one module's source says: the archscale modules it imports (see
    archscale_imports), and whether it runs code at all: a file that holds only a docstring
    (most packages' __init__.py) runs nothing, so no result depends on it."""
    imports: frozenset[str]
    runs_code: bool


def read_module(source: str, module: str, is_package: bool, modules: Collection[str], *,
                dynamic: bool = False) -> Reading:
    """Read a module's source once with ast, for its imports and whether it runs code."""
    tree = ast.parse(source)
    nodes: Iterable[ast.AST] = (ast.walk(tree) if dynamic and _may_import_at_run_time(source)
                                else _statements(tree))
    named: list[str] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            named += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            origin = node.module or ""
            if node.level:  # relative: from the module's own package, up level - 1 packages
                anchor = module.split(".")[:len(module.split(".")) - node.level + is_package]
                origin = ".".join(anchor + ([node.module] if node.module else []))
            named += [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules
                      else origin for alias in node.names]
        elif not dynamic:
            continue
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and node.value.startswith("archscale.") and node.value in modules):
            named.append(node.value)
        elif is_package and _scans_own_folder(node):
            named += [m for m in modules if m.rpartition(".")[0] == module]
    found = set()
    for name in named:
        while name and name not in modules:  # archscale.a.b.SomeName -> archscale.a.b
            name = name.rpartition(".")[0]
        if name.split(".")[0] == "archscale" and name != module:
            found.add(name)
    return Reading(frozenset(found), _runs_code(tree))


def archscale_imports(source: str, module: str, is_package: bool, modules: Collection[str],
                      *, dynamic: bool = False) -> set[str]:
    """The archscale modules a module's source imports, anywhere in it (functions and
    TYPE_CHECKING blocks included), resolved to names in `modules`; itself excluded. With
    `dynamic`, also the modules it imports at run time by a name or a scan written in it."""
    return set(read_module(source, module, is_package, modules, dynamic=dynamic).imports)


def import_graph(package: Path, *, dynamic: bool = False) -> dict[str, set[str]]:
    """module -> the archscale modules it imports, for every .py file under the package."""
    files = package_modules(package)
    return {module: archscale_imports(path.read_text(), module, path.name == "__init__.py",
                                      files, dynamic=dynamic)
            for module, path in files.items()}


def enclosing_packages(module: str) -> list[str]:
    """The packages Python imports before a module: archscale.a.b -> archscale, archscale.a."""
    parts = module.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts))]


class PackageReader:
    """Every module of one package folder, each text read once: the stages share most
    modules, so a process that hashes them all parses each file once. The module list is
    taken once, so a module added later in the same process is not seen."""

    def __init__(self, package: Path):
        self.files = package_modules(package)
        self.names = frozenset(self.files)
        self._readings: dict[str, tuple[str, Reading]] = {}

    def read(self, module: str) -> Reading:
        """The module's reading (with `dynamic`), again only when its text changed."""
        path = self.files[module]
        text = path.read_text()
        kept = self._readings.get(module)
        if kept is None or kept[0] != text:
            with _collector_paused():
                kept = self._readings[module] = (text, read_module(
                    text, module, path.name == "__init__.py", self.names, dynamic=True))
        return kept[1]
