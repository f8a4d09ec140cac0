#!/usr/bin/env bash
# Start a throw-away one-node SLURM cluster on localhost, for the SLURM end-to-end test.
#
#   .ci/slurm/setup_cluster.sh            # install (if needed), configure, start, wait for the node
#   .ci/slurm/stop_cluster.sh             # stop the daemons again (by the PIDs recorded here)
#
# Needs root and Debian's apt (installs munge, slurmctld, slurmd, slurm-client when missing).
# No systemd: munged runs as user munge, then `slurmctld -i`, then `slurmd -N localhost`, all in the
# foreground of background processes whose PIDs go to $SLURM_CI_RUN_DIR/*.pid (default
# /tmp/grokking-slurm-ci). State, spool and logs live there too.
#
# The config must be /etc/slurm/slurm.conf: the executor plugin's job step clears every SLURM_*
# variable, SLURM_CONF included, so a config anywhere else is not found inside jobs. An existing
# slurm.conf that this script did not write is never overwritten.
#
# Exit status: 0 = cluster up and the node idle; 77 = cannot set up here (not root, no apt, install
# failed, foreign SLURM config or daemons already running): the caller should skip; 1 = the daemons
# were started but the node did not come up (logs are printed).
set -euo pipefail

RUN_DIR=${SLURM_CI_RUN_DIR:-/tmp/grokking-slurm-ci}
PARTITION=${SLURM_CI_PARTITION:-debug}
WAIT_S=${SLURM_CI_WAIT_S:-60}
CONF=/etc/slurm/slurm.conf
MARK="# written by grokking-llc .ci/slurm/setup_cluster.sh"

skip() { echo "cannot set up SLURM: $*" >&2; exit 77; }
die() { echo "ERROR: $*" >&2; exit 1; }
log() { echo "[setup_cluster] $*" >&2; }

[ "$(id -u)" = 0 ] || skip "needs root (installs packages, writes /etc/slurm, runs slurmd as root)"

# 1. Packages.
need=()
command -v munged >/dev/null 2>&1 || [ -x /usr/sbin/munged ] || need+=(munge)
[ -x /usr/sbin/slurmctld ] || need+=(slurmctld)
[ -x /usr/sbin/slurmd ] || need+=(slurmd)
command -v sbatch >/dev/null 2>&1 || need+=(slurm-client)
if [ ${#need[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || skip "missing ${need[*]} and no apt-get to install them"
    log "installing ${need[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >"$RUN_DIR.apt.log" 2>&1 || { tail -5 "$RUN_DIR.apt.log" >&2; skip "apt-get update failed"; }
    apt-get install -y -qq --no-install-recommends "${need[@]}" >>"$RUN_DIR.apt.log" 2>&1 \
        || { tail -5 "$RUN_DIR.apt.log" >&2; skip "apt-get install ${need[*]} failed"; }
fi
for exe in /usr/sbin/munged /usr/sbin/slurmctld /usr/sbin/slurmd; do
    [ -x "$exe" ] || skip "$exe not found after installation"
done
for exe in sbatch squeue sinfo scontrol; do
    command -v "$exe" >/dev/null 2>&1 || skip "$exe not found after installation"
done

# 2. Refuse to touch a SLURM that is not ours.
if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    skip "$CONF exists and was not written by this script; not overwriting a real cluster's config"
fi
for d in slurmctld slurmd; do
    pid=$(cat "$RUN_DIR/$d.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        die "$d already running from an earlier setup (PID $pid): run .ci/slurm/stop_cluster.sh first"
    fi
    if pgrep -x "$d" >/dev/null 2>&1; then
        skip "a $d not started by this script is already running"
    fi
done

# 3. Config for one node on localhost, no accounting, no cgroups.
rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR/state" "$RUN_DIR/spool" /etc/slurm
CPUS=$(nproc)
TOTAL_MB=$(free -m | awk '/^Mem:/ {print $2}')
MARGIN_MB=$(( TOTAL_MB / 10 > 1024 ? TOTAL_MB / 10 : 1024 ))
MEM_MB=$(( TOTAL_MB - MARGIN_MB ))
[ "$MEM_MB" -ge 1000 ] || MEM_MB=$TOTAL_MB
cat >"$CONF" <<CONF
$MARK
# One-node test cluster on localhost: no accounting database, no cgroups, no systemd.
ClusterName=grokking-ci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$RUN_DIR/state
SlurmdSpoolDir=$RUN_DIR/spool
SlurmctldPidFile=$RUN_DIR/slurmctld.daemon.pid
SlurmdPidFile=$RUN_DIR/slurmd.daemon.pid
SlurmctldLogFile=$RUN_DIR/slurmctld.log
SlurmdLogFile=$RUN_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# The executor polls with squeue (no sacct without accounting): keep finished jobs visible for
# 10 minutes, well above its 3 x init-seconds-before-status-checks threshold.
MinJobAge=600
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
Waittime=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
log "wrote $CONF (CPUs=$CPUS RealMemory=$MEM_MB partition=$PARTITION, run dir $RUN_DIR)"

# 4. munge: key (if missing), then munged as user munge.
if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile=/etc/munge/munge.key
    else
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    fi
fi
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0400 /etc/munge/munge.key
chmod 0755 /run/munge
start() {  # start NAME CMD...: run CMD in the background, PID to $RUN_DIR/NAME.pid, log to NAME.out
    local name=$1; shift
    "$@" </dev/null >"$RUN_DIR/$name.out" 2>&1 &
    echo $! >"$RUN_DIR/$name.pid"
    log "started $name (PID $!): $*"
}
if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "a munged is already running and answering; using it"
else
    # setpriv execs munged directly, so the recorded PID is munged's own.
    start munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground --force
    for _ in $(seq 1 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.2
    done
    munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 \
        || { cat "$RUN_DIR/munged.out" >&2; die "munged did not start"; }
fi

# 5. slurmctld (-i: ignore state from earlier runs), then slurmd.
start slurmctld /usr/sbin/slurmctld -D -i
for _ in $(seq 1 50); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
start slurmd /usr/sbin/slurmd -D -N localhost

# 6. Wait for the node to be idle.
deadline=$(( $(date +%s) + WAIT_S ))
while :; do
    state=$(sinfo -h -n localhost -o %T 2>/dev/null | head -1 || true)
    [ "$state" = idle ] && break
    if [ "$(date +%s)" -ge "$deadline" ]; then
        for f in slurmctld.out slurmctld.log slurmd.out slurmd.log; do
            echo "---- $RUN_DIR/$f (tail)" >&2; tail -20 "$RUN_DIR/$f" >&2 2>/dev/null || true
        done
        die "node localhost not idle after ${WAIT_S}s (state: '${state:-no answer}')"
    fi
    sleep 0.5
done
log "cluster up: $(sinfo -h -o '%P %D %T %c CPUs %m MB' | head -1)"
