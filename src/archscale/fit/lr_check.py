"""The learning-rate check: does the lr rule's lr transfer to the shapes a verdict rests on?

Why: every shape trains at the lr its width gets from training.lr_rule. If an extreme shape
would do much better at another lr, its loss says as much about the rule as about the shape,
and a U-shaped curve built on it is confounded. The check (config section `lr_check`, off by
default) trains the named architectures again at multiples of their rule's lr (`factors`,
e.g. 0.5 and 2), at their largest token budget, for the listed seeds. Those runs live under
results/lr_check/ and are kept out of every fit.

The rule (docs/science.md, docs/laptop-loop-design.md): the lr rule transfers to a shape when
the rule's lr (factor 1: the grid's own runs at the same seeds) gives a mean loss within
TRANSFER_SD seed SDs of the best factor tried, the SD being the study's pooled seed SD at that
token budget (forms.json). A shape it does not transfer to makes the U verdict on its axis
"not identified: lr confounded" (archscale.fit.verdicts).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from archscale.fit.io import paired_run, run_loss

#: The transfer bar, in pooled seed SDs of one run's loss (written in the design before the
#: laptop loop study ran).
TRANSFER_SD = 2.0

RUNS_COLUMNS = ["arch", "N", "x", "r", "D", "factor", "lr", "seed", "val_loss", "train_loss",
                "loss_column", "loss", "source"]
TRANSFER_COLUMNS = ["arch", "N", "x", "r", "D", "seeds", "rule_lr", "rule_loss", "best_factor",
                    "best_lr", "best_loss", "gap", "seed_sd", "bar", "transfers"]


class LrCheckError(ValueError):
    """A learning-rate check that cannot be planned or read; the message names the fix."""


def factor_label(factor: float) -> str:
    """The path segment of a factor: 0.5 -> '0.5', 2.0 -> '2' (the {factor} wildcard)."""
    return f"{float(factor):g}"


def planned_runs(study: Any) -> list[tuple[str, str, int, int]]:
    """(architecture, factor label, tokens, seed) of every lr-check run: each named
    architecture at its largest token budget, every factor and seed."""
    settings = study.config["lr_check"]
    if not settings["enabled"]:
        return []
    return [(a, factor_label(f), max(study.token_budgets(a)), int(s))
            for a in settings["architectures"] for f in settings["factors"]
            for s in settings["seeds"]]


def grid_runs(study: Any) -> list[tuple[str, int, int]]:
    """The grid's own runs at the rule's lr (factor 1) that the check compares against (the
    config's check makes sure the grid trains them)."""
    return sorted({(a, t, s) for a, _, t, s in planned_runs(study)})


def run_rows(observed: Iterable[tuple[Mapping[str, Any], Mapping[str, Any], float]],
             shapes: Mapping[str, Mapping[str, float]], loss_column: str,
             source: str) -> list[dict[str, Any]]:
    """runs.csv rows from (metrics.json, eval.json, lr factor) triples; `shapes` gives each
    architecture's N, x and r; `source` says whether the row is the grid's run or the
    check's."""
    rows = []
    for metrics, evaluation, factor in observed:
        key, got = paired_run(metrics, evaluation, LrCheckError)
        loss = run_loss(got, key, loss_column, LrCheckError)
        shape = shapes[key[0]]
        rows.append({"arch": key[0], "N": shape["N"], "x": shape["x"], "r": shape["r"],
                     "D": key[1], "factor": float(factor),
                     "lr": float(metrics["lr"]["lr"]), "seed": key[2],  # the trainer's peak
                     "val_loss": float(got["val_loss"]), "train_loss": float(got["train_loss"]),
                     "loss_column": loss_column, "loss": loss, "source": source})
    return rows


def runs_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """results/lr_check/runs.csv: one row per run, the grid's (factor 1) and the check's."""
    table = pd.DataFrame(list(rows), columns=RUNS_COLUMNS)
    return table.sort_values(["arch", "factor", "seed"], kind="stable").reset_index(drop=True)


def transfer_table(runs: pd.DataFrame, seed_sd: Mapping[int, float | None],
                   bar_sd: float = TRANSFER_SD) -> pd.DataFrame:
    """results/lr_check/transfer.csv: one row per checked architecture. `seed_sd` maps a token
    budget to the study's pooled seed SD there; without one, `transfers` is left empty (the
    check cannot decide) rather than guessed."""
    rows = []
    for arch, group in runs.groupby("arch", sort=True):
        means = group.groupby("factor")["loss"].mean()
        lrs = group.groupby("factor")["lr"].first()
        if 1.0 not in means.index:
            raise LrCheckError(f"lr check of {arch}: no run at the rule's lr (factor 1)")
        best = float(means.idxmin())
        d = int(group["D"].iloc[0])
        sd = seed_sd.get(d)
        gap = float(means[1.0] - means[best])
        bar = None if sd is None else bar_sd * float(sd)
        rows.append({"arch": arch, "N": group["N"].iloc[0], "x": group["x"].iloc[0],
                     "r": group["r"].iloc[0], "D": d,
                     "seeds": " ".join(str(s) for s in sorted(set(group["seed"]))),
                     "rule_lr": float(lrs[1.0]), "rule_loss": float(means[1.0]),
                     "best_factor": best, "best_lr": float(lrs[best]),
                     "best_loss": float(means[best]), "gap": gap, "seed_sd": sd, "bar": bar,
                     "transfers": None if bar is None else bool(gap <= bar)})
    return pd.DataFrame(rows, columns=TRANSFER_COLUMNS)


def not_transferred(transfer: pd.DataFrame | None) -> dict[str, str]:
    """Architectures the rule's lr does not transfer to, each with one line saying why."""
    if transfer is None or transfer.empty:
        return {}
    out = {}
    for _, row in transfer.iterrows():
        if str(row["transfers"]).lower() == "false":
            out[str(row["arch"])] = (f"{row['arch']}: the rule's lr {row['rule_lr']:.3g} is "
                                     f"{row['gap']:.4f} worse than x{row['best_factor']:g} "
                                     f"(bar {row['bar']:.4f} = {TRANSFER_SD:g} seed SDs)")
    return out
