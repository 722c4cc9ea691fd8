"""Read SGLang's ServerArgs and SamplingParams field names from its wheel, without importing it.

Why: SGLang cannot be imported beside the CPU torch (it pins its own CUDA torch), yet the
keyword arguments our engine passes must be real fields of the pinned release. This reads the
sources with `ast`: ServerArgs is assembled from the namespace classes listed in
`_INPUT_NAMESPACES` (sglang >= 0.5.2x) or declared in its own class body (older releases).

    pip download --no-deps sglang==0.5.23 -d /tmp/sgl
    python tools/sglang_fields.py /tmp/sgl/sglang-0.5.23-*.whl \
        -o tests/data/sglang_server_args.json
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

SERVER_ARGS = "sglang/srt/server_args.py"
SAMPLING_PARAMS = "sglang/srt/sampling/sampling_params.py"
ENGINE = "sglang/srt/entrypoints/engine.py"


def _annotated_names(cls: ast.ClassDef) -> list[str]:
    """Fields of a dataclass / msgspec Struct: annotated names that are not ClassVar."""
    names = []
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if "ClassVar" in ast.unparse(node.annotation):
                continue
            names.append(node.target.id)
    return names


def _class(tree: ast.Module, name: str, where: str) -> ast.ClassDef:
    """The top-level class `name` of a parsed module; `where` names the module in the error."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise ValueError(f"no class {name} in {where}")


def _module_path(module: str) -> str:
    return module.replace(".", "/") + ".py"


def server_args_fields(read: Any) -> list[str]:
    """ServerArgs' field names; `read(path)` returns a source file of the package as text."""
    tree = ast.parse(read(SERVER_ARGS))
    cls = _class(tree, "ServerArgs", SERVER_ARGS)
    fields = _annotated_names(cls)
    namespaces: list[str] = []
    for node in tree.body:
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name)
                                                 and t.id == "_INPUT_NAMESPACES"
                                                 for t in node.targets)):
            namespaces = [elt.id for elt in node.value.elts if isinstance(elt, ast.Name)]
    if namespaces:
        origin = {alias.asname or alias.name: (node.module, alias.name)
                  for node in tree.body if isinstance(node, ast.ImportFrom) and node.module
                  for alias in node.names}
        for name in namespaces:
            if name not in origin:
                raise ValueError(f"cannot find where namespace {name} of ServerArgs is imported")
            module, class_name = origin[name]
            ns_cls = _class(ast.parse(read(_module_path(module))), class_name, module)
            fields.extend(_annotated_names(ns_cls))
    if not fields:
        raise ValueError("found no ServerArgs fields: the layout of server_args.py changed")
    return sorted(set(fields))


def sampling_params_fields(read: Any) -> list[str]:
    tree = ast.parse(read(SAMPLING_PARAMS))
    cls = _class(tree, "SamplingParams", SAMPLING_PARAMS)
    names = _annotated_names(cls)
    init = next((n for n in cls.body if isinstance(n, ast.FunctionDef)
                 and n.name == "__init__"), None)
    if init is not None:   # older releases: a plain class with an __init__
        names += [a.arg for a in init.args.args[1:] + init.args.kwonlyargs]
    return sorted(set(names))


def generate_parameters(read: Any) -> list[str]:
    """Parameter names of the offline `Engine.generate`."""
    cls = _class(ast.parse(read(ENGINE)), "Engine", ENGINE)
    method = next((n for n in cls.body if isinstance(n, ast.FunctionDef)
                   and n.name == "generate"), None)
    if method is None:
        raise ValueError(f"no Engine.generate in {ENGINE}")
    return [a.arg for a in method.args.args[1:] + method.args.kwonlyargs]


def read_wheel(wheel: str | Path) -> dict[str, Any]:
    """Field names and version of an SGLang wheel, as stored in tests/data."""
    wheel = Path(wheel)
    match = re.match(r"sglang-([^-]+)-", wheel.name)
    if not match:
        raise ValueError(f"{wheel.name} is not an sglang wheel (sglang-<version>-...whl)")
    with zipfile.ZipFile(wheel) as archive:
        def read(path: str) -> str:
            return archive.read(path).decode()
        return {
            "package": "sglang",
            "version": match.group(1),
            "source": f"{wheel.name}: {SERVER_ARGS} (+ the ServerArgs namespaces), "
                      f"{SAMPLING_PARAMS}, {ENGINE}, read with ast",
            "server_args_fields": server_args_fields(read),
            "sampling_params_fields": sampling_params_fields(read),
            "engine_generate_parameters": generate_parameters(read),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", help="an sglang-<version>-*.whl (pip download --no-deps)")
    parser.add_argument("-o", "--out", help="write the JSON here (default: stdout)")
    args = parser.parse_args(argv)
    text = json.dumps(read_wheel(args.wheel), indent=1) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
