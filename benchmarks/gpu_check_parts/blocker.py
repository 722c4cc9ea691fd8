"""Make the packages the lent H200 lacks unimportable, so a CPU run proves the check needs none.

The H200 has PyTorch, transformers and the usual scientific Python only. Here those packages
are installed, so a stray `import jsonschema` (archscale.config) would pass on CPU and fail on
the GPU, where a failed part costs device time. The blocker makes them absent in this process
and in the parts it forks:
- a meta-path finder placed first raises ModuleNotFoundError for them, as a missing package
  does on the H200;
- importlib.util.find_spec returns None for them (what it returns on the H200), because
  libraries such as transformers probe optional packages with it, and a finder that raises
  would make that probe raise here while it quietly answers "absent" there.
Every blocked attempt is recorded, so the results show what tried to import them.
This module imports only the standard library.
"""
from __future__ import annotations

import importlib.util
import sys
from typing import Any, Callable

BLOCKED = ("snakemake", "vllm", "sglang", "lm_eval", "pulp", "jsonschema")
MESSAGE = "blocked by benchmarks/gpu_check.py: the lent H200 has no {name}"


class ImportBlocker:
    """A meta-path finder that refuses the BLOCKED packages and their submodules."""

    def __init__(self, blocked: tuple[str, ...] = BLOCKED) -> None:
        self.blocked = frozenset(blocked)
        self.attempts: list[str] = []

    def blocks(self, fullname: str) -> bool:
        return fullname.partition(".")[0] in self.blocked

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if self.blocks(fullname):
            self.attempts.append(fullname)
            raise ModuleNotFoundError(MESSAGE.format(name=fullname), name=fullname)
        return None


_installed: ImportBlocker | None = None


def install(blocked: tuple[str, ...] = BLOCKED) -> ImportBlocker:
    """Put the blocker first on sys.meta_path and make find_spec answer None for the blocked
    packages; a blocked package imported before this call is dropped from sys.modules."""
    global _installed
    if _installed is not None:
        return _installed
    blocker = ImportBlocker(blocked)
    for name in [n for n in sys.modules if blocker.blocks(n)]:
        del sys.modules[name]
    sys.meta_path.insert(0, blocker)
    importlib.util.find_spec = _find_spec_without(blocker, importlib.util.find_spec)
    _installed = blocker
    return blocker


def _find_spec_without(blocker: ImportBlocker, find_spec: Callable) -> Callable:
    """importlib.util.find_spec that answers None (absent) for a blocked package."""

    def patched(name: str, package: str | None = None):
        if blocker.blocks(name):
            blocker.attempts.append(f"find_spec({name})")
            return None
        return find_spec(name, package)

    return patched


def installed() -> ImportBlocker | None:
    return _installed


def probe(blocked: tuple[str, ...] = BLOCKED) -> dict[str, str]:
    """Try to import each blocked package; what each attempt raised (or 'imported!'). The
    probe's own attempts are not kept among the recorded ones."""
    outcome: dict[str, str] = {}
    kept = len(_installed.attempts) if _installed else 0
    for name in blocked:
        try:
            __import__(name)
        except ImportError as exc:
            outcome[name] = f"{type(exc).__name__}: {exc}"
        else:
            outcome[name] = "imported!"
    if _installed:
        del _installed.attempts[kept:]
    return outcome


def report() -> dict[str, Any]:
    """The blocker's state for the results: names, the probe, and the attempts so far."""
    blocker = _installed
    return {"blocked": sorted(blocker.blocked) if blocker else [],
            "installed_first": bool(blocker) and sys.meta_path[0] is blocker,
            "attempts": list(blocker.attempts) if blocker else []}
