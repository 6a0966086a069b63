#!/usr/bin/env bash
# On a CUDA machine with this checkout's venv already installed (installs nothing), in <= 9 minutes:
#   1. make bench's section g: the task11 grid's 18 trials sequential vs fused B = 2, 6, 18 (bf16 + channels_last)
#   2. IRMAS-sized synthetic data (11 x 610 = 6,710 clips; 6,732 after rounding to whole recordings)
#   3. the task11 grid (18 trials x 15 epochs) as one job of 18 fused trials, timed, then reduced
# Results go to $OUT (default ./gpu_check_out): bench.json/bench.md, logs, the sweep, timings.txt.
#   scripts/gpu_check.sh            PYTHON=/path/to/python DATA=/fast/disk/irmas_sized scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-$PWD/gpu_check_out}
DATA=${DATA:-${TMPDIR:-/tmp}/gridtune_irmas_sized}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline
"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu_check: no CUDA device visible")'
{ nvidia-smi || true; "$PY" -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'; } \
    > "$OUT/device.txt" 2>&1
stamp() { echo "$1 $(( $(date +%s) - $2 )) s" | tee -a "$OUT/timings.txt"; }

t=$(date +%s)
timeout 150 "$PY" scripts/bench.py --sections g --out "$OUT" 2>&1 | tee "$OUT/bench_g.log" || echo "bench g: exit $?" | tee -a "$OUT/timings.txt"
stamp "bench section g:" "$t"

t=$(date +%s)
if [ ! -f "$DATA/.gridtune_demo.json" ]; then
    timeout 150 "$PY" -m gridtune.demo_data --out "$DATA" --per-class 610 --test-clips 0 --sample-rate 16000 > "$OUT/data.log" 2>&1
fi
stamp "IRMAS-sized data ($(find "$DATA/IRMAS-TrainingData" -name '*.wav' | wc -l) clips):" "$t"

t=$(date +%s)
timeout 240 "$PY" -m gridtune.sweep sweep=task11 launcher.trials_per_job=18 launcher.fuse=on \
    "data.root=$DATA" "out_root=$OUT/sweeps" 2>&1 | tee "$OUT/task11.log" | grep -v ' epoch ' || true
stamp "task11 grid, 18 x 15 epochs, fused in one job (wall, audio cache included):" "$t"
"$PY" -m gridtune.reduce "$OUT/sweeps/task11" > "$OUT/reduce.log" 2>&1 || true
grep -h "fused group of\|trials:" "$OUT/task11.log" | tail -3 | tee -a "$OUT/timings.txt"
