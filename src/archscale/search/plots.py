"""The frontier figure: candidates, the Pareto frontier, baseline, recommendations, trained runs.

Each panel is zoomed to what a reader decides with: the frontier, the baseline, the recommended
shapes and the configured ones. Candidates far outside (the law evaluated well beyond its data
predicts losses several times the frontier's) would squeeze the frontier into a corner; the
legend counts how many are out of view.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from archscale.io import atomic_path


def plot_frontier(candidates: pd.DataFrame, pareto: pd.DataFrame,
                  recommendations: list[dict[str, Any]], trained: pd.DataFrame | None,
                  path: str | Path) -> None:
    """One panel per parameter budget: predicted loss (x) against predicted tokens/s (y)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted(candidates.budget.unique())
    fig, axes = plt.subplots(1, len(budgets), figsize=(5.2 * len(budgets), 4.2), squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        cand = candidates[candidates.budget == budget]
        front = pareto[pareto.budget == budget].sort_values("predicted_loss")
        rec = next((r for r in recommendations if r["budget"] == budget), None)
        near = None
        if trained is not None and not trained.empty:
            near = trained[(trained.n_params_non_embedding / budget).between(1 / 1.3, 1.3)]
        (x_lo, x_hi), (y_lo, y_hi) = _view(front, rec, near)
        in_view = (cand.predicted_loss.between(x_lo, x_hi)
                   & cand.predicted_tokens_per_s.between(y_lo, y_hi))
        ax.scatter(cand.predicted_loss, cand.predicted_tokens_per_s, s=4, c="0.8",
                   label="scored candidates",
                   rasterized=True)
        ax.plot(front.predicted_loss, front.predicted_tokens_per_s, "o-", ms=3, c="tab:blue",
                label="Pareto frontier")
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
        ax.set_xlim(x_lo, x_hi)
        ax.set_ylim(y_lo, y_hi)
        ax.set_title(f"N = {budget:,.0f}: frontier of {len(front)}; {int(in_view.sum())} of "
                     f"{len(cand)} candidates in view", fontsize=9)
        ax.set_xlabel("predicted loss (nats per token)")
        ax.set_ylabel("predicted output tokens/s")
        ax.grid(alpha=0.3)
    legend = {}
    for ax in axes[0]:
        handles, labels = ax.get_legend_handles_labels()
        legend.update(zip(labels, handles))
    fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=len(legend), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _view(front: pd.DataFrame, rec: dict[str, Any] | None, near: pd.DataFrame | None
          ) -> tuple[tuple[float, float], tuple[float, float]]:
    """Axis limits around the frontier, the recommendation's shapes and the configured ones,
    with a 15 % margin on each side."""
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

    return padded(losses), padded(speeds)
