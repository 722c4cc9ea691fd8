"""The torch engine: Hugging Face generation with a static KV cache and seeded random weights.

Why: it runs wherever the study's own torch runs (a laptop CPU, one GPU), so the default study
and the tests measure real generation without vLLM or SGLang. A static cache allocates the whole
batch's KV up front (like a served engine's pool) and keeps shapes fixed from step to step;
min_new_tokens = max_new_tokens makes every request generate exactly output_len tokens.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from archscale.provenance import device_name
from archscale.throughput.engine_defaults import EngineDefaults, Factors
from archscale.throughput.engines.base import (COMMON_KEYS, Engine, MeasureSettings, Session,
                                               context_override)
from archscale.hf_compat import allow_decoupled_head_dim

DTYPES = ("float32", "bfloat16", "float16")


def generate_kwargs(settings: MeasureSettings, pad_token_id: int) -> dict[str, Any]:
    """Arguments of `model.generate` that pin the measurement (greedy, exact length, static).

    transformers compiles the decode step on its own when a static cache is used on a GPU;
    that is pinned off unless engine_args.compile is true, so warm-up is equal for all shapes.
    """
    return {
        "max_new_tokens": settings.output_len,
        "min_new_tokens": settings.output_len,   # suppresses EOS until the last token
        "do_sample": False,
        "cache_implementation": "static",
        "use_cache": True,
        "pad_token_id": pad_token_id,
        "disable_compile": not settings.engine_args.get("compile", False),
        **settings.engine_args.get("generate", {}),
    }


class TorchSession(Session):
    def __init__(self, model_dir: Path, settings: MeasureSettings) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        allow_decoupled_head_dim()  # Panda/Surefire-style shapes: n_heads*head_dim != d_model
        if settings.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("throughput.device is 'cuda' but torch sees no CUDA device "
                               f"(torch {torch.__version__}); use device 'cpu' or 'auto'")
        on_gpu = settings.device == "cuda" or (settings.device == "auto"
                                               and torch.cuda.is_available())
        self.device = torch.device("cuda" if on_gpu else "cpu")
        self.dtype = settings.resolved_dtype(on_gpu)
        if self.dtype not in DTYPES:
            raise ValueError(f"torch engine: unsupported dtype {self.dtype!r}; use one of {DTYPES}")
        if settings.threads:
            torch.set_num_threads(int(settings.threads))
        self._torch = torch
        config = AutoConfig.from_pretrained(model_dir)
        override = context_override(model_dir, settings)
        for key, value in override.items():  # a workload longer than config.json's context
            setattr(config, key, value)
        attn = settings.engine_args.get("attn_implementation", "sdpa")
        torch.manual_seed(settings.seed)
        with torch.device(self.device):
            self.model = AutoModelForCausalLM.from_config(
                config, dtype=getattr(torch, self.dtype), attn_implementation=attn).eval()
        self.device_name = (torch.cuda.get_device_name(self.device) if on_gpu
                            else _cpu_name())
        eos = config.eos_token_id
        self.pad = int((eos[0] if isinstance(eos, list) else eos) or 0)
        self.kwargs = generate_kwargs(settings, self.pad)
        self.settings = {"generate": dict(self.kwargs), "attn_implementation": attn,
                         "weights": f"random normal (seed {settings.seed})",
                         "config_override": override,
                         "torch_version": torch.__version__,
                         "torch_threads": torch.get_num_threads(),
                         "device": str(self.device)}

    def generate(self, prompts: list[list[int]]) -> list[int]:
        torch = self._torch
        ids = torch.tensor(prompts, dtype=torch.long, device=self.device)
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                      **self.kwargs)
        # generate returns one rectangular tensor: every row has the same generated length
        # (min_new_tokens suppresses EOS, so no row is padded after an early stop)
        return [int(out.shape[1] - ids.shape[1])] * int(out.shape[0])

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self._torch.cuda.synchronize(self.device)

    def close(self) -> None:
        del self.model
        if self.device.type == "cuda":
            self._torch.cuda.empty_cache()


def _cpu_name() -> str:
    return device_name()


class TorchEngine(Engine):
    name = "torch"
    package = "transformers"
    install_hint = ("Install archscale's own dependencies (pip install -e . -c constraints.txt, "
                    "see README); the torch engine needs only torch and transformers.")
    packages = ("numpy", "torch", "transformers")
    conda_env = None  # the study's own environment
    measurement_keys = COMMON_KEYS  # no server: none of the served engines' scheduling keys
    # one prefill of the whole batch, no CUDA graphs, every step's kernels launched from Python
    scheduling = EngineDefaults(
        paged=False, prefill_chunk_tokens=None, cuda_graph_max_batch=0,
        overlap_scheduling=False,
        source="HF generate with a static cache: one prefill of the batch, eager kernels")
    # HF eager generation launches every kernel from Python: milliseconds per step, ~0.4 ms per
    # layer (the model's EAGER_LAYER_LAUNCH_S for served engines running beyond their graphs)
    default_factors = Factors(0.40, 0.50, 4.0e-3, 4.0e-4)

    def version(self) -> str:
        torch, transformers = self.require("torch"), self.require("transformers")
        return f"transformers {transformers.__version__}, torch {torch.__version__}"

    def open(self, model_dir: Path, settings: MeasureSettings) -> Session:
        return TorchSession(Path(model_dir), settings)


ENGINE = TorchEngine
