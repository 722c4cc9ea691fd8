"""Start-up time of the `archscale` command line: --help and --version against building every
command's parser eagerly (what each call paid before the commands were imported lazily).

    python benchmarks/bench_cli_startup.py [--repeats 7]

Each figure is the median wall time of a fresh `python -m archscale.cli.main ...` process,
interpreter start included, so it is what a user waits for.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "archscale --version": ["-m", "archscale.cli.main", "--version"],
    "archscale --help": ["-m", "archscale.cli.main", "--help"],
    "archscale search --help": ["-m", "archscale.cli.main", "search", "--help"],
    "baseline: every command's parser": [
        "-c", "from archscale.cli.main import build_parser; build_parser(None)"],
    "baseline: bare python": ["-c", "pass"],
}


def wall_time(args: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    wall_time(CASES["archscale --version"], 1)  # warm the file cache
    results = {name: wall_time(argv, args.repeats) for name, argv in CASES.items()}
    for name, seconds in results.items():
        print(f"{name:34s} {seconds:6.3f} s")
    eager = results["baseline: every command's parser"]
    print(f"ratio, eager parsers / --help: {eager / results['archscale --help']:.1f}x")


if __name__ == "__main__":
    main()
