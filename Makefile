# Two commands on a fresh machine:  `make figures`  and  `make test`.
# Both build the virtual environment from the pinned requirements first (once).
PYTHON ?= python3
VENV   ?= .venv
CORES  ?= 8
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv figures all report test test-fast lint format bench clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-lock.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -c requirements-lock.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

figures: $(STAMP)        ## the main job: every figure on config/config.yaml
	$(BIN)/snakemake --cores $(CORES) figures

all: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) all

report: figures         ## HTML report with every figure captioned: results/report.html
	$(BIN)/snakemake --report results/report.html figures

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

bench: $(STAMP)          ## speed of the LLC backends; writes benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_llc.py

clean:
	rm -rf results/* .snakemake
	touch results/.gitkeep
