"""Argparse `type=` checks shared by the commands, so a bad flag value is a one-line usage error.

With `type=positive_float` argparse itself reports `argument --budget: must be > 0, got -5` and
exits 2, instead of the value reaching the library and failing deep inside it (a negative budget
took a complex square root). Only the standard library is imported here: the parsers are built
for `--help`, which must stay fast (see archscale.cli.main).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any


def _number(text: str, kind: type, wanted: str) -> int | float:
    """`text` as an int or a finite float; anything else names `wanted` and the value given."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
    return value


def positive_int(text: str) -> int:
    """Counts and sizes (batch, lengths, layers, workers): an integer >= 1."""
    value = _number(text, int, "an integer >= 1")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """Counts where 0 means none (bootstrap resamples) and seeds: an integer >= 0."""
    value = _number(text, int, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """Budgets, token counts, tolerances: a finite number > 0 (scientific notation welcome)."""
    value = _number(text, float, "a finite number > 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def fraction(text: str) -> float:
    """A share of something, such as GPU memory: a number in (0, 1]."""
    value = _number(text, float, "a number in (0, 1]")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _existing_file(text: str) -> Path:
    """`text` as the path of a file that exists; a directory is named as one."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return path


def _non_finite_key(doc: Any, where: str = "") -> str | None:
    """The key path (`l_opt.chinchilla.E`, `points[0][2]`) of the first NaN or infinity in a
    parsed JSON document, or None. JSON has no NaN: archscale writes null, but Python's json
    reads a bare `NaN` or `Infinity`, which would then reach the numbers unseen."""
    if isinstance(doc, float):
        return None if math.isfinite(doc) else (where or "the document")
    items = (doc.items() if isinstance(doc, dict) else
             enumerate(doc) if isinstance(doc, list) else ())
    for key, value in items:
        found = _non_finite_key(value, f"{where}[{key}]" if isinstance(key, int)
                                else f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def load_json_object(text: str, wanted: str) -> dict[str, Any]:
    """The JSON object in file `text`, checked: it exists, parses, is an object (not a list)
    and holds no NaN or infinity; `wanted` names what to give instead in the message."""
    path = _existing_file(text)
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise argparse.ArgumentTypeError(f"{text} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise argparse.ArgumentTypeError(
            f"{text} holds a JSON {type(doc).__name__}, not an object: give {wanted}")
    key = _non_finite_key(doc)
    if key:
        raise argparse.ArgumentTypeError(
            f"{text}: {key} is not a finite number (NaN or Infinity, which archscale never "
            f"writes); restore the file or give {wanted}")
    return doc


def json_file(text: str) -> str:
    """A JSON document (an object, without NaN) in a file that exists and parses; the path is
    returned for the command to load.

    Checked here because the loaders' own errors (`[Errno 2] ...`, `Expecting value: line 1`,
    `'list' object has no attribute 'get'`) do not always say which file was meant. Every JSON
    file the commands read (calibration.json, chinchilla.json, config.json) is an object.
    """
    load_json_object(text, "the file archscale wrote (a calibration.json, chinchilla.json or "
                           "config.json)")
    return text


def calibration_file(text: str) -> str:
    """A throughput calibration.json: a JSON object (json_file's checks) that the throughput
    model reads. Its own error ("not a throughput calibration (format None, ...)") named no
    file, and a damaged entry ended in a KeyError or TypeError."""
    doc = load_json_object(text, "results/throughput/calibration.json")
    from archscale.throughput.model import Calibration  # numpy: only when the flag is given

    try:
        Calibration.from_dict(doc)
    except (ValueError, KeyError, TypeError) as exc:
        raise argparse.ArgumentTypeError(
            f"{text} is not a usable throughput calibration ({type(exc).__name__}: {exc}); "
            "give results/throughput/calibration.json (written by the throughput_table rule)"
        ) from None
    return text


def csv_file(text: str) -> str:
    """A CSV table that exists and is not empty; the path is returned for the command to read
    (with archscale.io.read_table, which names the file in every other problem).

    An empty file would otherwise fail in pandas as "No columns to parse from file", unnamed.
    """
    path = _existing_file(text)
    if not path.read_text(errors="replace").strip():
        raise argparse.ArgumentTypeError(f"{text} is empty; a CSV table needs a header row "
                                         "and a row per record")
    return text


def _file_in_the_way(paths: list[Path]) -> Path | None:
    """The first of `paths` that exists but is not a directory (writing under it would fail)."""
    return next((p for p in paths if p.exists() and not p.is_dir()), None)


def output_dir(text: str) -> str:
    """A directory to write into; created when missing, so only a file in its place is refused."""
    blocker = _file_in_the_way([Path(text), *Path(text).parents])
    if blocker is not None:
        raise argparse.ArgumentTypeError(f"{blocker} is a file, not a directory; give a "
                                         "directory to write into")
    return text


def output_file(text: str) -> str:
    """A file to write; its folders are created when missing, so only a clash is refused."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name")
    blocker = _file_in_the_way(list(path.parents))
    if blocker is not None:
        raise argparse.ArgumentTypeError(f"{blocker} is a file, not a directory; give a path "
                                         "whose folders are directories")
    return text
