#!/usr/bin/env bash
# SLURM end-to-end test: the .test config run twice, once locally and once through
# `--profile profiles/slurm` on a throw-away one-node SLURM cluster on localhost, and the two
# results compared (Parquet tables equal apart from wall-time columns, same figure files).
#
#   .ci/slurm/run_slurm_test.sh                 # needs root (installs and starts SLURM)
#   .ci/slurm/run_slurm_test.sh --compare A B   # only compare two runs' directories
#
# Required by default: where no cluster can be set up here (not root, no apt, install failed,
# foreign SLURM running, daemons not coming up) it prints "FAILED: <reason>" and exits 1, so CI
# cannot pass without the comparison. Only SLURM_TEST_ALLOW_SKIP=1 (a developer's machine without
# root) turns that into "SKIPPED: <reason>" and exit 0. Exits non-zero when a run fails or the
# results differ. The daemons are always stopped again (by PID, in a trap).
#
# Environment:
#   SLURM_TEST_TARGET   snakemake target(s) of both runs (default: figures)
#   SLURM_TEST_CORES    --cores of the local run (default: 2)
#   SLURM_TEST_PARALLEL run the local and the SLURM run at the same time (default: 1; 0 = in turn)
#   SLURM_TEST_KEEP=1   keep the scratch directory (default: removed unless the test failed)
#   SLURM_TEST_IGNORE_COLUMNS  comma-separated columns left out of the comparison (default: seconds)
#   SLURM_CI_PARTITION  partition of the test cluster (default: debug)
#   SNAKEMAKE           snakemake command (default: .venv/bin/snakemake, else snakemake on PATH)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"

TARGET=${SLURM_TEST_TARGET:-figures}
CORES=${SLURM_TEST_CORES:-2}
PARTITION=${SLURM_CI_PARTITION:-debug}
export SLURM_CI_PARTITION=$PARTITION
export SLURM_CI_RUN_DIR=${SLURM_CI_RUN_DIR:-/tmp/grokking-slurm-ci}
export SLURM_TEST_IGNORE_COLUMNS=${SLURM_TEST_IGNORE_COLUMNS:-seconds}
CONFIG=.test/config/config.yaml
if [ -n "${SNAKEMAKE:-}" ]; then
    read -r -a SMK <<<"$SNAKEMAKE"
elif [ -x "$ROOT/.venv/bin/snakemake" ]; then
    SMK=("$ROOT/.venv/bin/snakemake")
else
    SMK=(snakemake)
fi
# The comparison runs with the interpreter snakemake runs with (it has pandas).
PY=$(head -1 "$(command -v "${SMK[0]}")" | sed -n 's/^#!//p')
[ -x "${PY%% *}" ] || PY=python3

