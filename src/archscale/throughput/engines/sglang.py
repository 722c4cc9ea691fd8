"""The SGLang engine: offline `sglang.Engine` on the architecture's config with dummy weights.

Why these arguments: SGLang's defaults adapt to the GPU (chunk sizes, CUDA-graph batch sizes,
memory fraction), so every one that changes throughput is pinned: prefix (radix) cache off,
the decode CUDA-graph limit and the chunked-prefill and max-prefill sizes (SglangEngine's
scheduling, which the throughput model assumes), running
requests, context length, memory fraction and seed. Requests are exact token ids with
ignore_eos and min_new_tokens = max_new_tokens. The argument names are checked against the
pinned SGLang release's ServerArgs fields by tests/test_sglang_args.py (SGLang cannot be
imported beside the CPU torch), so a renamed argument fails in CI, not on the cluster.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from archscale.throughput.engine_defaults import EngineDefaults, Factors
from archscale.throughput.engines.base import (COMMON_KEYS, SERVED_KEYS, Engine, MeasureSettings,
                                               Session, context_override)
from archscale.hf_compat import allow_decoupled_head_dim

SGLANG_VERSION = "0.5.23"   # the release envs/sglang.yaml pins and the argument check reads

INSTALL_HINT = ("SGLang needs a CUDA GPU and its own environment: run the workflow with "
                f"--use-conda (envs/sglang.yaml pins sglang=={SGLANG_VERSION}); it cannot be "
                "installed beside the CPU torch of the default study.")


def engine_kwargs(model_dir: str | Path, settings: MeasureSettings) -> dict[str, Any]:
    """Keyword arguments of `sglang.Engine` (= ServerArgs fields; tested without SGLang)."""
    kwargs: dict[str, Any] = {
        "model_path": str(model_dir),
        "load_format": "dummy",
        "skip_tokenizer_init": True,
        "dtype": settings.resolved_dtype(True),
        "context_length": settings.model_len,
        "max_running_requests": settings.seqs,
        "chunked_prefill_size": int(settings.chunked_prefill_size
                                    or settings.batched_tokens("sglang")),
        "max_prefill_tokens": settings.batched_tokens("sglang"),
        "disable_radix_cache": True,
        "cuda_graph_max_bs_decode": settings.graph_max_batch("sglang"),
        "disable_cuda_graph": settings.enforce_eager,
        "mem_fraction_static": settings.gpu_memory_utilization,
        "random_seed": settings.seed,
        "tp_size": 1,
        "log_level": "error",
    }
    override = context_override(model_dir, settings)
    if override:  # a workload longer than config.json's context: raise it in SGLang's copy
        kwargs["json_model_override_args"] = json.dumps(override)
    kwargs.update(settings.engine_args)
    return kwargs


def sampling_params(settings: MeasureSettings) -> dict[str, Any]:
    """SGLang's per-request sampling parameters: exactly output_len greedy tokens."""
    return {"max_new_tokens": settings.output_len, "min_new_tokens": settings.output_len,
            "ignore_eos": True, "temperature": 0.0}


class SglangSession(Session):
    def __init__(self, model_dir: Path, settings: MeasureSettings) -> None:
        import sglang
        import torch

        if settings.device == "cpu" or not torch.cuda.is_available():
            raise RuntimeError("the sglang engine measures on a CUDA GPU only; set "
                               "throughput.device to 'cuda' or 'auto' on a GPU node")
        allow_decoupled_head_dim()  # transformers >= 5.2x rejects n_heads*head_dim != d_model
        self.kwargs = engine_kwargs(model_dir, settings)
        self.dtype = self.kwargs["dtype"]
        self.engine = sglang.Engine(**self.kwargs)
        self.sampling = sampling_params(settings)
        self.device_name = torch.cuda.get_device_name(0)
        self.settings = {"engine": {k: v for k, v in self.kwargs.items() if k != "model_path"},
                         "sampling": dict(self.sampling),
                         "max_num_seqs": settings.seqs,
                         "max_num_batched_tokens": settings.batched_tokens("sglang"),
                         "cuda_graph_max_batch": settings.graph_max_batch("sglang"),
                         "gpu_memory_utilization": settings.gpu_memory_utilization}

    def generate(self, prompts: list[list[int]]) -> list[int]:
        outputs = self.engine.generate(input_ids=prompts, sampling_params=self.sampling)
        return [int(o["meta_info"]["completion_tokens"]) for o in outputs]

    def close(self) -> None:
        self.engine.shutdown()


class SglangEngine(Engine):
    name = "sglang"
    package = "sglang"
    install_hint = INSTALL_HINT
    packages = ("numpy", "torch", "transformers", "sglang")
    conda_env = "sglang.yaml"
    measurement_keys = COMMON_KEYS + SERVED_KEYS + ("chunked_prefill_size",)
    # SGLang 0.5, `ServerArgs` on GPUs of 35-160 GB at tp < 4: chunked_prefill_size 8192;
    # cuda_graph_max_bs 256; the overlap scheduler prepares step k+1 on the CPU while the GPU
    # runs step k, so the per-step scheduling cost hides behind GPU time
    scheduling = EngineDefaults(
        paged=True, prefill_chunk_tokens=8192, cuda_graph_max_batch=256,
        overlap_scheduling=True,
        source="SGLang ServerArgs defaults on 35-160 GB GPUs at tp < 4 (chunked_prefill_size "
               "8192, cuda_graph_max_bs 256); overlap scheduler on by default")
    # documented typical values (the model's DEFAULT_FACTOR_SOURCE): a little above vLLM's
    default_factors = Factors(0.55, 0.75, 0.7e-3, 2.0e-6)

    def version(self) -> str:
        return f"sglang {self.require('sglang').__version__}"

    def open(self, model_dir: Path, settings: MeasureSettings) -> Session:
        return SglangSession(Path(model_dir), settings)


ENGINE = SglangEngine
