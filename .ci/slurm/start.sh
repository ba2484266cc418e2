#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (Debian 12, root, no systemd) for layershift's
# `snakemake --profile slurm` tests. Idempotent: exits 0 at once if the cluster it started runs with the
# current config (a changed template restarts it).
#
#   bash .ci/slurm/start.sh      # install packages if missing, write configs, start munged/slurmctld/slurmd
#   bash .ci/slurm/stop.sh       # stop the daemons this script started (by their recorded PIDs)
#
# Layout: node `localhost` (127.0.0.1) with 2 CPUs, RealMemory from `slurmd -C` minus a margin, and 2 fake
# GPUs (gres gpu:2 backed by placeholder device files, so two GPU jobs can share the node as two CPU jobs
# can); partitions `cpu` (default) and `gpu` on that node.
# No accounting daemon: job status comes from squeue (MinJobAge=3600 keeps finished jobs visible).
#
# Environment overrides:
#   LAYERSHIFT_SLURM_STATE    state, logs and PID records  [/var/lib/layershift-slurm]
#   LAYERSHIFT_SLURM_GPU_DEV  placeholder GPU device prefix [/dev/layershift-fake-gpu] (+ 0, 1, ...)
#   LAYERSHIFT_SLURM_CPUS     CPUs the node offers          [2]
#   LAYERSHIFT_SLURM_GPUS     fake GPUs the node offers     [2]
#   LAYERSHIFT_SLURM_TIMEOUT  seconds to wait for the node  [60]
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE_DIR=${LAYERSHIFT_SLURM_STATE:-/var/lib/layershift-slurm}
GPU_DEV=${LAYERSHIFT_SLURM_GPU_DEV:-/dev/layershift-fake-gpu}
CPUS=${LAYERSHIFT_SLURM_CPUS:-2}
GPUS=${LAYERSHIFT_SLURM_GPUS:-2}
TIMEOUT=${LAYERSHIFT_SLURM_TIMEOUT:-60}
CONF_DIR=/etc/slurm # the job step drops SLURM_CONF, so the config must live at the default path
PID_DIR=$STATE_DIR/pids
LOG_DIR=$STATE_DIR/log
MANAGED_MARK="Managed by layershift .ci/slurm/start.sh"
PACKAGES=(slurmctld slurmd slurm-client munge)

log() { echo "layershift-slurm: $*"; }

