"""Speed of the frontier search: scoring and the frontier, each against its slow baseline.

    python benchmarks/bench_search.py [--d-model-step 8] [--cbc-solves 2]

Builds the 1B-scale candidate space (LLaMA-3.2-1B depth and head size, GQA groups 1-16),
scores every candidate with the paper's conditional law and the roofline throughput model on
H200 presets (what the search does), and times it against scoring a sample of the same
candidates one Python call at a time, in the same process. Then traces the frontier with the
vectorised Eq. 4 and times `--cbc-solves` solves of the CBC program over the same candidates
(the old search solved one per frontier point); the CBC sweep's time is that per-solve time
times the number of frontier points. Finally the README's `archscale search` command, whole.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np

from archscale.fit.conditional import paper_law
from archscale.search.frontier import (SizeSpec, candidate_grid, score_candidates,
                                       solve_eq4_program, trace_frontier)
from archscale.search.study import SearchInputs, loss_predictor, throughput_predictor
from archscale.devices import get_device
from archscale.throughput.model import Calibration, Workload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model-step", type=int, default=8)
    parser.add_argument("--loop-sample", type=int, default=2000)
    parser.add_argument("--cbc-solves", type=int, default=2,
                        help="CBC solves to time for the baseline (each ~20 s at step 8)")
    args = parser.parse_args()
    inputs = SearchInputs(law=paper_law(), calibration=Calibration(), device=get_device("H200"),
                          engine="sglang", workload=Workload(engine="sglang"), tokens=20e9,
                          vocab_size=128256, tied=True)
    loss, speed = loss_predictor(inputs.law), throughput_predictor(inputs)
    t0 = time.perf_counter()
    grid = candidate_grid(SizeSpec(973e6, 16, 64), 128256, (0.02, 0.2), args.d_model_step,
                          [1, 2, 4, 8, 16], 64, 0.05, (0.5, 5.0))
    t_grid = time.perf_counter() - t0
    t0 = time.perf_counter()
    scored = score_candidates(grid, loss, 20e9, speed, 141e9 * 0.9, 5120, 128, True)
    t_vec = time.perf_counter() - t0
    sample = grid.sample(min(args.loop_sample, len(grid)), random_state=0)
    t0 = time.perf_counter()
    for _, row in sample.iterrows():
        one = row.to_frame().T.astype({c: int for c in grid.columns if c != "budget"})
        score_candidates(one, loss, 20e9, speed, 141e9 * 0.9, 5120, 128, True)
    t_loop = (time.perf_counter() - t0) / len(sample)
    n = len(scored)
    print(f"candidates: {n:,} (grid built in {t_grid:.3f} s)")
    print(f"vectorised scoring : {n / t_vec:12,.0f} candidates/s ({t_vec:.3f} s)")
    print(f"one at a time      : {1 / t_loop:12,.0f} candidates/s ({len(sample)} sampled)")
    print(f"ratio              : {t_loop * n / t_vec:,.0f}x")
    assert np.isfinite(scored.predicted_loss).all()

    lossv = scored.predicted_loss.to_numpy(float)
    speedv = scored.predicted_tokens_per_s.to_numpy(float)
    feasible = (scored.fits_memory & (scored.predicted_tokens_per_s > 0)).to_numpy(bool)
    t0 = time.perf_counter()
    points = trace_frontier(lossv, speedv, feasible)
    t_trace = time.perf_counter() - t0
    thresholds = [t for _, t in points][:: max(1, len(points) // max(1, args.cbc_solves))]
    t0 = time.perf_counter()
    for threshold in thresholds[:args.cbc_solves]:
        solve_eq4_program(lossv, speedv, threshold, feasible)
    t_cbc = (time.perf_counter() - t0) / max(1, min(args.cbc_solves, len(thresholds)))
    print(f"frontier, vectorised: {len(points)} points in {t_trace:.3f} s")
    print(f"frontier, CBC sweep : {t_cbc:.1f} s per solve x {len(points)} points = "
          f"{t_cbc * len(points) / 60:.0f} min (per-solve time measured on "
          f"{min(args.cbc_solves, len(thresholds))} solves)")
    print(f"ratio              : {t_cbc * len(points) / t_trace:,.0f}x")

    command = [sys.executable, "-m", "archscale.cli.main", "search", "--coefficients", "paper",
               "--gpu", "H200", "--engine", "sglang", "--budget", "973e6", "--n-layers", "16",
               "--head-dim", "64", "--tokens", "20e9"]
    t0 = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    print(f"README search command, whole process: {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
