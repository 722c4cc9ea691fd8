"""The SGLang engine's arguments are real fields of the pinned SGLang release.

SGLang cannot be imported beside the CPU torch, so its field names were read from the wheel
with ast (tools/sglang_fields.py) and stored in tests/data/sglang_server_args.json.
Set ARCHSCALE_SGLANG_WHEEL to a downloaded wheel (pip download --no-deps sglang==<version>) to
re-read them and check the stored file is current.
"""
from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import pytest

from archscale.throughput.engines.base import MeasureSettings
from archscale.throughput.engines.sglang import SGLANG_VERSION, engine_kwargs, sampling_params

REPO = Path(__file__).resolve().parents[1]


def _load_tool(name: str):
    """A script of tools/ (a developer tool, not part of the installed package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


read_wheel = _load_tool("sglang_fields").read_wheel
STORED = json.loads((REPO / "tests/data/sglang_server_args.json").read_text())

SETTINGS = [
    MeasureSettings(batch=128, input_len=4096, output_len=1024),
    MeasureSettings(batch=4, input_len=64, output_len=32, dtype="float16", max_num_seqs=2,
                    max_num_batched_tokens=128, chunked_prefill_size=64, enforce_eager=True,
                    gpu_memory_utilization=0.5, seed=3),
]


def test_stored_fields_are_of_the_pinned_release():
    assert STORED["package"] == "sglang" and STORED["version"] == SGLANG_VERSION
    env = (REPO / "envs/sglang.yaml").read_text()
    assert re.search(rf"sglang=={re.escape(SGLANG_VERSION)}\b", env), \
        "envs/sglang.yaml must pin the release the arguments were checked against"
    assert len(STORED["server_args_fields"]) > 100   # the whole ServerArgs, not a fragment


def _model_dir(root: Path, max_position_embeddings: int = 256) -> Path:
    (root / "config.json").write_text(json.dumps(
        {"max_position_embeddings": max_position_embeddings}))
    return root


@pytest.mark.parametrize("settings", SETTINGS)
def test_every_engine_kwarg_is_a_server_args_field(settings, tmp_path):
    kwargs = engine_kwargs(_model_dir(tmp_path), settings)
    unknown = sorted(set(kwargs) - set(STORED["server_args_fields"]))
    assert not unknown, f"not ServerArgs fields in sglang {STORED['version']}: {unknown}"
    assert kwargs["cuda_graph_max_bs_decode"] == min(256, settings.seqs)   # SglangEngine.scheduling
    assert kwargs["disable_cuda_graph"] is settings.enforce_eager


@pytest.mark.parametrize("settings", SETTINGS)
def test_sampling_params_and_generate_arguments_exist(settings):
    unknown = sorted(set(sampling_params(settings)) - set(STORED["sampling_params_fields"]))
    assert not unknown, f"not SamplingParams fields in sglang {STORED['version']}: {unknown}"
    assert {"input_ids", "sampling_params"} <= set(STORED["engine_generate_parameters"])


def test_a_renamed_argument_would_be_caught(tmp_path):
    """sglang 0.5.2x renamed cuda_graph_max_bs to cuda_graph_max_bs_decode: the old name fails."""
    assert "cuda_graph_max_bs" not in STORED["server_args_fields"]
    kwargs = engine_kwargs(_model_dir(tmp_path), SETTINGS[0])
    assert "cuda_graph_max_bs" not in kwargs
    assert "json_model_override_args" in kwargs   # 4096 + 1024 > 256: a real ServerArgs field


def _fake_wheel(path: Path, version: str) -> Path:
    """A minimal wheel with SGLang's layout: ServerArgs assembled from namespace classes."""
    files = {
        "sglang/srt/server_args.py": (
            "from sglang.srt.arg_groups.fields.memory import (\n    Memory,\n)\n"
            "from sglang.srt.arg_groups.fields.model import Model as ModelNs\n"
            "class ServerArgs:\n    legacy_field: int = 0\n    def __post_init__(self): pass\n"
            "_INPUT_NAMESPACES = [ModelNs, Memory]\n"),
        "sglang/srt/arg_groups/fields/memory.py": (
            "import msgspec\nfrom typing import ClassVar\n"
            "class Memory(msgspec.Struct):\n    _NS_PATH = 'memory'\n"
            "    disable_radix_cache: bool = False\n    cache: ClassVar[dict] = {}\n"
            "    derived = object()\n"),
        "sglang/srt/arg_groups/fields/model.py": (
            "import msgspec\nclass Model(msgspec.Struct):\n    model_path: str = ''\n"
            "    _private_flag: bool = False\n"),
        "sglang/srt/sampling/sampling_params.py": (
            "class SamplingParams:\n    def __init__(self, max_new_tokens=128, *, "
            "ignore_eos=False):\n        pass\n"),
        "sglang/srt/entrypoints/engine.py": (
            "class Engine:\n    def generate(self, prompt=None, sampling_params=None, "
            "input_ids=None):\n        pass\n"),
    }
    wheel = path / f"sglang-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return wheel


def test_field_reader_follows_namespaces_and_skips_classvars(tmp_path):
    data = read_wheel(_fake_wheel(tmp_path, "9.9.9"))
    assert data["version"] == "9.9.9"
    assert data["server_args_fields"] == ["_private_flag", "disable_radix_cache",
                                          "legacy_field", "model_path"]
    assert data["sampling_params_fields"] == ["ignore_eos", "max_new_tokens"]
    assert data["engine_generate_parameters"] == ["prompt", "sampling_params", "input_ids"]


@pytest.mark.skipif(not os.environ.get("ARCHSCALE_SGLANG_WHEEL"),
                    reason="set ARCHSCALE_SGLANG_WHEEL to an sglang wheel to re-read its fields")
def test_stored_fields_match_the_wheel():
    data = read_wheel(os.environ["ARCHSCALE_SGLANG_WHEEL"])
    assert data["version"] == STORED["version"]
    assert data["server_args_fields"] == STORED["server_args_fields"]
    assert data["sampling_params_fields"] == STORED["sampling_params_fields"]
