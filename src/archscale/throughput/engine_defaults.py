"""What an engine declares for the throughput model: its pinned scheduling and its default
efficiency factors. The types live here, below the engines and the model; the values live in each
engine's module (archscale.throughput.engines.<name>), read through the engines' registry.

Why pinned: vLLM and SGLang pick their prefill chunk and CUDA-graph sizes from the GPU they find,
so the same config would measure different things on different nodes, and a model that does not
know the values cannot tell the engines apart. Each engine pins the values it declares when it
starts (its engines' own defaults on H100/H200-class GPUs, read from their source), and the
throughput model predicts them. Override any of them in config.yaml's throughput section
(max_num_batched_tokens, cuda_graph_max_batch); the engines then pin, and the model predicts, the
configured value.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class EngineDefaults:
    """The scheduling facts of one engine that decide its memory, steps and overheads."""

    paged: bool                     # paged KV pool, continuous batching, chunked prefill
    prefill_chunk_tokens: int | None  # tokens per prefill step; None: the whole batch at once
    cuda_graph_max_batch: int       # decode steps with more running sequences run eagerly
    overlap_scheduling: bool        # CPU scheduling overlapped with the GPU's previous step
    source: str                     # where the values come from

    def prefill_chunk(self, configured: int | None, batch: int, input_len: int) -> int:
        """Prompt tokens per prefill step: the configured chunk, else this engine's default; an
        engine without chunked prefill (torch) always prefills the whole batch at once."""
        if self.prefill_chunk_tokens is None:
            return int(batch * input_len)
        return int(configured or self.prefill_chunk_tokens)

    def graph_limit(self, configured: int | None) -> int:
        """The largest running batch whose decode step replays a CUDA graph (0: none): the
        configured limit, else this engine's default."""
        return int(self.cuda_graph_max_batch if configured is None else configured)



FACTOR_NAMES = ("compute_efficiency", "memory_efficiency", "step_overhead_s", "layer_overhead_s")


@dataclass(frozen=True)
class Factors:
    """Efficiency factors of one (engine, device): the only fitted part of the model."""

    compute_efficiency: float   # fraction of dense peak FLOP/s the matmuls reach
    memory_efficiency: float    # fraction of memory bandwidth streaming weights and KV reaches
    step_overhead_s: float      # fixed cost of one forward step (scheduler, sampling, sync)
    layer_overhead_s: float     # extra cost per layer per step (kernel launches without graphs)

    def to_log(self) -> np.ndarray:
        return np.log([getattr(self, k) for k in FACTOR_NAMES])

    @classmethod
    def from_log(cls, theta: Sequence[float]) -> "Factors":
        return cls(**{k: float(math.exp(v)) for k, v in zip(FACTOR_NAMES, theta)})

    def to_dict(self) -> dict[str, float]:
        return asdict(self)
