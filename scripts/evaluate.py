"""Evaluate one trained run: validation loss, bits per byte, lm-eval accuracy (rule evaluate)."""
import os

import torch

from archscale.training.evaluate import evaluate_run
from archscale.workflow.snakemake import log_to

with log_to(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    torch.set_num_threads(sm.threads)
    # rule evaluate labels a run by its wildcards; rule validation_evaluate passes its label
    label = getattr(sm.params, "label", None) or {
        "arch": sm.wildcards.arch, "tokens": int(sm.wildcards.tokens),
        "seed": int(sm.wildcards.seed)}
    result = evaluate_run(
        model_dir=os.path.dirname(sm.input.model), val_bin=sm.input.val, meta=sm.input.meta,
        seq_len=sm.params.seq_len, settings=sm.params.evaluation,
        task_dirs=[os.path.dirname(p) for p in sm.input.task_yamls], out=sm.output[0],
        label=label)
    log.info("eval %s: val_loss %.4f, val_bpb %.4f, acc_avg %s", label["arch"],
             result["val_loss"], result["val_bpb"], result.get("acc_avg"))
