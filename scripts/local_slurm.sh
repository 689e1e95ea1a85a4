#!/usr/bin/env bash
# Start / stop / check a real one-node SLURM cluster (Debian SLURM 22.05 + munge)
# on the local machine. For trying the SLURM launch path on a laptop and for CI.
#
#   bash scripts/local_slurm.sh start    # install if needed, start, wait until the node is idle
#   bash scripts/local_slurm.sh status   # print sinfo; exit 0 iff the node is usable
#   bash scripts/local_slurm.sh stop     # cancel jobs, stop slurmd, slurmctld, munged
#
# Must run as root. Idempotent. Network is only used by apt-get (first start).
# Environment knobs: LOCAL_SLURM_TIMEOUT (seconds to wait for the node, default 60),
# LOCAL_SLURM_MEM_HEADROOM_MB (memory kept away from SLURM, default max(512, 10%)).
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
CTLD_SPOOL=/var/spool/slurmctld
SLURMD_SPOOL=/var/spool/slurmd
LOG_DIR=/var/log/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_KEY=/etc/munge/munge.key
MUNGE_RUN=/run/munge
MUNGE_PID=$MUNGE_RUN/munged.pid
TIMEOUT=${LOCAL_SLURM_TIMEOUT:-60}
NODE=$(hostname -s)
PARTITION=debug

log() { echo "local_slurm: $*"; }
die() { echo "local_slurm: ERROR: $*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }

# pid_alive PIDFILE NAME -> 0 if the pid in PIDFILE is a live process called NAME
pid_alive() {
    local f=$1 name=$2 pid
    [ -s "$f" ] || return 1
    pid=$(tr -dc '0-9' <"$f")
    [ -n "$pid" ] || return 1
    [ -r "/proc/$pid/comm" ] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]
}

# stop_daemon PIDFILE NAME: SIGTERM by pid file (falls back to exact process name), wait, SIGKILL
stop_daemon() {
    local f=$1 name=$2 pids="" pid i
    if pid_alive "$f" "$name"; then pids=$(tr -dc '0-9' <"$f"); fi
    pids="$pids $(pgrep -x "$name" 2>/dev/null || true)"
    pids=$(echo "$pids" | tr ' ' '\n' | grep -E '^[0-9]+$' | sort -u || true)
    if [ -n "$pids" ]; then
        for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
        for i in $(seq 1 50); do
            local alive=0
            for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
            [ $alive = 0 ] && break
            sleep 0.2
        done
        for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
        log "stopped $name"
    fi
    rm -f "$f"
}

# kill_tree PID: SIGKILL PID's descendants, then PID
kill_tree() {
    local c
    for c in $(pgrep -P "$1" 2>/dev/null || true); do kill_tree "$c"; done
    kill -KILL "$1" 2>/dev/null || true
}

