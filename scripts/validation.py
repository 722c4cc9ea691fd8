"""Compare predicted with observed loss and throughput of the validated shapes (rule
validation): results/validation.csv. Reads only the validation loop's own results."""
from pathlib import Path

import pandas as pd

from archscale.io import read_json, write_csv
from archscale.search.frontier_check import comparison_table
from archscale.workflow.snakemake import log_to

sm = snakemake  # noqa: F821
with log_to(sm.log[0]) as log:
    plan = pd.read_csv(sm.input.plan)
    observed = {}
    for metrics, evaluation, measured in zip(sm.input.metrics, sm.input.evals,
                                             sm.input.measurements):
        name = Path(metrics).parent.name
        observed[name] = {"metrics": read_json(metrics), "eval": read_json(evaluation),
                          "throughput": read_json(measured)}
    table = comparison_table(plan, observed, sm.params.loss_column)
    write_csv(sm.output[0], table)
    for _, row in table.iterrows():
        log.info("%s: loss %.4f predicted %.4f (%+.1f %%), %.1f tok/s predicted %.1f (%+.1f %%)",
                 row["name"], row.observed_loss, row.predicted_loss,
                 100 * row.loss_relative_error, row.measured_tokens_per_s,
                 row.predicted_tokens_per_s, 100 * row.throughput_relative_error)
