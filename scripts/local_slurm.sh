#!/usr/bin/env bash
# Start / stop / check a real one-node SLURM cluster (Debian SLURM 22.05 + munge, with job
# accounting through slurmdbd on a local MariaDB) on the local machine. For trying the SLURM
# launch path on a laptop and for CI.
#
#   bash scripts/local_slurm.sh start    # install if needed, start, wait until the node is idle
#   bash scripts/local_slurm.sh status   # print sinfo; exit 0 iff the node is usable and sacct answers
#   bash scripts/local_slurm.sh stop     # cancel jobs, stop slurmd, slurmctld, slurmdbd, mariadbd, munged
#
# Must run as root. Idempotent. Network is only used by apt-get (first start).
# Environment knobs: LOCAL_SLURM_TIMEOUT (seconds to wait for the node, default 60),
# LOCAL_SLURM_MEM_HEADROOM_MB (memory kept away from SLURM, default max(512, 10%)).
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
DBD_CONF=$CONF_DIR/slurmdbd.conf
DBD_PID=/run/slurmdbd.pid
DB_RUN=/run/mysqld
DB_PID=$DB_RUN/mysqld.pid
DB_SOCKET=$DB_RUN/mysqld.sock
DB_DATA=/var/lib/mysql
DB_NAME=slurm_acct_db
DB_USER=slurm
# A local, socket-only database: the password only keeps slurmdbd.conf realistic.
DB_PASS=local_slurm_accounting
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
PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)

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
    local tool missing=0
    for tool in slurmctld slurmd sbatch sacct munged slurmdbd mariadbd mariadb-admin; do
        command -v "$tool" >/dev/null || missing=1
    done
    [ $missing = 1 ] || return 0
    log "installing ${PACKAGES[*]} with apt-get (first run only)"
    # keep the packages' init scripts from starting daemons during install
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    local rc=0
    { apt-get update -q && apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"; } \
        >/tmp/local_slurm_apt.log 2>&1 || rc=$?
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

# replace_if_changed NEW DEST MODE: move NEW over DEST unless they are the same; status 0 iff DEST changed
replace_if_changed() {
    local new=$1 dest=$2 mode=$3
    if [ -f "$dest" ] && cmp -s "$new" "$dest"; then
        rm -f "$new"
        return 1
    fi
    mv "$new" "$dest"
    chmod "$mode" "$dest"
}

# await_daemon NAME CHECK LOGFILE: wait up to 30 s until CHECK succeeds; else show LOGFILE and stop
await_daemon() {
    local name=$1 check=$2 logfile=$3 i
    for i in $(seq 1 100); do "$check" && break; sleep 0.3; done
    "$check" || { tail -20 "$logfile" >&2 || true; die "$name did not come up (log: $logfile)"; }
    log "started $name"
    did="${did}started $name; "
}

db_answers() { timeout 10 mariadb-admin --socket="$DB_SOCKET" ping >/dev/null 2>&1; }

# run SQL as the database's root (unix-socket authentication as the OS root user)
db_sql() { timeout 20 mariadb --socket="$DB_SOCKET" -u root -e "$1"; }

start_mariadb() {
    mkdir -p "$DB_RUN" "$DB_DATA"
    chown mysql:mysql "$DB_RUN" "$DB_DATA"
    if pid_alive "$DB_PID" mariadbd && db_answers; then return 0; fi
    stop_daemon "$DB_PID" mariadbd
    rm -f "$DB_SOCKET" "$DB_SOCKET.lock"
    if [ ! -d "$DB_DATA/mysql" ]; then
        log "initialising the accounting database in $DB_DATA"
        mariadb-install-db --user=mysql --datadir="$DB_DATA" >/tmp/local_slurm_db_init.log 2>&1 \
            || { tail -20 /tmp/local_slurm_db_init.log >&2; die "mariadb-install-db failed"; }
    fi
    # socket only: nothing outside this machine talks to it
    setsid mariadbd --user=mysql --datadir="$DB_DATA" --socket="$DB_SOCKET" --pid-file="$DB_PID" \
        --skip-networking --innodb-lock-wait-timeout=900 --log-error="$LOG_DIR/mariadb.log" </dev/null >/dev/null 2>&1 &
    await_daemon mariadbd db_answers "$LOG_DIR/mariadb.log"
}

setup_database() {
    db_sql "CREATE DATABASE IF NOT EXISTS $DB_NAME;
            CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
            ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
            GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';" \
        || die "could not create the accounting database user (log: $LOG_DIR/mariadb.log)"
}

write_dbd_conf() {
    local tmp
    tmp=$(mktemp)
    cat >"$tmp" <<EOF
# Written by scripts/local_slurm.sh: accounting daemon of the one-node local cluster. Do not edit.
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$DBD_PID
LogFile=$LOG_DIR/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF
    DBD_CONF_CHANGED=0
    if replace_if_changed "$tmp" "$DBD_CONF" 600; then DBD_CONF_CHANGED=1; log "wrote $DBD_CONF"; fi
    # slurmdbd refuses a config readable by others (it holds the database password)
    chown root:root "$DBD_CONF" && chmod 600 "$DBD_CONF"
}

dbd_answers() { timeout 10 sacctmgr -n show cluster format=cluster >/dev/null 2>&1; }

start_slurmdbd() {
    if [ "$DBD_CONF_CHANGED" = 1 ]; then stop_daemon "$DBD_PID" slurmdbd; fi
    if pid_alive "$DBD_PID" slurmdbd && dbd_answers; then return 0; fi
    stop_daemon "$DBD_PID" slurmdbd
    slurmdbd </dev/null >/dev/null 2>&1 || true
    await_daemon slurmdbd dbd_answers "$LOG_DIR/slurmdbd.log"
}

# the cluster must be known to slurmdbd before slurmctld can store its jobs there
register_cluster() {
    if ! timeout 10 sacctmgr -n -P show cluster format=cluster | grep -qx local; then
        timeout 20 sacctmgr -i add cluster local >/dev/null || die "sacctmgr could not add cluster 'local'"
        log "registered cluster 'local' with slurmdbd"
    fi
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
# job accounting through slurmdbd (sacct, job states after a job has left the queue)
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
NodeName=$NODE CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    CONF_CHANGED=0
    if replace_if_changed "$tmp" "$CONF" 644; then
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
    mkdir -p "$LOG_DIR" "$CONF_DIR"
    start_mariadb
    setup_database
    write_conf  # before slurmdbd: sacctmgr finds slurmdbd through slurm.conf
    write_dbd_conf
    start_slurmdbd
    register_cluster
    # (a running slurmctld reconnects to a restarted slurmdbd by itself and sends what it queued)
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
    stop_daemon "$DBD_PID" slurmdbd
    stop_daemon "$DB_PID" mariadbd
    stop_daemon "$MUNGE_PID" munged
    log "stopped"
}

cmd_status() {
    command -v sinfo >/dev/null || { echo "local_slurm: sinfo not installed" >&2; exit 1; }
    if ! ctld_answers || ! timeout 10 sinfo; then
        echo "local_slurm: cluster does not answer" >&2
        exit 1
    fi
    if ! node_usable; then
        echo "local_slurm: node $NODE not usable (state: '$(node_state || true)')" >&2
        exit 1
    fi
    if ! timeout 10 sacct -n -X -S now-1minutes >/dev/null 2>&1; then
        echo "local_slurm: accounting (sacct through slurmdbd) does not answer" >&2
        exit 1
    fi
    echo "local_slurm: accounting answers (sacct)"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: bash $0 start|stop|status" >&2; exit 2 ;;
esac
