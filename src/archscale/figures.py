"""What the report's figures share: plain tick labels on log axes, and how a figure is saved.

Matplotlib labels a log axis 2x10^3, 3x10^3, ... or not at all between decades; the report's
readers compare token counts and ratios, so every log axis is labelled in plain numbers at 1, 2,
3 and 5 times a power of ten (2,000, 5,000, 0.05), short from 10,000 up (20k, 3M) so that
neighbouring labels do not overlap.

Every figure is written twice: a PNG for the report and an SVG beside it (same name), which a
paper can scale without blur.
"""
from __future__ import annotations

import math
from pathlib import Path

from matplotlib.ticker import FuncFormatter

from archscale.io import atomic_path


def plain_log_tick(value: float, _pos: object = None) -> str:
    """The label of a log-axis tick: plain at 1, 2, 3 and 5 times a power of ten, else none."""
    if value <= 0:
        return ""
    mantissa = round(value / 10 ** math.floor(math.log10(value)), 6)
    if mantissa not in (1.0, 2.0, 3.0, 5.0):
        return ""
    if value >= 1e9:  # short forms from 10,000 up keep neighbouring labels apart
        return f"{value / 1e9:g}B"
    if value >= 1e6:
        return f"{value / 1e6:g}M"
    if value >= 1e4:
        return f"{value / 1e3:g}k"
    return f"{value:,.0f}" if value >= 1 else f"{value:g}"


PLAIN_LOG_TICKS = FuncFormatter(plain_log_tick)


def vector_path(path: str | Path) -> Path:
    """Where the SVG copy of the figure at `path` goes: the same name, suffix .svg."""
    return Path(path).with_suffix(".svg")


def save_figure(fig, path: str | Path, dpi: int = 110) -> None:
    """Write `fig` as the PNG at `path` and as an SVG beside it, each atomically (a kill never
    leaves a truncated file); the figure is closed."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, dpi=dpi)
    with atomic_path(vector_path(path), suffix=".svg") as tmp:
        fig.savefig(tmp, format="svg")
    plt.close(fig)
