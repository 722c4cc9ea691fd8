"""Write the science tables of docs/science.md and README.md from the committed study results.

Every number those documents quote about a study's findings sits in a generated block,

    <!-- begin: NAME (tools/science_tables.py) -->
    ...
    <!-- end: NAME -->

whose body this script renders from the committed files (docs/laptop-science/ and
docs/default-study/: forms.json, verdicts.json). Run it after committing new results:

    python tools/science_tables.py          # rewrite the blocks
    python tools/science_tables.py --check  # exit 1 when a block differs (the tests run this)
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

ROOT = Path(__file__).resolve().parents[1]
STUDIES = {"laptop": ROOT / "docs" / "laptop-science", "default": ROOT / "docs" / "default-study"}
DOCUMENTS = (ROOT / "docs" / "science.md", ROOT / "README.md")
BLOCK = re.compile(r"(<!-- begin: (?P<name>[\w-]+) \(tools/science_tables.py\) -->\n)"
                   r"(?P<body>.*?)(<!-- end: (?P=name) -->)", re.S)


def _read(study: str, name: str) -> dict[str, Any]:
    path = STUDIES[study] / name
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


def readme_summary(_: str = "") -> str:
    docs = {study: _read(study, "verdicts.json") for study in ("default", "laptop")}
    lines = ["| finding | default study | laptop science study |", "|---|---|---|"]
    by_study = {s: {f["finding"]: f for f in d["findings"]} for s, d in docs.items()}
    for f in docs["laptop"]["findings"]:
        statement = f["statement"].split(" as the headline form")[0]
        if f["finding"] in ("x_star", "r_star"):
            statement += " (at the checked sizes)"
        cells = [by_study[s].get(f["finding"], {}).get("verdict", "-") for s in docs]
        lines.append(f"| {statement} | {cells[0]} | **{cells[1]}** |")
    lines.append(f"| headline law form | {docs['default']['headline_form']} | "
                 f"{docs['laptop']['headline_form']} |")
    return "\n".join(lines) + "\n"


RENDER: dict[str, Callable[[], str]] = {
    f"{kind}-{study}": (lambda f=func, s=study: f(s))
    for study in STUDIES
    for kind, func in (("verdicts", verdicts_table), ("forms", forms_table),
                       ("headline", headline_table), ("check", check_table),
                       ("margins", margins_table))
}
RENDER["readme-summary"] = readme_summary


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
