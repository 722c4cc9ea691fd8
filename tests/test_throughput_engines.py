"""Throughput engines: shared loop, pinned settings, the torch engine for real, and the workflow."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from archscale.architecture import Architecture
from archscale.throughput.calibrate import build_table
from archscale.devices import get_device
from archscale.throughput.engines.base import (Engine, EngineUnavailable, IncompleteGeneration,
                                               MeasureSettings, Session, ThroughputResult,
                                               get_engine, make_prompts, measurement_settings,
                                               write_result)
from archscale.throughput.engines.sglang import engine_kwargs
from archscale.throughput.engines.vllm import llm_kwargs, sampling_kwargs
from archscale.throughput.measure import main as run_main
from archscale.throughput.model import DEFAULT_FACTORS, Measurement
from conftest import run_snakemake, tiny_config, write_workflow

TINY_SETTINGS = MeasureSettings(batch=2, input_len=16, output_len=8, device="cpu", warmup=1,
                                repeats=2, threads=1)


def write_arch(root: Path, name: str = "tiny", max_position_embeddings: int = 256,
               **shape) -> Path:
    spec = dict(d_model=64, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=32, ffn_dim=128)
    spec.update(shape)
    arch = Architecture(name=name, **spec, vocab_size=512, tie_word_embeddings=True,
                        max_position_embeddings=max_position_embeddings)
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(arch.hf_config()))
    return directory


def test_prompts_are_exact_seeded_distinct_and_avoid_special_ids():
    prompts = make_prompts(8, 33, vocab_size=50, seed=3, exclude={0, 1})
    assert len(prompts) == 8 and all(len(p) == 33 for p in prompts)
    assert all(0 < t < 50 and t != 1 for p in prompts for t in p)
    assert prompts == make_prompts(8, 33, vocab_size=50, seed=3, exclude={0, 1})
    assert prompts != make_prompts(8, 33, vocab_size=50, seed=4, exclude={0, 1})
    assert len({tuple(p) for p in prompts}) == 8


def test_measurement_settings_are_the_slice_that_changes_each_engine():
    section = {"engines": ["torch", "vllm"], "gpu": "H100", "gpus": {}, "device": "auto",
               "dtype": "auto", "batch_size": 128, "input_len": 4096, "output_len": 1024,
               "warmup": 1, "repeats": 3, "seed": 0, "threads": 8,
               "max_num_batched_tokens": None, "gpu_memory_utilization": 0.9,
               "enforce_eager": False, "engine_args": {"vllm": {"async_scheduling": True}}}
    torch_keys = measurement_settings(section, "torch")
    vllm_keys = measurement_settings(section, "vllm")
    for keys in (torch_keys, vllm_keys):
        assert not {"gpu", "gpus", "engines"} & set(keys)   # they only feed the model / DAG
    assert "gpu_memory_utilization" not in torch_keys and "engine_args" not in torch_keys
    assert vllm_keys["gpu_memory_utilization"] == 0.9
    assert vllm_keys["engine_args"] == {"async_scheduling": True}
    assert "max_num_batched_tokens" not in vllm_keys        # None: the engine default rule
    settings = MeasureSettings.from_config(section, "vllm")
    assert (settings.batch, settings.batched_tokens("vllm"), settings.model_len, settings.seqs) \
        == (128, 16384, 5120, 128)
    # the engines' pinned defaults (each engine's scheduling); torch prefills the whole batch
    assert settings.batched_tokens("sglang") == 8192
    assert settings.batched_tokens("torch") == 128 * 4096
    assert (settings.graph_max_batch("vllm"), settings.graph_max_batch("sglang")) == (128, 128)
    with pytest.raises(ValueError, match="unknown engine"):
        measurement_settings(section, "tgi")
    with pytest.raises(ValueError, match="device"):
        MeasureSettings(batch=1, input_len=1, output_len=1, device="tpu")


def test_vllm_and_sglang_pin_the_settings_that_change_throughput(tmp_path):
    s = MeasureSettings(batch=128, input_len=4096, output_len=1024, dtype="bfloat16",
                        gpu_memory_utilization=0.85, seed=7)
    model_dir = write_arch(tmp_path)   # max_position_embeddings 256: shorter than the workload
    v = llm_kwargs(model_dir, s, on_gpu=True)
    assert v["load_format"] == "dummy" and v["skip_tokenizer_init"] is True
    assert v["enable_prefix_caching"] is False
    assert (v["max_model_len"], v["max_num_seqs"], v["max_num_batched_tokens"]) == \
        (5120, 128, 16384)
    assert v["compilation_config"] == {"max_cudagraph_capture_size": 128}
    wide = MeasureSettings(batch=1024, input_len=64, output_len=8)
    assert llm_kwargs(model_dir, wide, on_gpu=True)["compilation_config"] == \
        {"max_cudagraph_capture_size": 512}
    assert engine_kwargs(model_dir, wide)["cuda_graph_max_bs_decode"] == 256
    assert (v["dtype"], v["gpu_memory_utilization"], v["seed"]) == ("bfloat16", 0.85, 7)
    assert sampling_kwargs(s) == {"max_tokens": 1024, "min_tokens": 1024, "ignore_eos": True,
                                  "detokenize": False, "temperature": 0.0}
    assert "compilation_config" not in llm_kwargs(model_dir, s, on_gpu=False)
    g = engine_kwargs(model_dir, s)
    assert g["disable_radix_cache"] is True and g["cuda_graph_max_bs_decode"] == 128
    assert g["chunked_prefill_size"] == g["max_prefill_tokens"] == 8192
    assert (g["context_length"], g["mem_fraction_static"], g["random_seed"]) == (5120, 0.85, 7)


def test_engines_raise_the_context_in_their_own_copy_not_in_config_json(tmp_path):
    """config.json keeps the training context (a longer workload must not retrain); each engine
    raises max_position_embeddings in its own view of the config instead."""
    model_dir = write_arch(tmp_path)   # max_position_embeddings 256
    before = (model_dir / "config.json").read_text()
    long = MeasureSettings(batch=2, input_len=300, output_len=12)
    short = MeasureSettings(batch=2, input_len=200, output_len=56)   # exactly 256
    v = llm_kwargs(model_dir, long, on_gpu=False)
    assert v["hf_overrides"] == {"max_position_embeddings": 312}
    assert json.loads(engine_kwargs(model_dir, long)["json_model_override_args"]) == \
        {"max_position_embeddings": 312}
    assert "hf_overrides" not in llm_kwargs(model_dir, short, on_gpu=False)
    assert "json_model_override_args" not in engine_kwargs(model_dir, short)
    # a user's own hf_overrides are kept, and win on a shared key
    mine = MeasureSettings(batch=2, input_len=300, output_len=12,
                           engine_args={"hf_overrides": {"rope_theta": 1e4}})
    assert llm_kwargs(model_dir, mine, on_gpu=False)["hf_overrides"] == \
        {"max_position_embeddings": 312, "rope_theta": 1e4}
    assert (model_dir / "config.json").read_text() == before


def test_torch_engine_measures_a_workload_longer_than_config_json(tmp_path):
    model_dir = write_arch(tmp_path, max_position_embeddings=16)
    settings = MeasureSettings(batch=2, input_len=16, output_len=8, device="cpu", warmup=0,
                               repeats=1, threads=1)
    result = get_engine("torch").measure(model_dir, settings)
    assert result.settings["config_override"] == {"max_position_embeddings": 24}
    assert len(result.times_s) == 1


@pytest.mark.parametrize("engine,package,hint", [("vllm", "vllm", "envs/vllm.yaml"),
                                                 ("sglang", "sglang", "envs/sglang.yaml")])
def test_missing_engine_names_what_to_install(engine, package, hint):
    try:
        __import__(package)
    except ImportError:
        pass
    else:
        pytest.skip(f"{package} is installed here")
    with pytest.raises(EngineUnavailable, match=re.escape(hint)) as info:
        get_engine(engine).version()
    assert repr(package) in str(info.value)


class _ShortSession(Session):
    """Generates one token too few: what an engine that stops at EOS would do."""
    device_name, dtype, settings = "test", "float32", {}

    def generate(self, prompts):
        return [7 for _ in prompts]


class _ShortEngine(Engine):
    name, package, install_hint = "short", "none", ""

    def version(self):
        return "0"

    def open(self, model_dir, settings):
        return _ShortSession()


def test_a_short_generation_is_an_error_not_a_fast_result(tmp_path):
    with pytest.raises(IncompleteGeneration, match="8 generated tokens"):
        _ShortEngine().measure(write_arch(tmp_path), TINY_SETTINGS)


def test_torch_engine_measures_exact_lengths(tmp_path):
    # a decoupled head_dim (n_heads*head_dim != d_model), as Panda-1B and Surefire-1B have
    model_dir = write_arch(tmp_path, "decoupled", d_model=48, n_heads=3)
    result = get_engine("torch").measure(model_dir, TINY_SETTINGS).to_dict()
    assert result["engine"] == "torch" and result["dtype"] == "float32"
    assert result["architecture"]["n_heads"] == 3 and result["architecture"]["name"] == "decoupled"
    assert len(result["times_s"]) == 2 and all(t > 0 for t in result["times_s"])
    assert result["output_tokens_per_s"] == pytest.approx(2 * 8 / result["mean_time_s"])
    assert result["total_tokens_per_s"] == pytest.approx(2 * 24 / result["mean_time_s"])
    assert result["requests_per_s"] == pytest.approx(2 / result["mean_time_s"])
    generate = result["settings"]["generate"]
    assert generate["cache_implementation"] == "static"
    assert generate["min_new_tokens"] == generate["max_new_tokens"] == 8
    assert result["settings"]["torch_threads"] == 1


def test_run_module_writes_result_with_provenance(tmp_path):
    model_dir = write_arch(tmp_path)
    out = tmp_path / "out" / "torch.json"
    assert run_main(["--engine", "torch", "--config", str(model_dir / "config.json"),
                     "--out", str(out), "--batch", "2", "--input-len", "8", "--output-len", "4",
                     "--device", "cpu", "--repeats", "1", "--warmup", "0",
                     "--threads", "1"]) == 0
    record = json.loads(out.read_text())
    assert (record["batch"], record["input_len"], record["output_len"]) == (2, 8, 4)
    prov = record["provenance"]
    assert prov["settings"]["batch"] == 2 and str(model_dir / "config.json") in prov["inputs"]
    assert prov["packages"]["transformers"]


def test_table_calibrates_each_engine_on_its_own_measurements(tmp_path):
    """Two engines, three architectures each: one calibration entry per engine; a device name
    that is not the preset's part is flagged."""
    paths = []
    for engine, device, scale in (("torch", "Intel(R) Xeon(R) Processor", 1.0),
                                  ("vllm", "NVIDIA H100 80GB HBM3", 0.2)):
        for i, layers in enumerate((1, 2, 3)):
            result = ThroughputResult(
                engine=engine, engine_version="x", device=device, dtype="float32", batch=2,
                input_len=16, output_len=8, warmup=1, repeats=2,
                times_s=[scale * 0.01 * layers, scale * 0.012 * layers], settings={},
                architecture={"name": f"m{i}", "d_model": 64, "n_layers": layers,
                              "n_heads": 2, "n_kv_heads": 1, "head_dim": 32, "ffn_dim": 128,
                              "vocab_size": 512, "tie_word_embeddings": True})
            path = tmp_path / f"m{i}" / f"{engine}.json"
            write_result(result, path)
            paths.append(path)
    frame = build_table(paths, gpu="cpu", gpus={}, table_path=tmp_path / "t.csv",
                        calibration_path=tmp_path / "cal.json")
    calibration = json.loads((tmp_path / "cal.json").read_text())
    assert sorted((e["engine"], e["device"]) for e in calibration["entries"]) == \
        [("torch", "cpu"), ("vllm", "cpu")]
    table = pd.read_csv(tmp_path / "t.csv")
    assert len(table) == len(frame) == 6 and (table.model_status == "calibrated").all()
    # the repeats' spread: times of 1.0 and 1.2 (x scale) have an SD of 0.1414 / mean 1.1
    assert table.measured_time_relative_sd.tolist() == pytest.approx([0.1414214 / 1.1] * 6,
                                                                     rel=1e-5)
    assert table.groupby("engine").device_matches_preset.all().to_dict() == \
        {"torch": True, "vllm": False}
    # per-layer cost: both engines' fits order the predictions by depth
    for _, group in table.groupby("engine"):
        assert group.sort_values("n_layers").predicted_time_s.is_monotonic_increasing
    # every factor names its source; the leave-one-out error is reported per engine
    for entry in calibration["entries"]:
        assert set(entry["factor_sources"]) == set(entry["factors"])
        assert all("fitted to the 3 measurement(s)" in v for v in entry["factor_sources"].values())
    assert "not fitted" in calibration["defaults_source"]
    assert {k: v["prefill_chunk_tokens"] for k, v in calibration["engine_scheduling"].items()} \
        == {"sglang": 8192, "torch": None, "vllm": 16384}
    for engine in ("torch", "vllm"):
        loo = calibration["leave_one_out"][engine]
        assert loo["n_measurements"] == loo["n_predicted_calibrated"] == 3
        assert loo["mean_abs_relative_error"] == pytest.approx(
            table[table.engine == engine].loo_relative_error.abs().mean())


