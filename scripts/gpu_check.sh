#!/usr/bin/env bash
# The GPU proof in one command, on a bare GPU machine from a copy of this working tree (no .venv):
#   scripts/gpu_check.sh           CUDA only, about 8 minutes: IRMAS-sized data, the train step,
#                                  the task11 grid sequential vs fused, predict's files/s
#   scripts/gpu_check.sh --tiny    (or GPU_CHECK_TINY=1) the same flow at toy sizes on any device:
#                                  a rehearsal of the install and the steps, not of the speed
# Needs a python3 holding torch, torchaudio, numpy, scipy, matplotlib, pyyaml, filelock, cloudpickle
# and tqdm (as the GPU image's does) and the wheels of `make gpu-wheels` in .whl/; they are installed
# with pip --no-index --no-deps --target into a temporary folder put first on PYTHONPATH, beside src/.
# Steps, each under its own time limit; one that fails or runs out of time is recorded and the next
# one runs:
#   install  the wheels                       data     synthetic IRMAS-sized data + its audio cache
#   bench    scripts/bench.py sections a, b   task11_fused, task11_sequential   the grid, both ways
#   reduce_fused, reduce_sequential, compare  leaderboards and wall times       predict  files/s
# Writes to $OUT (default ./gpu_check_out): gpu_check.json, gpu_check.md (the summary table, printed
# last), gpu_check.log (every step's output), bench.md, leaderboard_{fused,sequential}.md.
# Environment: PYTHON (python3), OUT, GPU_CHECK_WHEELS (.whl), GPU_CHECK_WORK (a folder kept after
# the run; default: a temporary one, removed).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
TINY=${GPU_CHECK_TINY:-0}
for arg in "$@"; do
    case $arg in
        --tiny) TINY=1 ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { print }' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown argument '$arg' (only --tiny)" >&2; exit 2 ;;
    esac
done
PY=${PYTHON:-python3}
OUT=${OUT:-$ROOT/gpu_check_out}
WHEELS=${GPU_CHECK_WHEELS:-$ROOT/.whl}
if [ -n "${GPU_CHECK_WORK:-}" ]; then
    WORK=$GPU_CHECK_WORK
    mkdir -p "$WORK"
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/gridtune-gpu-check.XXXXXX") || exit 2
    trap 'rm -rf "$WORK"' EXIT
fi
mkdir -p "$OUT" "$WORK/logs" || exit 2
: > "$WORK/steps.tsv"
export PYTHONUNBUFFERED=1 PYTHONNOUSERSITE=1 WANDB_MODE=offline MPLBACKEND=Agg
export PYTHONPATH="$WORK/site:$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"

if ! cuda=$("$PY" -c 'import torch, torchaudio; print(int(torch.cuda.is_available()))' 2>/dev/null); then
    echo "gpu_check: $PY cannot import torch and torchaudio (set PYTHON to the interpreter that has them)" >&2
    exit 2
fi
if [ "$TINY" != 1 ] && [ "$cuda" != 1 ]; then
    echo "gpu_check: no CUDA device visible; --tiny runs the same flow at toy sizes on any device" >&2
    exit 2
