"""Each stage's code list is derived from its imports (issue 30, item 2).

`code_version(stage)` hashes the modules a stage's entry points reach through archscale imports
(archscale.workflow.code_versions), so editing a module reruns exactly the stages that run it.
These tests check the derivation on a small package written here, where every expectation is
known, and on a copy of the real package: an edit changes the hash of exactly the stages whose
list holds the file, bookkeeping changes none, and every rule's script imports nothing its
stage does not hash.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from archscale.workflow import code_versions as cv
from archscale.workflow.imports import archscale_imports, package_modules, read_module
from conftest import REPO

# A package with a known import graph: `solver` reaches `numerics` only through an import
# inside a function, `registry` names its plugins in strings, `plugins/` is scanned by its
# package, `model` imports the device presets for bookkeeping only, and io/provenance/config
# are bookkeeping.
TOY_PACKAGE: dict[str, str] = {
    "__init__.py": '"""toy."""\n__version__ = "1"\n',
    "io.py": "def write(): pass\n",
    "provenance.py": "from archscale import __version__\n",
    "config.py": "from archscale.numerics import step\n",
    "devices.py": "PRESETS = {}\n",
    "numerics.py": "def step(): return 1\n",
    "shared.py": "from archscale import io\nVALUE = 2\n",
    "solver.py": ("from archscale.io import write\n"
                  "from archscale.shared import VALUE\n"
                  "def solve():\n"
                  "    from archscale.numerics import step\n"
                  "    return step()\n"),
    "model.py": "from archscale.devices import PRESETS\nfrom archscale.shared import VALUE\n",
    "registry.py": 'MODULES = {"fast": "archscale.engines.fast"}\n',
    "engines/__init__.py": '"""The engines (only a docstring: nothing runs here)."""\n',
    "engines/fast.py": "from archscale.numerics import step\n",
    "plugins/__init__.py": ("import importlib, pkgutil\n"
                            "for m in pkgutil.iter_modules(__path__):\n"
                            "    importlib.import_module(f'{__name__}.{m.name}')\n"),
    "plugins/one.py": "X = 1\n",
    "fitter.py": "from archscale import plugins\n",
    "planner.py": "import archscale.config\nfrom archscale.shared import VALUE\n",
}

TOY_STAGES: dict[str, tuple[str, ...]] = {
    "solve": ("solver",),
    "model": ("model",),
    "measure": ("registry",),
    "fit": ("fitter",),
    "plan": ("planner", "config"),  # a bookkeeping module named as an entry point is hashed
}


@pytest.fixture
def toy(tmp_path, monkeypatch) -> Path:
    """The toy package as PACKAGE_DIR, with its own stages and the real bookkeeping rules."""
    package = tmp_path / "archscale"
    for relative, text in TOY_PACKAGE.items():
        (package / relative).parent.mkdir(parents=True, exist_ok=True)
        (package / relative).write_text(text)
    monkeypatch.setattr(cv, "PACKAGE_DIR", package)
    monkeypatch.setattr(cv, "STAGE_ENTRY_POINTS", TOY_STAGES)
    monkeypatch.setattr(cv, "BOOKKEEPING_IMPORTS",
                        {("archscale.model", "archscale.devices"): "an estimate beside it"})
    return package


def module_of(relative: str) -> str:
    """archscale.a.b for a/b.py, archscale.a for a/__init__.py (a path in a stage's list)."""
    parts = ("archscale", *Path(relative).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def hashes() -> dict[str, str]:
    """Every stage's code_version, computed afresh (code_version itself is cached)."""
    return {stage: cv.code_version.__wrapped__(stage) for stage in cv.STAGE_ENTRY_POINTS}


def test_the_toy_stages_hash_what_their_entry_points_reach(toy):
    assert {stage: cv.stage_modules(stage) for stage in TOY_STAGES} == {
        # numerics.py only through the import inside solve(); not io.py (bookkeeping) nor the
        # package's __init__.py (the version string)
        "solve": ("numerics.py", "shared.py", "solver.py"),
        # not devices.py: not followed, as training/model.py's import of the presets is not
        "model": ("model.py", "shared.py"),
        # the engine named in a string, and the numerics it imports; engines/__init__.py holds
        # only a docstring
        "measure": ("engines/fast.py", "numerics.py", "registry.py"),
        # the package that imports every module in its folder, and those modules
        "fit": ("fitter.py", "plugins/__init__.py", "plugins/one.py"),
        # config.py, an entry point, is hashed but its imports are not followed (numerics.py)
        "plan": ("config.py", "planner.py", "shared.py"),
    }


def test_the_function_local_import_alone_brings_the_module_in(toy):
    solver = toy / "solver.py"
    solver.write_text(solver.read_text().replace("    from archscale.numerics import step\n", "")
                      .replace("return step()", "return 0"))
    assert "numerics.py" not in cv.stage_modules("solve")


@pytest.mark.parametrize("edited, changed", [
    ("numerics.py", {"solve", "measure"}),
    ("shared.py", {"solve", "model", "plan"}),
    ("config.py", {"plan"}),
    ("plugins/one.py", {"fit"}),
    ("io.py", set()),
    ("provenance.py", set()),
    ("devices.py", set()),
    ("__init__.py", set()),
    ("engines/__init__.py", set()),
])
def test_an_edit_changes_the_hash_of_exactly_the_stages_that_reach_it(toy, edited, changed):
    before = hashes()
    path = toy / edited
    path.write_text(path.read_text() + "# edited\n")
    after = hashes()
    assert {stage for stage in before if before[stage] != after[stage]} == changed


def test_an_unknown_stage_or_a_missing_entry_point_is_an_error(toy, monkeypatch):
    with pytest.raises(KeyError, match="unknown stage"):
        cv.code_version.__wrapped__("no-such-stage")
    monkeypatch.setattr(cv, "STAGE_ENTRY_POINTS", {"gone": ("solver", "renamed")})
    with pytest.raises(KeyError, match="archscale.renamed"):
        cv.stage_modules("gone")


# ---------------------------------------------------------------------------------------------
# The real package
# ---------------------------------------------------------------------------------------------

def test_no_stage_hashes_bookkeeping_unless_it_names_it():
    for stage, entries in cv.STAGE_ENTRY_POINTS.items():
        named = {f"archscale.{entry}" for entry in entries}
        for relative in cv.stage_modules(stage):
            module = module_of(relative)
            assert not cv.is_bookkeeping(module) or module in named, (stage, relative)


def test_editing_a_module_of_a_copy_changes_exactly_the_stages_that_hash_it(tmp_path,
                                                                           monkeypatch):
    package = tmp_path / "archscale"
    shutil.copytree(cv.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cv, "PACKAGE_DIR", package)
    lists = {stage: set(cv.stage_modules(stage)) for stage in cv.STAGE_ENTRY_POINTS}
    before = hashes()
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        original = path.read_text()
        path.write_text(original + "\n# edited\n")
        after = hashes()
        path.write_text(original)
        changed = {stage for stage in before if before[stage] != after[stage]}
        assert changed == {stage for stage, files in lists.items() if relative in files}, relative
    for bookkeeping in ("io.py", "provenance.py", "schema.py", "settings.py", "cli/main.py",
                        "workflow/snakemake.py"):
        assert not any(bookkeeping in files for files in lists.values()), bookkeeping


def _rule_scripts() -> list[tuple[str, str, str]]:
    """(rule, stage, script) for every rule in rules/*.smk with a code_version param."""
    found = []
    for smk in sorted((REPO / "rules").glob("*.smk")):
        parts = re.split(r"^(?:rule|checkpoint) (\w+):\n", smk.read_text(), flags=re.M)
        for rule, body in zip(parts[1::2], parts[2::2]):
            stage = re.search(r"code=code_version\(\"(\w+)\"\)", body)
            script = re.search(r"script:\s*\n\s*\"\.\./(scripts/[\w.]+)\"", body)
            if stage and script:
                found.append((rule, stage.group(1), script.group(1)))
    return found


@pytest.mark.parametrize("rule, stage, script", _rule_scripts())
def test_a_rule_script_imports_only_what_its_stage_hashes(rule, stage, script):
    """The entry points are named by hand: this is what keeps them complete. A script that
    starts calling a new module fails here until its stage names it (or what imports it)."""
    modules = package_modules(cv.PACKAGE_DIR)
    imported = archscale_imports((REPO / script).read_text(), "script", False, modules,
                                 dynamic=True)
    hashed = {module_of(relative) for relative in cv.stage_modules(stage)}
    unhashed = {m for m in imported if not cv.is_bookkeeping(m) and m not in hashed
                and read_module(modules[m].read_text(), m, modules[m].name == "__init__.py",
                                modules).runs_code}
    assert not unhashed, f"rule {rule} ({script}) calls {sorted(unhashed)}, which stage " \
                         f"{stage!r} does not hash: add it to STAGE_ENTRY_POINTS[{stage!r}]"
