#!/usr/bin/env bash
# Stop the daemons that .ci/slurm_up.sh started: slurmd, slurmctld and (if it started it) munged,
# each by the pid recorded under /run/archscale-slurm/. Nothing else is touched; running it when
# nothing is up is not an error. ARCHSCALE_SLURM_KEEP_MUNGE=1 leaves munged running.
set -euo pipefail

readonly RUN_DIR=/run/archscale-slurm

log() { printf '[slurm_down] %s\n' "$*" >&2; }

[[ "$(id -u)" == 0 ]] || { log "ERROR: must run as root"; exit 1; }

stop() {  # stop NAME (pid file $RUN_DIR/NAME.pid, process name NAME)
    local name="$1" pidfile="$RUN_DIR/$1.pid" pid
    if [[ ! -s "$pidfile" ]]; then
        log "$name: no pid file, nothing to stop"
        return 0
    fi
    pid="$(tr -dc '0-9' <"$pidfile")"
    if [[ -z "$pid" || ! -r "/proc/$pid/comm" || "$(cat "/proc/$pid/comm")" != "$name" ]]; then
        log "$name: pid ${pid:-?} is not a running $name, removing the stale pid file"
        rm -f "$pidfile"
        return 0
    fi
    log "$name: stopping pid $pid"
    kill -TERM "$pid"
    for _ in $(seq 100); do
        [[ -d "/proc/$pid" ]] || break
        sleep 0.1
    done
    if [[ -d "/proc/$pid" ]]; then
        log "$name: pid $pid still alive after 10 s, sending KILL"
        kill -KILL "$pid" || true
    fi
    rm -f "$pidfile"
}

stop slurmd
stop slurmctld
if [[ "${ARCHSCALE_SLURM_KEEP_MUNGE:-0}" != 1 ]]; then
    stop munged
fi
