"""Plan the GQA step by measurement (checkpoint gqa_plan); the logic is
archscale.search.gqa_search, the cost model archscale.costs.FittedJobCosts."""
import pandas as pd

from archscale.costs import FittedJobCosts, duration_s
from archscale.io import read_json, write_json
from archscale.provenance import now, provenance
from archscale.search.gqa_search import gqa_plan
from archscale.workflow.snakemake import log_to

sm = snakemake  # noqa: F821
with log_to(sm.log[0]) as log:
    started = now()
    p = sm.params.settings
    runs = pd.read_csv(sm.input.runs)
    cost = FittedJobCosts.fit(
        runs, p["seq_len"],
        eval_seconds=[duration_s(read_json(f)) for f in sm.input.evals],
        measure_seconds=[duration_s(read_json(f)) for f in sm.input.measurements],
        train_devices=p["train_devices"], eval_devices=p["eval_devices"],
        measure_devices=p["measure_devices"])
    recommendations = read_json(sm.input.recommendations)["recommendations"]
    plan = gqa_plan(recommendations, cost, p["seq_len"], p["tokens"],
                    int(runs["vocab_size"].iloc[0]), p["gqa_search"], p["ffn_multiple"])
    write_json(sm.output[0], {
        "what": "the GQA step by measurement: per size, the baseline and the steps to train in "
                "order (step 0 the Surefire-like pick at the baseline's GQA group, then larger "
                "groups); a step runs only if every earlier one matched the baseline's loss",
        **plan, "tokens": p["tokens"], "engine": p["engine"],
        "cost_model": {**cost.__dict__, "formula":
                       "hours = ((fixed_s + s_per_flop * train_flops) * train_devices + eval_s * "
                       "eval_devices + measure_s * measure_devices) / 3600"},
        "provenance": provenance(settings=p, inputs=[sm.input.recommendations, sm.input.runs],
                                 started=started, packages=("numpy", "pandas")),
    })
    for size in plan["sizes"]:
        log.info("size %s: %s", size["budget"], size.get("skipped") or
                 ", ".join(s["name"] for s in size["steps"]))
