"""Benchmark: archscale's Approach 3 fit against the naive exhaustive scipy loop.

Why: Hoffmann et al.'s Approach 3 is usually fitted by running scipy's L-BFGS from every one of
4,500 grid starts with a finite-difference gradient (about 11 minutes on a 2-core laptop). The
library reaches the same optimum in about a second (analytic gradient, vectorised objective, the
best grid starts first). This script measures both on Epoch AI's 240 points.

    python benchmarks/bench_chinchilla_fit.py               # time the fast fit (a few seconds);
                                                            # naive time read from the reference
    python benchmarks/bench_chinchilla_fit.py --exhaustive  # rerun the naive loop (~11 min) and
                                                            # rewrite the committed reference JSON

The reference, tests/data/chinchilla_exhaustive_reference.json, holds the naive loop's best
objective and coefficients with its provenance (command, date, machine, time taken); the tests
compare the fast fit against it without ever running the exhaustive loop.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "chinchilla" / "svg_extracted_data.csv"
REFERENCE = ROOT / "tests" / "data" / "chinchilla_exhaustive_reference.json"
DELTA = 1e-3
GRID = {"alpha": [0.0, 0.5, 1.0, 1.5, 2.0], "beta": [0.0, 0.5, 1.0, 1.5, 2.0],
        "e": [-1.0, -0.5, 0.0, 0.5, 1.0], "a": [0, 5, 10, 15, 20, 25], "b": [0, 5, 10, 15, 20, 25]}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _naive_objective(p, log_n, log_d, log_l):
    """The textbook objective: scipy's logsumexp and huber, no gradient given."""
    from scipy.special import huber, logsumexp

    a, b, e, alpha, beta = p
    pred = logsumexp([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)], axis=0)
    return float(np.sum(huber(DELTA, pred - log_l)))


def run_exhaustive(command: str) -> dict:
    """Naive loop: scipy L-BFGS-B with finite differences from all 4,500 grid starts."""
    from scipy.optimize import minimize

    from archscale.fit.io import read_epoch_chinchilla

    table = read_epoch_chinchilla(DATA, drop_lowest=5)
    log_n, log_d, log_l = (np.log(table[c].to_numpy()) for c in ("N", "D", "loss"))
    results = []
    load_before = os.getloadavg()
    start = time.perf_counter()
    for alpha, beta, e, a, b in itertools.product(GRID["alpha"], GRID["beta"], GRID["e"],
                                                  GRID["a"], GRID["b"]):
        res = minimize(_naive_objective, np.array([a, b, e, alpha, beta], dtype=float),
                       args=(log_n, log_d, log_l), method="L-BFGS-B")
        results.append((float(res.fun), res.x.tolist(), [a, b, e, alpha, beta]))
    elapsed = time.perf_counter() - start
    results.sort(key=lambda item: item[0])
    best_fun, best_x, best_start = results[0]
    a, b, e, alpha, beta = best_x
    within = sum(1 for f, _, _ in results if f <= best_fun * (1 + 1e-6))
    return {
        "description": "Best of the naive exhaustive Approach 3 loop on Epoch AI's Chinchilla "
                       "points; the tests compare archscale's fast fit against it.",
        "data": {"file": str(DATA.relative_to(ROOT)), "drop_lowest_tokens_per_param": 5,
                 "n_points": len(table),
                 "sha256": hashlib.sha256(DATA.read_bytes()).hexdigest()},
        "method": {
            "objective": "sum over points of scipy.special.huber(1e-3, LSE(a - alpha ln N, "
                         "b - beta ln D, e) - ln L)",
            "optimizer": "scipy.optimize.minimize(method='L-BFGS-B'), finite-difference "
                         "gradient, default tolerances, one call per start",
            "grid": GRID, "n_starts": len(results)},
        "best": {"objective": best_fun,
                 "lse": {"a": a, "b": b, "e": e, "alpha": alpha, "beta": beta},
                 "coefficients": {"E": float(np.exp(e)), "A": float(np.exp(a)),
                                  "B": float(np.exp(b)), "alpha": alpha, "beta": beta},
                 "start": dict(zip(["a", "b", "e", "alpha", "beta"], best_start))},
        "starts_within_1e-6_of_best": within,
        "top_10": [{"objective": f, "lse": dict(zip(["a", "b", "e", "alpha", "beta"], x))}
                   for f, x, _ in results[:10]],
        "provenance": {"command": command,
                       "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                       "machine": f"{_cpu_model()}, {os.cpu_count()} cores, "
                                  f"{platform.system()} {platform.machine()}",
                       "python": platform.python_version(), "numpy": np.__version__,
                       "scipy": __import__("scipy").__version__,
                       "time_s": round(elapsed, 1),
                       "load_average_1min_before_after": [round(load_before[0], 2),
                                                          round(os.getloadavg()[0], 2)]},
    }


