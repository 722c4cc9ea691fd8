"""The report's Throughput figure: measured against predicted tokens/s, per engine.

Why: the search ranks shapes nobody measured by the model's prediction, so the report shows how
close the model came on the shapes that were measured, in-sample and left out of the fit.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from archscale.figures import PLAIN_LOG_TICKS, save_figure  # noqa: E402


def plot_measured_vs_predicted(table: pd.DataFrame, path: str | Path) -> None:
    """One panel per engine of results/throughput.csv: each architecture's measured output
    tokens/s against the calibrated prediction (filled) and the leave-one-out one (open)."""
    engines = sorted(table["engine"].unique())
    fig, axes = plt.subplots(1, len(engines), figsize=(4.6 * len(engines), 4.2), squeeze=False)
    for ax, engine in zip(axes[0], engines):
        sub = table[table["engine"] == engine]
        measured = sub["measured_output_tokens_per_s"].to_numpy(float)
        fitted = sub["predicted_output_tokens_per_s"].to_numpy(float)
        loo = sub["loo_predicted_output_tokens_per_s"].to_numpy(float)
        values = np.concatenate([measured, fitted, loo])
        lo, hi = values[values > 0].min() / 1.3, values.max() * 1.3
        ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--", label="prediction = measurement")
        ax.scatter(measured, fitted, s=22, color="tab:blue", label="calibrated prediction")
        ax.scatter(measured, loo, s=22, facecolors="none", edgecolors="tab:red",
                   label="left out of the fit")
        for name, x, y in zip(sub["architecture"], measured, fitted):
            ax.annotate(name, (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # plain labels at 1, 2, 3, 5 x 10^k, never crowded
            axis.set_major_formatter(PLAIN_LOG_TICKS)
            axis.set_minor_formatter(PLAIN_LOG_TICKS)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        error = 100 * sub["loo_relative_error"].abs().mean()
        ax.set_title(f"{engine} on {sub['preset'].iloc[0]}: leave-one-out error {error:.0f} %",
                     fontsize=9)
        ax.set_xlabel("measured output tokens/s (log scale)")
        ax.set_ylabel("predicted output tokens/s (log scale)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    save_figure(fig, path)  # the PNG and an SVG beside it