# compare_results LOCAL_DIR SLURM_DIR: same Parquet files with equal contents (all columns except
# $SLURM_TEST_IGNORE_COLUMNS; numbers exactly, NaN == NaN), same figure files.
compare_results() {
"$PY" - "$1" "$2" <<'PYEOF'
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

a_dir, b_dir = (Path(p) / "results" for p in sys.argv[1:3])
ignore = {c for c in os.environ["SLURM_TEST_IGNORE_COLUMNS"].split(",") if c}
problems = []


def files(root, pattern):
    return {str(p.relative_to(root)) for p in root.glob(pattern) if p.is_file()}


def same_cell(x, y):
    """Exact equality of table cells, also for (nested) lists and arrays; NaN equals NaN."""
    if isinstance(x, dict) or isinstance(y, dict):
        return (isinstance(x, dict) and isinstance(y, dict) and x.keys() == y.keys()
                and all(same_cell(x[k], y[k]) for k in x))
    seq = (list, tuple, np.ndarray)
    if isinstance(x, seq) or isinstance(y, seq):
        if not (isinstance(x, seq) and isinstance(y, seq)) or len(x) != len(y):
            return False
        try:
            xa, ya = np.asarray(x), np.asarray(y)
        except ValueError:  # ragged
            xa = ya = np.empty(0, dtype=object)
        if xa.dtype != object and ya.dtype != object:
            if xa.shape != ya.shape:
                return False
            nan = xa.dtype.kind in "fc" and ya.dtype.kind in "fc"
            return bool(np.array_equal(xa, ya, equal_nan=nan))
        return all(same_cell(a, b) for a, b in zip(x, y, strict=True))
    if x is None or y is None:
        return x is None and y is None
    try:
        if pd.isna(x) and pd.isna(y):
            return True
    except (TypeError, ValueError):
        pass
    return bool(x == y)


tables_a, tables_b = files(a_dir, "**/*.parquet"), files(b_dir, "**/*.parquet")
if tables_a != tables_b:
    problems.append(f"Parquet files differ: only local {sorted(tables_a - tables_b)}, "
                    f"only SLURM {sorted(tables_b - tables_a)}")
if not tables_a:
    problems.append("no Parquet tables at all")
for rel in sorted(tables_a & tables_b):
    da, db = pd.read_parquet(a_dir / rel), pd.read_parquet(b_dir / rel)
    if list(da.columns) != list(db.columns) or da.shape != db.shape:
        problems.append(f"{rel}: columns/shape {list(da.columns)} {da.shape} vs "
                        f"{list(db.columns)} {db.shape}")
        continue
    before = len(problems)
    for col in da.columns:
        if col in ignore:
            continue
        ca, cb = da[col], db[col]
        if pd.api.types.is_numeric_dtype(ca) and pd.api.types.is_numeric_dtype(cb):
            try:
                pd.testing.assert_series_equal(ca, cb, check_exact=True)
            except AssertionError as err:
                diff = (ca.astype(float) - cb.astype(float)).abs().max()
                problems.append(f"{rel}: column {col} differs (max abs diff {diff:g}): "
                                f"{str(err).splitlines()[0]}")
        else:
            bad = [i for i, (x, y) in enumerate(zip(ca, cb, strict=True)) if not same_cell(x, y)]
            if bad:
                problems.append(f"{rel}: column {col} differs in rows {bad[:10]}")
    if len(problems) == before:
        print(f"  equal: {rel} {da.shape}")

figs_a, figs_b = files(a_dir, "figures/*"), files(b_dir, "figures/*")
if figs_a != figs_b:
    problems.append(f"figure files differ: only local {sorted(figs_a - figs_b)}, "
                    f"only SLURM {sorted(figs_b - figs_a)}")
for rel in sorted(figs_a & figs_b):
    if (a_dir / rel).stat().st_size == 0 or (b_dir / rel).stat().st_size == 0:
        problems.append(f"{rel}: empty file")
print(f"  figures in both runs: {sorted(figs_a & figs_b)}")

if problems:
    print("MISMATCH:")
    for p in problems:
        print("  " + p)
    sys.exit(1)
print(f"  {len(tables_a)} tables and {len(figs_a)} figures agree "
      f"(ignoring columns {sorted(ignore)})")
PYEOF
}

if [ "${1:-}" = --compare ]; then   # only the comparison, of two finished runs' directories
    compare_results "$2" "$3"
    exit
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/grokking-slurm-test.XXXXXX")
STARTED_CLUSTER=0
STATUS=1
T0=$(date +%s)
say() { echo "[slurm-test $(( $(date +%s) - T0 ))s] $*"; }
LOCAL_PID=
cleanup() {
    if [ -n "$LOCAL_PID" ] && kill -0 "$LOCAL_PID" 2>/dev/null; then
        kill -TERM "$LOCAL_PID" 2>/dev/null || true   # the local run, when the SLURM run failed
        wait "$LOCAL_PID" 2>/dev/null || true
    fi
    if [ "$STARTED_CLUSTER" = 1 ]; then
        # Jobs left behind by an interrupted run, on this private cluster only.
        scancel --quiet --user="$(id -un)" 2>/dev/null || true
        "$HERE/stop_cluster.sh" || true
    fi
    if [ "$STATUS" = 0 ] && [ "${SLURM_TEST_KEEP:-0}" != 1 ]; then
        rm -rf "$WORK"
    else
        echo "[slurm-test] scratch directory kept: $WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

skip() {  # cannot run here: a failure unless SLURM_TEST_ALLOW_SKIP=1
    if [ "${SLURM_TEST_ALLOW_SKIP:-0}" != 1 ]; then
        echo "FAILED: cannot run the SLURM test here: $* (SLURM_TEST_ALLOW_SKIP=1 skips it)"
        exit 1
    fi
    echo "SKIPPED (SLURM_TEST_ALLOW_SKIP=1): $*"
    STATUS=0
    exit 0
}

# 1. Cluster. A cluster left over by an interrupted earlier test is stopped first (by its PIDs).
say "setting up the one-node SLURM cluster (run dir $SLURM_CI_RUN_DIR)"
"$HERE/stop_cluster.sh" || true
set +e
"$HERE/setup_cluster.sh" 2>"$WORK/setup.err"
rc=$?
set -e
cat "$WORK/setup.err" >&2
case $rc in
    0) STARTED_CLUSTER=1 ;;
    77) skip "$(sed -n 's/^cannot set up SLURM: //p' "$WORK/setup.err" | tail -1)" ;;
    *) STARTED_CLUSTER=1
       skip "the SLURM daemons did not come up: $(grep '^ERROR' "$WORK/setup.err" | tail -1)" ;;
