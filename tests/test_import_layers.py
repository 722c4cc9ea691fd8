"""No import circles in the archscale package, and imports that only point down its layers
(issue 30).

A circle makes the order modules load in matter: a name used at import time may not exist yet,
and the modules cannot be understood, tested or split one at a time. The graph is read from the
source with `ast`, without importing anything, and counts every `archscale` import: at module
top, inside functions and under `if TYPE_CHECKING:` (a type-only import is still an arrow
between the modules' ideas, and the next refactor turns it into a real one).

An import is an arrow to the module it names: `from archscale.a import b` points at
archscale.a.b when that is a module, else at archscale.a (its __init__.py). Dynamic imports
(importlib.import_module) are not arrows here.

There are none: the trainer's split (training/job.py, schedule.py, distributed.py below the
loop) and the engine registry (an engine module is imported by name, never by engines/base.py)
removed the last ones.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from archscale.workflow.imports import archscale_imports, import_graph as package_graph

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "archscale"


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the archscale modules it imports (the parser code_version follows too:
    archscale.workflow.imports), for every .py file under the package."""
    return package_graph(package)


def import_cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """Every elementary circle, as its modules in order from the alphabetically first one.

    A depth-first walk from each module that only visits modules after it in sorted order, so
    each circle is found once, from its first module."""
    cycles = set()
    for start in sorted(graph):
        path, todo = [start], [iter(sorted(graph[start]))]
        while todo:
            following = next(todo[-1], None)
            if following is None:
                todo.pop()
                path.pop()
            elif following == start:
                cycles.add(tuple(path))
            elif following > start and following not in path:
                path.append(following)
                todo.append(iter(sorted(graph.get(following, ()))))
    return cycles


def shown(cycle: tuple[str, ...]) -> str:
    return " -> ".join(cycle + cycle[:1])


@pytest.fixture(scope="module")
def cycles() -> set[tuple[str, ...]]:
    return import_cycles(import_graph())


def test_the_package_has_no_import_cycle(cycles):
    assert not cycles, "import cycles (break each by moving what both sides need into a module " \
        "below them):\n" + "\n".join(shown(c) for c in sorted(cycles))


def test_imports_inside_functions_and_type_checking_blocks_count():
    modules = {"archscale", "archscale.a", "archscale.a.b", "archscale.a.c", "archscale.d"}
    source = ("from __future__ import annotations\n"
              "from typing import TYPE_CHECKING\n"
              "import numpy\n"
              "if TYPE_CHECKING:\n"
              "    from archscale.d import Thing\n"
              "def late():\n"
              "    from .c import helper\n"
              "    import archscale.a.b as b\n")
    assert archscale_imports(source, "archscale.a.b", False, modules) == {
        "archscale.d", "archscale.a.c"}
    assert archscale_imports("from . import c\nfrom .. import d\n", "archscale.a", True,
                             modules) == {"archscale.a.c", "archscale.d"}


def test_a_cycle_is_named_once_from_its_first_module():
    graph = {"m.c": {"m.a"}, "m.a": {"m.b"}, "m.b": {"m.c", "m.a"}, "m.d": {"m.a"}}
    assert import_cycles(graph) == {("m.a", "m.b", "m.c"), ("m.a", "m.b")}
    assert shown(("m.a", "m.b")) == "m.a -> m.b -> m.a"


#: The package's layers, lowest first. A module may import its own unit (top-level module or
#: subpackage) and any unit of a lower layer; the foundations may also import each other.
#: Units of one layer above the foundations are peers and import nothing from each other: the
#: stages (fit, training, throughput) share only what lies below them.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("foundations", frozenset({"archscale", "archscale.io", "archscale.provenance",
                               "archscale.figures", "archscale.tables", "archscale.architecture",
                               "archscale.devices", "archscale.hf_compat", "archscale.schema",
                               "archscale.settings",
                               "archscale.paper"})),
    ("data", frozenset({"archscale.data"})),
    ("stages", frozenset({"archscale.fit", "archscale.training", "archscale.throughput"})),
    ("study", frozenset({"archscale.config"})),
    ("costs", frozenset({"archscale.costs"})),
    ("search", frozenset({"archscale.search"})),
    ("workflow", frozenset({"archscale.workflow"})),
    ("commands", frozenset({"archscale.cli"})),
)


def unit_of(module: str) -> str:
    """archscale.fit.forms.base -> archscale.fit; archscale.io -> archscale.io."""
    return ".".join(module.split(".")[:2])


def layer_of(unit: str) -> int:
    for index, (_, units) in enumerate(LAYERS):
        if unit in units:
            return index
    raise KeyError(unit)


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that points up the layers, or sideways to a peer, one line each."""
    out = []
    for module, imported in sorted(graph.items()):
        here = layer_of(unit_of(module))
        for target in sorted(imported):
            there = layer_of(unit_of(target))
            if unit_of(target) == unit_of(module) or there < here or here == there == 0:
                continue
            how = "up" if there > here else "sideways to a peer"
            out.append(f"{module} ({LAYERS[here][0]}) imports {target} ({LAYERS[there][0]}): "
                       f"{how}")
    return out


def test_every_module_has_a_layer():
    units = {unit_of(module) for module in import_graph()}
    placed = set().union(*(units for _, units in LAYERS))
    assert units <= placed, f"give these a layer in LAYERS: {sorted(units - placed)}"


def test_imports_only_point_down_the_layers():
    problems = layer_violations(import_graph())
    assert not problems, ("imports against the layer order (move what both need below them):\n"
                          + "\n".join(problems))


def test_a_stage_importing_its_peer_is_caught():
    graph = {"archscale.throughput.engines.torch": {"archscale.training.model"},
             "archscale.config": {"archscale.search.study"},
             "archscale.search.study": {"archscale.config", "archscale.fit.forms"},
             "archscale.io": {"archscale.provenance"}}
    assert layer_violations(graph) == [
        "archscale.config (study) imports archscale.search.study (search): up",
        "archscale.throughput.engines.torch (stages) imports archscale.training.model (stages): "
        "sideways to a peer"]
