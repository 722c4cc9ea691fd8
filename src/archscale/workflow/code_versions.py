"""Which library modules each workflow stage runs, and a hash of their code.

Rules pass `code_version(stage)` as a param, so editing a module a stage runs reruns that stage
(and what reads it) and nothing else: a README edit or another stage's module does not.

The lists are derived, not kept by hand, so a new module needs no entry. A stage names its
entry points (STAGE_ENTRY_POINTS) and hashes every module they reach through archscale imports,
read from the source with `ast` (archscale.workflow.imports): imports inside functions too, the
packages above a module, and the modules a registry runs by name or finds in its folder.
Left out on purpose, because they change no number in a result:
- BOOKKEEPING modules, and what is reached only through them. A stage that names one as an
  entry point hashes it without following it (`plan` hashes config.py).
- BOOKKEEPING_IMPORTS: single imports that feed only a figure reported beside a result.
- Files that hold only a docstring (most packages' __init__.py): they run nothing.
"""
from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from archscale.workflow.imports import PackageReader, enclosing_packages

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/archscale

#: What each stage's scripts call (scripts/*.py, run by the rules whose params hold
#: `code=code_version(stage)`). tests/test_code_versions.py checks every such script imports
#: nothing outside its stage's modules but bookkeeping.
STAGE_ENTRY_POINTS: dict[str, tuple[str, ...]] = {
    "architecture": ("architecture",),
    "data": ("data.corpus",),
    "train": ("training.launch",),
    "evaluate": ("training.evaluate", "data.mc_task"),
    "throughput": ("throughput.measure",),  # scripts/throughput.py runs it with -m
    "throughput_model": ("throughput.calibrate",),
    "fit": ("fit.stages", "fit.verdicts"),
    "search": ("architecture", "fit.conditional", "search.outputs", "search.plots",
               "search.study", "throughput.model"),
    "plan": ("costs", "config"),  # the plan is computed from the resolved config
    "validation": ("costs", "search.frontier_check"),
    "gqa": ("costs", "search.gqa_search"),
    "optimum_check": ("search.optimum_plan",),
    "lr_check": ("fit.lr_check", "fit.seeds"),
    "proposals": ("search.proposals",),
    "loop": ("search.design_loop", "search.loop_rounds", "search.plots", "search.proposals"),
    "report": ("training.plots", "throughput.plots", "data.summary", "tables"),
}

#: Modules (a package: all of it) that change no number in a result, and why.
BOOKKEEPING: dict[str, str] = {
    "archscale": "the version string (the package's __init__.py), recorded in provenance",
    "archscale.io": "atomic writes and reading files",
    "archscale.provenance": "the provenance block beside each result",
    "archscale.config": "loading and checking the study; its values reach a job as params",
    "archscale.schema": "the schema file and its defaults; they reach a job as params",
    "archscale.settings": "the typed settings and the stages each changes: they shape params",
    "archscale.workflow": "the Snakemake glue: logging, checks, this hash",
    "archscale.cli": "the commands, which no rule runs",
}

#: Imports followed by no stage: (importer, imported) -> why.
BOOKKEEPING_IMPORTS: dict[tuple[str, str], str] = {
    ("archscale.training.model", "archscale.devices"):
        "the GPU presets give only the MFU estimate metrics.json reports beside the model",
}


def is_bookkeeping(module: str) -> bool:
    """True for a module in BOOKKEEPING or inside a package there."""
    return any(module == b or (b != "archscale" and module.startswith(b + "."))
               for b in BOOKKEEPING)


@cache
def _reader(package: Path) -> PackageReader:
    """One reader per package folder and process (code_version is computed once per process)."""
    return PackageReader(package)


def stage_modules(stage: str) -> tuple[str, ...]:
    """The files (relative to PACKAGE_DIR, sorted) whose code the stage's results depend on."""
    if stage not in STAGE_ENTRY_POINTS:
        raise KeyError(f"unknown stage {stage!r}; known: {sorted(STAGE_ENTRY_POINTS)}")
    reader = _reader(PACKAGE_DIR)
    files = reader.files
    entries = {f"archscale.{entry}" for entry in STAGE_ENTRY_POINTS[stage]}
    missing = entries - reader.names
    if missing:
        raise KeyError(f"stage {stage!r} names modules that do not exist: {sorted(missing)}")
    hashed: set[str] = set()
    seen: set[str] = set()
    todo = sorted(entries)
    while todo:
        module = todo.pop()
        if module in seen or (is_bookkeeping(module) and module not in entries):
            continue
        seen.add(module)
        reading = reader.read(module)
        if reading.runs_code:
            hashed.add(module)
        if is_bookkeeping(module):  # an entry point: hashed, not followed
            continue
        todo += enclosing_packages(module)
        todo += [m for m in reading.imports if (module, m) not in BOOKKEEPING_IMPORTS]
    return tuple(sorted(files[m].relative_to(PACKAGE_DIR).as_posix() for m in hashed))


def __getattr__(name: str) -> dict[str, tuple[str, ...]]:
    """STAGE_MODULES: every stage's files, derived when first asked for (read by the tests
    and docs/reruns.md; the rules need only code_version)."""
    if name == "STAGE_MODULES":
        return {stage: stage_modules(stage) for stage in STAGE_ENTRY_POINTS}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@cache
def code_version(stage: str) -> str:
    """sha256 (first 16 hex digits) over the stage's module files, in path order."""
    digest = hashlib.sha256()
    for entry in stage_modules(stage):
        digest.update(entry.encode() + b"\0")
        digest.update((PACKAGE_DIR / entry).read_bytes())
    return digest.hexdigest()[:16]