esac
T_SETUP=$(( $(date +%s) - T0 ))

# 2. The two runs: local, and through a copy of profiles/slurm with the test partition and no
# account (the test cluster has no accounting), the way profiles/README.md tells users to adapt it.
# By default they run at the same time (SLURM_TEST_PARALLEL=0: one after the other).
A=$WORK/local
B=$WORK/slurm
mkdir -p "$A" "$B" "$WORK/profile"
sed -e "s/<your-partition>/$PARTITION/" -e '/^ *slurm_account:/d' \
    profiles/slurm/config.yaml >"$WORK/profile/config.yaml"
if grep -v '^ *#' "$WORK/profile/config.yaml" | grep -q '<your-'; then
    echo "FAILED: placeholders left in the profile copy:"; grep -n '<your-' "$WORK/profile/config.yaml"; exit 1
fi
touch "$WORK/start.stamp"   # to tell apart a code change during the test from a real mismatch
LOCAL_ARGS=(--cores "$CORES" --configfile "$CONFIG" --directory "$A")
# Poll squeue a few seconds after submission instead of after 40 s: the test jobs take seconds.
SLURM_ARGS=(--profile "$WORK/profile" --configfile "$CONFIG" --directory "$B"
            --slurm-init-seconds-before-status-checks 2)
run_local() {
    local t rc=0
    t=$(date +%s)
    "${SMK[@]}" "${LOCAL_ARGS[@]}" $TARGET >"$WORK/local.log" 2>&1 || rc=$?
    echo $(( $(date +%s) - t )) >"$WORK/local.seconds"
    return $rc
}
local_failed() { tail -60 "$WORK/local.log"; echo "FAILED: the local run failed (log: $WORK/local.log)"; exit 1; }
say "local run: ${SMK[*]} ${LOCAL_ARGS[*]} $TARGET"
if [ "${SLURM_TEST_PARALLEL:-1}" = 1 ]; then
    run_local &
    LOCAL_PID=$!
else
    run_local || local_failed
fi
say "SLURM run: ${SMK[*]} ${SLURM_ARGS[*]} $TARGET"
t=$(date +%s)
"${SMK[@]}" "${SLURM_ARGS[@]}" $TARGET >"$WORK/slurm.log" 2>&1 \
    || { tail -80 "$WORK/slurm.log"
         for f in "$B"/.snakemake/slurm_logs/*/*/*.log; do [ -f "$f" ] && { echo "---- $f"; tail -30 "$f"; }; done
         echo "FAILED: the SLURM run failed (log: $WORK/slurm.log)"; exit 1; }
T_SLURM=$(( $(date +%s) - t ))
say "SLURM run done in ${T_SLURM}s"
if [ -n "${LOCAL_PID:-}" ]; then
    pid=$LOCAL_PID
    wait "$pid" || { LOCAL_PID=; local_failed; }
    LOCAL_PID=
fi
T_LOCAL=$(cat "$WORK/local.seconds")
say "local run done in ${T_LOCAL}s"
n_submitted=$(grep -c "has been submitted with SLURM jobid" "$WORK/slurm.log" || true)
say "SLURM run submitted $n_submitted jobs"
if [ "$n_submitted" -lt 1 ]; then
    tail -40 "$WORK/slurm.log"; echo "FAILED: no job went through sbatch"; exit 1
fi
squeue --states=all --noheader --format='%i %T %k' >"$WORK/squeue.txt" 2>&1 || true
if grep -v COMPLETED "$WORK/squeue.txt" | grep -q .; then
    echo "FAILED: SLURM jobs that did not complete:"; grep -v COMPLETED "$WORK/squeue.txt"; exit 1
fi

# 4. Compare.
say "comparing $A with $B"
changed=$(find Snakefile workflow src .test config -type f -newer "$WORK/start.stamp" \
          -not -path '*/__pycache__/*' 2>/dev/null | sort | head -20)
if ! compare_results "$A" "$B"; then
    [ -z "$changed" ] || printf 'NOTE: these files changed while the test ran, which alone can explain the mismatch:\n%s\n' "$changed"
    echo "FAILED: the local and the SLURM run disagree (scratch: $WORK)"
    exit 1
fi
[ -z "$changed" ] || printf 'NOTE: these files changed while the test ran:\n%s\n' "$changed"
T_TOTAL=$(( $(date +%s) - T0 ))
STATUS=0
echo "PASSED: local and SLURM runs of '$TARGET' agree (cluster setup ${T_SETUP}s, local run ${T_LOCAL}s, SLURM run ${T_SLURM}s, total ${T_TOTAL}s)"
