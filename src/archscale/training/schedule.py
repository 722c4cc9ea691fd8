"""How a run's token budget becomes steps, learning rates and batches of data.

Kept apart from the loop because these are pure functions of the job (its settings, budget and
seed), so they are tested and reasoned about without a model:
- the peak learning rate for a width (`learning_rate`, training.lr_rule) and its warmup and
  decay over the steps (`lr_at`);
- the run's schedule (`Schedule`): the budget is met exactly, ceil(tokens / seq_len) sequences
  with the last sequence's surplus targets masked, in global batches of sequences;
- the data order (`DataOrder`, `read_batch`): a pure function of (seed, sequence index), so the
  global batch is the same on any number of GPUs and a resumed run needs only the step number.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from archscale.training.job import TrainError

if TYPE_CHECKING:
    import torch


# ---------------------------------------------------------------------------------------------
# Learning rate
# ---------------------------------------------------------------------------------------------

def learning_rate(settings: dict[str, Any], d_model: int) -> dict[str, Any]:
    """The peak learning rate for a width under training.lr_rule, with its derivation.

    inverse_width: lr * (base_d_model / d_model) ** exponent; exponent 1 (the default) is the
    muP scaling of hidden-layer Adam learning rates, so a wide and a narrow variant at one N are
    each trained near their own optimum; constant: the same lr for every width.
    docs/training.md explains why this matters for the d/sqrt(N) curve.
    """
    rule = settings.get("lr_rule") or {}
    kind = rule.get("kind", "inverse_width")
    base_lr = float(settings["lr"])
    base_d = int(rule.get("base_d_model", 64))
    exponent = float(rule.get("exponent", 1.0))
    if kind == "constant":
        lr, exponent = base_lr, 0.0
        formula = "lr"
    elif kind == "mup":
        lr = base_lr * (base_d / d_model) ** exponent
        formula = (f"hidden matrices lr * ({base_d} / d_model) ** {exponent:g}; embeddings and "
                   "norms lr")
    elif kind == "inverse_width":
        lr = base_lr * (base_d / d_model) ** exponent
        formula = f"lr * {base_d} / d_model" if exponent == 1.0 else \
            f"lr * ({base_d} / d_model) ** {exponent:g}"
    else:
        raise TrainError(f"training.lr_rule.kind: unknown rule {kind!r}; use constant, "
                         "inverse_width or mup")
    return {"lr": lr, "rule": kind, "formula": formula, "base_lr": base_lr,
            "base_d_model": base_d, "exponent": exponent, "d_model": int(d_model),
            "embedding_lr": base_lr if kind == "mup" else lr}


def lr_at(step: int, steps: int, peak: float, settings: dict[str, Any]) -> float:
    """Learning rate for 0-based `step` of `steps`: linear warmup, then cosine or WSD decay.

    Decay ends at min_lr_ratio * peak on the last step.
    """
    warmup = int(round(settings["warmup_fraction"] * steps))
    floor = settings["min_lr_ratio"] * peak
    if step < warmup:
        return peak * (step + 1) / warmup
    schedule = settings["schedule"]
    if schedule == "cosine":
        span = steps - warmup
        progress = (step - warmup + 1) / span if span > 0 else 1.0
        return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "wsd":
        decay = max(1, int(round(settings["decay_fraction"] * steps)))
        start = max(warmup, steps - decay)
        if step < start:
            return peak
        progress = (step - start + 1) / (steps - start)
        return peak - (peak - floor) * progress
    raise TrainError(f"training.schedule: unknown schedule {schedule!r}; use cosine or wsd")


# ---------------------------------------------------------------------------------------------
# Batch geometry and data order
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Schedule:
    """How a token budget becomes steps of sequences: the run's schedule (its steps and
    batches; the learning rate's schedule is `lr_at`)."""

    tokens: int            # predicted tokens to train on (the budget)
    seq_len: int
    batch_seqs: int        # sequences per optimizer step (global, all ranks)
    micro_batch_size: int  # sequences per forward pass per rank
    total_seqs: int        # ceil(tokens / seq_len)
    steps: int
    n_windows: int         # distinct seq_len+1 windows in train.bin (one epoch)
    train_tokens: int      # tokens in train.bin

    @classmethod
    def make(cls, tokens: int, seq_len: int, settings: dict[str, Any], train_tokens: int
             ) -> "Schedule":
        if tokens < 1:
            raise TrainError(f"token budget must be positive, got {tokens}")
        batch_seqs = settings["global_batch_tokens"] // seq_len
        if batch_seqs < 1:
            raise TrainError(f"training.global_batch_tokens ({settings['global_batch_tokens']}) "
                             f"is smaller than one sequence (data.seq_len {seq_len}); raise it")
        n_windows = (train_tokens - 1) // seq_len
        if n_windows < 1:
            raise TrainError(f"train.bin holds {train_tokens} tokens, fewer than one sequence "
                             f"of {seq_len + 1}; point data.source at more text")
        total_seqs = -(-tokens // seq_len)
        if total_seqs > n_windows and not settings["allow_repeats"]:
            raise TrainError(
                f"the token budget {tokens:,} needs {total_seqs:,} sequences but train.bin "
                f"has {n_windows:,} (one epoch = {n_windows * seq_len:,} tokens) and "
                "training.allow_repeats is false; lower the budget, add data, or allow repeats")
        return cls(tokens=tokens, seq_len=seq_len, batch_seqs=batch_seqs,
                   micro_batch_size=int(settings["micro_batch_size"]), total_seqs=total_seqs,
                   steps=-(-total_seqs // batch_seqs), n_windows=n_windows,
                   train_tokens=train_tokens)

    def step_sequences(self, step: int) -> range:
        """Global sequence indices of one optimizer step."""
        first = step * self.batch_seqs
        return range(first, min(first + self.batch_seqs, self.total_seqs))

    def targets_in(self, seqs: range) -> int:
        """Predicted (unmasked) tokens in a range of global sequence indices."""
        return max(0, min(seqs.stop * self.seq_len, self.tokens) - seqs.start * self.seq_len)

    def tokens_after(self, steps_done: int) -> int:
        return min(steps_done * self.batch_seqs * self.seq_len, self.tokens)

    @property
    def epochs(self) -> float:
        return self.tokens / self.train_tokens


class DataOrder:
    """Window start offsets for global sequence indices: a fresh permutation per epoch."""

    def __init__(self, n_windows: int, seq_len: int, seed: int) -> None:
        self.n_windows, self.seq_len, self.seed = n_windows, seq_len, seed
        self._cache: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            self._cache = {epoch: np.random.default_rng([self.seed, epoch]).permutation(
                self.n_windows)}
        return self._cache[epoch]

    def starts(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty(len(indices), dtype=np.int64)
        epochs = indices // self.n_windows
        for epoch in np.unique(epochs):
            mask = epochs == epoch
            out[mask] = self._perm(int(epoch))[indices[mask] % self.n_windows] * self.seq_len
        return out


def read_batch(tokens: np.ndarray, order: DataOrder, schedule: Schedule,
               indices: np.ndarray) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Inputs and targets (int64) for global sequence indices; surplus targets set to -100."""
    import torch

    starts = order.starts(indices)
    width = schedule.seq_len + 1
    block = np.stack([tokens[s:s + width] for s in starts]).astype(np.int64)
    x = torch.from_numpy(block[:, :-1])
    y = torch.from_numpy(block[:, 1:].copy())
    surplus = (indices + 1) * schedule.seq_len - schedule.tokens
    for row in np.nonzero(surplus > 0)[0]:
        y[row, schedule.seq_len - int(surplus[row]):] = -100
    return x, y
