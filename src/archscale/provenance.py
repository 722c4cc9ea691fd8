"""Provenance written beside (or inside) every artifact.

Records what produced a result: the config slice that decides it, the archscale version and git
commit, the versions of the packages that compute it, input file hashes, host, device and times.
Only the config slice and the code decide reruns (Snakemake params); the rest is for the reader.
"""
from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from archscale import __version__
from archscale.io import sha256_file

DEFAULT_PACKAGES = ("numpy", "torch", "transformers", "tokenizers", "scipy", "pandas")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@functools.cache
def git_commit() -> str | None:
    """The commit of the archscale checkout, with '+dirty' when it has local changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "src"],
                               check=True, capture_output=True, text=True, timeout=10).stdout
        return commit + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions(packages: Iterable[str] = DEFAULT_PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_name() -> str:
    """The accelerator if torch sees one, else the CPU model."""
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(settings: dict[str, Any] | None = None,
               inputs: Iterable[str | os.PathLike] = (),
               started: str | None = None,
               packages: Iterable[str] = DEFAULT_PACKAGES,
               hash_inputs_up_to: int = 2 << 30) -> dict[str, Any]:
    """A provenance record; input files larger than `hash_inputs_up_to` bytes are sized only."""
    files = {}
    for path in inputs:
        p = Path(path)
        if p.is_file():
            size = p.stat().st_size
            files[str(path)] = {"bytes": size,
                                "sha256": sha256_file(p) if size <= hash_inputs_up_to else None}
    return {
        "archscale_version": __version__,
        "git_commit": git_commit(),
        "settings": settings or {},
        "inputs": files,
        "packages": package_versions(packages),
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "device": device_name(),
        "started": started,
        "finished": now(),
        "command": " ".join(sys.argv),
    }
