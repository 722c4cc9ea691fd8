"""Collect the optimum check's runs (rule optimum_check_runs): results/optimum_check/runs.csv,
one row per planned shape and seed, one per skipped size; the logic is
archscale.search.optimum_plan. Reads only the optimum check's own results."""
from archscale.io import read_json, write_csv
from archscale.search.optimum_plan import optimum_check_runs, read_plan
from archscale.workflow.snakemake import log_to

sm = snakemake  # noqa: F821
with log_to(sm.log[0]) as log:
    observed = [(read_json(m), read_json(e)) for m, e in zip(sm.input.metrics, sm.input.evals)]
    table = optimum_check_runs(read_plan(sm.input.plan), observed, sm.params.loss_column)
    write_csv(sm.output[0], table)
    for _, row in table.iterrows():
        log.info("size %s %s seed %s: %s %s", row["size"], row["varch"], row["seed"],
                 row["loss_column"], row["loss"] if row["status"] == "trained" else row["reason"])
