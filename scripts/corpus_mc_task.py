"""Build the offline multiple-choice lm-eval task from the held-out split (rule corpus_mc_task)."""
import os

from archscale.data.mc_task import build_task
from archscale.io import write_json
from archscale.provenance import now, provenance
from archscale.workflow.snakemake import log_to

with log_to(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    started = now()
    summary = build_task(sm.input.val, sm.input.meta, os.path.dirname(sm.input.tokenizer),
                         sm.output.yaml, sm.output.data, sm.params.settings)
    summary["provenance"] = provenance(settings=sm.params.settings,
                                       inputs=[sm.input.meta, sm.input.tokenizer],
                                       started=started, packages=("numpy", "transformers"))
    write_json(sm.output.summary, summary)
    log.info("corpus_mc: %d examples, %d choices", summary["examples"], summary["n_choices"])
