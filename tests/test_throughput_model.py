"""The roofline throughput model: arithmetic by hand, vectorisation, calibration, the paper."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from archscale.architecture import Architecture
from archscale.cli.throughput import main as cli_main
from archscale.paper import PAPER_1B_SHAPES
from archscale.devices import Device, get_device, preset_for_device_name
from archscale.throughput.model import (CALIBRATION_FORMAT, DEFAULT_FACTORS, EAGER_LAYER_LAUNCH_S,
                                        Calibration, Factors,
                                        Measurement, Workload, fit_factors, leave_one_out,
                                        load_calibration, predict, predict_architecture,
                                        predict_tokens_per_s, save_calibration)

# d 4, L 1, h 1, h_kv 1, d_h 4, f 8, V 10: N = 2*4*4 + 2*4*4 + 3*4*8 = 160, LM head d*V = 40,
# bf16 KV per token = 2*L*h_kv*d_h*2 = 16 bytes; weights streamed per step = (160+40)*2 = 400 B.
TOY = dict(d_model=4, n_layers=1, n_heads=1, n_kv_heads=1, head_dim=4, ffn_dim=8, vocab_size=10)
FACTORS = Factors(compute_efficiency=0.5, memory_efficiency=0.25, step_overhead_s=0.01,
                  layer_overhead_s=0.001)  # 500 FLOP/s and 250 B/s on the toy device below
TOY_DEVICE = Device("toy", peak_tflops=1e-9, hbm_gbps=1e-6, memory_gb=1.0)

PAPER = PAPER_1B_SHAPES  # Table/Fig. shapes (DESIGN.md, issue 2), vocab 128256, tied embeddings
PAPER_WORKLOAD = dict(batch=128, input_len=4096, output_len=1024, dtype="bfloat16")


def test_static_cache_engine_by_hand():
    """torch engine, B 2, 3 in, 5 out: one prefill step, 4 decode steps over the full cache."""
    w = Workload(batch=2, input_len=3, output_len=5, dtype="bfloat16", engine="torch")
    p = predict(**TOY, device=TOY_DEVICE, workload=w, factors=FACTORS)
    # prefill FLOPs per sequence: 2*160*3 + 4*L*h*d_h*(3*4/2) = 960 + 96, + LM head 2*40 once
    # = 1136; x2 sequences = 2272 FLOP -> 4.544 s; bytes 400 + 2*3*16 = 496 -> 1.984 s
    assert float(p.prefill_s) == pytest.approx(4.544 + 0.011)
    # decode: 8 tokens at context 8 (static buffer): 2*200 + 4*4*8 = 528 FLOP each -> 8.448 s;
    # bytes 4 steps*400 + 8 tokens*8*16 = 2624 -> 10.496 s (memory-bound)
    assert float(p.decode_s) == pytest.approx(10.496 + 4 * 0.011)
    assert float(p.time_s) == pytest.approx(15.095)
    assert float(p.output_tokens_per_s) == pytest.approx(10 / 15.095)
    assert float(p.total_tokens_per_s) == pytest.approx(16 / 15.095)
    assert float(p.concurrency) == 2 and float(p.waves) == 1 and bool(p.feasible)


def test_paged_engine_kv_cap_by_hand():
    """vllm engine with room for one sequence's KV: two waves, chunked prefill of 2 tokens."""
    # resident: (160 + 40 + 3*4 norms)*2 = 424 B; activations: 2 tokens*(2*8+4*4)*2 + 2*10*4
    # = 208 B; pool 200 B holds one sequence of 8 tokens*16 B = 128 B, not two.
    device = Device("tight", peak_tflops=1e-9, hbm_gbps=1e-6, memory_gb=832e-9)
    w = Workload(batch=2, input_len=3, output_len=5, dtype="bfloat16", engine="vllm",
                 max_num_batched_tokens=2, memory_fraction=1.0)
    p = predict(**TOY, device=device, workload=w, factors=FACTORS)
    assert float(p.concurrency) == 1 and float(p.waves) == 2
    # prefill: 3 chunk steps; 2272 FLOP -> 4.544 s vs 3*400 + 96 = 1296 B -> 5.184 s
    assert float(p.prefill_s) == pytest.approx(5.184 + 3 * 0.011)
    # decode: 2 waves * 4 steps, mean context 3 + 5/2 = 5.5: bytes 8*400 + 8*5.5*16 = 3904
    assert float(p.decode_s) == pytest.approx(3904 / 250 + 8 * 0.011)
    assert float(p.time_s) == pytest.approx(5.217 + 15.704)