# ---------------------------------------------------------------------------------------------
# The workflow: snakemake results/throughput.csv on the tiny study, and what reruns when
# ---------------------------------------------------------------------------------------------

def planned_jobs(workdir: Path, target: str = "results/throughput.csv",
                 cores: int = 2) -> dict[str, int]:
    """Rule -> job count of a dry run (empty when nothing would run); the dry run's text is
    kept in `planned_jobs.text`."""
    proc = run_snakemake(workdir, "-n", "--cores", str(cores), target, check=True)
    planned_jobs.text = proc.stdout + proc.stderr
    jobs: dict[str, int] = {}
    lines = proc.stdout.splitlines()
    if "Job stats:" in lines:
        for line in lines[lines.index("Job stats:") + 3:]:
            parts = line.split()
            if len(parts) != 2 or parts[0] == "total":
                break
            jobs[parts[0]] = int(parts[1])
    return jobs


def set_throughput(workdir: Path, **values) -> None:
    path = workdir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["throughput"].update(values)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture(scope="module")
def throughput_study(tmp_path_factory) -> Path:
    workdir = write_workflow(tmp_path_factory.mktemp("throughput") / "study", tiny_config())
    run_snakemake(workdir, "--cores", "2", "results/throughput.csv", check=True)
    return workdir


