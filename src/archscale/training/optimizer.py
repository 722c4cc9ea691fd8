"""The optimizer a run trains with: AdamW in parameter groups.

Apart from the loop because the groups carry the learning-rate rule's per-group scale (the mup
rule keeps embeddings and norms at the base lr) and decide which weights decay; the loop only
multiplies each group's `lr_scale` by the schedule's lr every step.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def make_optimizer(model: "torch.nn.Module", settings: dict[str, Any],
                   lr_info: dict[str, Any], fused: bool):
    """AdamW with weight decay on matrices and embeddings only (not on norm gains).

    Each group carries `lr_scale`, its learning rate relative to the schedule's peak `lr`:
    1 except under the mup rule, where embeddings and norms keep the base lr.
    """
    import torch

    embeddings = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding)
                  for p in m.parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    hidden = [p for p in params if p.dim() >= 2 and id(p) not in embeddings]
    embed = [p for p in params if id(p) in embeddings]
    norms = [p for p in params if p.dim() < 2]
    other_scale = lr_info["embedding_lr"] / lr_info["lr"]
    decay = float(settings["weight_decay"])
    groups = [{"params": hidden, "weight_decay": decay, "lr_scale": 1.0},
              {"params": embed, "weight_decay": decay, "lr_scale": other_scale},
              {"params": norms, "weight_decay": 0.0, "lr_scale": other_scale}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr_info["lr"],
                             betas=(settings["beta1"], settings["beta2"]), eps=1e-8,
                             fused=fused)

