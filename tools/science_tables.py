"""Write the science tables of docs/science.md and README.md from the committed study results.

Every number those documents quote about a study's findings sits in a generated block,

    <!-- begin: NAME (tools/science_tables.py) -->
    ...
    <!-- end: NAME -->

whose body this script renders from the committed files (docs/laptop-science/,
docs/default-study/, docs/laptop-loop/ and docs/laptop-loop-2/: forms.json, verdicts.json;
the loop studies' learning-rate checks and rounds, and their last rounds' fits as
"loop-final" and "loop2-final"). Run it after
committing new results:

    python tools/science_tables.py          # rewrite the blocks
    python tools/science_tables.py --check  # exit 1 when a block differs (the tests run this)
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

ROOT = Path(__file__).resolve().parents[1]
LOOP_STUDY = ROOT / "docs" / "laptop-loop"
LOOP2_STUDY = ROOT / "docs" / "laptop-loop-2"
STUDIES = {"laptop": ROOT / "docs" / "laptop-science", "default": ROOT / "docs" / "default-study",
           "loop": LOOP_STUDY, "loop-final": LOOP_STUDY / "loop",
           "loop2": LOOP2_STUDY, "loop2-final": LOOP2_STUDY / "loop"}
DOCUMENTS = (ROOT / "docs" / "science.md", ROOT / "README.md")
BLOCK = re.compile(r"(<!-- begin: (?P<name>[\w-]+) \(tools/science_tables.py\) -->\n)"
                   r"(?P<body>.*?)(<!-- end: (?P=name) -->)", re.S)


def _last_round(folder: Path) -> Path:
    """The loop's last round that refitted (has a verdicts.json)."""
    rounds = sorted((p for p in folder.glob("round*") if (p / "verdicts.json").exists()),
                    key=lambda p: int(p.name[len("round"):]))
    if not rounds:
        raise SystemExit(f"{folder} has no round with a verdicts.json: commit the loop's rounds")
    return rounds[-1]


def _study_dir(study: str) -> Path:
    return _last_round(STUDIES[study]) if study.endswith("-final") else STUDIES[study]


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        raise SystemExit(f"{path} is missing: commit the study's results before generating")
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _read(study: str, name: str) -> dict[str, Any]:
    path = _study_dir(study) / name
    if not path.exists():
        raise SystemExit(f"{path} is missing: commit the study's results before generating")
    return json.loads(path.read_text())


def _num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _interval(ci: Mapping[str, Any] | None) -> str:
    if not ci or ci.get("low") is None or ci.get("high") is None:
        return "-"
    share = ci.get("minimum_share")
    tail = "" if share is None or share >= 0.995 else f" ({share:.0%} minima)"
    return f"{_num(ci['low'])}-{_num(ci['high'])}{tail}"


def verdicts_table(study: str) -> str:
    doc = _read(study, "verdicts.json")
    lines = ["| finding | verdict | why |", "|---|---|---|"]
    for f in doc["findings"]:
        lines.append(f"| {f['statement']} | **{f['verdict']}** | {'; '.join(f['reasons'])} |")
    return "\n".join(lines) + "\n"


def forms_table(study: str) -> str:
    doc = _read(study, "forms.json")
    head = (doc.get("headline") or {}).get("form")
    rejected = doc.get("rejected") or {}
    grid = doc.get("grid") or []
    last = grid[-1] if grid else None
    at = f"at N = {last['N']:.3g}" if last else ""
    lines = [f"| form | RMSE | held-out MSE, leave-one-size-out (progressive) | skill vs no-arch / "
             f"kind-ratio, progressive | x* {at} | r* {at} |", "|---|---|---|---|---|---|"]
    for name, res in doc["forms"].items():
        if "error" in res:
            lines.append(f"| {name} | not fitted: {res['error']} | | | | |")
            continue
        held = res.get("heldout", {})
        loso, prog = held.get("loso", {}), held.get("progressive", {})
        skill = " / ".join(",".join(_num(v, 2) for v in (prog.get(k) or []))
                           for k in ("skill_vs_no_architecture", "skill_vs_kind_ratio"))
        opt = res["optimum_by_size"][-1] if res.get("optimum_by_size") else {}
        tag = " (headline)" if name == head else " (rejected)" if name in rejected else ""
        lines.append(
            f"| {name}{tag} | {_num(res['rmse'])} | {_num(loso.get('mse_mean'))} "
            f"({_num(prog.get('mse_mean'))}) | {skill} | {_num(opt.get('x_star'))} "
            f"[{_interval(opt.get('x_interval'))}] | {_num(opt.get('r_star'))} "
            f"[{_interval(opt.get('r_interval'))}] |")
    for null, res in doc.get("nulls", {}).items():
        lines.append(f"| null: {null} | - | {_num(res.get('loso', {}).get('mse_mean'))} "
                     f"({_num(res.get('progressive', {}).get('mse_mean'))}) | - | - | - |")
    return "\n".join(lines) + "\n"


