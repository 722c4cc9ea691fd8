"""Collect the GQA step by measurement (rule gqa_search): results/gqa_search.csv and the
measured-GQA recommendation per size, results/gqa/recommendations.json."""
from archscale.io import read_json, write_csv, write_json
from archscale.provenance import now, provenance
from archscale.search.gqa_search import measured_recommendation, search_table
from archscale.workflow.snakemake import log_to

sm = snakemake  # noqa: F821
with log_to(sm.log[0]) as log:
    started = now()
    plan = read_json(sm.input.plan)
    table = search_table(plan, [read_json(p) for p in sm.input.steps])
    write_csv(sm.output.table, table)
    recs = measured_recommendation(table, plan)
    write_json(sm.output.recommendations, {
        "what": "per size, the fastest shape whose measured val_loss is at most the measured "
                "baseline's among the GQA steps trained (results/gqa_search.csv)",
        "recommendations": recs,
        "provenance": provenance(inputs=[sm.input.plan, *sm.input.steps], started=started)})
    for rec in recs:
        log.info("size %s: %s", rec["budget"], rec["note"])
