"""Result tables as HTML pages people read: rounded to meaningful digits, with their caption.

Why: Snakemake's report offers a CSV only as a download, and the CSVs keep full precision
because later stages read them (17 digits are right for a file, wrong for a reader). The report
shows these pages instead (rule `report_tables`); the CSVs stay as they are. Each column is
explained in docs/outputs.md.
"""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from archscale.io import read_json

SIGNIFICANT = 4  # digits a reader needs to compare two values of one column

STYLE = """<style>
body { font-family: system-ui, sans-serif; font-size: 13px; margin: 12px; }
p.caption { max-width: 70em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; position: sticky; top: 0; }
td.text { text-align: left; }
</style>"""


def readable(value: Any) -> str:
    """One cell: whole numbers as integers with thousands separators, other numbers to
    SIGNIFICANT significant digits, missing values empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)) and float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if isinstance(value, (int, float)):
        return f"{value:.{SIGNIFICANT}g}"
    return str(value)


def html_page(table: pd.DataFrame, title: str, caption: str) -> str:
    """A standalone page: the title, the caption and the table with readable cells."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    rows = []
    for record in table.itertuples(index=False):
        cells = []
        for value in record:
            css = "" if isinstance(value, (int, float)) and not isinstance(value, bool) \
                else ' class="text"'
            cells.append(f"<td{css}>{html.escape(readable(value))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title>{STYLE}</head><body><h3>{html.escape(title)}</h3>"
            f"<p class='caption'>{html.escape(caption)}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            "</body></html>\n")


def _shape(pick: Mapping[str, Any] | None) -> str:
    if not pick:
        return ""
    return (f"{pick['name']} (x {readable(pick['d_over_sqrt_n'])}, "
            f"r {readable(pick['r_mlp_attn'])}, GQA {pick['gqa_group']})")


def _interval(change: Mapping[str, Any] | None) -> str:
    """"[-0.03, 0.004]": a loss change's bootstrap interval, empty when the search gave none."""
    if not change or "low" not in change:
        return ""
    return f"[{readable(change['low'])}, {readable(change['high'])}]"


def recommendations_table(document: Mapping[str, Any]) -> pd.DataFrame:
    """One row per size from recommendations.json: the baseline, the most accurate and the
    fastest-at-the-baseline's-loss shapes, their predicted losses and the speed-up."""
    rows = []
    for rec in document.get("recommendations") or []:
        base, fast = rec.get("baseline") or {}, rec.get("fastest_at_baseline_loss") or {}
        accurate = rec.get("most_accurate") or {}
        rows.append({
            "budget_n_params": int(round(float(rec["budget"]))),
            "tokens": int(round(float(rec.get("tokens", 0)))),
            "baseline": _shape(base),
            "baseline_loss": base.get("predicted_loss"),
            "most_accurate": _shape(accurate),
            "most_accurate_loss": accurate.get("predicted_loss"),
            "fastest_at_baseline_loss": _shape(fast),
            "fastest_loss": fast.get("predicted_loss"),
            "fastest_loss_change_interval": _interval(
                (rec.get("loss_change_vs_baseline") or {}).get("fastest_at_baseline_loss")),
            "speedup_vs_baseline": rec.get("speedup_vs_baseline"),
            "engine_device": f"{rec.get('engine')}/{rec.get('device')}",
            "warnings": " | ".join(rec.get("warnings") or []),
        })
    return pd.DataFrame(rows)


def write_report_tables(pareto: Path, recommendations: Path, runs: Path, quality: Path,
                        out: Mapping[str, Path], captions: Mapping[str, str]) -> None:
    """The report's four HTML tables, one page each. `out` and `captions` share their keys
    (pareto, answer, runs, quality); a caption is the text of the report item's caption file,
    shown on the page so that it reads without a click."""
    pages = {
        "pareto": (pd.read_csv(pareto), "Pareto frontier"),
        "answer": (recommendations_table(read_json(recommendations)), "Recommendations"),
        "runs": (pd.read_csv(runs), "Training runs"),
        "quality": (pd.read_csv(quality), "Fit quality"),
    }
    for key, (table, title) in pages.items():
        path = Path(out[key])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html_page(table, title, " ".join(captions[key].split())))
