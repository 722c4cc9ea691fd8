"""Choose the frontier shapes to check (checkpoint validation_plan); the logic is
archscale.search.frontier_check and archscale.costs, each chosen shape's config.json is rule
validation_config's."""
import pandas as pd

from archscale.costs import FittedJobCosts
from archscale.io import read_json, write_csv, write_json
from archscale.provenance import now, provenance
from archscale.search.frontier_check import select_frontier_checks, selection_summary
from archscale.workflow.snakemake import log_to

sm = snakemake  # noqa: F821
with log_to(sm.log[0]) as log:
    started = now()
    p = sm.params.settings
    runs = pd.read_csv(sm.input.runs)
    cost = FittedJobCosts.from_study(runs, p, map(read_json, sm.input.evals),
                                     map(read_json, sm.input.measurements))
    log.info("cost model: %s", cost)
    plan = select_frontier_checks(pd.read_csv(sm.input.pareto), runs, cost, p["seq_len"],
                            p["tokens"], int(runs["vocab_size"].iloc[0]), p["validation"])
    write_csv(sm.output.plan, plan)
    summary = selection_summary(plan)
    write_json(sm.output.summary, {
        "what": "the validation loop's choice: frontier shapes (plan.csv, status 'validate') "
                "that cover the frontier best within search.validation.budget_hours device-hours",
        **summary, "budget_hours": p["validation"]["budget_hours"],
        "cost_model": cost.describe(),
        "provenance": provenance(settings=p, inputs=[sm.input.pareto, sm.input.runs],
                                 started=started, packages=("numpy", "pandas", "scipy", "pulp")),
    })
    log.info("validation plan: %s", summary)