def headline_table(study: str) -> str:
    doc = _read(study, "forms.json")
    head = doc.get("headline")
    if not head:
        return "No headline form: no held-out fold could be fitted.\n"
    lines = [f"Headline form: **{head['form']}** ({head['reason']}). Reference loss: "
             f"{doc['reference']['source']}.", "",
             "| N | x* | 95 % interval | r* | 95 % interval |", "|---|---|---|---|---|"]
    for e in head["optimum_by_size"]:
        lines.append(f"| {e['N']:.3g} | {_num(e.get('x_star'))} | "
                     f"{_interval(e.get('x_interval'))} | {_num(e.get('r_star'))} | "
                     f"{_interval(e.get('r_interval'))} |")
    return "\n".join(lines) + "\n"


def check_table(study: str) -> str:
    doc = _read(study, "verdicts.json")
    rows = doc.get("optimum_check") or []
    if not rows:
        return "No optimum check in this study.\n"
    lines = ["| N | trained optimum (x, r) | seeds | measured | predicted | gain over base, "
             "measured / predicted | miss | vs best trained |", "|---|---|---|---|---|---|---|---|"]
    for c in rows:
        if c["status"] != "ok":
            lines.append(f"| size {c['size']} | skipped: {c['reason']} | | | | | | |")
            continue
        lines.append(
            f"| {c['N']:.3g} | {c['shape']} ({c['x']:.3g}, {c['r']:.3g}) | {c['n_seeds']} | "
            f"{c['measured']:.4f} | {c['predicted']:.4f} | {c['measured_gain_vs_base']:+.4f} / "
            f"{c['predicted_gain_vs_base']:+.4f} | {c['miss_in_se']:+.1f} SE | "
            f"{c['vs_best']:+.4f} ({c['vs_best_in_se']:+.1f} SE vs {c['best']}) |")
    return "\n".join(lines) + "\n"


def margins_table(study: str) -> str:
    doc = _read(study, "forms.json")
    block = doc.get("margins") or {}
    bar = (block.get("margin_threshold") or {})
    lines = [f"Seed SD (pooled, one run): {_num((block.get('seed_noise') or {}).get('pooled_sd'))}"
             f" nats. Family-wise bar: {_num(bar.get('threshold_se'))} SE over "
             f"{bar.get('comparisons')} comparisons.", "",
             "| N | axis | series' best | below: margin (SE) | above: margin (SE) | clear |",
             "|---|---|---|---|---|---|"]

    def side(v, axis):
        if not v:
            return "none trained"
        return (f"{v['name']} ({axis} {v[axis]:.3g}) {v['margin']:+.3f} "
                f"({_num(v['margin_in_se'], 2)})")

    for e in block.get("optimum_margins") or []:
        for axis in ("x", "r"):
            a = e[axis]
            lines.append(f"| {e['N']:.3g} | {axis} | {a['series_best']['name']} | "
                         f"{side(a['below'], axis)} | {side(a['above'], axis)} | "
                         f"{'yes' if a.get('clear') else 'no'} |")
    return "\n".join(lines) + "\n"


def lr_check_table(study: str) -> str:
    rows = _rows(_study_dir(study) / "lr_check" / "transfer.csv")
    lines = ["| shape (x, r) | rule's lr | its loss | best lr (factor) | best loss | gap | bar "
             "(2 seed SD) | transfers |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arch']} ({float(r['x']):.3g}, {float(r['r']):.3g}) | "
                     f"{float(r['rule_lr']):.4g} | {float(r['rule_loss']):.4f} | "
                     f"{float(r['best_lr']):.4g} (x{float(r['best_factor']):g}) | "
                     f"{float(r['best_loss']):.4f} | {float(r['gap']):.4f} | "
                     f"{_num(float(r['bar'])) if r['bar'] else '-'} | "
                     f"{ {'True': 'yes', 'False': '**no**'}.get(r['transfers'], 'undecided')} |")
    return "\n".join(lines) + "\n"