def _default_time(workdir: Path, row) -> float:
    record = json.loads((workdir / f"results/throughput/{row.architecture}/torch.json")
                        .read_text())
    m = Measurement.from_result(record, get_device("cpu"))
    return m.predicted_time(DEFAULT_FACTORS["torch"])


@pytest.mark.workflow
def test_workflow_measures_every_architecture_and_fits_the_model(throughput_study):
    names = [a["name"] for a in tiny_config()["architectures"]]
    for name in names:
        record = json.loads((throughput_study / f"results/throughput/{name}/torch.json")
                            .read_text())
        assert record["engine"] == "torch" and record["architecture"]["name"] == name
        assert record["batch"] == 2 and record["output_tokens_per_s"] > 0
        assert (throughput_study / f"logs/throughput/{name}/torch.log").exists()
        assert (throughput_study / f"logs/benchmarks/throughput/{name}/torch.tsv").exists()
    table = pd.read_csv(throughput_study / "results/throughput.csv")
    assert sorted(table.architecture) == sorted(names) and set(table.engine) == {"torch"}
    assert (table.model_status == "calibrated").all()
    assert (table.loo_status == "calibrated").all()
    assert table.predicted_output_tokens_per_s.gt(0).all()
    assert table.loo_relative_error.notna().all()
    # CPU timings of tiny models are overhead-bound and noisy (two jobs share two cores), so
    # judge the fit against the defaults rather than an absolute accuracy: it must be better
    log_fit = np.log(table.predicted_time_s / table.measured_time_s)
    log_default = [np.log(_default_time(throughput_study, row) / row.measured_time_s)
                   for row in table.itertuples()]
    assert np.sqrt(np.mean(log_fit ** 2)) < np.sqrt(np.mean(np.square(log_default)))
    by_layers = table.groupby("n_layers").predicted_time_s.mean()
    assert by_layers.is_monotonic_increasing     # per-layer cost is resolved by the fit
    calibration = json.loads((throughput_study / "results/throughput/calibration.json")
                             .read_text())
    entry, = calibration["entries"]
    assert (entry["engine"], entry["device"], entry["n_measurements"]) == ("torch", "cpu", 9)
    assert calibration["provenance"]["settings"]["gpu"] == "cpu"