die() {
    echo "layershift-slurm: ERROR: $*" >&2
    for f in "$LOG_DIR"/*.log /var/log/munge/munged.log; do
        [[ -s $f ]] || continue
        echo "---- last lines of $f" >&2
        tail -n 15 "$f" >&2
    done
    exit 1
}

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages, writes $CONF_DIR and starts daemons)"
}

# Node state as sinfo prints it (idle, mixed, allocated, down*, drained, ...), empty if slurmctld is silent.
node_state() { timeout 10 sinfo -h -n localhost -o %T 2>/dev/null | head -n 1 || true; }

# True if slurmctld answers a ping (fast; sinfo retries for ~9 s when no slurmctld runs).
ctld_ping() { timeout 5 scontrol ping 2>/dev/null | grep -q UP; }

node_usable() {
    ctld_ping || return 1
    case $(node_state) in
    idle | mixed | allocated | completing) return 0 ;;
    *) return 1 ;;
    esac
}

# True if the PID recorded for daemon $1 is alive and still runs that program (guards against PID reuse).
recorded_alive() {
    local name=$1 pidfile=$PID_DIR/$1.pid pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ -r /proc/$pid/comm ]] && [[ $(</proc/"$pid"/comm) == "$name" ]]
}

install_packages() {
    local missing=0 cmd
    for cmd in slurmctld slurmd sinfo squeue sbatch scontrol munged munge; do
        command -v "$cmd" >/dev/null 2>&1 || missing=1
    done
    [[ $missing -eq 0 ]] && return 0
    log "installing ${PACKAGES[*]} (apt-get)"
    # Keep the packages' init scripts from starting daemons of their own: this script starts them.
    local own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    local rc=0
    {
        apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"
    } >"$STATE_DIR/apt.log" 2>&1 || rc=$?
    [[ $own_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d
    if [[ $rc -ne 0 ]]; then
        tail -n 20 "$STATE_DIR/apt.log" >&2
        die "apt-get install ${PACKAGES[*]} failed (rc=$rc); see $STATE_DIR/apt.log"
    fi
}

# RealMemory the node may offer: what slurmd detects minus 5% (at least 512 MB) for the OS.
real_memory_mb() {
    local detected
    detected=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    [[ -n $detected ]] || die "slurmd -C did not report RealMemory"
    local margin=$((detected / 20))
    ((margin < 512)) && margin=512
    echo $((detected - margin))
}

make_gpu_files() {
    local i
    for ((i = 0; i < GPUS; i++)); do
        [[ -e $GPU_DEV$i ]] && continue
        # A character device like /dev/null (nothing opens it). Where mknod is not allowed a plain file still
        # lets SLURM schedule --gpus requests, but slurmd then logs "not a valid character or block device"
        # and jobs get an empty CUDA_VISIBLE_DEVICES.
        mknod -m 666 "$GPU_DEV$i" c 1 3 2>/dev/null || : >"$GPU_DEV$i"
    done
}

# Render slurm.conf and gres.conf from the templates into $STATE_DIR/rendered/.
render_config() {
    local mem files
    mem=$(real_memory_mb)
    files="${GPU_DEV}[0-$((GPUS - 1))]"
    ((GPUS == 1)) && files="${GPU_DEV}0"
    mkdir -p "$STATE_DIR/rendered"
    sed -e "s|@STATE_DIR@|$STATE_DIR|g" -e "s|@CPUS@|$CPUS|g" -e "s|@REAL_MEMORY@|$mem|g" \
        -e "s|@GPUS@|$GPUS|g" "$HERE/slurm.conf.in" >"$STATE_DIR/rendered/slurm.conf"
    sed -e "s|@GPU_FILES@|$files|g" "$HERE/gres.conf.in" >"$STATE_DIR/rendered/gres.conf"
    RENDERED_SUMMARY="CPUs=$CPUS RealMemory=$mem Gres=gpu:$GPUS ($files)"
}

# True if the installed configs are the ones just rendered.
config_current() {
    cmp -s "$STATE_DIR/rendered/slurm.conf" "$CONF_DIR/slurm.conf" &&
        cmp -s "$STATE_DIR/rendered/gres.conf" "$CONF_DIR/gres.conf"
}

install_config() {
    mkdir -p "$CONF_DIR"
    local f
    for f in slurm.conf gres.conf; do
        if [[ -e $CONF_DIR/$f ]] && ! grep -q "$MANAGED_MARK" "$CONF_DIR/$f"; then
            log "keeping a copy of the existing $CONF_DIR/$f as $CONF_DIR/$f.before-layershift"
            cp -p "$CONF_DIR/$f" "$CONF_DIR/$f.before-layershift"
        fi
        install -m 644 "$STATE_DIR/rendered/$f" "$CONF_DIR/$f.tmp"
        mv "$CONF_DIR/$f.tmp" "$CONF_DIR/$f"
    done
    log "wrote $CONF_DIR/slurm.conf and gres.conf: $RENDERED_SUMMARY"
}

ensure_munge_key() {
    local key=/etc/munge/munge.key
    mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
    if [[ ! -s $key ]]; then
        log "creating munge key $key"
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile="$key"
        else
            /usr/sbin/create-munge-key -f
        fi
    fi
    chown munge:munge /etc/munge "$key" /var/lib/munge /var/log/munge /run/munge
    chmod 700 /etc/munge /var/log/munge
    chmod 400 "$key"
    chmod 755 /run/munge
}

# True if a munged answers on the default socket (the munge client retries for ~10 s without one).
munge_works() {
    [[ -S /run/munge/munge.socket.2 ]] && timeout 5 munge -n 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1
}

# Start "$@" detached in the background and record its PID as $PID_DIR/$name.pid.
start_daemon() {
    local name=$1
    shift
    setsid "$@" >>"$LOG_DIR/$name.out" 2>&1 </dev/null &
    echo $! >"$PID_DIR/$name.pid"
    # setsid and setpriv exec the daemon in place; wait for that so the recorded PID names it.
    wait_for "$name started" 5 recorded_alive "$name" || die "$name did not start; see $LOG_DIR/$name.out"
}

wait_for() {
    local what=$1 seconds=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
    log "$what after $((SECONDS - START))s"
}

start_munged() {
    if munge_works; then
        log "munged already answers; using it"
        return 0
    fi
    ensure_munge_key
    start_daemon munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground
    wait_for "munged is up" 15 munge_works || die "munged did not come up"
}

# True once slurmctld answers a ping; fails the start at once if slurmctld exited.
ctld_answers() {
    recorded_alive slurmctld || die "slurmctld exited; see $LOG_DIR/slurmctld.log"
    ctld_ping
}

start_slurm() {
    recorded_alive slurmctld || start_daemon slurmctld /usr/sbin/slurmctld -D -i
    wait_for "slurmctld answers" "$TIMEOUT" ctld_answers || die "slurmctld did not answer within ${TIMEOUT}s"
    recorded_alive slurmd || start_daemon slurmd /usr/sbin/slurmd -D -N localhost
}

wait_for_idle_node() {
    local deadline=$((SECONDS + TIMEOUT)) resumed=0 state
    while ((SECONDS < deadline)); do
        state=$(node_state)
        case $state in
        idle | mixed | allocated | completing)
            log "node localhost is $state after $((SECONDS - START))s"
            return 0
            ;;
        *drain* | down*)
            # A node left down by an earlier run (e.g. slurmd killed) comes back on explicit resume.
            if ((resumed == 0)) && recorded_alive slurmd; then
                scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
                resumed=1
            fi
            ;;
        esac
        recorded_alive slurmd || die "slurmd exited; see $LOG_DIR/slurmd.log"
        sleep 0.5
    done
    die "node localhost not idle within ${TIMEOUT}s (state: '${state:-none}'; reason: $(sinfo -h -R -o %E 2>/dev/null))"
}

main() {
    START=$SECONDS
    require_root
    mkdir -p "$STATE_DIR" "$PID_DIR" "$LOG_DIR" "$STATE_DIR/ctld" "$STATE_DIR/slurmd" "$STATE_DIR/run"
    install_packages
    render_config
    if recorded_alive slurmctld && recorded_alive slurmd && config_current && node_usable; then
        log "already running (node localhost is $(node_state)); nothing to do"
        exit 0
    fi
    if recorded_alive slurmctld || recorded_alive slurmd; then
        log "restarting the cluster of an earlier start (its config changed, a daemon died or the node is unusable)"
        bash "$HERE/stop.sh" --keep-munge
    fi
    make_gpu_files
    install_config
    start_munged
    start_slurm
    wait_for_idle_node
    log "cluster up in $((SECONDS - START))s: $(sinfo -h -o '%P %D %T %c cpus %m MB %G' | tr '\n' ';')"
    log "stop it with: bash $HERE/stop.sh"
}

main "$@"
