"""The frontier figure: candidates, the Pareto frontier, baseline, recommendations, trained runs."""
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
        ax.scatter(cand.predicted_loss, cand.predicted_tokens_per_s, s=4, c="0.8",
                   label=f"candidates ({len(cand)})", rasterized=True)
        ax.plot(front.predicted_loss, front.predicted_tokens_per_s, "o-", ms=3, c="tab:blue",
                label=f"Pareto frontier ({len(front)})")
        rec = next((r for r in recommendations if r["budget"] == budget), None)
        if rec:
            for key, marker, color, label in (
                    ("baseline", "s", "black", "baseline"),
                    ("most_accurate", "^", "tab:green", "most accurate"),
                    ("fastest_at_baseline_loss_after_gqa_search", "*", "tab:red",
                     "fastest at baseline loss")):
                if key in rec:
                    ax.scatter([rec[key]["predicted_loss"]], [rec[key]["predicted_tokens_per_s"]],
                               marker=marker, s=90, c=color, label=label, zorder=5)
        if trained is not None and not trained.empty:
            near = trained[(trained.n_params_non_embedding / budget).between(1 / 1.3, 1.3)]
            if not near.empty:
                ax.scatter(near.predicted_loss, near.predicted_tokens_per_s, marker="x", c="tab:orange",
                           label="configured architectures (predicted)", zorder=4)
        ax.set_title(f"N = {budget:,.0f}")
        ax.set_xlabel("predicted loss")
        ax.set_ylabel("predicted output tokens/s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