@pytest.mark.workflow
def test_reruns_follow_exactly_what_changes_a_measurement(throughput_study):
    assert planned_jobs(throughput_study) == {}
    original = (throughput_study / "config.yaml").read_text()
    try:
        # the model's device preset: only the table reruns, no measurement
        set_throughput(throughput_study, gpu="H100")
        assert planned_jobs(throughput_study) == {"throughput_table": 1}
        # a vLLM-only setting does not change the torch engine's measurement
        (throughput_study / "config.yaml").write_text(original)
        set_throughput(throughput_study, gpu_memory_utilization=0.5)
        assert planned_jobs(throughput_study) == {}
        # the workload reruns every measurement (and the table), nothing upstream
        (throughput_study / "config.yaml").write_text(original)
        set_throughput(throughput_study, output_len=4)
        assert planned_jobs(throughput_study, cores=3) == {"throughput": 9, "throughput_table": 1}
        # a CPU measurement holds every core Snakemake has, so nothing shares the cores it
        # times; its settings keep throughput.threads (1), so this reruns nothing by itself
        blocks = [b for b in planned_jobs.text.split("\nrule ")[1:] if b.startswith("throughput:")]
        assert len(blocks) == 9 and all("threads: 3" in b for b in blocks), blocks[:1]
    finally:
        (throughput_study / "config.yaml").write_text(original)


def test_an_engine_without_a_kernel_for_a_head_dim_is_named_with_what_it_supports():
    """vLLM's CPU attention has no head_dim 16 kernel (the default study's): named before any
    job, with the head_dims it supports; on a GPU, and for torch, nothing is refused."""
    from archscale.throughput.engines.base import shape_problems

    (problem,) = shape_problems(["torch", "vllm"], {"n16-base": 16, "wide": 64}, "cpu")
    assert problem.startswith("architecture 'n16-base': vLLM's CPU attention has no kernel for "
                              "head_dim 16") and "32, 64" in problem and "engines: [torch]" in problem
    assert shape_problems(["vllm"], {"n16-base": 16}, "cuda") == []
