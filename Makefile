# Two commands on a fresh machine:  `make figures`  and  `make test`.
# Both build the virtual environment from the pinned requirements first (once).
PYTHON ?= python3
VENV   ?= .venv
CORES  ?= $(shell nproc 2>/dev/null || echo 8)
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv figures all report results test test-fast lint format bench clean unlock mutation

# Snakemake's lock (.snakemake/locks) outlives a kill of its whole process group (kill -9, a
# closed terminal, a node lost) and then refuses every run. `make unlock` (run before figures,
# all and report) removes it with `snakemake --unlock` only when no Snakemake process or job
# runs in this directory, found through /proc; without /proc it keeps the lock and says how to
# remove it by hand. Jobs that were cut off are rerun by the next run (Snakemake marks them
# incomplete; training resumes from its partial/ state).
PY := $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
define STALE_LOCK_PY
import os, sys
locks = os.path.join(".snakemake", "locks")
if not os.path.isdir(locks) or not os.listdir(locks):
    sys.exit(1)
if not os.path.isdir("/proc"):
    sys.exit("make: .snakemake/locks exists; if no snakemake runs here: snakemake --unlock")
here, skip = os.path.realpath(os.getcwd()), {os.getpid(), os.getppid()}
def is_snakemake(argv):
    named = any(os.path.basename(a) == b"snakemake" or b".snakemake/scripts/" in a for a in argv)
    return named or argv[1:3] == [b"-m", b"snakemake"]
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    except OSError:
        continue
    if int(pid) in skip or not is_snakemake(argv):
        continue
    try:
        cwd = os.path.realpath(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        cwd = here  # another user's process: its directory is unknown, so assume this one
    if cwd == here:
        sys.exit(f"make: snakemake (pid {pid}) runs in this directory; its lock stays")
print("make: removing the lock an interrupted snakemake left in .snakemake/locks", file=sys.stderr)
endef
export STALE_LOCK_PY

venv: $(STAMP)

$(STAMP): requirements.txt requirements-lock.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -c requirements-lock.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

figures: $(STAMP) unlock  ## the main job: every figure on config/config.yaml
	$(BIN)/snakemake --cores $(CORES) figures

all: $(STAMP) unlock
	$(BIN)/snakemake --cores $(CORES) all

report: figures         ## HTML report with every figure captioned: results/report.html
	$(BIN)/snakemake --report results/report.html figures

results: figures        ## README's results section from the scorecard (docs/claims.parquet keeps the copy the README quotes)
	cp results/tables/claims.parquet docs/claims.parquet
	$(BIN)/python -m grokking_llc.report README.md docs/claims.parquet

unlock:                  ## remove a lock left by a killed run (only if no snakemake runs here)
	@if $(PY) -c "$$STALE_LOCK_PY"; then $(BIN)/snakemake --unlock --cores 1; fi

test: $(STAMP)           ## the whole test suite (unit + end-to-end Snakefile runs)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)      ## unit tests only
	$(BIN)/python -m pytest -q -m "not e2e"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakemake --lint

format: $(STAMP)
	$(BIN)/ruff format .

mutation: $(STAMP)       ## mutation testing by hand, not CI: docs/mutation.md (MODULES=, SAMPLE=, JOBS=)
	$(BIN)/python tools/mutation.py $(MODULES) --jobs $(or $(JOBS),2) $(if $(SAMPLE),--sample $(SAMPLE))

bench: $(STAMP)          ## speed of the LLC backends; writes benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_llc.py

clean:
	rm -rf results/* .snakemake
	touch results/.gitkeep
