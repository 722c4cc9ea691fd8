#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine, for the workflow's SLURM tests.
#
#   sudo .ci/slurm_up.sh        (root is required: it installs packages and starts daemons)
#   sudo .ci/slurm_down.sh      (stops exactly the daemons this script started, by their pids)
#
# Debian 12's slurmctld, slurmd, slurm-client and munge (SLURM 22.05) are installed if missing,
# /etc/slurm/slurm.conf is written for ONE node (this host, its real CPUs and memory, partition
# `debug`, no accounting, no cgroups), munged, slurmctld and slurmd are started as background
# daemons without systemd, and the script waits until `sinfo` reports the node idle.
# The configuration must live at /etc/slurm/slurm.conf (not behind SLURM_CONF): the Snakemake
# SLURM plugin's job step drops SLURM_* variables before it calls srun inside a job.
#
# Idempotent: run again, it leaves daemons it started running when the configuration is
# unchanged, and restarts them when it changed. It refuses to overwrite a slurm.conf it did not
# write. Environment: ARCHSCALE_SLURM_TIMEOUT (seconds to wait for the idle node, default 90).
set -euo pipefail

readonly MARKER="# written by archscale .ci/slurm_up.sh"
readonly CONF=/etc/slurm/slurm.conf
readonly RUN_DIR=/run/archscale-slurm           # pid files of the daemons this script started
readonly LOG_DIR=/var/log/archscale-slurm
readonly SPOOL_DIR=/var/spool/archscale-slurm
readonly TIMEOUT="${ARCHSCALE_SLURM_TIMEOUT:-90}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly HERE

log() { printf '[slurm_up] %s\n' "$*" >&2; }
die() { printf '[slurm_up] ERROR: %s\n' "$*" >&2; exit 1; }

[[ "$(id -u)" == 0 ]] || die "must run as root (it installs packages and starts SLURM daemons)"

# A pid file names a live process of the expected program (guards against pid reuse).
alive() {  # alive PIDFILE COMM
    local pid
    [[ -s "$1" ]] || return 1
    pid="$(tr -dc '0-9' <"$1")"
    [[ -n "$pid" && -r "/proc/$pid/comm" ]] || return 1
    [[ "$(cat "/proc/$pid/comm")" == "$2" ]]
}

print_logs() {
    local f
    for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" "$LOG_DIR/munged.log"; do
        if [[ -f "$f" ]]; then
            printf '\n----- last 40 lines of %s -----\n' "$f" >&2
            tail -n 40 "$f" >&2
        else
            printf '\n----- %s: not written -----\n' "$f" >&2
        fi
    done
    printf '\n----- sinfo -----\n' >&2
    sinfo -N -l 2>&1 | sed 's/^/  /' >&2 || true
}

# ---------------------------------------------------------------------------------------- packages
packages=(slurmctld slurmd slurm-client munge)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The packages' maintainer scripts try to start services; on a machine without systemd
    # invoke-rc.d refuses, which is harmless: this script starts the daemons itself.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for b in munged mungekey slurmctld slurmd sinfo sbatch srun squeue scontrol; do
    command -v "$b" >/dev/null || die "$b not found after installing ${packages[*]}"
done

mkdir -p "$RUN_DIR" "$LOG_DIR" "$SPOOL_DIR/ctld" "$SPOOL_DIR/d" /etc/slurm

# ------------------------------------------------------------------------------------------- munge
if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating /etc/munge/munge.key"
    install -d -o munge -g munge -m 0700 /etc/munge
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
fi
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "munged already answering"
else
    log "starting munged"
    rm -f /run/munge/munged.pid
    touch "$LOG_DIR/munged.log" && chown munge:munge "$LOG_DIR/munged.log"
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid \
        --log-file="$LOG_DIR/munged.log"
    for _ in $(seq 50); do [[ -s /run/munge/munged.pid ]] && break; sleep 0.1; done
    [[ -s /run/munge/munged.pid ]] || { print_logs; die "munged wrote no pid file"; }
    cp /run/munge/munged.pid "$RUN_DIR/munged.pid"     # recorded: this script started it
    munge -n </dev/null | unmunge >/dev/null || { print_logs; die "munge credential round trip failed"; }
