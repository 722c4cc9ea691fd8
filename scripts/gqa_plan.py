"""Plan the GQA step by measurement (checkpoint gqa_plan); the logic is
archscale.search.gqa_search, the cost model archscale.costs.FittedJobCosts."""
import pandas as pd

from archscale.costs import FittedJobCosts
from archscale.io import read_json, write_json
from archscale.provenance import now, provenance
from archscale.search.gqa_search import gqa_plan
from archscale.workflow.snakemake import log_to

sm = snakemake  # noqa: F821
with log_to(sm.log[0]) as log:
    started = now()
    p = sm.params.settings
    runs = pd.read_csv(sm.input.runs)
    cost = FittedJobCosts.from_study(runs, p, map(read_json, sm.input.evals),
                                     map(read_json, sm.input.measurements))
    recommendations = read_json(sm.input.recommendations)["recommendations"]
    plan = gqa_plan(recommendations, cost, p["seq_len"], p["tokens"],
                    int(runs["vocab_size"].iloc[0]), p["gqa_search"], p["ffn_multiple"])
    write_json(sm.output[0], {
        "what": "the GQA step by measurement: per size, the baseline and the steps to train in "
                "order (step 0 the Surefire-like pick at the baseline's GQA group, then larger "
                "groups); a step runs only if every earlier one matched the baseline's loss",
        **plan, "tokens": p["tokens"], "engine": p["engine"],
        "cost_model": cost.describe(),
        "provenance": provenance(settings=p, inputs=[sm.input.recommendations, sm.input.runs],
                                 started=started, packages=("numpy", "pandas")),
    })
    for size in plan["sizes"]:
        log.info("size %s: %s", size["budget"], size.get("skipped") or
                 ", ".join(s["name"] for s in size["steps"]))
