#!/usr/bin/env bash
# One prepared GPU check (issue 16): five time-boxed parts in 5 minutes or less on one H200,
# written to one JSON and a markdown summary (benchmarks/gpu_check.py says what each part does).
#
#   bash benchmarks/gpu_check.sh [--out DIR] [--md FILE] [--parts a,b] [--dry]
#
# Runs from the repository root with PYTHONPATH=src and $PYTHON (default python3); nothing to
# install. The script keeps its own time box (285 s, --total-s); this wrapper's `timeout` is
# the backstop: SIGTERM at GPU_CHECK_LIMIT_S (300 s; 180 s with --dry), SIGKILL 10 s later.
# A SIGTERM still leaves the parts finished so far, and the current part's partial result,
# in the JSON.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# Without --out the results go to $OUT when it is set (the lent machine's folder that comes
# back), else to results/gpu_check.
out=""
md=""
limit="${GPU_CHECK_LIMIT_S:-300}"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --dry) limit="${GPU_CHECK_LIMIT_S:-180}" ;;
        --out) out="${args[i + 1]:-}" ;;
        --out=*) out="${args[i]#--out=}" ;;
        --md) md="${args[i + 1]:-}" ;;
        --md=*) md="${args[i]#--md=}" ;;
    esac
done
if [[ -z "$out" ]]; then
    out="${OUT:-results/gpu_check}"
    args+=(--out "$out")
fi
if [[ "$out" == *.json ]]; then json="$out"; folder="$(dirname "$out")"; else
    json="$out/gpu_check.json"; folder="$out"; fi
md="${md:-$folder/gpu-results.md}"

timeout --signal=TERM --kill-after=10 "$limit" "${PYTHON:-python3}" benchmarks/gpu_check.py \
    "${args[@]}"
status=$?
case $status in
    0) echo "gpu_check: every part ok or skipped." ;;
    2) echo "gpu_check: nothing was run (see the message above)."; exit 2 ;;
    124) echo "gpu_check: stopped by the ${limit} s limit; the finished parts are kept." ;;
    137) echo "gpu_check: killed after the ${limit} s limit; the parts written before remain." ;;
    *) echo "gpu_check: exit status $status (a part failed or timed out: see the JSON)." ;;
esac
echo "gpu_check: results in $json, summary in $md"
exit $status
