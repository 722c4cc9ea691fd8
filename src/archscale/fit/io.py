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
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from archscale.provenance import provenance as project_provenance

CANONICAL = ("N", "D", "loss", "x", "r")
LONG_NAMES = {"N": "n_params_non_embedding", "D": "tokens", "loss": "val_loss",
              "x": "d_over_sqrt_n", "r": "r_mlp_attn"}


class RunsTableError(ValueError):
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
    else:
        path = Path(source)
        if not path.exists():
            raise RunsTableError(f"runs table {path} does not exist")
        table, where = pd.read_csv(path), str(path)
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
