"""The config schema file and its defaults, below config.py.

Why a module of its own: the fit's defaults (archscale.fit.defaults) come from the schema, the
one place they are written, and config.py sits above fit/ (it checks fit.form against the law
forms' registry). Reading the file and its defaults here lets both ask it from below.
"""
from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any


@cache
def schema_file() -> dict[str, Any]:
    """The schema as written (config.py's `schema()` fills in the registries' enums)."""
    text = resources.files("archscale").joinpath("schemas/config.schema.json").read_text()
    return json.loads(text)


def schema_path() -> Path:
    """The schema file, for snakemake.utils.validate (rules/common.smk). Its fit.form is any
    string; the enum is checked by `check_schema`, which load_study runs before that."""
    return Path(str(resources.files("archscale").joinpath("schemas/config.schema.json")))


def fill_defaults(node: Any, node_schema: dict[str, Any]) -> None:
    """Insert schema defaults into dicts, recursively (what snakemake's validate does too)."""
    if not isinstance(node, dict):
        return
    for key, sub in node_schema.get("properties", {}).items():
        if key not in node and "default" in sub:
            node[key] = copy.deepcopy(sub["default"])
        if key in node:
            if sub.get("type") == "object" or "properties" in sub:
                fill_defaults(node[key], sub)
            elif sub.get("type") == "array" and isinstance(sub.get("items"), dict):
                for item in node[key] or []:
                    fill_defaults(item, sub["items"])


def section_defaults(section: str) -> dict[str, Any]:
    """The schema's defaults for one top-level section (e.g. "fit", "search"): what a config
    silent on that section gets, also for users of the library outside a study."""
    defaults: dict[str, Any] = {}
    fill_defaults(defaults, schema_file()["properties"][section])
    return defaults
