"""A throughput engine is one module: registered, it is seen by every user of engines.

The test writes an engine with its own measurement keys, scheduling and default factors into a
fresh module, registers it, and checks that the config accepts it (and still refuses an unknown
name, listing the known ones), that its measurement settings are its declared keys, that the
throughput model predicts with its scheduling and default factors, and that it measures through
the shared loop; then that it leaves no trace. Also: the interface module imports no engine.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import asdict

import pytest

from archscale.architecture import Architecture
from archscale.config import ConfigError, load_study
from archscale.devices import get_device
from archscale.throughput.engine_defaults import EngineDefaults, Factors
from archscale.throughput.engines import registry
from archscale.throughput.engines.base import MeasureSettings, get_engine, measurement_settings
from archscale.throughput.measure import measure_to_file, parser
from archscale.throughput.model import (DEFAULT_FACTORS, Workload, load_calibration,
                                        predict_architecture)
from conftest import REPO, tiny_config

# A served engine that pins a prefill chunk of 1024 and no CUDA graphs, whose measurement
# depends on max_num_seqs but on none of the other served keys; its session "generates"
# exactly what it is asked for, so the shared timing loop runs without any engine package.
ENGINE_MODULE = '''
"""A toy throughput engine (written by tests/test_engine_registry.py)."""
from archscale.throughput.engine_defaults import EngineDefaults, Factors
from archscale.throughput.engines.base import COMMON_KEYS, Engine, Session


class ToySession(Session):
    device_name = "toy device"
    dtype = "float32"

    def __init__(self, settings):
        self.output_len = settings.output_len
        self.settings = {"max_num_seqs": settings.seqs}

    def generate(self, prompts):
        return [self.output_len] * len(prompts)


class ToyEngine(Engine):
    name = "toy"
    package = "toy-serve"
    install_hint = "pip install toy-serve"
    packages = ("numpy",)
    conda_env = "toy.yaml"
    measurement_keys = COMMON_KEYS + ("max_num_seqs",)
    scheduling = EngineDefaults(paged=True, prefill_chunk_tokens=1024, cuda_graph_max_batch=0,
                                overlap_scheduling=False, source="the test's toy")
    default_factors = Factors(0.3, 0.6, 2.0e-3, 1.0e-5)

    def version(self):
        return "toy 1.0"

    def open(self, model_dir, settings):
        return ToySession(settings)


ENGINE = ToyEngine
'''
TOY_FACTORS = Factors(0.3, 0.6, 2.0e-3, 1.0e-5)
SECTION = {"engines": ["torch", "toy"], "gpu": "H100", "gpus": {}, "device": "auto",
           "dtype": "auto", "batch_size": 8, "input_len": 32, "output_len": 4, "warmup": 1,
           "repeats": 2, "seed": 0, "threads": 2, "max_num_seqs": 4,
           "gpu_memory_utilization": 0.8, "enforce_eager": True,
           "engine_args": {"toy": {"speed": "fast"}, "vllm": {"async_scheduling": True}}}


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy engine, from its own module; unregistered and forgotten afterwards."""
    (tmp_path / "toy_engine.py").write_text(textwrap.dedent(ENGINE_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.register("toy", "toy_engine")
    yield "toy"
    registry.unregister("toy")
    sys.modules.pop("toy_engine", None)


def test_the_config_accepts_a_registered_engine_and_names_the_known_ones(toy):
    config = tiny_config()
    config["throughput"].update(engines=["torch", toy], engine_args={toy: {"speed": "fast"}})
    assert load_study(config).config["throughput"]["engines"] == ["torch", "toy"]
    config["throughput"]["engines"] = ["torch", "tensorrt"]
    with pytest.raises(ConfigError, match=r"throughput\.engines: unknown engine\(s\) 'tensorrt';"
                                          r" known: \['torch', 'vllm', 'sglang', 'toy'\]"):
        load_study(config)
    config["throughput"].update(engines=["torch"], engine_args={"tensorrt": {}})
    with pytest.raises(ConfigError, match=r"throughput\.engine_args: unknown engine\(s\) "
                                          r"'tensorrt'; known: .*'toy'"):
        load_study(config)


def test_its_measurement_settings_are_its_declared_keys(toy):
    settings = measurement_settings(SECTION, toy)
    assert list(settings) == ["device", "dtype", "batch_size", "input_len", "output_len",
                              "warmup", "repeats", "seed", "threads", "max_num_seqs",
                              "engine_args"]
    assert settings["engine_args"] == {"speed": "fast"}  # its own block only
    assert "gpu_memory_utilization" not in settings and "enforce_eager" not in settings
    measure = MeasureSettings.from_config(SECTION, toy)
    assert (measure.batched_tokens(toy), measure.graph_max_batch(toy)) == (1024, 0)


def test_the_throughput_model_uses_its_scheduling_and_default_factors(toy):
    assert DEFAULT_FACTORS[toy] == TOY_FACTORS
    assert load_calibration(None).lookup(toy, "H100") == (TOY_FACTORS, False)
    assert load_calibration(None).to_dict()["engine_scheduling"][toy]["prefill_chunk_tokens"] \
        == 1024
    workload = Workload.from_settings(SECTION, engine=toy)
    assert (workload.prefill_chunk, workload.graph_max_batch) == (1024, 0)
    arch = Architecture("a", d_model=256, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=64,
                        ffn_dim=1024, vocab_size=1000)
    prefill_s = {engine: float(predict_architecture(
        arch, get_device("H100"), Workload(batch=64, input_len=128, output_len=4, engine=engine),
        TOY_FACTORS).prefill_s) for engine in (toy, "vllm")}
    assert prefill_s[toy] > prefill_s["vllm"]  # same factors; 8 prefill steps of 1024, not 1


def test_it_measures_through_the_shared_loop_and_the_cli_offers_it(toy, tmp_path):
    arch = Architecture("a", d_model=64, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=32,
                        ffn_dim=128, vocab_size=100)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.json").write_text(json.dumps(arch.hf_config()))
    args = parser().parse_args(["--engine", toy, "--config", str(tmp_path / "a"),
                                "--out", str(tmp_path / "toy.json")])
    record = measure_to_file(args.engine, tmp_path / "a",
                             MeasureSettings(batch=3, input_len=5, output_len=2, repeats=2),
                             tmp_path / "toy.json")
    assert (record["engine"], record["engine_version"], len(record["times_s"])) == \
        ("toy", "toy 1.0", 2)
    assert set(record["provenance"]["packages"]) <= {"numpy"}
    assert registry.conda_env(toy) == "toy.yaml"


def test_registering_leaks_into_no_other_test():
    """Runs after the tests above in file order: the toy engine is gone everywhere."""
    assert "toy" not in registry.names() and "toy" not in DEFAULT_FACTORS
    config = tiny_config()
    config["throughput"]["engines"] = ["toy"]
    with pytest.raises(ConfigError, match="throughput.engines"):
        load_study(config)


def test_the_builtin_engines_declare_what_the_study_needs():
    assert registry.names() == ("torch", "vllm", "sglang")
    for name in registry.names():
        engine = get_engine(name)
        assert engine.name == name
        assert isinstance(engine.scheduling, EngineDefaults)
        assert isinstance(engine.default_factors, Factors)
        assert set(engine.measurement_keys) <= set(MeasureSettings.__dataclass_fields__) | {
            "batch_size"}
        env = registry.conda_env(name)
        assert env is None or (REPO / "envs" / env).is_file(), f"{name}: envs/{env} is missing"
    assert registry.conda_env("torch") is None  # the study's own environment
    assert asdict(DEFAULT_FACTORS["torch"]) == {"compute_efficiency": 0.4,
                                                "memory_efficiency": 0.5,
                                                "step_overhead_s": 4.0e-3,
                                                "layer_overhead_s": 4.0e-4}


def test_the_registry_refuses_bad_names_clashes_and_incomplete_engines(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="must match"):
        registry.register("Toy/1", "toy_engine")
    with pytest.raises(ValueError, match="'vllm' is already registered"):
        registry.register("vllm", "somewhere_else")
    registry.register("vllm", registry.BUILTIN_ENGINES["vllm"])  # the same again: harmless
    with pytest.raises(ValueError, match=r"unknown engine 'tgi'; known: \['torch', 'vllm'"):
        get_engine("tgi")
    with pytest.raises(KeyError, match="no engine named 'tgi'"):
        registry.unregister("tgi")
    (tmp_path / "half_engine.py").write_text(
        "from archscale.throughput.engines.base import Engine\n"
        "class Half(Engine):\n    name = 'half'\nENGINE = Half\n")
    (tmp_path / "misnamed_engine.py").write_text(textwrap.dedent(ENGINE_MODULE))  # says "toy"
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.register("half", "half_engine")
    registry.register("misnamed", "misnamed_engine")
    try:
        with pytest.raises(TypeError, match="does not declare package, install_hint"):
            registry.engine_class("half")
        with pytest.raises(ValueError, match="declares the engine 'toy', but is registered as "
                                             "'misnamed'"):
            registry.engine_class("misnamed")
    finally:
        registry.unregister("half")
        registry.unregister("misnamed")
        sys.modules.pop("half_engine", None)
        sys.modules.pop("misnamed_engine", None)


def test_importing_the_engine_interface_imports_no_engine():
    """base.py once imported its own subclasses (an import circle); now the registry imports
    an engine's module only when the engine is asked for. A fresh interpreter: this one has
    imported them all."""
    code = ("import sys, archscale.throughput.engines.base as base\n"
            "from archscale.throughput.engines.registry import BUILTIN_ENGINES\n"
            "print([m for m in BUILTIN_ENGINES.values() if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