fi

# -------------------------------------------------------------------------------------- slurm.conf
node="$(hostname -s)"
cpus="$(nproc)"
total_mb="$(free -m | awk '/^Mem:/ {print $2}')"
real_mb=$(( total_mb * 95 / 100 ))        # a bit under the total: slurmd drains a node that has less
[[ "$cpus" -ge 1 && "$real_mb" -ge 256 ]] || die "could not read CPUs ($cpus) or memory ($total_mb MB)"

new_conf="$(mktemp)"
trap 'rm -f "$new_conf"' EXIT
cat >"$new_conf" <<CONF
$MARKER
# One-node test cluster on $node. Stop it with .ci/slurm_down.sh.
ClusterName=archscale-ci
SlurmctldHost=$node(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$SPOOL_DIR/ctld
SlurmdSpoolDir=$SPOOL_DIR/d
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups, no accounting database: sacct cannot answer, use squeue for job states.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
# Finished jobs stay visible to squeue for an hour (the Snakemake plugin and the tests poll squeue).
MinJobAge=3600
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF

if [[ -f "$CONF" ]] && ! head -n 1 "$CONF" | grep -qxF "$MARKER"; then
    die "$CONF exists and was not written by this script; move it away to use the test cluster"
fi
if [[ -f "$CONF" ]] && cmp -s "$new_conf" "$CONF"; then
    conf_changed=0
else
    conf_changed=1
    install -m 0644 "$new_conf" "$CONF"
    log "wrote $CONF (node $node, $cpus CPUs, RealMemory $real_mb MB)"
fi

if ((conf_changed)) && { alive "$RUN_DIR/slurmctld.pid" slurmctld || alive "$RUN_DIR/slurmd.pid" slurmd; }; then
    log "configuration changed: restarting the SLURM daemons"
    ARCHSCALE_SLURM_KEEP_MUNGE=1 "$HERE/slurm_down.sh"
fi

# ---------------------------------------------------------------------------------------- daemons
if alive "$RUN_DIR/slurmctld.pid" slurmctld; then
    log "slurmctld already running (pid $(cat "$RUN_DIR/slurmctld.pid"))"
else
    log "starting slurmctld"
    rm -f "$RUN_DIR/slurmctld.pid"
    slurmctld -i || { print_logs; die "slurmctld failed to start"; }   # daemonizes, writes its pid file
fi
if alive "$RUN_DIR/slurmd.pid" slurmd; then
    log "slurmd already running (pid $(cat "$RUN_DIR/slurmd.pid"))"
else
    log "starting slurmd"
    rm -f "$RUN_DIR/slurmd.pid"
    slurmd || { print_logs; die "slurmd failed to start"; }
fi

# ------------------------------------------------------------------------------- wait for the node
start=$SECONDS
state=""
while (( SECONDS - start < TIMEOUT )); do
    state="$(sinfo -h -N -n "$node" -o '%T' 2>/dev/null | head -n 1 || true)"
    case "$state" in
        idle|mixed|allocated) break ;;
    esac
    sleep 1
done
case "$state" in
    idle|mixed|allocated) ;;
    *)
        print_logs
        die "node $node not idle after ${TIMEOUT}s (state: '${state:-no answer from slurmctld}')"
        ;;
esac
for d in slurmctld slurmd; do
    alive "$RUN_DIR/$d.pid" "$d" || { print_logs; die "$d is not running"; }
done
log "node $node is $state after $((SECONDS - start))s; pids: slurmctld $(cat "$RUN_DIR/slurmctld.pid"), slurmd $(cat "$RUN_DIR/slurmd.pid")"
sinfo >&2
