"""What a finished run says, in a few lines at the end of the console (the Snakefile's
`onsuccess`).

Why: the answer of a study is spread over recommendations.json, verdicts.json and the
throughput calibration; a user who ran one command should not have to open a 24 KB JSON file
to learn which shape to use and whether the speed-up is larger than the throughput model's
error. Reads only finished outputs; a missing or older file is named with the command that
brings it up to date, and nothing here can fail a run.
"""
from __future__ import annotations

from pathlib import Path

from archscale.workflow.study_answer import SizePick, StudyAnswer, read_answer


def _pick_line(pick: SizePick, answer: StudyAnswer) -> str:
    """One size's answer: the baseline, the fastest shape at its predicted loss, the predicted
    loss change and the speed-up, and whether the speed-up is larger than the model's error."""
    head = f"  N {pick.n_params:,} ({pick.tokens:,} tokens), baseline {pick.baseline}: "
    if pick.pick is None:
        return head + "no frontier shape reaches the baseline's predicted loss"
    if pick.pick == pick.baseline:
        return head + "nothing is faster at its predicted loss"
    line = f"{head}{pick.pick} (x {pick.x:.2g}, r {pick.r:.3g})"
    if pick.loss_change is not None:
        line += f", loss {pick.loss_change_text()}"
    if pick.speedup is not None:
        line += f", {pick.speedup:.3f}x the baseline's speed"
        if pick.resolved is False:
            line += f" (not resolved: model error {100 * answer.throughput_error:.0f} %)"
    if pick.warnings:
        line += f"; {len(pick.warnings)} warning{'s' if len(pick.warnings) > 1 else ''}"
    return line


def summary_lines(results: str | Path = "results") -> list[str]:
    """The lines printed at the end of a successful run; empty when no search has finished."""
    answer = read_answer(results)
    if not answer.search_done:
        return [] if not Path(results, "recommendations.json").exists() else \
            ["", *[n for n in answer.notices if "recommendations.json" in n]]
    where = f" on {answer.engine}/{answer.device}" if answer.engine else ""
    lines = ["", f"What this study says (results/recommendations.json){where}:",
             "the fastest shape at the baseline's predicted loss, per size (loss: its predicted "
             "change, nats/token, [its bootstrap interval]"
             + (f"; one run's seed SD is {answer.seed_sd:.3f}" if answer.seed_sd else "") + "); "
             + ("speed-ups within the throughput model's mean leave-one-out error are not "
                "resolved" if answer.throughput_error is not None
                else "the throughput model was not checked")]
    lines += [_pick_line(pick, answer) for pick in answer.picks]
    if answer.verdicts_done:
        n = len(answer.findings)
        lines.append(f"verdicts (headline law form {answer.headline_form}): "
                     f"{answer.count('supported')} supported, {answer.count('contradicted')} "
                     f"contradicted, {n - answer.count('supported') - answer.count('contradicted')}"
                     " not identified")
        lines += [f"  {f.verdict}: {f.statement}" for f in answer.findings
                  if f.verdict in ("supported", "contradicted")]
    lines += [f"note: {notice}" for notice in answer.notices]
    lines.append("details: `archscale summary`, `archscale verdicts`, "
                 "results/recommendations.json (each pick's warnings), "
                 "`snakemake --report results/report.html`")
    return lines


def print_summary(results: str | Path = "results") -> None:
    """Print the summary; any problem reading the results becomes one line, never an error."""
    try:
        lines = summary_lines(results)
    except Exception as error:  # a summary must never turn a finished run into a failed one
        lines = [f"(no summary: {type(error).__name__}: {error})"]
    for line in lines:
        print(line)
