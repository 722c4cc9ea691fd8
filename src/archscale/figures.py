"""What the report's figures share: plain tick labels on log axes.

Matplotlib labels a log axis 2x10^3, 3x10^3, ... or not at all between decades; the report's
readers compare token counts and ratios, so every log axis is labelled in plain numbers at 1, 2,
3 and 5 times a power of ten (2,000, 5,000, 0.05).
"""
from __future__ import annotations

import math

from matplotlib.ticker import FuncFormatter


def plain_log_tick(value: float, _pos: object = None) -> str:
    """The label of a log-axis tick: plain at 1, 2, 3 and 5 times a power of ten, else none."""
    if value <= 0:
        return ""
    mantissa = round(value / 10 ** math.floor(math.log10(value)), 6)
    if mantissa not in (1.0, 2.0, 3.0, 5.0):
        return ""
    return f"{value:,.0f}" if value >= 1 else f"{value:g}"


PLAIN_LOG_TICKS = FuncFormatter(plain_log_tick)