def run_fast(repeats: int) -> dict:
    """Time archscale's fit_chinchilla (no bootstrap) on the same points."""
    from archscale.fit.chinchilla import fit_chinchilla
    from archscale.fit.io import read_epoch_chinchilla

    table = read_epoch_chinchilla(DATA, drop_lowest=5)
    times, fit = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        fit = fit_chinchilla(table["N"], table["D"], table["loss"], bootstrap=0)
        times.append(time.perf_counter() - start)
    return {"fit": fit, "times": times}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exhaustive", action="store_true",
                        help="rerun the naive 4,500-start loop (~11 min) and rewrite the "
                             "reference JSON")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of the fast fit")
    parser.add_argument("--bootstrap", type=int, default=0,
                        help="also time a fit with this many bootstrap resamples on 2 workers")
    args = parser.parse_args(argv)
    command = "python " + " ".join([str(Path(sys.argv[0]))] + (argv or sys.argv[1:]))

    if args.exhaustive:
        reference = run_exhaustive(command)
        REFERENCE.write_text(json.dumps(reference, indent=2) + "\n")
        print(f"naive exhaustive loop: {reference['provenance']['time_s']} s, best objective "
              f"{reference['best']['objective']:.9e}; wrote {REFERENCE.relative_to(ROOT)}")
    if not REFERENCE.exists():
        print(f"no reference at {REFERENCE}; run with --exhaustive first", file=sys.stderr)
        return 1
    reference = json.loads(REFERENCE.read_text())

    fast = run_fast(args.repeats)
    fit, times = fast["fit"], fast["times"]
    ref_obj = reference["best"]["objective"]
    naive_s = reference["provenance"]["time_s"]
    best = min(times)
    rel = (fit.objective - ref_obj) / ref_obj
    print(f"machine: {_cpu_model()}, {os.cpu_count()} cores")
    print("fast fit coefficients: " + ", ".join(f"{k} {v:.6g}"
                                                for k, v in fit.law.as_dict().items()))
    print(f"fast fit objective {fit.objective:.9e}; naive reference {ref_obj:.9e}; "
          f"relative difference {rel:+.2e} (must be <= 1e-6)")
    print(f"fast fit time: best {best:.3f} s, median {float(np.median(times)):.3f} s over "
          f"{len(times)} repeats ({fit.convergence['n_starts_run']} L-BFGS starts)")
    print(f"naive exhaustive loop: {naive_s} s (from {REFERENCE.name}, "
          f"{reference['provenance']['date']})")
    print(f"speed-up: {naive_s / best:.0f}x")
    if args.bootstrap:
        from archscale.fit.chinchilla import fit_chinchilla
        from archscale.fit.io import read_epoch_chinchilla

        table = read_epoch_chinchilla(DATA, drop_lowest=5)
        start = time.perf_counter()
        boot = fit_chinchilla(table["N"], table["D"], table["loss"], bootstrap=args.bootstrap,
                              compute_budgets=[1e22], workers=2)
        total = time.perf_counter() - start
        ci = boot.intervals["coefficients"]
        print(f"fit + {args.bootstrap} bootstrap resamples on 2 workers: {total:.2f} s "
              f"(bootstrap {boot.intervals['time_s']} s); 95% CI alpha "
              f"[{ci['alpha']['low']:.4f}, {ci['alpha']['high']:.4f}], beta "
              f"[{ci['beta']['low']:.4f}, {ci['beta']['high']:.4f}]")
    return 0 if rel <= 1e-6 else 2


if __name__ == "__main__":
    raise SystemExit(main())
