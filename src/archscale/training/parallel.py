"""How a training job spreads the model over its ranks (`training.parallel`), and activation
checkpointing (`training.activation_checkpointing`).

- ddp: every rank holds the whole model, its gradients and its AdamW states;
  DistributedDataParallel all-reduces the gradients in the last micro-batch's backward (no_sync
  on the others). Simple and fast while a replica fits on one GPU.
- fsdp: PyTorch's FSDP2 (`fully_shard`), one unit per decoder layer plus the root (embeddings,
  final norm, LM head), so the float32 master weights, gradients and AdamW states are divided
  over the ranks and a unit's parameters are gathered only while it computes. With bf16 compute
  the gathered parameters are bf16 and gradients are reduced in float32
  (`MixedPrecisionPolicy`); float32 runs (CPU) keep float32 throughout.

Both modes train the same model from the same global batch: the weights agree up to float
rounding, so the mode is result-free (tests/test_train_parallel.py). Activation checkpointing
recomputes each decoder layer's activations in the backward pass instead of keeping them: the
same arithmetic, less memory, about a third more compute.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, ContextManager

if TYPE_CHECKING:
    import torch

PARALLEL_MODES = ("ddp", "fsdp")


class ParallelError(ValueError):
    """A parallel setting that cannot run; the message says what to change."""


def parallel_mode(settings: dict[str, Any]) -> str:
    """training.parallel (ddp when unset)."""
    mode = settings.get("parallel", "ddp")
    if mode not in PARALLEL_MODES:
        raise ParallelError(f"training.parallel: unknown mode {mode!r}; use ddp or fsdp")
    return mode


def decoder_layers(model: "torch.nn.Module") -> list["torch.nn.Module"]:
    """The decoder layers of a LlamaForCausalLM: FSDP's units and checkpointing's regions."""
    return list(model.model.layers)


def enable_activation_checkpointing(model: "torch.nn.Module") -> None:
    """Recompute each decoder layer in the backward pass (transformers' own per-layer
    checkpointing, non-reentrant, so it composes with DDP, FSDP2 and torch.compile). The
    module tree and its state-dict keys are unchanged."""
    options = {"use_reentrant": False}
    enable = getattr(model, "activation_checkpointing_enable", None)  # its transformers 5 name
    if enable is not None:
        enable(activation_checkpointing_kwargs=options)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)


def shard_model(model: "torch.nn.Module", device: "torch.device", world: int,
                compute_dtype: str, compile_layers: bool) -> None:
    """Apply FSDP2 in place: each decoder layer is a unit, the root holds the rest.

    Call it after activation checkpointing and before the optimizer is built (the optimizer
    must see the sharded parameters). compile_layers compiles each decoder layer before it is
    sharded, so FSDP's hooks stay outside the compiled graphs.
    """
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world,))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if compute_dtype == "bfloat16" else MixedPrecisionPolicy()
    for layer in decoder_layers(model):
        if compile_layers:
            layer.compile()
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)


def replicate_model(model: "torch.nn.Module", device: "torch.device", local_rank: int
                    ) -> "torch.nn.Module":
    """DistributedDataParallel around the model (rank 0's weights are broadcast)."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model, device_ids=[local_rank] if device.type == "cuda" else None)


def gradient_sync(ddp: Any, last_micro_batch: bool) -> ContextManager:
    """The context of one micro-batch's backward.

    DDP: all-reduce only in the last micro-batch (no_sync on the others), so the ranks exchange
    one full gradient per step. FSDP2 and single processes: no context; FSDP2 reduce-scatters
    every micro-batch and adds the result into the sharded float32 gradient. Skipping that
    (set_requires_gradient_sync(False)) would keep an unsharded float32 gradient of the whole
    model on every GPU until the step's last micro-batch (13 GB for a 3B model), undoing the
    sharding, while the reduce-scatter it saves overlaps the backward anyway.
    """
    if ddp is None or last_micro_batch:
        return contextlib.nullcontext()
    return ddp.no_sync()


def full_state_dict(model: "torch.nn.Module") -> dict[str, "torch.Tensor"]:
    """The unsharded float32 weights of an FSDP2 model, on rank 0's CPU (other ranks get an
    empty dict). A collective: every rank calls it.

    Gathering copies each key on its own, so a tied parameter (the LM head and the embedding)
    would come back as two tensors and be saved twice; the tie is restored here, so the
    checkpoint holds what a single process saves."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                 cpu_offload=True))
    first_name: dict[int, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        first = first_name.setdefault(id(param), name)
        if first != name and first in state and name in state:
            state[name] = state[first]
    return state
