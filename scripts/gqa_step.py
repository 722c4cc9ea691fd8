"""Decide one step of the GQA step by measurement (checkpoint gqa_step): accepted when the
step's measured val_loss is at most the measured baseline's; the logic is
archscale.search.gqa_search.step_decision."""
from archscale.io import read_json, write_json
from archscale.provenance import now, provenance
from archscale.search.gqa_search import step_decision
from archscale.workflow.snakemake import log_to

sm = snakemake  # noqa: F821
with log_to(sm.log[0]) as log:
    started = now()
    k = int(sm.wildcards.k)
    if "previous" in sm.input.keys():
        previous = read_json(sm.input.previous)["row"]
        if previous["decision"] != "continue":
            raise ValueError(f"{sm.input.previous} stopped the chain ({previous['name']} was "
                             "not accepted or was the last planned step); step "
                             f"{k} is not trained")
    plan = read_json(sm.input.plan)
    entry = next(e for e in plan["sizes"]
                 if int(e["budget"]) == int(sm.wildcards.size) and "steps" in e)
    column = sm.params.loss_column
    row = step_decision(
        entry["steps"][k], baseline_loss=read_json(sm.input.baseline_eval)[column],
        loss=read_json(sm.input.eval)[column],
        baseline_speed=read_json(sm.input.baseline_speed).get("output_tokens_per_s"),
        speed=read_json(sm.input.speed).get("output_tokens_per_s"),
        last=k == len(entry["steps"]) - 1, tolerance=sm.params.loss_tolerance)
    write_json(sm.output[0], {"budget": entry["budget"], "baseline": entry["baseline"],
                              "row": row,
                              "provenance": provenance(inputs=list(sm.input), started=started)})
    log.info("size %s step %d %s (GQA %d): loss %.4f vs baseline %.4f -> %s", entry["budget"],
             k, row["name"], row["gqa_group"], row["measured_loss"], row["baseline_loss"],
             row["decision"])
