"""The throughput engines by name: which module declares each, imported only when it is asked for.

An engine is one module (its `Engine` subclass, exported as the module's `ENGINE`, declares its
name, measurement keys, scheduling, default model factors, packages and conda env) plus its env
file in envs/. Everything that used to list engines by hand asks this registry: the config check
of throughput.engines, the measurement settings (the throughput rule's params), the engines'
scheduling and default factors in the throughput model, the `engine` wildcard and the conda env
of rules/common.smk, and the CLIs' --engine choices.

Why a table of module paths and not the modules found in this package: the names are needed
without importing anything (the config check and Snakemake's wildcard constraint run at every
DAG build), a module here is not necessarily an engine (base.py, this file, a helper two engines
share), and an engine may live outside the package (a plugin, a test), which `register` adds.
A built-in engine is its module plus one line in BUILTIN_ENGINES.
"""
from __future__ import annotations

import importlib
import re
from typing import Any, Iterator, Mapping

from archscale.throughput.engine_defaults import EngineDefaults

BUILTIN_ENGINES: dict[str, str] = {
    "torch": "archscale.throughput.engines.torch",
    "vllm": "archscale.throughput.engines.vllm",
    "sglang": "archscale.throughput.engines.sglang",
}

#: What an engine class must declare (base.Engine documents each).
DECLARATIONS = ("name", "package", "install_hint", "packages", "conda_env", "measurement_keys",
                "scheduling", "default_factors")

#: An engine name is a wildcard value, a file name and a config key: lowercase, no separators.
ENGINE_NAME = re.compile(r"[a-z][a-z0-9_]*")

_modules: dict[str, str] = dict(BUILTIN_ENGINES)
_loaded: dict[str, type] = {}


def names() -> tuple[str, ...]:
    """The known engines' names, built-ins first; imports no engine module."""
    return tuple(_modules)


def register(name: str, module: str) -> None:
    """Make the engine that the importable module `module` declares known as `name` (imported
    when first asked for). Only this process knows it: the workflow's measurement runs in a
    child process, which knows the built-in engines only."""
    if not isinstance(name, str) or not ENGINE_NAME.fullmatch(name):
        raise ValueError(f"engine name {name!r} must match {ENGINE_NAME.pattern} (it names "
                         "result files, the conda env and config keys)")
    held = _modules.get(name)
    if held is not None and held != module:
        raise ValueError(f"an engine named {name!r} is already registered (module {held}); "
                         "pick another name or unregister() it first")
    _modules[name] = module


def unregister(name: str) -> None:
    """Forget an engine (tests that register their own clean up with this)."""
    if name not in _modules:
        raise KeyError(f"no engine named {name!r} is registered; known: {list(names())}")
    del _modules[name]
    _loaded.pop(name, None)


def engine_class(name: str) -> type:
    """The Engine subclass of engine `name`, its module imported on first use. An unknown name
    is an error listing the known ones; a module that declares too little says what it lacks."""
    cls = _loaded.get(name)
    if cls is not None:
        return cls
    if name not in _modules:
        raise ValueError(f"unknown engine {name!r}; known: {list(names())}")
    module = importlib.import_module(_modules[name])
    cls = getattr(module, "ENGINE", None)
    if cls is None:
        raise TypeError(f"engine module {module.__name__} has no ENGINE (the Engine subclass "
                        "it declares)")
    missing = [attr for attr in DECLARATIONS if not hasattr(cls, attr)]
    if missing:
        raise TypeError(f"engine {name!r} ({module.__name__}.{cls.__name__}) does not declare "
                        f"{', '.join(missing)} (see archscale.throughput.engines.base.Engine)")
    if cls.name != name:
        raise ValueError(f"engine module {module.__name__} declares the engine {cls.name!r}, "
                         f"but is registered as {name!r}")
    _loaded[name] = cls
    return cls


def conda_env(name: str) -> str | None:
    """The engine's env file in envs/, or None: it runs in the study's own environment."""
    return engine_class(name).conda_env


class Declared(Mapping[str, Any]):
    """engine name -> one declaration of that engine, read from the registry when looked up, so
    an engine registered later appears and an engine never looked up is never imported."""

    def __init__(self, attribute: str) -> None:
        if attribute not in DECLARATIONS:
            raise ValueError(f"engines declare {list(DECLARATIONS)}, not {attribute!r}")
        self.attribute = attribute

    def __getitem__(self, name: str) -> Any:
        if name not in _modules:
            raise KeyError(name)
        return getattr(engine_class(name), self.attribute)

    def __contains__(self, name: object) -> bool:
        return name in _modules

    def __iter__(self) -> Iterator[str]:
        return iter(names())

    def __len__(self) -> int:
        return len(_modules)

    def __repr__(self) -> str:
        return f"Declared({self.attribute!r}: {', '.join(names())})"


#: Each engine's pinned scheduling (archscale.throughput.engine_defaults.EngineDefaults).
ENGINE_SCHEDULING: Mapping[str, EngineDefaults] = Declared("scheduling")