munge_ok() { command -v munge >/dev/null && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

ctld_answers() { timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'; }

# node state as sinfo reports it, without the flag suffixes (*, ~, #, !, %, $, @, +, -)
node_state() { timeout 10 sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1 | tr -d '*~#!%$@+^-' ; }

node_usable() {
    case "$(node_state)" in
        idle|mixed|allocated|completing) return 0 ;;
        *) return 1 ;;
    esac
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null; then
        return 0
    fi
    log "installing slurmctld slurmd slurm-client munge with apt-get (first run only)"
    # keep the packages' init scripts from starting daemons during install
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    local rc=0
    { apt-get update -q && apt-get install -y -q --no-install-recommends \
        slurmctld slurmd slurm-client munge; } >/tmp/local_slurm_apt.log 2>&1 || rc=$?
    if [ $made_policy = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    [ $rc = 0 ] || { tail -20 /tmp/local_slurm_apt.log >&2; die "apt-get failed (log: /tmp/local_slurm_apt.log)"; }
    INSTALLED=1
}

start_munge() {
    if [ ! -s "$MUNGE_KEY" ]; then
        mkdir -p "$(dirname "$MUNGE_KEY")"
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$MUNGE_KEY" --force
        else
            dd if=/dev/urandom bs=1 count=1024 of="$MUNGE_KEY" status=none
        fi
        log "created $MUNGE_KEY"
    fi
    chown munge:munge "$MUNGE_KEY" && chmod 400 "$MUNGE_KEY"
    mkdir -p "$MUNGE_RUN" /var/lib/munge /var/log/munge
    chown munge:munge "$MUNGE_RUN" /var/lib/munge /var/log/munge
    chmod 755 "$MUNGE_RUN"
    if pid_alive "$MUNGE_PID" munged && munge_ok; then return 0; fi
    stop_daemon "$MUNGE_PID" munged
    rm -f "$MUNGE_RUN"/munge.socket.2 "$MUNGE_RUN"/munge.socket.2.lock
    runuser -u munge -- /usr/sbin/munged --force </dev/null >/dev/null 2>&1
    local i
    for i in $(seq 1 50); do munge_ok && break; sleep 0.2; done
    munge_ok || die "munged did not come up (see /var/log/munge/munged.log)"
    log "started munged"
}

write_conf() {
    local cpus total_mb headroom mem tmp
    cpus=$(nproc)
    total_mb=$(free -m | awk '/^Mem:/ {print $2}')
    headroom=${LOCAL_SLURM_MEM_HEADROOM_MB:-$(( total_mb / 10 > 512 ? total_mb / 10 : 512 ))}
    mem=$(( total_mb - headroom ))
    [ "$mem" -ge 256 ] || mem=$(( total_mb > 1 ? total_mb / 2 : 1 ))
    mkdir -p "$CONF_DIR"
    tmp=$(mktemp)
    cat >"$tmp" <<EOF
# Written by scripts/local_slurm.sh: one-node local cluster. Do not edit; rerun the script.
ClusterName=local
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# requeued jobs wait cred_expire+1 s before they may start again (default 120)
AuthInfo=cred_expire=10
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SchedulerType=sched/backfill
# run the scheduler often: a requeued job restarts ~cred_expire+5 s after requeue
SchedulerParameters=bf_interval=5,sched_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
KillWait=10
SlurmdTimeout=30
SlurmctldTimeout=30
MessageTimeout=10
InactiveLimit=0
MinJobAge=300
StateSaveLocation=$CTLD_SPOOL
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$NODE CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    if [ -f "$CONF" ] && cmp -s "$tmp" "$CONF"; then
        rm -f "$tmp"
        CONF_CHANGED=0
    else
        mv "$tmp" "$CONF"
        chmod 644 "$CONF"
        CONF_CHANGED=1
        log "wrote $CONF (NodeName=$NODE CPUs=$cpus RealMemory=$mem)"
    fi
    mkdir -p "$CTLD_SPOOL" "$SLURMD_SPOOL" "$LOG_DIR"
}

start_slurmctld() {
    local attempt i
    for attempt in 1 2; do
        slurmctld </dev/null >/dev/null 2>&1 || true
        for i in $(seq 1 50); do
            ctld_answers && break
            # it exits at once on fatal errors (e.g. state from another ClusterName)
            if [ "$i" -gt 3 ] && ! pgrep -x slurmctld >/dev/null; then break; fi
            sleep 0.3
        done
        if pid_alive "$CTLD_PID" slurmctld && ctld_answers; then
            log "started slurmctld"
            return 0
        fi
        stop_daemon "$CTLD_PID" slurmctld
        if [ $attempt = 1 ]; then
            log "slurmctld did not come up; clearing stale state in $CTLD_SPOOL and retrying"
            rm -rf "${CTLD_SPOOL:?}"/* "${SLURMD_SPOOL:?}"/*
        fi
    done
    tail -20 "$LOG_DIR/slurmctld.log" >&2 || true
    die "slurmctld did not start (log: $LOG_DIR/slurmctld.log)"
}

start_slurmd() {
    slurmd </dev/null >/dev/null 2>&1 || true
    local i
    for i in $(seq 1 25); do pid_alive "$SLURMD_PID" slurmd && break; sleep 0.2; done
    if ! pid_alive "$SLURMD_PID" slurmd; then
        tail -20 "$LOG_DIR/slurmd.log" >&2 || true
        die "slurmd did not start (log: $LOG_DIR/slurmd.log)"
    fi
    log "started slurmd"
}

wait_node_idle() {
    local deadline=$(( $(date +%s) + TIMEOUT )) st resumed=0
    while :; do
        st=$(node_state || true)
        case "$st" in
            idle|mixed|allocated|completing) log "node $NODE is $st (partition $PARTITION)"; return 0 ;;
            down|drained|draining|drain|fail|failing)
                if [ $resumed -lt 3 ]; then
                    scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
                    resumed=$(( resumed + 1 ))
                    log "node $NODE was $st: resumed it"
                fi ;;
        esac
        if [ "$(date +%s)" -ge "$deadline" ]; then
            sinfo -N -l >&2 || true
            tail -10 "$LOG_DIR/slurmd.log" >&2 || true
            die "node $NODE not idle after ${TIMEOUT}s (state: '${st:-no answer}')"
        fi
        sleep 1
    done
}

cmd_start() {
    need_root
    local t0 did=""
    t0=$(date +%s)
    INSTALLED=0
    install_packages
    if [ $INSTALLED = 1 ]; then did="installed packages; "; fi
    start_munge
    write_conf
    if [ "$CONF_CHANGED" = 1 ] && { pid_alive "$CTLD_PID" slurmctld || pid_alive "$SLURMD_PID" slurmd; }; then
        log "config changed: restarting daemons"
        stop_daemon "$SLURMD_PID" slurmd
        stop_daemon "$CTLD_PID" slurmctld
    fi
    if pid_alive "$CTLD_PID" slurmctld && ctld_answers; then
        :
    else
        stop_daemon "$CTLD_PID" slurmctld
        start_slurmctld
        did="${did}started slurmctld; "
    fi
    if ! pid_alive "$SLURMD_PID" slurmd; then
        stop_daemon "$SLURMD_PID" slurmd
        start_slurmd
        did="${did}started slurmd; "
    fi
    wait_node_idle
    log "start done in $(( $(date +%s) - t0 ))s: ${did:-already running, verified}"
}

cmd_stop() {
    need_root
    if command -v squeue >/dev/null && ctld_answers; then
        local jobs
        jobs=$(timeout 10 squeue -h -o %i 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            log "cancelled jobs: $(echo $jobs)"
        fi
    fi
    # give job steps up to KillWait+5 s to end before the daemons go
    local i
    for i in $(seq 1 30); do pgrep -x slurmstepd >/dev/null || break; sleep 0.5; done
    stop_daemon "$SLURMD_PID" slurmd
    stop_daemon "$CTLD_PID" slurmctld
    # job steps still left: kill their process trees (tasks first, then slurmstepd)
    local p
    for p in $(pgrep -x slurmstepd 2>/dev/null || true); do
        kill_tree "$p"
    done
    stop_daemon "$MUNGE_PID" munged
    log "stopped"
}

cmd_status() {
    command -v sinfo >/dev/null || { echo "local_slurm: sinfo not installed" >&2; exit 1; }
    if ! ctld_answers || ! timeout 10 sinfo; then
        echo "local_slurm: cluster does not answer" >&2
        exit 1
    fi
    if node_usable; then
        exit 0
    fi
    echo "local_slurm: node $NODE not usable (state: '$(node_state || true)')" >&2
    exit 1
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: bash $0 start|stop|status" >&2; exit 2 ;;
esac