def test_model_that_does_not_fit_predicts_zero():
    device = Device("tiny", peak_tflops=1.0, hbm_gbps=1.0, memory_gb=100e-9)
    for engine in ("torch", "vllm"):
        p = predict(**TOY, device=device, workload=Workload(batch=2, input_len=3, output_len=5,
                                                            engine=engine), factors=FACTORS)
        assert not bool(p.feasible)
        assert float(p.output_tokens_per_s) == 0.0 and np.isinf(p.time_s)


def test_vectorised_matches_scalar_and_is_fast():
    rng = np.random.default_rng(0)
    n = 200_000
    shapes = dict(d_model=rng.integers(512, 4096, n), n_layers=rng.integers(8, 32, n),
                  n_heads=rng.integers(8, 64, n), head_dim=np.full(n, 64),
                  ffn_dim=64 * rng.integers(16, 160, n))
    shapes["n_kv_heads"] = np.maximum(shapes["n_heads"] // 4, 1)
    device, w = get_device("H100"), Workload(**PAPER_WORKLOAD, engine="vllm")
    # one vectorised call (its speed: benchmarks/bench_search.py, not a timed assert)
    tps = predict_tokens_per_s(**shapes, vocab_size=128256, device=device, workload=w,
                               factors=DEFAULT_FACTORS["vllm"])
    assert tps.shape == (n,) and np.all(tps >= 0)
    for i in (0, 17, n - 1):
        one = predict_tokens_per_s(**{k: int(v[i]) for k, v in shapes.items()},
                                   vocab_size=128256, device=device, workload=w,
                                   factors=DEFAULT_FACTORS["vllm"])
        assert float(one) == pytest.approx(tps[i])
    total = predict_tokens_per_s(**shapes, vocab_size=128256, device=device, workload=w,
                                 factors=DEFAULT_FACTORS["vllm"], kind="total")
    np.testing.assert_allclose(total, tps * (4096 + 1024) / 1024)


def _paper_tps(device: str, engine: str) -> dict[str, float]:
    w = Workload(**PAPER_WORKLOAD, engine=engine)
    return {name: float(predict_tokens_per_s(**s, vocab_size=128256, device=get_device(device),
                                             workload=w, factors=DEFAULT_FACTORS[engine]))
            for name, s in PAPER.items()}


@pytest.mark.parametrize("device,engine", [("H200", "sglang"), ("H200", "vllm"),
                                           ("A100-80GB", "vllm"), ("H100", "torch")])
def test_paper_ranking(device, engine):
    """Surefire-1B > LLaMA-3.2-1B > Panda-1B, as measured in the paper (batch 128, 4096/1024).

    Paper: SGLang/H200 Surefire/LLaMA = 12645.55/8608.57 = 1.47; vLLM/H200 Surefire +21 %,
    Panda -33 %. The model's ratios come from fewer KV bytes per decode step (Surefire: 4 KV
    heads, Panda: 18) at nearly equal FLOPs.
    """
    tps = _paper_tps(device, engine)
    surefire = tps["Surefire-1B"] / tps["LLaMA-3.2-1B"]
    panda = tps["Panda-1B"] / tps["LLaMA-3.2-1B"]
    assert 1.1 < surefire < 1.8, surefire
    assert 0.4 < panda < 0.85, panda


def test_kv_memory_caps_concurrency_on_a100_40gb():
    arch = Architecture(name="llama", **PAPER["LLaMA-3.2-1B"], vocab_size=128256,
                        tie_word_embeddings=True)
    # 256 sequences of 5,120 tokens need 43 GB of KV: more than an A100-40GB holds
    w = Workload(**{**PAPER_WORKLOAD, "batch": 256}, engine="vllm")
    small = predict_architecture(arch, get_device("A100-40GB"), w, DEFAULT_FACTORS["vllm"])
    large = predict_architecture(arch, get_device("A100-80GB"), w, DEFAULT_FACTORS["vllm"])
    assert float(large.concurrency) == 256
    assert 1 <= float(small.concurrency) < 256 and float(small.waves) > 1
    assert float(small.output_tokens_per_s) < float(large.output_tokens_per_s)
    # the static-cache torch engine cannot run the whole batch there at all
    torch_w = Workload(**PAPER_WORKLOAD, engine="torch")
    assert not bool(predict_architecture(arch, get_device("A100-40GB"), torch_w,
                                         DEFAULT_FACTORS["torch"]).feasible)


def test_chunked_prefill_leaves_the_kv_pool_to_the_batch():
    """vLLM's pinned 16,384-token chunk runs the paper's 128 x 5,120 batch at once on an
    A100-40GB; a whole-batch prefill (524,288 tokens) would spend the pool on activations."""
    arch = Architecture(name="llama", **PAPER["LLaMA-3.2-1B"], vocab_size=128256,
                        tie_word_embeddings=True)
    chunked = Workload(**PAPER_WORKLOAD, engine="vllm")
    whole = Workload(**PAPER_WORKLOAD, engine="vllm", max_num_batched_tokens=128 * 4096)
    assert chunked.prefill_chunk == 16384 and Workload(**PAPER_WORKLOAD,
                                                       engine="sglang").prefill_chunk == 8192
    # the torch engine has no chunked prefill: a configured chunk does not apply to it
    assert Workload(**PAPER_WORKLOAD, engine="torch",
                    max_num_batched_tokens=4096).prefill_chunk == 128 * 4096
    a100 = get_device("A100-40GB")
    assert float(predict_architecture(arch, a100, chunked, DEFAULT_FACTORS["vllm"]).concurrency) \
        == 128
    assert float(predict_architecture(arch, a100, whole, DEFAULT_FACTORS["vllm"]).concurrency) \
        < 64


def test_engines_differ_beyond_their_factors():
    """Same factors, same shape: SGLang's overlap scheduler hides the step cost that vLLM adds,
    and a batch beyond the CUDA graphs pays eager launches."""
    arch = Architecture(name="llama", **PAPER["LLaMA-3.2-1B"], vocab_size=128256,
                        tie_word_embeddings=True)
    h200, f = get_device("H200"), Factors(0.5, 0.7, 5e-3, 2e-6)   # a large step cost
    vllm = predict_architecture(arch, h200, Workload(**PAPER_WORKLOAD, engine="vllm"), f)
    sglang = predict_architecture(arch, h200, Workload(**PAPER_WORKLOAD, engine="sglang"), f)
    steps = float(vllm.waves) * (1024 - 1)
    assert float(vllm.decode_s) - float(sglang.decode_s) == pytest.approx(steps * 5e-3, rel=1e-6)
    in_graphs = Workload(**PAPER_WORKLOAD, engine="vllm", cuda_graph_max_batch=128)
    eager = Workload(**PAPER_WORKLOAD, engine="vllm", cuda_graph_max_batch=64)
    t_graph = float(predict_architecture(arch, h200, in_graphs, f).decode_s)
    t_eager = float(predict_architecture(arch, h200, eager, f).decode_s)
    assert t_eager - t_graph == pytest.approx(steps * 16 * EAGER_LAYER_LAUNCH_S, rel=1e-6)


def _synthetic(factors: Factors, engine: str = "torch", noise: float = 0.0,
               seed: int = 0) -> list[Measurement]:
    """Measurements the model itself would produce, on a spread of shapes and workloads."""
    rng = np.random.default_rng(seed)
    device = get_device("H100")
    out = []
    for i, (d, L, h, kv, f) in enumerate([(2048, 16, 32, 8, 8192), (2560, 16, 36, 4, 6144),
                                          (2560, 16, 72, 18, 4096), (1024, 8, 16, 4, 4096),
                                          (1536, 24, 24, 8, 4096), (3072, 28, 24, 8, 8192)]):
        for batch, s_in, s_out in [(32, 1024, 128), (8, 256, 512)]:
            m = Measurement(name=f"s{i}", engine=engine, device=device,
                            workload=Workload(batch=batch, input_len=s_in, output_len=s_out,
                                              engine=engine),
                            shape=dict(d_model=d, n_layers=L, n_heads=h, n_kv_heads=kv,
                                       head_dim=64, ffn_dim=f, vocab_size=128256,
                                       tie_word_embeddings=True), time_s=1.0)
            t = m.predicted_time(factors) * float(np.exp(noise * rng.standard_normal()))
            out.append(Measurement(**{**m.__dict__, "time_s": t}))
    return out


def test_fit_recovers_the_factors_that_made_the_data():
    truth = Factors(0.3, 0.6, 2e-3, 1e-4)
    measurements = _synthetic(truth)
    calibration = fit_factors(measurements)
    factors, calibrated = calibration.lookup("torch", "H100")
    assert calibrated
    entry = calibration.entries[("torch", "H100")]
    assert entry.n_measurements == len(measurements) and entry.rms_log_error < 0.01
    for m in measurements:
        assert m.predicted_time(factors) == pytest.approx(m.time_s, rel=0.02)
    # the defaults are far off: calibration is what makes the predictions right
    default_error = max(abs(m.predicted_time(DEFAULT_FACTORS["torch"]) / m.time_s - 1)
                        for m in measurements)
    assert default_error > 0.1


def test_leave_one_out_errors_are_small_on_consistent_data():
    measurements = _synthetic(Factors(0.3, 0.6, 2e-3, 1e-4), noise=0.03)
    loo = leave_one_out(measurements)
    errors = [abs(m.time_s / t - 1) for m, (t, calibrated) in zip(measurements, loo)]
    assert all(calibrated for _, calibrated in loo)
    assert np.mean(errors) < 0.08


def test_alone_in_its_group_is_uncalibrated():
    m = _synthetic(Factors(0.3, 0.6, 2e-3, 1e-4))[0]
    (time_s, calibrated), = leave_one_out([m])
    assert not calibrated
    assert time_s == pytest.approx(m.predicted_time(DEFAULT_FACTORS["torch"]))


def test_calibration_round_trip_and_uncalibrated_lookup(tmp_path):
    calibration = fit_factors(_synthetic(Factors(0.3, 0.6, 2e-3, 1e-4), engine="vllm"))
    path = tmp_path / "calibration.json"
    save_calibration(calibration, path, extra={"provenance": {"note": "test"}})
    data = json.loads(path.read_text())
    assert data["format"] == CALIBRATION_FORMAT and data["provenance"] == {"note": "test"}
    assert data["entries"][0]["engine"] == "vllm" and data["entries"][0]["calibrated"] is True
    loaded = load_calibration(path)
    assert loaded.lookup("vllm", "H100") == calibration.lookup("vllm", "H100")
    assert loaded.lookup("sglang", "H100") == (DEFAULT_FACTORS["sglang"], False)
    assert load_calibration(None).lookup("torch", "cpu") == (DEFAULT_FACTORS["torch"], False)
    with pytest.raises(ValueError, match="not a throughput calibration"):
        Calibration.from_dict({"format": "something else"})


def test_measurement_from_result_record():
    result = {"engine": "vllm", "batch": 4, "input_len": 32, "output_len": 16,
              "dtype": "float32", "mean_time_s": 0.5,
              "settings": {"max_num_seqs": 4, "max_num_batched_tokens": 128,
                           "gpu_memory_utilization": 0.3},
              "architecture": {"name": "a1", "d_model": 64, "n_layers": 2, "n_heads": 2,
                               "n_kv_heads": 1, "head_dim": 32, "ffn_dim": 128,
                               "vocab_size": 512, "tie_word_embeddings": True}}
    m = Measurement.from_result(result, get_device("cpu"))
    assert m.workload == Workload(batch=4, input_len=32, output_len=16, dtype="float32",
                                  engine="vllm", max_num_seqs=4, max_num_batched_tokens=128,
                                  memory_fraction=0.3)
    assert m.name == "a1" and m.time_s == 0.5 and m.predicted_time(FACTORS) > 0


def test_workload_validation_and_config():
    with pytest.raises(ValueError, match="unknown engine"):
        Workload(engine="tgi")
    with pytest.raises(ValueError, match="output_len"):
        Workload(output_len=0)
    w = Workload.from_settings({"batch_size": 4, "input_len": 64, "output_len": 32,
                                "dtype": "auto"}, "torch", on_gpu=False)
    assert (w.batch, w.dtype, w.engine) == (4, "float32", "torch")


def test_device_names_map_to_presets():
    assert preset_for_device_name("NVIDIA H100 80GB HBM3") == "H100"
    assert preset_for_device_name("NVIDIA H200") == "H200"
    assert preset_for_device_name("NVIDIA A100-SXM4-80GB") == "A100-80GB"
    assert preset_for_device_name("NVIDIA A100-SXM4-40GB") == "A100-40GB"
    assert preset_for_device_name("Intel(R) Xeon(R) Processor") == "cpu"
    assert preset_for_device_name("NVIDIA L40S") is None


def test_cli_predict_prints_json(tmp_path, capsys):
    arch = Architecture(name="llama1b", **PAPER["LLaMA-3.2-1B"], vocab_size=128256,
                        tie_word_embeddings=True)
    (tmp_path / "llama1b").mkdir()
    (tmp_path / "llama1b" / "config.json").write_text(json.dumps(arch.hf_config()))
    shape = PAPER["Surefire-1B"]
    argv = ["throughput", "predict", "--gpu", "H200", "--engine", "sglang",
            "--config", str(tmp_path / "llama1b"), "--name", "surefire",
            "--vocab-size", "128256"]
    for key, value in shape.items():
        argv += ["--" + key.replace("_", "-"), str(value)]
    assert cli_main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "uncalibrated" and out["device"] == "H200"
    rows = {r["name"]: r for r in out["architectures"]}
    assert rows["surefire"]["output_tokens_per_s"] > rows["llama1b"]["output_tokens_per_s"] > 0
    assert rows["llama1b"]["concurrency"] == 128 and rows["llama1b"]["feasible"]

    cal = fit_factors(_synthetic(Factors(0.3, 0.6, 2e-3, 1e-4), engine="sglang"))
    cal.entries[("sglang", "H200")] = dataclasses.replace(cal.entries.pop(("sglang", "H100")),
                                                          device="H200")
    save_calibration(cal, tmp_path / "cal.json")
    assert cli_main(argv + ["--calibration", str(tmp_path / "cal.json")]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "calibrated"

    with pytest.raises(SystemExit, match="missing: --n-layers"):
        cli_main(["throughput", "predict", "--d-model", "64"])
