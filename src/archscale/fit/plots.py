"""Figures of the fits, for the Snakemake report (matplotlib, Agg backend, PNG).

- `plot_chinchilla`: loss against N and against D, observed points and the fitted law.
- `plot_u_curves`: the U-curves of loss against d/sqrt(N) and r_mlp/attn, each with the rest of
  the law removed as the law's form says (divided out for the multiplicative form, subtracted
  for the additive one), and the fitted curve.
- `plot_predicted_vs_observed`: every run's predicted against observed loss.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from archscale.fit.chinchilla import ChinchillaFit  # noqa: E402
from archscale.fit.conditional import ConditionalFit  # noqa: E402
from archscale.figures import PLAIN_LOG_TICKS, save_figure  # noqa: E402
from archscale.fit.io import size_groups  # noqa: E402


def _save(fig, path: str | Path, notes: list[str] | None = None) -> None:
    """Write the PNG; `notes` (the fit's warnings) are printed under the axes for the report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    if notes:
        lines = [textwrap.fill("Warning: " + note, 150) for note in notes]
        text = "\n".join(lines)
        height = fig.get_figheight()
        extra = 0.16 * text.count("\n") + 0.3
        fig.set_figheight(height + extra)
        fig.subplots_adjust(bottom=(extra + 0.5) / (height + extra))
        fig.text(0.01, 0.01, text, fontsize=7, color="darkred", va="bottom", ha="left")

    save_figure(fig, path, dpi=120)  # the PNG and an SVG beside it


def _levels(values: np.ndarray, k: int = 4) -> np.ndarray:
    uniq = np.unique(values)
    if len(uniq) <= k:
        return uniq
    return np.exp(np.quantile(np.log(values), np.linspace(0.1, 0.9, k)))


def plot_chinchilla(fit: ChinchillaFit, path: str | Path) -> None:
    """Loss vs N (colour: D) and loss vs D (colour: N), with the law at a few fixed values."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    n, d, loss, law = fit.n, fit.d, fit.loss, fit.law
    for ax, var, other, label, other_label in ((axes[0], n, d, "N (parameters)", "D"),
                                               (axes[1], d, n, "D (tokens)", "N")):
        sc = ax.scatter(var, loss, c=np.log10(other), cmap="viridis", s=14)
        grid = np.geomspace(var.min() / 1.5, var.max() * 1.5, 200)
        cmap = plt.get_cmap("viridis")
        span = np.ptp(np.log10(other)) or 1.0
        for level in _levels(other):
            curve = law(grid, level) if other_label == "D" else law(level, grid)
            ax.plot(grid, curve, color=cmap((np.log10(level) - np.log10(other).min()) / span),
                    lw=1.2)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(PLAIN_LOG_TICKS)
        ax.xaxis.set_minor_formatter(PLAIN_LOG_TICKS)
        ax.tick_params(axis="x", which="both", labelsize=8)
        ax.set_xlabel(label + ", log scale")
        ax.set_ylabel("loss (nats per token)")
        fig.colorbar(sc, ax=ax, label=f"log10 {other_label}")
    c = law.as_dict()
    fig.suptitle(f"Chinchilla fit: E {c['E']:.4g}, A {c['A']:.4g}, B {c['B']:.4g}, "
                 f"alpha {c['alpha']:.4g}, beta {c['beta']:.4g}")
    _save(fig, path, notes=fit.warnings)


def plot_u_curves(fit: ConditionalFit, path: str | Path) -> None:
    """Loss with the rest of the law removed, against x and r, with the fitted curve; the law's
    form says how to remove the rest (archscale.fit.forms.base.LawForm.split)."""
    t = fit.table
    law = fit.law
    used = t["used"].to_numpy()
    x, r, loss, lo = (t[c].to_numpy(dtype=float) for c in ("x", "r", "loss", "l_opt"))
    split = law.law_form.split(law.coefs, x, r, loss, lo,
                               **law.law_form.n_keyword(t["N"].to_numpy(dtype=float)))
    sizes = size_groups(t["N"].to_numpy(), fit.size_tol)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    opt = law.optimum()
    for ax, axis, var, name in ((axes[0], "x", x, "d / sqrt(N)"),
                                (axes[1], "r", r, "r = MLP / attention params")):
        y, star = split[axis].observed, opt[axis].star
        for s in np.unique(sizes):
            sel = sizes == s
            ax.scatter(var[sel & used], y[sel & used], s=18,
                       label=f"N ~ {np.exp(np.log(t['N'][sel]).mean()):.3g}")
            if (sel & ~used).any():
                ax.scatter(var[sel & ~used], y[sel & ~used], s=18, marker="x", color="grey")
        grid = np.geomspace(var.min() / 1.3, var.max() * 1.3, 200)
        ax.plot(grid, split[axis].curve(grid), color="black", lw=1.5, label="fitted factor")
        if opt[axis].is_minimum:
            outside = not var[used].min() < star < var[used].max()
            ax.axvline(star, color="red", ls="--", lw=1,
                       label=f"optimum {star:.3g}" + (" (extrapolated)" if outside else ""))
        else:
            ax.plot([], [], " ", label="fitted factor has no minimum")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(PLAIN_LOG_TICKS)
        ax.xaxis.set_minor_formatter(PLAIN_LOG_TICKS)
        ax.set_xlabel(name)
        ax.set_ylabel(split[axis].label)
        ax.legend(fontsize=7)
    # name the grey crosses only when there are some
    dropped = "; grey x: outside r_range, not fitted" if (~used).any() else ""
    fig.suptitle(f"Conditional law ({law.form}){dropped}")
    _save(fig, path, notes=fit.warnings)


def plot_predicted_vs_observed(fit: ConditionalFit, path: str | Path) -> None:
    """Predicted against observed loss; the diagonal is a perfect fit."""
    t = fit.table
    used = t["used"].to_numpy()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(t["loss"][used], t["predicted"][used], s=18, label="fitted runs")
    if (~used).any():
        ax.scatter(t["loss"][~used], t["predicted"][~used], s=18, marker="x", color="grey",
                   label="outside r_range")
    lo = float(min(t["loss"].min(), t["predicted"].min()))
    hi = float(max(t["loss"].max(), t["predicted"].max()))
    ax.plot([lo, hi], [lo, hi], color="black", lw=1)
    ax.set_xlabel("observed loss (nats per token)")
    ax.set_ylabel("predicted loss (nats per token)")
    ax.set_title(f"RMSE {fit.fit_info['rmse']:.4g} on {fit.fit_info['n_points']} runs")
    ax.legend(fontsize=8)
    _save(fig, path)
