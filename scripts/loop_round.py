"""Snakemake `script:` for one round's decision of the closed loop (checkpoint loop_round);
the rule is archscale.search.design_loop, the files archscale.search.loop_rounds.

Expects:
    input.proposals    the proposals of the fit before this round (round 1: the study's)
    input.conditional  that fit's conditional.json (its x* and r* interval widths)
    input.verdicts     that fit's verdicts.json (the verdict targets read it)
    input.previous     (rounds after the first) the previous round's decision.json: the
                       device-hours spent so far
    output.plan        the proposals rows this round trains (no rows when the loop stops)
    output.decision    the decision: train or stop, why, the budget before and after
    params.loop        the config's loop section; params.round: this round's number
"""
import pandas as pd

from archscale.io import read_json, write_csv, write_json
from archscale.provenance import now, provenance
from archscale.search.design_loop import LoopSettings, decide_round
from archscale.search.loop_rounds import verdicts_by_finding
from archscale.search.proposals import interval_widths
from archscale.workflow.snakemake import log_to

sm = snakemake  # noqa: F821
with log_to(sm.log[0]) as log:
    started = now()
    settings = LoopSettings.from_config(dict(sm.params.loop))
    previous = sm.input.get("previous")
    spent = read_json(previous)["spent_after_hours"] if previous else 0.0
    widths = interval_widths(read_json(sm.input.conditional)) or {}
    decision = decide_round(pd.read_csv(sm.input.proposals), spent, settings, widths,
                            int(sm.params.round),
                            verdicts_by_finding(read_json(sm.input.verdicts)))
    write_csv(sm.output.plan, decision.picked)
    inputs = [path for path in (sm.input.proposals, sm.input.conditional, sm.input.verdicts,
                                previous) if path]
    write_json(sm.output.decision, {
        "what": "one round of the closed loop: train the listed proposals (plan.csv), or stop "
                "and say why (archscale.search.design_loop)",
        **decision.to_dict(),
        "provenance": provenance(settings=dict(sm.params.loop), inputs=inputs, started=started,
                                 packages=("pandas",))})
    log.info("loop round %d: %s (%s)", decision.round_number, decision.reason, decision.detail)
