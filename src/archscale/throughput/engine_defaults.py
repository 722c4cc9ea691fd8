"""How each engine runs a batch unless the config says otherwise: one table, read by the engines
(which pin these values when they start) and by the throughput model (which predicts them).

Why pinned: vLLM and SGLang pick their prefill chunk and CUDA-graph sizes from the GPU they find,
so the same config would measure different things on different nodes, and a model that does not
know the values cannot tell the engines apart. The values below are the engines' own defaults
on H100/H200-class GPUs (their 35-160 GB tier), read from their source:
- vLLM (0.11 and later, `EngineArgs` defaults for the offline `LLM` class on GPUs of 70 GB or
  more that are not A100s): max_num_batched_tokens 16384; CUDA graphs captured for batches up to
  512 (`max_cudagraph_capture_size`); the scheduler runs between forward steps.
- SGLang (0.5, `ServerArgs` on GPUs of 35-160 GB at tp < 4): chunked_prefill_size 8192;
  cuda_graph_max_bs 256; the overlap scheduler prepares step k+1 on the CPU while the GPU runs
  step k, so the per-step scheduling cost hides behind GPU time.
- torch (HF generate with a static cache): one prefill of the whole batch, no CUDA graphs, every
  step's kernels launched from Python.
Override any of them in config.yaml's throughput section (max_num_batched_tokens,
cuda_graph_max_batch); the engines then pin, and the model predicts, the configured value.
"""
from __future__ import annotations

from dataclasses import dataclass


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


ENGINE_DEFAULTS: dict[str, EngineDefaults] = {
    "vllm": EngineDefaults(
        paged=True, prefill_chunk_tokens=16384, cuda_graph_max_batch=512,
        overlap_scheduling=False,
        source="vLLM EngineArgs defaults for the LLM class on H100/H200 (max_num_batched_tokens "
               "16384) and its CUDA-graph capture limit (512); synchronous scheduler"),
    "sglang": EngineDefaults(
        paged=True, prefill_chunk_tokens=8192, cuda_graph_max_batch=256,
        overlap_scheduling=True,
        source="SGLang ServerArgs defaults on 35-160 GB GPUs at tp < 4 (chunked_prefill_size "
               "8192, cuda_graph_max_bs 256); overlap scheduler on by default"),
    "torch": EngineDefaults(
        paged=False, prefill_chunk_tokens=None, cuda_graph_max_batch=0,
        overlap_scheduling=False,
        source="HF generate with a static cache: one prefill of the batch, eager kernels"),
}
