"""Simulate the closed loop against a uniform extension of the starting grid (issue 28).

Reads the committed laptop science study (docs/laptop-science/: its fitted law, seed noise,
runs and their wall times) and its config (sequence length, threads), draws losses from the
known law, and writes docs/design-simulation/: per scenario a row per (repeat, design)
(repeats.csv) and a row per loop round (rounds.csv), summary.json and README.md. The method is
archscale.search.design_simulation's docstring.

    python tools/simulate_designs.py                      # the committed run
    python tools/simulate_designs.py --repeats 3 --out /tmp/sim   # a quick look

Scenarios: `seed-noise` (losses are the law plus Normal seed noise: the form is right) and
`misfit` (plus a persistent per-shape deviation of the size the study's residuals show).
One process, one thread: numpy's BLAS is held to one thread before it loads.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Mapping  # noqa: E402

import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from archscale.search.design_loop import LoopSettings  # noqa: E402
from archscale.search.design_simulation import (laptop_setup, misfit_sd, simulate,  # noqa: E402
                                                summarise)

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ("seed-noise", "misfit")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--study", default="docs/laptop-science", help="committed study results")
    p.add_argument("--config", default="configs/laptop-science.yaml", help="the study's config")
    p.add_argument("--out", default="docs/design-simulation")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap", type=int, default=200, help="draws of every refit")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--budget-hours", type=float, default=0.6)
    p.add_argument("--runs-per-round", type=int, default=8)
    p.add_argument("--sizes", type=float, nargs="+", default=[32000, 64000, 128000])
    p.add_argument("--tokens", type=float, default=1_280_000)
    p.add_argument("--eval-seconds", type=float, default=4.0,
                   help="an evaluate job's duration (docs/laptop-science/README.md: 4.0 s)")
    p.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    return p.parse_args(argv)


def study_inputs(args: argparse.Namespace) -> tuple[dict[str, Any], pd.DataFrame, int, int]:
    """The study's conditional.json, runs.csv, sequence length and training threads."""
    study = ROOT / args.study
    conditional = json.loads((study / "conditional.json").read_text())
    runs = pd.read_csv(study / "runs.csv")
    config = yaml.safe_load((ROOT / args.config).read_text())
    return (conditional, runs, int(config["data"]["seq_len"]),
            int(config["training"].get("threads") or 1))


def run_scenario(name: str, args: argparse.Namespace, loop: LoopSettings) -> dict[str, Any]:
    conditional, runs, seq_len, threads = study_inputs(args)
    shape_sd = misfit_sd(conditional) if name == "misfit" else 0.0
    setup = laptop_setup(conditional, runs, loop, seq_len=seq_len,
                         eval_seconds=args.eval_seconds, sizes=args.sizes, tokens=args.tokens,
                         train_devices=threads, eval_devices=1, bootstrap=args.bootstrap,
                         shape_sd=shape_sd)
    started = time.perf_counter()

    def progress(repeat: int, rows: list[dict[str, Any]]) -> None:
        widths = "  ".join(f"{r['design']} x {r['x_width']:.4f} r {r['r_width']:.4f}"
                           for r in rows)
        print(f"[{name}] repeat {repeat + 1}/{args.repeats} "
              f"({time.perf_counter() - started:.0f} s): {widths}", flush=True)

    table, rounds = simulate(setup, args.repeats, seed=args.seed, progress=progress)
    out = ROOT / args.out / name
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "repeats.csv", index=False)
    rounds.to_csv(out / "rounds.csv", index=False)
    truth = setup.truth.optimum()
    return {"shape_sd": shape_sd, "seed_sd": setup.seed_sd,
            "start_runs": len(setup.start),
            "start_hours": float(setup.start["cost_device_hours"].sum()),
            "true_optimum": {a: truth[a].star for a in truth},
            "known_l_opt": setup.truth.chinchilla.as_dict(),
            "cost_model": setup.cost.describe(),
            "wall_s": round(time.perf_counter() - started, 1), **summarise(table, rounds)}


def _width(entry: Mapping[str, Any]) -> str:
    return f"{entry['median']:.3g} ({entry['q25']:.3g}-{entry['q75']:.3g})"


def markdown(summary: Mapping[str, Any]) -> str:
    """README.md: the command, the settings and one table per scenario."""
    lines = ["# The loop against a uniform extension (simulated)", "",
             "Written by `tools/simulate_designs.py` (method: "
             "`archscale.search.design_simulation`; reading: docs/science.md). Command:", "",
             "```bash", summary["command"], "```", "",
             f"Wall time {summary['wall_s']:.0f} s on one core.", ""]
    for name, s in summary["scenarios"].items():
        lines += [f"## {name}", "",
                  f"{s['repeats']} repeats; seed SD {s['seed_sd']:.4f}, per-shape deviation "
                  f"{s['shape_sd']:.4f}; start: {s['start_runs']} runs, "
                  f"{s['start_hours']:.3f} device-hours; true x* {s['true_optimum']['x']:.4f}, "
                  f"r* {s['true_optimum']['r']:.4f}.", "",
                  "| design | runs added | device-hours added | x* width, median (IQR) | "
                  "r* width, median (IQR) | x* in interval | r* in interval | U in x supported "
                  "| U in r supported |", "|---|---|---|---|---|---|---|---|---|"]
        for design, d in s["designs"].items():
            lines.append(f"| {design} | {d['runs_added_median']:.0f} | "
                         f"{d['hours_added_median']:.3f} | {_width(d['x_width'])} | "
                         f"{_width(d['r_width'])} | {d['x_contains_truth']:.0%} | "
                         f"{d['r_contains_truth']:.0%} | {d['u_x_supported']:.0%} | "
                         f"{d['u_r_supported']:.0%} |")
        steps = ", ".join(f"{r['x_width_median']:.3g} / {r['r_width_median']:.3g}"
                          f" ({r['repeats']})" for r in s.get("loop_rounds", []))
        lines += ["", "The loop's median x* / r* widths after 0, 1, 2... rounds (repeats that "
                      f"reached that round): {steps}."]
        share = s["loop_narrower_share"]
        lines += ["", f"The loop's interval is the narrower in {share['x']:.0%} of repeats "
                      f"for x*, {share['r']:.0%} for r*. Files: `{name}/repeats.csv`, "
                      f"`{name}/rounds.csv`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    loop = LoopSettings(rounds=args.rounds, budget_hours=args.budget_hours,
                        runs_per_round=args.runs_per_round)
    started = time.perf_counter()
    scenarios = {name: run_scenario(name, args, loop) for name in args.scenarios}
    command = "python tools/simulate_designs.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    summary = {"command": command.strip(), "wall_s": round(time.perf_counter() - started, 1),
               "loop": {"rounds": loop.rounds, "budget_hours": loop.budget_hours,
                        "runs_per_round": loop.runs_per_round},
               "bootstrap": args.bootstrap, "sizes": args.sizes, "tokens": args.tokens,
               "seed": args.seed, "scenarios": scenarios}
    out = ROOT / args.out
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "README.md").write_text(markdown(summary))
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
