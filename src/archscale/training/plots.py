"""The report's Training figure: every run's training loss against the tokens it has seen.

Why: the fits read one number per run (the final validation loss), so a run that diverged,
stalled or was still falling steeply hides behind it; the curves show it at a glance.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from archscale.figures import PLAIN_LOG_TICKS, save_figure  # noqa: E402


def plot_training_curves(logs: Sequence[str | Path], runs: Sequence[tuple[str, int, int]],
                         path: str | Path) -> None:
    """One panel per token budget, one line per (architecture, seed); log-scaled tokens.

    logs[i] is the train_log.csv (columns step, tokens, loss, ...) of runs[i] = (architecture,
    token budget, seed).
    """
    token_budgets = sorted({tokens for _, tokens, _ in runs})
    names = sorted({arch for arch, _, _ in runs})
    palette = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    colours = {name: palette(i % palette.N) for i, name in enumerate(names)}
    fig, axes = plt.subplots(1, len(token_budgets), figsize=(4.2 * len(token_budgets) + 1.8, 3.8),
                             squeeze=False, sharey=True)
    for ax, token_budget in zip(axes[0], token_budgets):
        for log, (arch, tokens, seed) in zip(logs, runs):
            if tokens != token_budget:
                continue
            curve = pd.read_csv(log)
            ax.plot(curve["tokens"], curve["loss"], color=colours[arch], lw=1.2,
                    ls="-" if seed == min(s for a, t, s in runs if a == arch) else ":")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(PLAIN_LOG_TICKS)
        ax.xaxis.set_minor_formatter(PLAIN_LOG_TICKS)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_title(f"token budget {token_budget:,}", fontsize=10)
        ax.set_xlabel("training tokens seen (log scale)")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("training loss (nats per token)")
    handles = [Line2D([], [], color=colours[name], lw=1.5, label=name) for name in names]
    fig.legend(handles=handles, loc="center right", fontsize=7, title="architecture",
               title_fontsize=8, ncol=1 + len(names) // 25)
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / fig.get_figwidth(), 1))
    save_figure(fig, path)  # the PNG and an SVG beside it
