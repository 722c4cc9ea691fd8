"""The optimum check (optimum_check.enabled): train the shape the headline law predicts optimal
at each of the largest grid sizes, with every seed, and tabulate what it reached.

Why: the fit places its optimum (x* = d/sqrt(N), r* = MLP/attention) between the grid's
shapes, and the search builds on it. Training that shape itself, with the grid's training
settings, token budget and seeds, tests the prediction where it matters, on the same footing as
the grid runs it is compared with. Two pieces:

1. `optimum_check_plan`: results/fits/forms.json's headline optimum at the largest sizes -> one
   shape per size, solved like a configured architecture (`solve_shape`) at the size's base
   architecture's N, GQA group, layers and head_dim, with x* and r*
   (results/optimum_check/plan.csv).
2. `optimum_check_runs`: the trained runs' losses, one row per seed
   (results/optimum_check/runs.csv).

Nothing here writes runs.csv or the fits (no cycle).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import pandas as pd

from archscale.architecture import (SHAPE_FIELDS, ArchitectureError, ShapeTargets, shape_name,
                                    solve_shape)
from archscale.fit.io import paired_run, run_loss

if TYPE_CHECKING:
    from archscale.config import Study

FORMS_PATH = "results/fits/forms.json"

# A base head_dim too wide for the target (one head's attention over the budget at r*) is
# retried at this one before the size is skipped.
FALLBACK_HEAD_DIM = 8

# The keys of a headline entry (plan.csv begins with them, N as N_target); a null value means
# "no optimum here".
ENTRY_KEYS = ("size", "N", "D", "x_star", "r_star", "base", "seeds")

PLAN_COLUMNS = ["size", "N_target", "D", "x_star", "r_star", "base", "seeds", "varch",
                *SHAPE_FIELDS, "n_params_non_embedding", "x", "r", "status", "reason"]

RUNS_COLUMNS = ["size", "varch", "base", "x", "r", "N", "D", "seed", "val_loss", "train_loss",
                "loss_column", "loss", "status", "reason"]


class OptimumCheckError(ValueError):
    """forms.json or the study cannot give an optimum check; the message says what to change."""


def base_targets(study: "Study", base: str) -> dict[str, Any]:
    """The solver settings of `base`'s size, all but x and r: its targets and layout when it is
    given by targets; else its own N, GQA group, layers and head_dim, with the search's
    ffn_multiple and N tolerance (the settings the search's candidate shapes use)."""
    if base not in study.architectures:
        raise OptimumCheckError(
            f"{FORMS_PATH} names base architecture {base!r}, which this study does not "
            f"configure (configured: {', '.join(study.architectures)}); the file comes from "
            "another config: rebuild it (snakemake --cores all results/fits/forms.json)")
    spec = study.arch_spec(base)
    if "targets" in spec:
        t = spec["targets"]
        return {"n_params": float(t["n_params"]), "gqa_group": int(t["gqa_group"]),
                "n_layers": int(spec["n_layers"]), "head_dim": int(spec["head_dim"]),
                "ffn_multiple": int(t["ffn_multiple"]), "tolerance": float(t["tolerance"])}
    arch, search = study.architectures[base], study.config["search"]
    return {"n_params": float(arch.n_params_non_embedding), "gqa_group": arch.gqa_group,
            "n_layers": arch.n_layers, "head_dim": arch.head_dim,
            "ffn_multiple": int(search["ffn_multiple"]),
            "tolerance": float(search["n_params_tolerance"])}


def optimum_check_params(study: "Study") -> dict[str, Any]:
    """What changes plan.csv besides forms.json (the checkpoint's params): the number of sizes
    and the solver settings of every architecture that could be a size's base."""
    return {"sizes": int(study.config["optimum_check"]["sizes"]),
            "targets": {name: base_targets(study, name) for name in study.architectures}}


def headline_optima(forms_doc: Any) -> list[dict[str, Any]]:
    """headline.optimum_by_size of a forms.json document, checked to be a list of entries."""
    rebuild = "rebuild it with the fit stage (snakemake --cores all results/fits/forms.json)"
    headline = forms_doc.get("headline") if isinstance(forms_doc, Mapping) else None
    if not isinstance(headline, Mapping):
        raise OptimumCheckError(f"{FORMS_PATH} has no 'headline' object; {rebuild}")
    entries = headline.get("optimum_by_size")
    if not isinstance(entries, list) or not entries:
        raise OptimumCheckError(f"{FORMS_PATH}: headline has no optimum_by_size list (one entry "
                                f"per grid size, ascending N); {rebuild}")
    for i, entry in enumerate(entries):
        missing = [k for k in ENTRY_KEYS if not isinstance(entry, Mapping) or k not in entry]
        if missing:
            raise OptimumCheckError(f"{FORMS_PATH}: headline.optimum_by_size[{i}] lacks "
                                    f"{', '.join(missing)} (null says 'no optimum'); {rebuild}")
    sizes = [e["N"] for e in entries if isinstance(e["N"], (int, float))]
    if sizes != sorted(sizes):
        raise OptimumCheckError(f"{FORMS_PATH}: headline.optimum_by_size is not in ascending N "
                                f"({sizes}), so its last entries are not the largest sizes; "
                                f"{rebuild}")
    return list(entries)


def _number(entry: Mapping[str, Any], key: str) -> float:
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise OptimumCheckError(f"{FORMS_PATH}: size {entry['size']}: {key} must be a finite "
                                f"number or null, got {value!r}")
    return float(value)


def _tokens(entry: Mapping[str, Any]) -> int:
    d = _number(entry, "D")
    if d <= 0 or not d.is_integer():
        raise OptimumCheckError(f"{FORMS_PATH}: size {entry['size']}: D must be a whole "
                                f"positive token budget (a grid budget), got {entry['D']!r}")
    return int(d)


def _seeds(entry: Mapping[str, Any]) -> list[int]:
    seeds = entry["seeds"]
    if not isinstance(seeds, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise OptimumCheckError(f"{FORMS_PATH}: size {entry['size']}: seeds must be a list of "
                                f"non-negative integers or null, got {seeds!r}")
    return sorted(set(seeds))


def _solve(study: "Study", targets: dict[str, Any], x_star: float, r_star: float,
           label: str) -> tuple[dict[str, int] | None, str]:
    """The shape at (x*, r*) with the base's head_dim, else FALLBACK_HEAD_DIM; (None, why) when
    neither reaches the target N."""
    misses = [f"no integer shape at x* {x_star:g}, r* {r_star:g} is within "
              f"{targets['tolerance']:.0%} of N {targets['n_params']:,.0f} with the base's "
              f"{targets['n_layers']} layers and GQA group {targets['gqa_group']}"]
    for head_dim in dict.fromkeys((targets["head_dim"], FALLBACK_HEAD_DIM)):
        try:
            shape = solve_shape(ShapeTargets(**{**targets, "head_dim": head_dim},
                                             d_over_sqrt_n=x_star, r_mlp_attn=r_star), name=label)
            study.shape_architecture(shape_name(shape))  # the rules' own resolution must accept it
            return shape, ""
        except ArchitectureError as exc:
            misses.append(f"head_dim {head_dim}: {exc}")
    return None, "; ".join(misses)


def optimum_check_plan(forms_doc: Any, study: "Study", sizes: int) -> pd.DataFrame:
    """plan.csv: one row for each of the `sizes` largest entries of forms.json's
    headline.optimum_by_size, status "planned" with its solved shape (varch) or "skipped" with
    the reason (a null value: no optimum there; or no integer shape meets the targets)."""
    if isinstance(sizes, bool) or not isinstance(sizes, int) or sizes < 1:
        raise OptimumCheckError(f"optimum_check.sizes must be an integer >= 1, got {sizes!r}")
    rows = []
    for entry in headline_optima(forms_doc)[-sizes:]:
        row: dict[str, Any] = {"size": entry["size"], "N_target": entry["N"], "D": entry["D"],
                               "x_star": entry["x_star"], "r_star": entry["r_star"],
                               "base": entry["base"], "status": "skipped"}
        nulls = [k for k in ENTRY_KEYS if entry[k] is None or entry[k] == []]
        if nulls:
            row["reason"] = (f"no optimum at this size: {', '.join(nulls)} "
                             f"{'is' if len(nulls) == 1 else 'are'} null in {FORMS_PATH}")
            rows.append(row)
            continue
        targets = base_targets(study, str(entry["base"]))
        seeds, tokens = _seeds(entry), _tokens(entry)
        x_star, r_star = _number(entry, "x_star"), _number(entry, "r_star")
        row.update({"N_target": _number(entry, "N"), "D": tokens,
                    "seeds": " ".join(map(str, seeds))})
        shape, reason = _solve(study, targets, x_star, r_star, f"optimum of size {entry['size']}")
        if shape is None:
            row["reason"] = reason
        else:
            arch = study.shape_architecture(shape_name(shape))
            row.update(shape, varch=arch.name, n_params_non_embedding=arch.n_params_non_embedding,
                       x=arch.d_over_sqrt_n, r=arch.r_mlp_attn, status="planned", reason="")
        rows.append(row)
    return _whole_numbers(pd.DataFrame(rows, columns=PLAN_COLUMNS),
                          ["D", *SHAPE_FIELDS, "n_params_non_embedding"])


def _whole_numbers(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Integer columns stay integers beside a skipped row's empty cells (640000, not 640000.0)."""
    for column in columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        known = values.dropna()
        if len(known) == frame[column].notna().sum() and (known == known.round()).all():
            frame[column] = values.astype("Int64")
    return frame


def planned_runs(plan: pd.DataFrame) -> list[tuple[str, int, int]]:
    """(varch, tokens, seed) of every run the plan asks for, in plan order."""
    runs = []
    for _, row in plan[plan["status"] == "planned"].iterrows():
        for seed in str(row["seeds"]).split():
            run = (str(row["varch"]), int(row["D"]), int(seed))
            if run not in runs:
                runs.append(run)
    return runs


def read_plan(path: str) -> pd.DataFrame:
    """plan.csv as written (seeds kept as text: a single seed would otherwise read as a number)."""
    return pd.read_csv(path, dtype={"seeds": str, "varch": str, "base": str, "reason": str})


def optimum_check_runs(plan: pd.DataFrame,
                       observed: Iterable[tuple[Mapping[str, Any], Mapping[str, Any]]],
                       loss_column: str) -> pd.DataFrame:
    """runs.csv: one row per planned (varch, seed) with runs.csv's loss columns (val_loss from
    eval.json, train_loss from metrics.json) and the fit's loss_column value as `loss`; one row
    per skipped size with its reason and no losses.

    observed: (metrics.json, eval.json) of every planned run, in any order; each is matched by
    the architecture, token budget and seed it records.
    """
    found = dict(paired_run(m, e, OptimumCheckError) for m, e in observed)
    rows = []
    for _, row in plan.iterrows():
        base = {"size": row["size"], "varch": row["varch"], "base": row["base"], "x": row["x"],
                "r": row["r"], "N": row["n_params_non_embedding"], "D": row["D"],
                "loss_column": loss_column}
        if row["status"] != "planned":
            rows.append({**base, "status": row["status"], "reason": row["reason"]})
            continue
        for seed in str(row["seeds"]).split():
            key = (str(row["varch"]), int(row["D"]), int(seed))
            if key not in found:
                raise OptimumCheckError(f"no metrics.json/eval.json for planned run "
                                        f"{key[0]}/{key[1]}/seed{key[2]}; train it "
                                        "(snakemake results/optimum_check/runs.csv)")
            got = found[key]
            loss = run_loss(got, key, loss_column, OptimumCheckError)
            rows.append({**base, "N": int(row["n_params_non_embedding"]), "D": key[1],
                         "seed": key[2], "val_loss": float(got["val_loss"]),
                         "train_loss": float(got["train_loss"]),
                         "loss": loss, "status": "trained", "reason": ""})
    return _whole_numbers(pd.DataFrame(rows, columns=RUNS_COLUMNS), ["N", "D", "seed"])

