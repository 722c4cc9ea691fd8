"""Let transformers 5 load LLaMA shapes whose head_dim is decoupled from d_model.

The paper's Panda-1B (d_model 2560, 72 heads of 64) and Surefire-1B (2560, 36 heads of 64) set
head_dim explicitly, as LLaMA allows: q_proj maps d_model to n_heads*head_dim, and nothing else
ties d_model to the head count. transformers 4.x and vLLM's own Llama implementation accept
such configs, but transformers 5's strict LlamaConfig rejects them ("hidden size is not a
multiple of the number of attention heads"), which would make half the study's design space
unloadable. `allow_decoupled_head_dim()` swaps that one class validator for the check LLaMA
really needs (query heads divisible by key/value heads), in this process only. Call it before
building or loading a model (training, evaluation, throughput engines do).
"""
from __future__ import annotations

_PATCHED = False


def _validate_llama_heads(config) -> None:
    heads, kv = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    if heads % kv:
        raise ValueError(f"num_attention_heads ({heads}) is not a multiple of "
                         f"num_key_value_heads ({kv})")
    if config.head_dim is None and config.hidden_size % heads:
        raise ValueError(f"hidden_size ({config.hidden_size}) is not a multiple of "
                         f"num_attention_heads ({heads}) and head_dim is not given")


def allow_decoupled_head_dim() -> bool:
    """Install the relaxed validator; returns True when transformers needed it."""
    global _PATCHED
    if _PATCHED:
        return True
    from transformers import LlamaConfig

    validators = getattr(LlamaConfig, "__class_validators__", None)
    if validators is None:  # transformers 4.x: no strict validation, nothing to do
        return False
    kept = [v for v in validators if getattr(v, "__name__", "") != "validate_architecture"]
    LlamaConfig.__class_validators__ = kept + [_validate_llama_heads]
    _PATCHED = True
    return True
