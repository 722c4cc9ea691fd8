"""The GQA step by measurement (search.gqa_search): the paper's local search over grouped-query
attention, decided by trained models, not by the law.

Why: the conditional law has no GQA term, so a GQA step by prediction always takes the largest
group allowed; the paper tunes GQA on trained models because its effect on loss is erratic and
smaller than the law's error (about 3 %). Here, for each size's Surefire-like pick (Eq. 4 at the
baseline's GQA group):

1. `gqa_plan`: the baseline, the pick, and the pick's variants with larger GQA groups (the
   divisors of n_heads above the baseline's group, in increasing order: each is faster than the
   last), ffn_dim refilled so N stays at the budget. The list is cut where the estimated
   device-hours (archscale.costs.FittedJobCosts, fitted on the study's own jobs) pass
   search.gqa_search.budget_hours.
2. `step_decision`: step 0 checks the pick itself; step k trains variant k. A step is accepted
   when its measured val_loss is at most the measured baseline's (same tokens, same seed),
   times 1 + search.gqa_search.loss_tolerance (default 0); the chain stops at the first step
   that is not, or when the plan's list ends.
3. `search_table` and `measured_recommendation`: results/gqa_search.csv, one row per trained
   step, and the fastest accepted shape per size.

The shapes train, evaluate and measure through the validation loop's rules (under
results/validation/), at the search's token budget with the first seed. Nothing here feeds
runs.csv or the fits.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import pandas as pd

from archscale.architecture import (SHAPE_FIELDS, attention_params_per_layer,
                                    non_embedding_params, shape_name)
from archscale.costs import FittedJobCosts, training_flops

if TYPE_CHECKING:
    from archscale.config import Study

STEP_COLUMNS = ["budget", "step", "name", "gqa_group", "n_kv_heads", "n_params_non_embedding",
                "measured_loss", "baseline_name", "baseline_loss", "loss_margin",
                "loss_threshold",
                "measured_tokens_per_s", "baseline_tokens_per_s", "speedup_vs_baseline",
                "accepted", "decision"]


def gqa_search_params(study: "Study") -> dict[str, Any]:
    """What changes the GQA plan (the checkpoint's params): its own settings, the run it prices
    (tokens, sequence length), the grid's ffn multiple, and the devices each job occupies."""
    config = study.config
    train, tp = config["training"], config["throughput"]
    return {
        # the tolerance decides the steps (gqa_step's param), not the plan
        "gqa_search": {k: v for k, v in config["search"]["gqa_search"].items()
                       if k != "loss_tolerance"},
        "tokens": study.search_tokens(),
        "seq_len": config["data"]["seq_len"],
        "ffn_multiple": config["search"]["ffn_multiple"],
        "engine": study.search_engine(),
        "train_devices": train["gpus"] or train["threads"],
        "eval_devices": 1 if train["gpus"] else config["evaluation"]["threads"],
        "measure_devices": tp["threads"] if tp["device"] == "cpu" else 1,
    }


def gqa_variants(shape: Mapping[str, int], base_group: int, budget: float,
                 ffn_multiple: int) -> list[dict[str, int]]:
    """The shape with each larger GQA group that divides n_heads, ffn_dim refilled to the
    budget (at least one ffn_multiple), in increasing group order."""
    h, d, layers = int(shape["n_heads"]), int(shape["d_model"]), int(shape["n_layers"])
    out = []
    for group in range(base_group + 1, h + 1):
        if h % group:
            continue
        kv = h // group
        attn = layers * attention_params_per_layer(d, h, kv, int(shape["head_dim"]))
        units = max(1, round((budget - attn) / (3 * d * layers) / ffn_multiple))
        out.append({**{k: int(shape[k]) for k in SHAPE_FIELDS}, "n_kv_heads": kv,
                    "ffn_dim": units * ffn_multiple})
    return out


def gqa_plan(recommendations: list[Mapping[str, Any]], cost: FittedJobCosts, seq_len: int,
             tokens: float, vocab_size: int, settings: Mapping[str, Any],
             ffn_multiple: int) -> dict[str, Any]:
    """Per size: the baseline, the Surefire-like pick and its variants within the budget."""
    budget_hours = float(settings["budget_hours"])
    spent, sizes = 0.0, []

    def hours(shape: Mapping[str, int]) -> float:
        return cost.hours(training_flops({**shape, "vocab_size": vocab_size}, seq_len) * tokens)

    for rec in recommendations:
        pick = rec.get("fastest_at_baseline_loss")
        if not pick:
            continue
        base = {k: int(rec["baseline"][k]) for k in SHAPE_FIELDS}
        start = {k: int(pick[k]) for k in SHAPE_FIELDS}
        steps = [start] + gqa_variants(start, int(rec["baseline_gqa_group"]),
                                       float(rec["budget"]), ffn_multiple)
        steps = steps[:1 + int(settings["max_variants"])]
        needed = hours(base) + hours(start)
        if spent + needed > budget_hours:
            sizes.append({"budget": float(rec["budget"]), "skipped": (
                f"the baseline and the pick need {needed:.3g} device-hours; "
                f"{budget_hours - spent:.3g} of search.gqa_search.budget_hours are left")})
            continue
        spent += needed
        kept = [start]
        for variant in steps[1:]:
            if spent + hours(variant) > budget_hours:
                break
            spent += hours(variant)
            kept.append(variant)
        sizes.append({
            "budget": float(rec["budget"]), "baseline": shape_name(base),
            "baseline_gqa_group": int(rec["baseline_gqa_group"]),
            "baseline_estimated_hours": hours(base),
            "steps": [{"step": i, "name": shape_name(s),
                       "gqa_group": s["n_heads"] // s["n_kv_heads"], "n_kv_heads": s["n_kv_heads"],
                       "n_params_non_embedding": non_embedding_params(**s),
                       "estimated_hours": hours(s)} for i, s in enumerate(kept)],
            "not_planned": [shape_name(s) for s in steps[len(kept):]]})
    return {"sizes": sizes, "estimated_hours": spent, "budget_hours": budget_hours}


def step_decision(step: Mapping[str, Any], baseline_loss: float, loss: float,
                  baseline_speed: float | None, speed: float | None, last: bool,
                  tolerance: float = 0.0) -> dict[str, Any]:
    """One step's row: accepted when the measured loss is at most the measured baseline's
    times (1 + tolerance); the chain continues only after an accepted step that is not the
    plan's last."""
    threshold = baseline_loss * (1.0 + tolerance)
    accepted = bool(loss <= threshold)
    return {**{k: step[k] for k in ("step", "name", "gqa_group", "n_kv_heads",
                                     "n_params_non_embedding")},
            "measured_loss": float(loss), "baseline_loss": float(baseline_loss),
            "loss_margin": float(loss - baseline_loss), "loss_threshold": float(threshold),
            "measured_tokens_per_s": speed, "baseline_tokens_per_s": baseline_speed,
            "speedup_vs_baseline": (speed / baseline_speed
                                    if speed and baseline_speed else None),
            "accepted": accepted,
            "decision": "continue" if accepted and not last else "stop"}


def search_table(plan: Mapping[str, Any], steps: list[Mapping[str, Any]]) -> pd.DataFrame:
    """results/gqa_search.csv: every decided step, by size and step."""
    rows = [{"budget": s["budget"], "baseline_name": s["baseline"], **s["row"]} for s in steps]
    table = pd.DataFrame(rows, columns=STEP_COLUMNS)
    return table.sort_values(["budget", "step"]).reset_index(drop=True)


def measured_recommendation(table: pd.DataFrame, plan: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per size: the fastest accepted shape (by measured tokens/s, else the largest group),
    with what was tried; None where even the Surefire-like pick lost to the baseline."""
    out = []
    for size in plan["sizes"]:
        entry: dict[str, Any] = {"budget": size["budget"], "baseline": size.get("baseline")}
        if "skipped" in size:
            out.append({**entry, "measured_gqa_pick": None, "note": size["skipped"]})
            continue
        rows = table[table.budget == size["budget"]]
        ok = rows[rows.accepted]
        if ok.empty:
            pick, note = None, ("the Surefire-like pick's measured loss exceeds the baseline's: "
                                "no shape of this size is recommended by measurement")
        else:
            key = ("measured_tokens_per_s" if ok.measured_tokens_per_s.notna().all()
                   else "gqa_group")
            best = ok.sort_values(key, ascending=False).iloc[0]
            pick = {k: (v.item() if hasattr(v, "item") else v) for k, v in best.items()}
            pick["gqa_status"] = "measured"
            note = (f"{len(rows)} step(s) trained; stopped at step {int(rows.step.max())} "
                    f"({rows.iloc[-1]['decision']}, "
                    f"{'accepted' if rows.iloc[-1]['accepted'] else 'worse than the baseline'})")
        out.append({**entry, "measured_gqa_pick": pick, "tried": list(rows.name),
                    "not_planned": size["not_planned"], "note": note})
    return out