def rounds_table(folder: Path) -> str:
    rows = _rows(folder / "loop" / "rounds.csv")
    lines = ["| round | decision | runs | device-h spent (of budget) | x* [interval] | "
             "r* [interval] | U in x | U in r | x* | r* |", "|---|---|---|---|---|---|---|---|---|---|"]

    def star(r, axis):
        low, high = r[f"{axis}_star_low"], r[f"{axis}_star_high"]
        value = _num(float(r[f"{axis}_star"])) if r[f"{axis}_star"] else "-"
        return value + (f" [{_num(float(low))}-{_num(float(high))}]" if low and high else "")

    for r in rows:
        lines.append(f"| {r['round']} | {r['reason']} | {r['runs_trained']} | "
                     f"{_num(float(r['spent_after_hours']))} ({_num(float(r['budget_hours']))})"
                     f" | {star(r, 'x')} | {star(r, 'r')} | {r['verdict_u_x']} | "
                     f"{r['verdict_u_r']} | {r['verdict_x_star']} | {r['verdict_r_star']} |")
    return "\n".join(lines) + "\n"


def readme_summary(_: str = "") -> str:
    studies = {"default": "default study", "laptop": "laptop science study",
               "loop-final": "laptop loop study (last round)",
               "loop2": "second laptop loop study (grid and optimum check)"}
    docs = {study: _read(study, "verdicts.json") for study in studies}
    lines = ["| finding | " + " | ".join(studies.values()) + " |",
             "|---|" + "---|" * len(studies)]
    by_study = {s: {f["finding"]: f for f in d["findings"]} for s, d in docs.items()}
    for f in docs["laptop"]["findings"]:
        statement = f["statement"].split(" as the headline form")[0]
        if f["finding"] in ("x_star", "r_star"):
            statement += " (at the checked sizes)"
        cells = [by_study[s].get(f["finding"], {}).get("verdict", "-") for s in docs]
        lines.append(f"| {statement} | " + " | ".join(cells[:-1]) + f" | **{cells[-1]}** |")
    lines.append("| headline law form | " + " | ".join(d["headline_form"] for d in docs.values())
                 + " |")
    return "\n".join(lines) + "\n"


RENDER: dict[str, Callable[[], str]] = {
    f"{kind}-{study}": (lambda f=func, s=study: f(s))
    for study in STUDIES
    for kind, func in (("verdicts", verdicts_table), ("forms", forms_table),
                       ("headline", headline_table), ("check", check_table),
                       ("margins", margins_table))
}
RENDER["readme-summary"] = readme_summary
RENDER["lrcheck-loop"] = lambda: lr_check_table("loop")
RENDER["rounds-loop"] = lambda: rounds_table(LOOP_STUDY)
RENDER["rounds-loop-first"] = lambda: rounds_table(LOOP_STUDY / "first-run")
RENDER["lrcheck-loop2"] = lambda: lr_check_table("loop2")
RENDER["rounds-loop2"] = lambda: rounds_table(LOOP2_STUDY)


def render(text: str) -> str:
    """`text` with every generated block's body re-rendered; an unknown block name fails."""
    def body(match: re.Match) -> str:
        name = match.group("name")
        if name not in RENDER:
            raise SystemExit(f"unknown generated block {name!r}; known: {sorted(RENDER)}")
        return match.group(1) + RENDER[name]() + match.group(4)

    return BLOCK.sub(body, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a document's generated blocks are stale")
    args = parser.parse_args(argv)
    stale = []
    for path in DOCUMENTS:
        text = path.read_text()
        new = render(text)
        if new != text:
            if args.check:
                stale.append(str(path.relative_to(ROOT)))
            else:
                path.write_text(new)
                print(f"rewrote {path.relative_to(ROOT)}")
    if stale:
        print(f"stale generated blocks in {', '.join(stale)}: run python tools/science_tables.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
