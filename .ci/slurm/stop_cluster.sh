#!/usr/bin/env bash
# Stop the daemons started by .ci/slurm/setup_cluster.sh, by the PIDs it recorded (never by name).
# Safe to call twice, or when setup never ran.
set -u
RUN_DIR=${SLURM_CI_RUN_DIR:-/tmp/grokking-slurm-ci}
[ -d "$RUN_DIR" ] || exit 0
for name in slurmd slurmctld munged; do   # reverse start order
    f=$RUN_DIR/$name.pid
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "[stop_cluster] $name (PID $pid) ignored SIGTERM; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        echo "[stop_cluster] stopped $name (PID $pid)" >&2
    fi
    rm -f "$f"
done
exit 0
