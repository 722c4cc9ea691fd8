"""The frontier figure: candidates, the Pareto frontier, baseline, recommendations, trained runs.

Each panel is zoomed to what a reader decides with: the frontier, the baseline, the recommended
shapes and the configured ones. Candidates far outside (the law evaluated well beyond its data
predicts losses several times the frontier's) would squeeze the frontier into a corner; the
title counts how many are in view. Speed is drawn relative to the panel's baseline (1.0 = as
fast as the baseline) on an axis at least +-5 % tall, so a 1 % difference looks like one, and
the panels sit two to a row so each stays readable in the report.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from archscale.figures import save_figure


def plot_frontier(candidates: pd.DataFrame, pareto: pd.DataFrame,
                  recommendations: list[dict[str, Any]], trained: pd.DataFrame | None,
                  path: str | Path) -> None:
    """One panel per parameter budget: predicted loss (x) against predicted tokens/s (y)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted(candidates.budget.unique())
    columns = min(2, len(budgets))
    rows = -(-len(budgets) // columns)
    spare_row = 0.0 if len(budgets) < rows * columns else 0.6  # room for the legend below
    fig, grid = plt.subplots(rows, columns, figsize=(5.6 * columns, 4.3 * rows + spare_row),
                             squeeze=False)
    axes = list(grid.flat)
    for ax in axes[len(budgets):]:
        ax.set_visible(False)
    for ax, budget in zip(axes, budgets):
        rec = next((r for r in recommendations if r["budget"] == budget), None)
        scale = 1.0
        if rec and "baseline" in rec and rec["baseline"].get("predicted_tokens_per_s"):
            scale = float(rec["baseline"]["predicted_tokens_per_s"])
        cand = _relative(candidates[candidates.budget == budget], scale)
        front = _relative(pareto[pareto.budget == budget], scale).sort_values("predicted_loss")
        rec = _relative_rec(rec, scale)
        near = None
        if trained is not None and not trained.empty:
            near = _relative(trained[(trained.n_params_non_embedding / budget).between(
                1 / 1.3, 1.3)], scale)
        (x_lo, x_hi), (y_lo, y_hi) = _view(front, rec, near, min_span=0.1 if scale != 1.0
                                           else 0.0)
        in_view = (cand.predicted_loss.between(x_lo, x_hi)
                   & cand.predicted_tokens_per_s.between(y_lo, y_hi))
        ax.scatter(cand.predicted_loss, cand.predicted_tokens_per_s, s=4, c="0.8",
                   label="scored candidates",
                   rasterized=True)
        ax.plot(front.predicted_loss, front.predicted_tokens_per_s, "o-", ms=3, c="tab:blue",
                label="Pareto frontier")
        if scale != 1.0:
            ax.axhline(1.0, c="0.4", lw=0.8, ls="--")
        if rec:
            for key, marker, color, label in (
                    ("baseline", "s", "black", "baseline"),
                    ("most_accurate", "^", "tab:green", "most accurate"),
                    ("fastest_at_baseline_loss", "*", "tab:red",
                     "fastest at baseline loss (baseline's GQA)")):
                if key in rec:
                    ax.scatter([rec[key]["predicted_loss"]], [rec[key]["predicted_tokens_per_s"]],
                               marker=marker, s=90, c=color, label=label, zorder=5)
        if near is not None and not near.empty:
            ax.scatter(near.predicted_loss, near.predicted_tokens_per_s, marker="x",
                       c="tab:orange", label="configured architectures (predicted)", zorder=4)
            if len(near) <= 8 and "architecture" in near:  # named: e.g. the paper's Table 1
                for _, row in near.iterrows():
                    ax.annotate(str(row["architecture"]), (row.predicted_loss, row.predicted_tokens_per_s),
                                fontsize=7, color="tab:orange", xytext=(4, 3),
                                textcoords="offset points", clip_on=True)
        ax.set_xlim(x_lo, x_hi)
        ax.set_ylim(y_lo, y_hi)
        ax.set_title(f"N = {budget:,.0f}: frontier of {len(front)}; {int(in_view.sum())} of "
                     f"{len(cand)} candidates in view", fontsize=9)
        ax.set_xlabel("predicted loss (nats per token)")
        ax.set_ylabel("predicted output tokens/s\nrelative to the baseline" if scale != 1.0
                      else "predicted output tokens/s")
        ax.grid(alpha=0.3)
    legend = {}
    for ax in axes[:len(budgets)]:
        handles, labels = ax.get_legend_handles_labels()
        legend.update(zip(labels, handles))
    if len(budgets) < len(axes):  # the empty panel holds the legend
        spare = axes[-1]
        spare.set_visible(True)
        spare.axis("off")
        spare.legend(legend.values(), legend.keys(), loc="center", fontsize=9)
        fig.tight_layout()
    else:
        fig.legend(legend.values(), legend.keys(), loc="lower center",
                   ncol=min(3, len(legend)), fontsize=8)
        fig.tight_layout(rect=(0, 0.6 / (4.3 * rows + 0.6) + 0.04, 1, 1))
    save_figure(fig, path)  # the PNG and an SVG beside it


def _relative(table: pd.DataFrame, scale: float) -> pd.DataFrame:
    """The table with predicted_tokens_per_s divided by `scale` (the baseline's speed)."""
    table = table.copy()
    table["predicted_tokens_per_s"] = table["predicted_tokens_per_s"] / scale
    return table


def _relative_rec(rec: dict[str, Any] | None, scale: float) -> dict[str, Any] | None:
    """A recommendation whose picks' predicted_tokens_per_s are divided by `scale`."""
    if rec is None:
        return None
    out = dict(rec)
    for key in ("baseline", "most_accurate", "fastest_at_baseline_loss"):
        if key in rec:
            out[key] = {**rec[key], "predicted_tokens_per_s":
                        rec[key]["predicted_tokens_per_s"] / scale}
    return out


def _view(front: pd.DataFrame, rec: dict[str, Any] | None, near: pd.DataFrame | None,
          min_span: float = 0.0) -> tuple[tuple[float, float], tuple[float, float]]:
    """Axis limits around the frontier, the recommendation's shapes and the configured ones,
    with a 15 % margin on each side; the speed axis is at least `min_span` tall."""
    losses = list(front.predicted_loss)
    speeds = list(front.predicted_tokens_per_s)
    for key in ("baseline", "most_accurate", "fastest_at_baseline_loss"):
        if rec and key in rec:
            losses.append(rec[key]["predicted_loss"])
            speeds.append(rec[key]["predicted_tokens_per_s"])
    if near is not None and not near.empty:
        losses += list(near.predicted_loss)
        speeds += list(near.predicted_tokens_per_s)

    def padded(values: list[float]) -> tuple[float, float]:
        lo, hi = min(values), max(values)
        pad = 0.15 * (hi - lo) or 0.02 * abs(hi) or 1.0
        return lo - pad, hi + pad

    y_lo, y_hi = padded(speeds)
    if y_hi - y_lo < min_span:
        middle = (y_lo + y_hi) / 2
        y_lo, y_hi = middle - min_span / 2, middle + min_span / 2
    return padded(losses), (y_lo, y_hi)


def plot_loop_rounds(rounds: pd.DataFrame, path: str | Path) -> None:
    """The closed loop's x* and r* with their intervals, one point per round's fit (round k's
    point is the fit round k decided from: round 1's is the study's own), so a reader sees the
    intervals narrow, or not, as the device-hours are spent. A fit without an interval (its
    bootstrap found no minimum often enough) is drawn hollow and says so."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.0), squeeze=False)
    spent = (rounds["spent_after_hours"] - rounds["device_hours"]).to_numpy()
    for ax, axis, label in zip(axes[0], ("x", "r"), ("x* = d/sqrt(N)", "r* = MLP/attention")):
        star = rounds[f"{axis}_star"].to_numpy(dtype=float)
        low = rounds[f"{axis}_star_low"].to_numpy(dtype=float)
        high = rounds[f"{axis}_star_high"].to_numpy(dtype=float)
        has = ~(pd.isna(low) | pd.isna(high))
        k = rounds["round"].to_numpy()
        # a percentile interval need not hold the fitted optimum (a skewed bootstrap puts it
        # outside), so the interval is drawn as its own bar, not as error around the point
        ax.vlines(k[has], low[has], high[has], color="tab:blue", lw=2, alpha=0.5,
                  label="bootstrap interval")
        ax.plot(k[has], star[has], "o", color="tab:blue", label="fitted optimum")
        ax.plot(k[~has], star[~has], "o", mfc="none", color="tab:blue",
                label="no interval (too few bootstrap minima)")
        for i in range(len(k)):
            top = np.nanmax([high[i], star[i]]) if has[i] else star[i]
            ax.annotate(f"{spent[i]:.2g} h", (k[i], top), textcoords="offset points",
                        xytext=(0, 5), ha="center", fontsize=7)
        ax.set_xticks(list(k))
        ax.margins(x=0.15, y=0.15)  # room for the labels above the points
        ax.set_xlabel("round (round 1: the study's fit; then each refit)")
        ax.set_ylabel(label)
        if axis == "r" and (star[~pd.isna(star)] > 0).all():
            ax.set_yscale("log")
        ax.legend(fontsize=7, loc="best")
    fig.suptitle("The closed loop: the optimum before each round "
                 "(device-hours the loop had spent, above each point)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    save_figure(fig, path)
