"""Reading run tables (results are written with archscale.io.write_json).

The fitting stages accept two spellings of the same table, so users who bring their own
measurements need not rename anything: results/runs.csv's own columns and short names.

    canonical  runs.csv column            short name
    N          n_params_non_embedding     N
    D          tokens                     D
    loss       val_loss (configurable)    loss
    x          d_over_sqrt_n              x      (or computed as d_model / sqrt(N))
    r          r_mlp_attn                 r

Rows of the same architecture and token budget trained with several seeds are averaged (the
fits model the expected loss; the seed spread is kept in `loss_sd`, the seeds' own losses in
`seed_losses` for archscale.fit.seeds).

A table that also has the shape columns (d_model, n_layers, n_heads, n_kv_heads, head_dim,
ffn_dim), as runs.csv does, must agree with them: N, x and r are recomputed from the shape and a
row that contradicts its own shape is refused (an edited N of 1e300 moved the fitted E from
6.6e-10 to 2.58 without a word).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from archscale.architecture import (SHAPE_FIELDS, attention_params_per_layer,
                                    mlp_params_per_layer)
from archscale.io import TableError, read_table
from archscale.provenance import provenance as project_provenance

CANONICAL = ("N", "D", "loss", "x", "r")
LONG_NAMES = {"N": "n_params_non_embedding", "D": "tokens", "loss": "val_loss",
              "x": "d_over_sqrt_n", "r": "r_mlp_attn"}
#: How far N, x or r may sit from the values its shape columns give: runs.csv rounds x and r to
#: six digits, and a table that counts the norm weights in N (2L+1 vectors of d_model, under
#: 1 % of N for d_model >= 16) still agrees; a typed or pasted wrong value is far outside.
SHAPE_TOLERANCE = 0.02
RUNS_FIX = ("give the runs.csv the workflow writes (results/runs.csv; rebuild it with "
            "`snakemake --cores 2 --forcerun collect_runs`) or a CSV with a row per run and "
            "columns N, D, loss (and x, r for the conditional law)")


class RunsTableError(TableError):
    """A runs table lacks a column the fit needs or holds unusable values."""


def _pick(table: pd.DataFrame, names: Iterable[str]) -> str | None:
    for name in names:
        if name in table.columns:
            return name
    return None


def read_runs(source: str | Path | pd.DataFrame, loss_column: str = "val_loss",
              require: Iterable[str] = ("N", "D", "loss")) -> pd.DataFrame:
    """Read a runs table into the canonical columns N, D, loss (and x, r when present).

    `require` names the canonical columns the caller needs; a missing one is an error naming
    both accepted spellings. Extra columns `name` and `seed` are kept when present; repeated
    seeds of one (name, D) are averaged into one row with `n_seeds`, `loss_sd` and
    `seed_losses` (a tuple of the seeds' losses; one value for a single seed).
    """
    if isinstance(source, pd.DataFrame):
        table, where = source.copy(), "the runs table"
        if table.empty:
            raise RunsTableError(f"{where} has no rows; {RUNS_FIX}")
    else:
        try:
            table = read_table(source, "runs table", RUNS_FIX, min_rows=1)
        except TableError as exc:
            raise RunsTableError(str(exc)) from None
        where = str(source)
    require = tuple(require)
    unknown = [c for c in require if c not in CANONICAL]
    if unknown:
        raise ValueError(f"read_runs: unknown canonical column(s) {unknown}; use {CANONICAL}")
    spellings = {"N": ("n_params_non_embedding", "N"), "D": ("tokens", "D"),
                 "loss": (loss_column, "loss"), "x": ("d_over_sqrt_n", "x"),
                 "r": ("r_mlp_attn", "r")}
    out = pd.DataFrame(index=table.index)
    for canon, names in spellings.items():
        col = _pick(table, names)
        if col is not None:
            out[canon] = pd.to_numeric(table[col], errors="coerce")
    if "x" not in out and "d_model" in table.columns and "N" in out:
        out["x"] = pd.to_numeric(table["d_model"], errors="coerce") / np.sqrt(out["N"])
    missing = [c for c in require if c not in out]
    if missing:
        described = []
        for c in missing:
            alts = " or ".join(repr(n) for n in dict.fromkeys(spellings[c]))
            if c == "x":
                alts += " (or 'd_model' with the N column)"
            described.append(f"{c}: {alts}")
        raise RunsTableError(
            f"{where} is missing column(s) {', '.join(described)}; found columns "
            f"{list(table.columns)}; rename the column (for the loss, name yours with "
            f"fit.loss_column or --loss-column)")
    for c in out.columns:
        bad = ~np.isfinite(out[c].to_numpy(dtype=float)) | (out[c].to_numpy(dtype=float) <= 0)
        if bad.any():
            rows = list(out.index[bad][:5])
            raise RunsTableError(
                f"{where}: column {c} ({LONG_NAMES[c] if c != 'loss' else loss_column}) has "
                f"{int(bad.sum())} missing, non-numeric or non-positive value(s), e.g. at rows "
                f"{rows}; drop or fix those runs before fitting")
    _check_against_shape(table, out, where)
    for extra in ("name", "seed"):
        if extra in table.columns:
            out[extra] = table[extra].to_numpy()
    out["n_seeds"] = 1
    out["loss_sd"] = 0.0
    out["seed_losses"] = [(float(v),) for v in out["loss"]]
    if "seed" in out.columns:
        out["seeds"] = [(int(v),) if pd.notna(v) else () for v in out["seed"]]
    if "name" in out.columns and out.duplicated(["name", "D"]).any():
        keys = ["name", "D"]
        per_seed = ["seed", "seeds", "n_seeds", "loss_sd", "seed_losses"]
        agg = {c: "mean" for c in out.columns if c not in keys + per_seed}
        grouped = out.groupby(keys, sort=False)
        merged = grouped.agg(agg)
        merged["n_seeds"] = grouped.size()
        merged["loss_sd"] = grouped["loss"].std(ddof=1).fillna(0.0)
        merged["seed_losses"] = grouped["loss"].agg(lambda s: tuple(float(v) for v in s))
        if "seed" in out.columns:
            merged["seeds"] = grouped["seed"].agg(lambda s: tuple(int(v) for v in s
                                                                  if pd.notna(v)))
        out = merged.reset_index()
    return out.reset_index(drop=True)


def _check_against_shape(table: pd.DataFrame, out: pd.DataFrame, where: str) -> None:
    """Refuse rows whose N, x or r (in `out`, canonical) contradicts the shape columns of
    `table`, computed as archscale.architecture does (L x (attention + MLP), no embeddings).
    Rows without a complete shape are not checked: the shape columns are optional."""
    if not all(field in table.columns for field in SHAPE_FIELDS):
        return
    shape = {f: pd.to_numeric(table[f], errors="coerce").to_numpy(float) for f in SHAPE_FIELDS}
    layers, d = shape["n_layers"], shape["d_model"]
    attention = layers * attention_params_per_layer(d, shape["n_heads"], shape["n_kv_heads"],
                                                    shape["head_dim"])
    mlp = layers * mlp_params_per_layer(d, shape["ffn_dim"])
    with np.errstate(divide="ignore", invalid="ignore"):
        derived = {"N": attention + mlp, "x": d / np.sqrt(attention + mlp), "r": mlp / attention}
    for canon, expected in derived.items():
        if canon not in out:
            continue
        given = out[canon].to_numpy(float)
        checkable = np.isfinite(expected) & (expected > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            bad = checkable & ~(np.abs(given / expected - 1) <= SHAPE_TOLERANCE)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            column = LONG_NAMES[canon] if LONG_NAMES[canon] in table.columns else canon
            label = ", ".join(f"{k} {table[k].iloc[i]}" for k in ("name", "tokens", "D", "seed")
                              if k in table.columns)
            raise RunsTableError(
                f"{where}: {column} is {given[i]:.6g} at data row {i + 1} ({label}), but that "
                f"row's shape columns ({', '.join(SHAPE_FIELDS)}) give {expected[i]:.6g}; "
                f"{int(bad.sum())} row(s) disagree by more than {SHAPE_TOLERANCE:.0%}. Fix or "
                "drop those rows, or rebuild the table with `snakemake --cores 2 --forcerun "
                "collect_runs`")


RunKey = tuple[str, int, int]   # (architecture, token budget, seed), as a run's files record it


def paired_run(metrics: Mapping[str, Any], evaluation: Mapping[str, Any],
               error: type[Exception] = ValueError) -> tuple[RunKey, dict[str, Any]]:
    """One run's metrics.json and eval.json merged (train_loss; val_loss, val_bpb), keyed by
    the run they record; `error` (the caller's class) when they record different runs."""
    key = (str(metrics["arch"]), int(metrics["tokens_budget"]), int(metrics["seed"]))
    if (str(evaluation["arch"]), int(evaluation["tokens"]), int(evaluation["seed"])) != key:
        raise error(f"metrics.json of {key} was paired with eval.json of "
                    f"{evaluation['arch']}/{evaluation['tokens']}/"
                    f"seed{evaluation['seed']}; pass them in the same order")
    return key, {**metrics, **evaluation}


def run_loss(record: Mapping[str, Any], key: RunKey, loss_column: str,
             error: type[Exception] = ValueError) -> float:
    """fit.loss_column's value in a paired run's record; `error` when it is not a number."""
    if not isinstance(record.get(loss_column), (int, float)):
        raise error(f"fit.loss_column {loss_column!r} is in neither metrics.json nor eval.json "
                    f"of {key[0]}/seed{key[2]}; use train_loss, val_loss or val_bpb")
    return float(record[loss_column])


def canonical_order(table: pd.DataFrame) -> pd.DataFrame:
    """The rows sorted by what they are (N, D, x, r, loss, name, whichever are present), not
    by where they were listed: the bootstraps draw rows by position, so this makes their
    intervals independent of the order of the architectures in config.yaml or of the rows of
    runs.csv."""
    keys = [c for c in ("N", "D", "x", "r", "loss") if c in table.columns]
    names = table["name"].astype(str) if "name" in table.columns else ""
    return (table.assign(_name=names).sort_values(keys + ["_name"], kind="stable")
            .drop(columns="_name").reset_index(drop=True))


def size_groups(n_params: np.ndarray, rel_tol: float = 0.25) -> np.ndarray:
    """Label parameter counts that belong to one nominal model size.

    Variants of one size differ slightly in N (integer shapes miss their target a little), so
    sizes are found by sorting N and starting a new group whenever N exceeds the group's
    smallest member by more than `rel_tol`. Returns integer labels ordered by size.
    """
    n = np.asarray(n_params, dtype=float)
    order = np.argsort(n, kind="stable")
    labels = np.empty(len(n), dtype=int)
    group, start = -1, -np.inf
    for i in order:
        if n[i] > start * (1.0 + rel_tol):
            group, start = group + 1, n[i]
        labels[i] = group
    return labels


def read_epoch_chinchilla(path: str | Path, drop_lowest: int = 5) -> pd.DataFrame:
    """Epoch AI's digitised Chinchilla points as columns N, D, loss.

    D = C / (6 N). Epoch's published fit drops the `drop_lowest` points with the fewest
    tokens per parameter (5), which this reproduces.
    """
    raw = pd.read_csv(path)
    for col in ("Model Size", "Training FLOP", "loss"):
        if col not in raw.columns:
            raise RunsTableError(f"{path}: expected Epoch's column {col!r}")
    n = raw["Model Size"].to_numpy(dtype=float)
    d = raw["Training FLOP"].to_numpy(dtype=float) / (6.0 * n)
    table = pd.DataFrame({"N": n, "D": d, "loss": raw["loss"].to_numpy(dtype=float)})
    if drop_lowest:
        keep = np.argsort(table["D"] / table["N"], kind="stable")[drop_lowest:]
        table = table.iloc[np.sort(keep)]
    return table.reset_index(drop=True)


def provenance(extra: Mapping[str, Any] | None = None, settings: Mapping[str, Any] | None = None,
               inputs: Iterable[str | Path] = ()) -> dict[str, Any]:
    """The project's provenance record (archscale version, commit, packages, host, inputs)
    with the fitting settings, plus any keys the caller adds in `extra`."""

    prov = project_provenance(settings=dict(settings or {}), inputs=list(inputs))
    prov.update(dict(extra or {}))
    return prov
