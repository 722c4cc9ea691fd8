"""Evaluate one trained run: validation loss, bits per byte, lm-eval accuracy (rule evaluate).

The evaluation itself takes about a second for a study's small models; most of the job is
starting torch and lm-eval (and transformers, under evaluation.harness_model: hf). Their imports build hundreds of thousands of
long-lived objects, which Python's cyclic garbage collector rescans again and again while they
load and once more at exit. So the collector is paused for the imports, and what they built is
then frozen out of every later collection (issue 26, on a busy 2-core machine: imports ~20 %
faster, interpreter exit 1.6 s -> 0.2 s). It collects what the evaluation allocates as usual.
"""
import gc

gc.disable()

import os  # noqa: E402

from archscale.training.evaluate import evaluate_run, import_libraries  # noqa: E402
from archscale.workflow.snakemake import log_to  # noqa: E402

import_libraries(snakemake.params.evaluation.get("harness_model", "native"))  # noqa: F821
gc.freeze()
gc.enable()

with log_to(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    # rule evaluate labels a run by its wildcards; rule validation_evaluate passes its label
    label = getattr(sm.params, "label", None) or {
        "arch": sm.wildcards.arch, "tokens": int(sm.wildcards.tokens),
        "seed": int(sm.wildcards.seed)}
    result = evaluate_run(
        model_dir=os.path.dirname(sm.input.model), val_bin=sm.input.val, meta=sm.input.meta,
        seq_len=sm.params.seq_len, settings=sm.params.evaluation,
        task_dirs=[os.path.dirname(p) for p in sm.input.task_yamls], out=sm.output[0],
        label=label, threads=sm.threads)
    log.info("eval %s: val_loss %.4f, val_bpb %.4f, acc_avg %s", label["arch"],
             result["val_loss"], result["val_bpb"], result.get("acc_avg"))
gc.freeze()  # what the evaluation left needs no collection at exit either
