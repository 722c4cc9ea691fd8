"""Architecture accounting for LLaMA-style decoders.

One place computes every derived quantity the study uses (non-embedding parameters N, the
MLP-to-attention ratio r, d/sqrt(N), the GQA group, KV-cache bytes, FLOPs per token), so the
training, throughput, fitting and search stages can never disagree about an architecture.

Conventions (see README, "Accounting"):
- N counts the attention and MLP matrices of every layer; RMSNorm weights are NOT counted
  (they change LLaMA-3.2-1B's N by 0.007 %), nor are embeddings or the LM head.
- GQA group = n_heads / n_kv_heads, the number of query heads sharing one key/value head.
- The formulas are plain arithmetic so they work on Python ints and on numpy arrays alike
  (the search stage scores millions of candidate shapes with the same functions).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "fp8": 1}


class ArchitectureError(ValueError):
    """An architecture whose shape is invalid or cannot meet its targets."""


# ---------------------------------------------------------------------------------------------
# Vectorisable formulas (ints or numpy arrays)
# ---------------------------------------------------------------------------------------------

def attention_params_per_layer(d_model, n_heads, n_kv_heads, head_dim):
    """q and o projections (d*h*d_h each) plus k and v (d*h_kv*d_h each); no biases."""
    return 2 * d_model * n_heads * head_dim + 2 * d_model * n_kv_heads * head_dim


def mlp_params_per_layer(d_model, ffn_dim):
    """SwiGLU: gate, up and down projections."""
    return 3 * d_model * ffn_dim


def non_embedding_params(d_model, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim):
    return n_layers * (
        attention_params_per_layer(d_model, n_heads, n_kv_heads, head_dim)
        + mlp_params_per_layer(d_model, ffn_dim)
    )


def kv_bytes_per_token(n_layers, n_kv_heads, head_dim, dtype_bytes: int = 2):
    """Bytes of KV cache one token occupies across all layers (keys and values)."""
    return 2 * n_layers * n_kv_heads * head_dim * dtype_bytes


def forward_flops_per_token(n_params_non_embedding, d_model, vocab_size, n_layers, n_heads,
                            head_dim, context_len):
    """Forward FLOPs for one token attending to `context_len` positions.

    2 FLOPs per weight for the matmuls (layers and the LM head), plus the attention score and
    value products, 2 * 2 * L * h * d_h per attended position. The input embedding is a lookup.
    """
    return (2 * (n_params_non_embedding + d_model * vocab_size)
            + 4 * n_layers * n_heads * head_dim * context_len)


def prefill_flops(n_params_non_embedding, d_model, vocab_size, n_layers, n_heads, head_dim,
                  input_len):
    """Forward FLOPs to prefill one causal sequence of `input_len` tokens.

    Token i attends to i+1 positions, so the attention term sums to input_len*(input_len+1)/2.
    """
    dense = 2 * (n_params_non_embedding + d_model * vocab_size) * input_len
    attn = 4 * n_layers * n_heads * head_dim * (input_len * (input_len + 1) / 2)
    return dense + attn


def training_flops_per_token(n_params_non_embedding, d_model, vocab_size, n_layers, n_heads,
                             head_dim, seq_len):
    """Forward + backward (3x forward) FLOPs per trained token, causal attention averaged."""
    return 3 * forward_flops_per_token(n_params_non_embedding, d_model, vocab_size, n_layers,
                                       n_heads, head_dim, (seq_len + 1) / 2)


# ---------------------------------------------------------------------------------------------
# The Architecture record
# ---------------------------------------------------------------------------------------------

SHAPE_FIELDS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim")

# A shape's name, as the search writes it and the validation loop's rules match it:
# d<d_model>-L<n_layers>-h<n_heads>-kv<n_kv_heads>-dh<head_dim>-f<ffn_dim>.
SHAPE_NAME_PATTERN = r"d\d+-L\d+-h\d+-kv\d+-dh\d+-f\d+"
_SHAPE_NAME_PREFIXES = ("d", "L", "h", "kv", "dh", "f")


def shape_name(shape: Mapping[str, Any]) -> str:
    """The name of a shape (any mapping with the SHAPE_FIELDS, such as a table row)."""
    return "-".join(f"{prefix}{int(shape[field])}"
                    for prefix, field in zip(_SHAPE_NAME_PREFIXES, SHAPE_FIELDS))


def shape_from_name(name: str) -> dict[str, int]:
    """The shape a name spells (the inverse of `shape_name`), so a shape's config.json can
    depend on its name alone."""
    if not re.fullmatch(SHAPE_NAME_PATTERN, name):
        raise ArchitectureError(f"{name!r} is not a shape name like d64-L2-h2-kv1-dh32-f128")
    return dict(zip(SHAPE_FIELDS, map(int, re.findall(r"\d+", name))))


@dataclass(frozen=True)
class Architecture:
    """An explicit LLaMA-style shape. Validated on construction."""

    name: str
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    vocab_size: int
    tie_word_embeddings: bool = False
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 2048
    bos_token_id: int = 0
    eos_token_id: int = 0

    def __post_init__(self) -> None:
        for name in SHAPE_FIELDS + ("vocab_size", "max_position_embeddings"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ArchitectureError(
                    f"architecture {self.name!r}: {name} must be a positive integer, got {value!r}")
        if self.n_heads % self.n_kv_heads:
            raise ArchitectureError(
                f"architecture {self.name!r}: n_heads ({self.n_heads}) is not divisible by "
                f"n_kv_heads ({self.n_kv_heads}); choose n_kv_heads among the divisors of n_heads")
        if self.head_dim % 2:
            raise ArchitectureError(
                f"architecture {self.name!r}: head_dim ({self.head_dim}) must be even for RoPE")
        if self.rope_theta <= 0 or self.rms_norm_eps <= 0:
            raise ArchitectureError(
                f"architecture {self.name!r}: rope_theta and rms_norm_eps must be positive")

    # -- derived quantities -------------------------------------------------------------------
    @property
    def n_params_attention(self) -> int:
        return self.n_layers * attention_params_per_layer(
            self.d_model, self.n_heads, self.n_kv_heads, self.head_dim)

    @property
    def n_params_mlp(self) -> int:
        return self.n_layers * mlp_params_per_layer(self.d_model, self.ffn_dim)

    @property
    def n_params_non_embedding(self) -> int:
        return self.n_params_attention + self.n_params_mlp

    @property
    def n_params_embedding(self) -> int:
        """Input embedding plus the LM head when it is not tied."""
        copies = 1 if self.tie_word_embeddings else 2
        return copies * self.vocab_size * self.d_model

    @property
    def n_params_total(self) -> int:
        norms = (2 * self.n_layers + 1) * self.d_model
        return self.n_params_non_embedding + self.n_params_embedding + norms

    @property
    def r_mlp_attn(self) -> float:
        return self.n_params_mlp / self.n_params_attention

    @property
    def d_over_sqrt_n(self) -> float:
        return self.d_model / math.sqrt(self.n_params_non_embedding)

    @property
    def gqa_group(self) -> int:
        return self.n_heads // self.n_kv_heads

    def kv_bytes_per_token(self, dtype: str = "bfloat16") -> int:
        return kv_bytes_per_token(self.n_layers, self.n_kv_heads, self.head_dim,
                                  DTYPE_BYTES[dtype])

    def forward_flops_per_token(self, context_len: int) -> float:
        return forward_flops_per_token(self.n_params_non_embedding, self.d_model,
                                       self.vocab_size, self.n_layers, self.n_heads,
                                       self.head_dim, context_len)

    def prefill_flops(self, input_len: int) -> float:
        return prefill_flops(self.n_params_non_embedding, self.d_model, self.vocab_size,
                             self.n_layers, self.n_heads, self.head_dim, input_len)

    def training_flops_per_token(self, seq_len: int) -> float:
        return training_flops_per_token(self.n_params_non_embedding, self.d_model,
                                        self.vocab_size, self.n_layers, self.n_heads,
                                        self.head_dim, seq_len)

    def shape(self) -> dict[str, int]:
        return {k: int(getattr(self, k)) for k in SHAPE_FIELDS}

    def accounting(self) -> dict[str, Any]:
        """The row of results/architectures.csv for this architecture."""
        return {
            "name": self.name,
            **self.shape(),
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tie_word_embeddings,
            "n_params_non_embedding": self.n_params_non_embedding,
            "n_params_attention": self.n_params_attention,
            "n_params_mlp": self.n_params_mlp,
            "n_params_embedding": self.n_params_embedding,
            "n_params_total": self.n_params_total,
            "r_mlp_attn": round(self.r_mlp_attn, 6),
            "d_over_sqrt_n": round(self.d_over_sqrt_n, 6),
            "gqa_group": self.gqa_group,
            # at 2 bytes a value whatever the study runs in, so the name says so; the
            # throughput table's kv_bytes_per_token is at each measurement's own dtype
            "kv_bytes_per_token_bf16": self.kv_bytes_per_token("bfloat16"),
            "decode_flops_per_token_at_1k": self.forward_flops_per_token(1024),
        }

    def hf_config(self) -> dict[str, Any]:
        """A Hugging Face LlamaConfig dict that transformers, vLLM and SGLang all load."""
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.d_model,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.ffn_dim,
            "vocab_size": self.vocab_size,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": None,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "mlp_bias": False,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "initializer_range": 0.02,
            "use_cache": True,
            "torch_dtype": "bfloat16",
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_hf_config(cls, config: dict[str, Any] | str | Path, name: str | None = None
                       ) -> "Architecture":
        """Read an HF `config.json` (a dict or a path to the file or its directory).

        Only LLaMA-style keys are understood. A missing file, a file that is not JSON, or a
        config that lacks those keys (GPT-2's n_embd/n_layer/n_head, say) raises an error
        naming the file, so the command line prints one line instead of a KeyError.
        """
        source = "the config"
        if not isinstance(config, dict):
            path = Path(config)
            if path.is_dir():
                path = path / "config.json"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such file; give the path of a model's "
                                        "config.json or of the directory holding it")
            try:
                config = json.loads(path.read_text())
            except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
                raise ArchitectureError(f"{path} is not valid JSON ({exc}); give a model's "
                                        "config.json") from None
            source, name = str(path), name or path.parent.name
            config = config if isinstance(config, dict) else {}  # a JSON list has no keys
        required = ("hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size", "vocab_size")
        missing = [k for k in required if k not in config]
        if missing:
            kind = f" (model_type {config['model_type']!r})" if config.get("model_type") else ""
            raise ArchitectureError(
                f"{source} is not a LLaMA-style config{kind}: missing {', '.join(missing)}; "
                "archscale reads LLaMA-style config.json files (hidden_size, "
                "num_hidden_layers, num_attention_heads, num_key_value_heads, "
                "intermediate_size, vocab_size)")
        not_integers = [f"{k}={config[k]!r}" for k in required if isinstance(config[k], bool)
                        or not isinstance(config[k], (int, np.integer))]
        if not_integers:
            raise ArchitectureError(f"{source}: the shape keys must be JSON integers, got "
                                    f"{', '.join(not_integers)}")
        n_heads = int(config["num_attention_heads"])
        d_model = int(config["hidden_size"])
        eos = config.get("eos_token_id", 0)
        return cls(
            name=name or config.get("_name_or_path", "model") or "model",
            d_model=d_model,
            n_layers=int(config["num_hidden_layers"]),
            n_heads=n_heads,
            n_kv_heads=int(config.get("num_key_value_heads") or n_heads),
            head_dim=int(config.get("head_dim") or d_model // n_heads),
            ffn_dim=int(config["intermediate_size"]),
            vocab_size=int(config["vocab_size"]),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            rope_theta=float(config.get("rope_theta", 10000.0)),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-5)),
            max_position_embeddings=int(config.get("max_position_embeddings", 2048)),
            bos_token_id=int(config.get("bos_token_id") or 0),
            eos_token_id=int(eos[0] if isinstance(eos, list) else (eos or 0)),
        )


ARCH_FIELDS = tuple(f.name for f in fields(Architecture))


# ---------------------------------------------------------------------------------------------
# Solving targets to an integer shape
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShapeTargets:
    """What a user asks for when they do not give the shape explicitly."""

    n_params: float            # non-embedding parameter target N
    d_over_sqrt_n: float       # x = d / sqrt(N)
    r_mlp_attn: float          # r = MLP params / attention params
    gqa_group: int             # h / h_kv
    n_layers: int
    head_dim: int
    ffn_multiple: int = 64
    tolerance: float = 0.02    # max relative miss on N
    extra: dict = field(default_factory=dict)


def solve_shape(targets: ShapeTargets, name: str = "architecture") -> dict[str, int]:
    """Nearest valid integer shape to the targets.

    d_model is rounded from x*sqrt(N); the attention/MLP split follows from N and r; n_heads is a
    multiple of the GQA group; ffn_dim a multiple of `ffn_multiple`. Nearby integers are scored
    by the squared relative misses of N, x and r, and the best kept. Raises ArchitectureError
    when the best shape misses N by more than the tolerance.
    """
    t = targets
    for key in ("n_params", "d_over_sqrt_n", "r_mlp_attn"):
        if not getattr(t, key) > 0:
            raise ArchitectureError(f"architecture {name!r}: targets.{key} must be positive")
    if t.gqa_group < 1 or t.n_layers < 1 or t.head_dim < 2:
        raise ArchitectureError(
            f"architecture {name!r}: gqa_group, n_layers and head_dim must be positive")
    d0 = t.d_over_sqrt_n * math.sqrt(t.n_params)
    per_layer = t.n_params / t.n_layers
    best: tuple[tuple[bool, float], dict[str, int]] | None = None
    for d in range(max(1, int(d0 * 0.85)), int(math.ceil(d0 * 1.15)) + 1):
        attn = per_layer / (1.0 + t.r_mlp_attn)
        mlp = per_layer - attn
        # attention per layer = 2*d*d_h*(h + h/g)
        h_real = attn / (2.0 * d * t.head_dim * (1.0 + 1.0 / t.gqa_group))
        f_real = mlp / (3.0 * d)
        h_base = max(1, int(round(h_real / t.gqa_group)))
        f_base = max(1, int(round(f_real / t.ffn_multiple)))
        for hk in {max(1, h_base + k) for k in (-2, -1, 0, 1, 2)}:
            for fk in {max(1, f_base + k) for k in (-2, -1, 0, 1, 2)}:
                h, f = hk * t.gqa_group, fk * t.ffn_multiple
                n = non_embedding_params(d, t.n_layers, h, hk, t.head_dim, f)
                a = t.n_layers * attention_params_per_layer(d, h, hk, t.head_dim)
                n_miss = abs(n / t.n_params - 1)
                score = (n_miss > t.tolerance,
                         n_miss ** 2 + (d / math.sqrt(n) / t.d_over_sqrt_n - 1) ** 2
                         + ((n - a) / a / t.r_mlp_attn - 1) ** 2)
                if best is None or score < best[0]:
                    best = (score, {"d_model": d, "n_layers": t.n_layers, "n_heads": h,
                                    "n_kv_heads": hk, "head_dim": t.head_dim, "ffn_dim": f})
    assert best is not None
    shape = best[1]
    n = non_embedding_params(**shape)
    miss = abs(n / t.n_params - 1)
    if miss > t.tolerance:
        raise ArchitectureError(
            f"architecture {name!r}: no integer shape meets the targets; the nearest "
            f"({shape}) has N = {n:,} against the target {t.n_params:,.0f} ({miss:.1%} off, "
            f"tolerance {t.tolerance:.1%}). Change n_layers/head_dim, the targets, or "
            f"targets.tolerance.")
    return shape
