"""Snakemake `script:` for results/loop/rounds.csv (rule loop_rounds): one row per round, its
decision and the fit it decided from, and the figure of the intervals round by round;
archscale.search.loop_rounds.

Expects:
    input.decisions     every round's decision.json, the last one a stop
    input.conditionals  the conditional.json each round decided from (round 1: the study's)
    input.verdicts      the verdicts.json each round decided from
    output.csv          results/loop/rounds.csv
    output.plot         results/plots/loop_rounds.png (and its SVG)
"""
from archscale.io import read_json, write_csv
from archscale.search.loop_rounds import rounds_table
from archscale.search.plots import plot_loop_rounds
from archscale.workflow.snakemake import log_to

sm = snakemake  # noqa: F821
with log_to(sm.log[0]) as log:
    decisions = [read_json(p) for p in sm.input.decisions]
    fits = [(read_json(c), read_json(v)) for c, v in zip(sm.input.conditionals,
                                                            sm.input.verdicts)]
    table = rounds_table(decisions, fits)
    write_csv(sm.output.csv, table)
    plot_loop_rounds(table, sm.output.plot)
    for _, row in table.iterrows():
        log.info("round %d: %s; x* width %.4g, r* width %.4g", row["round"], row["reason"],
                 row["x_width"], row["r_width"])