fi
shopt -s nullglob
wheels=("$WHEELS"/*.whl)
shopt -u nullglob
if [ ${#wheels[@]} = 0 ] && ! "$PY" -c 'import hydra, omegaconf, submitit, soundfile' 2>/dev/null; then
    echo "gpu_check: no wheels in $WHEELS and $PY lacks hydra/omegaconf/submitit/soundfile: run 'make gpu-wheels'" >&2
    exit 2
fi

now() { date +%s.%N; }
# step NAME LIMIT_S COMMAND...: runs COMMAND under `timeout`, its output in $WORK/logs/NAME.log, and
# appends "NAME status exit seconds limit" to steps.tsv (status: finished, timed_out or failed).
step() {
    local name=$1 limit=$2 t0 rc status secs
    shift 2
    echo "== $name (limit $limit s): $*"
    t0=$(now)
    timeout --kill-after=10 "$limit" "$@" > "$WORK/logs/$name.log" 2>&1
    rc=$?
    case $rc in
        0) status=finished ;;
        124|137) status=timed_out ;;
        *) status=failed ;;
    esac
    secs=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$secs" "$limit" >> "$WORK/steps.tsv"
    echo "   $name: $status (exit $rc) in $secs s"
    tail -n 3 "$WORK/logs/$name.log" | sed 's/^/   | /'
}
status_of() { awk -F'\t' -v n="$1" '$1 == n { print $2 }' "$WORK/steps.tsv"; }
seconds_of() { awk -F'\t' -v n="$1" '$1 == n { print $4 }' "$WORK/steps.tsv"; }

DATA=$WORK/data
SWEEPS=$WORK/sweeps
if [ "$TINY" = 1 ]; then
    # 6 clips per class (2 recordings), the debug preset (32 mel bands, a narrow CNN), 4 of the 18
    # configs for 2 epochs, the quick bench without compiling, 4 short recordings to predict
    PER_CLASS=6 EPOCHS=2 K=4 PRESET=debug
    FEATURES=(preset=debug)
    GRID=('dropout=0.3,0.5' 'lr=1e-3,1e-4' l2=1e-3 train.epochs=2)
    BENCH=(--quick --compile-budget 0 --time-limit 60)
    PREDICT=(--files 4 --seconds 5)
    # limits that only stop a hang: about 2 minutes in all on an idle 2-core CPU, 4 on a busy one
    L_INSTALL=120 L_DEVICE=120 L_DATA=120 L_BENCH=300 L_ARM=300 L_REDUCE=120 L_COMPARE=60 L_PREDICT=240
else
    # IRMAS-sized: 11 x 612 clips; the default 224 x 224 log-mel and cnn256; the whole task11 grid
    PER_CLASS=610 EPOCHS=15 K=18 PRESET=none
    FEATURES=()
    GRID=()
    # bench: its compile variants get what is left of --time-limit (fp32 NCHW compiles first, then bf16
    # channels_last); an arm that runs out of time is stopped and its whole-grid time estimated
    BENCH=(--batch 32 --size 224 --data-steps 10 --naive-workers 8 --compile-budget 75 --time-limit 108)
    PREDICT=(--files 100 --seconds 30)
    # 10 + 25 + 45 + 120 + 130 + 130 + 15 + 15 + 10 + 40 = 540 s at most
    L_INSTALL=10 L_DEVICE=25 L_DATA=45 L_BENCH=120 L_ARM=130 L_REDUCE=15 L_COMPARE=10 L_PREDICT=40
fi
COMMON=("sweep=task11" "${FEATURES[@]}" "${GRID[@]}" "data.root=$DATA" "launcher.trials_per_job=$K")

if [ ${#wheels[@]} -gt 0 ]; then
    step install "$L_INSTALL" "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps \
        --no-compile --no-cache-dir --upgrade --target "$WORK/site" "${wheels[@]}"
fi
step device "$L_DEVICE" "$PY" - "$WORK/device.json" <<'EOF'
import json, os, platform, sys
import torch
cuda = torch.cuda.is_available()
cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
           platform.machine())
info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "device_name": torch.cuda.get_device_name(0) if cuda else cpu,
        "device_type": "cuda" if cuda else "cpu", "cpus": os.cpu_count()}
if cuda:
    info["memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
print(info)
open(sys.argv[1], "w").write(json.dumps(info, indent=1) + "\n")
EOF
step data "$L_DATA" "$PY" scripts/gpu_data.py --out "$DATA" --per-class "$PER_CLASS" --json "$WORK/data.json" \
    "${FEATURES[@]}"
step bench "$L_BENCH" "$PY" scripts/bench.py --sections ab --data "$DATA" --out "$WORK/bench" "${BENCH[@]}"
step task11_fused "$L_ARM" "$PY" -m gridtune.sweep "${COMMON[@]}" launcher.fuse=on "out_root=$SWEEPS/fused"
step task11_sequential "$L_ARM" "$PY" -m gridtune.sweep "${COMMON[@]}" launcher.fuse=off "out_root=$SWEEPS/sequential"
for arm in fused sequential; do
    if [ -f "$SWEEPS/$arm/task11/gridtune_sweep.json" ]; then
        step "reduce_$arm" "$L_REDUCE" "$PY" -m gridtune.reduce "$SWEEPS/$arm/task11"
        cp "$SWEEPS/$arm/task11/leaderboard.md" "$OUT/leaderboard_$arm.md" 2>/dev/null
    fi
done
if [ -f "$SWEEPS/fused/task11/leaderboard.csv" ] && [ -f "$SWEEPS/sequential/task11/leaderboard.csv" ]; then
    fin() { [ "$(status_of "$1")" = finished ] && echo yes || echo no; }
    step compare "$L_COMPARE" "$PY" scripts/gpu_compare.py "$SWEEPS/sequential/task11" "$SWEEPS/fused/task11" \
        --epochs "$EPOCHS" --group "$K" --walls "$(seconds_of task11_sequential),$(seconds_of task11_fused)" \
        --finished "$(fin task11_sequential),$(fin task11_fused)" --json "$WORK/compare.json"
fi
step predict "$L_PREDICT" "$PY" scripts/gpu_predict.py "${PREDICT[@]}" --preset "$PRESET" --json "$WORK/predict.json"

cp "$WORK/bench/bench.md" "$OUT/bench.md" 2>/dev/null
cut -f1 "$WORK/steps.tsv" | while read -r name; do
    printf '\n===== %s =====\n' "$name"
    tail -c 2000000 "$WORK/logs/$name.log"
done > "$OUT/gpu_check.log"
tiny_flag=()
[ "$TINY" = 1 ] && tiny_flag=(--tiny)
# the summary table, last; exit status 0 only when every step finished
"$PY" scripts/gpu_report.py "$WORK" "$OUT" "${tiny_flag[@]}"
