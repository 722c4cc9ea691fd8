"""Plan the optimum check (checkpoint optimum_check_plan): the headline law's optimum shape at
each of the largest grid sizes; the logic is archscale.search.optimum_plan, each planned
shape's config.json is rule optimum_check_config's."""
from archscale.config import load_study
from archscale.io import read_json, write_csv
from archscale.search.optimum_plan import optimum_check_plan
from archscale.workflow.snakemake import log_to

sm = snakemake  # noqa: F821
with log_to(sm.log[0]) as log:
    plan = optimum_check_plan(read_json(sm.input.forms), load_study(sm.config),
                              sm.params.settings["sizes"])
    write_csv(sm.output.plan, plan)
    for _, row in plan.iterrows():
        if row["status"] == "planned":
            log.info("size %s: %s (x %.3f for x* %.3f, r %.2f for r* %.2f), %s tokens, seeds %s",
                     row["size"], row["varch"], row["x"], row["x_star"], row["r"],
                     row["r_star"], row["D"], row["seeds"])
        else:
            log.info("size %s: skipped: %s", row["size"], row["reason"])
