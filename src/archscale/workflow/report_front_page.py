"""The first page of the Snakemake report: the study's answer, its verdicts and every result's
caption, readable without a click.

Why: Snakemake's report opens on the rule graph beside the workflow's global `report:` text and
shows a result's caption only in an info panel. The global text is the one place a reader sees
first, so it carries the answer (the same rows as the console summary, archscale.workflow.
study_answer) and, through the Jinja context Snakemake renders it with (`categories`), each
figure and table with its caption and a link that opens it.

`write_front_page` is called when the Snakefile is read for `snakemake --report` (and again at
the end of a run with `--report-after-run`), so the page always reflects the files as they are.
"""
from __future__ import annotations

from pathlib import Path

from archscale.workflow.study_answer import StudyAnswer, read_answer

# Every report item with its caption, from the Jinja context Snakemake renders this text with
# (categories: category -> subcategory -> results; a result's caption is already HTML). The
# line starts with <div> because Snakemake's Jinja strips the indentation before a block tag,
# which would end the raw directive.
ITEMS_TEMPLATE = """
What is in this report
----------------------

Each result, by category (the menu on the left opens the same ones):

.. raw:: html

   <div>{% for cat, subcats in categories|dictsort %}<h4>{{ cat.name or "Other" }}</h4>{% for subcat, results in subcats|dictsort %}{% for res in results %}<p><a href="javascript:app.showResultInfo('{{ res.path|urlencode }}')"><b>{{ res.name }}</b></a>: {{ res.caption|replace("\\n", " ")|replace("<p>", "")|replace("</p>", " ") }}</p>{% endfor %}{% endfor %}{% endfor %}</div>
"""


# Snakemake's page centres its content vertically in a scrolling box, which hides the top of a
# page taller than the window, and keeps this text to a narrow column: start at the top, wider.
LAYOUT = """.. raw:: html

   <style>div.h-screen.overflow-auto { align-items: flex-start; }
   div.prose.max-w-lg { max-width: 52rem; }</style>

"""


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """An RST list-table (cells may be any text; none may be empty)."""
    out = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        out.append(f"   * - {row[0] or 'n/a'}")
        out += [f"     - {cell or 'n/a'}" for cell in row[1:]]
    return out + [""]


def _answer_section(answer: StudyAnswer) -> list[str]:
    where = f" ({answer.engine} on {answer.device})" if answer.engine else ""
    error = (f"{100 * answer.throughput_error:.0f} %" if answer.throughput_error is not None
             else "not checked")
    lines = [f"Per size, the fastest shape at the baseline's predicted loss{where}. "
             f"Loss change: the pick's predicted loss minus the baseline's, nats/token, with "
             f"its interval over the law's bootstrap refits where the fit has them"
             + (f" (one run's seed-to-seed SD: {answer.seed_sd:.3f})" if answer.seed_sd else "")
             + f". Speed-up: predicted, against the throughput model's mean leave-one-out "
             f"error of {error}; a speed-up within it is *not resolved*. Whether the frontier "
             f"is faster at all is the verdict below, which also asks that both shapes lie "
             f"inside the law's fitted range.", ""]
    rows = []
    for pick in answer.picks:
        if pick.pick is None:
            rows.append([f"{pick.n_params:,}", f"{pick.tokens:,}", pick.baseline,
                         "none reaches the baseline's loss", "", "", "", ""])
            continue
        if pick.pick == pick.baseline:  # nothing is faster at the baseline's loss
            rows.append([f"{pick.n_params:,}", f"{pick.tokens:,}", f"``{pick.baseline}``",
                         "the baseline itself", "0", "1x", "", str(len(pick.warnings))])
            continue
        speed = f"{pick.speedup:.3f}x" if pick.speedup is not None else ""
        resolved = {True: "yes", False: "**not resolved**", None: "unchecked"}[pick.resolved]
        rows.append([f"{pick.n_params:,}", f"{pick.tokens:,}", f"``{pick.baseline}``",
                     f"``{pick.pick}`` (x {pick.x:.3g}, r {pick.r:.3g})",
                     pick.loss_change_text(),
                     speed, resolved, str(len(pick.warnings))])
    return lines + _table(["N (non-embedding)", "tokens", "baseline", "pick", "loss change",
                           "speed-up", "beyond the model's error", "warnings"], rows)


def front_page_rst(results: str | Path = "results") -> str:
    """The report's global text for the study whose outputs are under `results`."""
    answer = read_answer(results)
    lines = ["The answer", "==========", ""]
    if answer.search_done:
        lines += _answer_section(answer)
        lines.append("Each pick's warnings are in ``results/recommendations.json``; the "
                     "frontier is under *Search*.")
        lines.append("")
    lines += ["Verdicts", "--------", ""]
    if answer.verdicts_done:
        lines += [f"One verdict per finding (``results/fits/verdicts.json``; headline law form "
                  f"``{answer.headline_form}``; the rules: ``docs/science.md``). "
                  f"{answer.count('supported')} supported, {answer.count('contradicted')} "
                  f"contradicted, the rest not identified.", ""]
        lines += _table(["finding", "verdict"],
                        [[f.statement, f"**{f.verdict}**" if f.verdict != "not identified"
                          else f.verdict] for f in answer.findings])
    else:
        lines += ["No verdicts yet.", ""]
    for notice in answer.notices:
        lines += [f".. note:: {notice}", ""]
    return LAYOUT + "\n".join(lines) + ITEMS_TEMPLATE


def write_front_page(results: str | Path, path: str | Path) -> Path:
    """Write the front page to `path` (parents created) and return it, absolute."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(front_page_rst(results))
    return path


def report_mode(argv: list[str]) -> str:
    """"report" when this read of the Snakefile only makes a report (`--report`), "after-run"
    with `--report-after-run` (the report follows the run), "" otherwise (a run, a job)."""
    if "--report-after-run" in argv:
        return "after-run"
    if any(arg == "--report" or arg.startswith("--report=") for arg in argv):
        return "report"
    return ""
