#!/usr/bin/env bash
# Stop the one-node SLURM cluster that .ci/slurm/start.sh started: cancel its jobs, then end slurmd,
# slurmctld and munged by the PIDs start.sh recorded (never by process name). Safe to run twice.
#
#   bash .ci/slurm/stop.sh               # stop everything start.sh started
#   bash .ci/slurm/stop.sh --keep-munge  # leave munged running (start.sh uses this to restart SLURM)
set -euo pipefail

STATE_DIR=${LAYERSHIFT_SLURM_STATE:-/var/lib/layershift-slurm}
PID_DIR=$STATE_DIR/pids
KEEP_MUNGE=0
[[ ${1:-} == --keep-munge ]] && KEEP_MUNGE=1

log() { echo "layershift-slurm: $*"; }

# Print the recorded PID of daemon $1 if it is alive and still runs that program (guards against PID reuse).
recorded_pid() {
    local name=$1 pidfile=$PID_DIR/$1.pid pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ -r /proc/$pid/comm ]] && [[ $(</proc/"$pid"/comm) == "$name" ]] && echo "$pid"
}

stop_daemon() {
    local name=$1 pid
    if ! pid=$(recorded_pid "$name"); then
        rm -f "$PID_DIR/$name.pid"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local _
    for _ in $(seq 1 30); do
        [[ -d /proc/$pid ]] || break
        sleep 0.5
    done
    if [[ -d /proc/$pid ]]; then
        log "$name ($pid) ignored SIGTERM for 15s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PID_DIR/$name.pid"
    log "stopped $name ($pid)"
}

cancel_jobs() {
    recorded_pid slurmctld >/dev/null || return 0
    local jobs
    jobs=$(timeout 10 squeue -h -t PENDING,RUNNING,SUSPENDED -o %i 2>/dev/null || true)
    [[ -n $jobs ]] || return 0
    log "cancelling jobs: $(echo "$jobs" | tr '\n' ' ')"
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    local _
    for _ in $(seq 1 20); do
        [[ -z $(timeout 10 squeue -h -t RUNNING,COMPLETING -o %i 2>/dev/null || true) ]] && break
        sleep 0.5
    done
}

cancel_jobs
stop_daemon slurmd
stop_daemon slurmctld
[[ $KEEP_MUNGE -eq 1 ]] || stop_daemon munged
log "stopped"
