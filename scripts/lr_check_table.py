"""Collect the learning-rate check (rule lr_check_table): results/lr_check/runs.csv (every
checked run beside the grid's run at the rule's lr) and transfer.csv (per architecture, does
the rule's lr transfer?); the logic is archscale.fit.lr_check."""
import pandas as pd

from archscale.fit.lr_check import run_rows, runs_table, transfer_table
from archscale.fit.seeds import seed_sd_at
from archscale.io import read_json, write_csv
from archscale.workflow.snakemake import log_to

sm = snakemake  # noqa: F821
with log_to(sm.log[0]) as log:
    loss_column = sm.params.settings["loss_column"]
    table = pd.read_csv(sm.input.architectures).set_index("name")
    shapes = {name: {"N": int(row["n_params_non_embedding"]), "x": float(row["d_over_sqrt_n"]),
                     "r": float(row["r_mlp_attn"])} for name, row in table.iterrows()}
    checked = zip((read_json(m) for m in sm.input.metrics),
                  (read_json(e) for e in sm.input.evals), sm.params.factors)
    grid = zip((read_json(m) for m in sm.input.grid_metrics),
               (read_json(e) for e in sm.input.grid_evals), [1.0] * len(sm.input.grid_evals))
    runs = runs_table(run_rows(grid, shapes, loss_column, "grid")
                      + run_rows(checked, shapes, loss_column, "lr_check"))
    noise = (read_json(sm.input.forms).get("margins") or {}).get("seed_noise") or {}
    sds = {int(d): seed_sd_at(noise, float(d)) if noise else None for d in set(runs["D"])}
    transfer = transfer_table(runs, sds)
    write_csv(sm.output.runs, runs)
    write_csv(sm.output.transfer, transfer)
    for _, row in transfer.iterrows():
        log.info("%s: rule's lr %.4g loss %.4f; best x%g loss %.4f; gap %.4f, bar %s: %s",
                 row["arch"], row["rule_lr"], row["rule_loss"], row["best_factor"],
                 row["best_loss"], row["gap"], row["bar"],
                 {True: "transfers", False: "does not transfer"}.get(row["transfers"],
                                                                     "undecided (no seed SD)"))
