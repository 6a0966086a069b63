#!/usr/bin/env bash
# Final training run of a finished sweep, as one GPU job.
#
#   sbatch slurm/final.sh <sweep_dir> [more Hydra overrides...]
#
# Submit from the repository root: the job runs there ($SLURM_SUBMIT_DIR), and a
# relative <sweep_dir> is taken relative to it.
# Options on the sbatch command line win over the #SBATCH lines below, e.g.
# `sbatch -c 8 --mem=32G slurm/final.sh ...` on a bigger node. (sbatch reads
# #SBATCH lines only up to the first command.)
#
# Long runs and preemption: training checkpoints every completed epoch and
# resumes from the last one when restarted. So the job is --requeue'able, and
# 120 s before its time limit SLURM sends USR2 to this batch shell (the "B:"
# prefix: without it only job steps launched by srun are signalled, and this
# script runs no srun). On USR2 the script requeues its own job: SLURM stops
# the run and starts it again later with a fresh time limit, at most
# GRIDTUNE_MAX_REQUEUES times. When an `urgent` partition preempts the job,
# SLURM requeues it itself; the USR2 it sends first takes the same path.
# Output is appended across restarts, in slurm-<jobid>-final.out.
#
# Environment:
#   GRIDTUNE_VENV          virtualenv to activate if it exists (default .venv)
#   GRIDTUNE_PYTHON        interpreter to run (default python, from the venv if any)
#   GRIDTUNE_MAX_REQUEUES  self-requeues on USR2 before giving up (default 20)
#   WANDB_MODE             defaults to offline when no W&B credentials are available
#
#SBATCH --job-name=gridtune-final
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=2
#SBATCH --gpus-per-node=1
#SBATCH --mem=8G
#SBATCH --time=12:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR2@120
#SBATCH --output=slurm-%j-final.out
#SBATCH --open-mode=append
set -Eeuo pipefail

# shellcheck disable=SC2317,SC2329 # invoked by the USR2 trap
requeue_self() {
  interrupted=1
  local max=${GRIDTUNE_MAX_REQUEUES:-20} restarts=${SLURM_RESTART_COUNT:-0}
  [[ $max =~ ^[0-9]+$ ]] || max=20
  [[ $restarts =~ ^[0-9]+$ ]] || restarts=0
  if [ -z "${SLURM_JOB_ID:-}" ]; then
    echo "[final.sh] USR2 outside SLURM: ignored"
  elif ((restarts >= max)); then
    echo "[final.sh] USR2: already restarted $restarts times (GRIDTUNE_MAX_REQUEUES=$max); not requeueing"
  else
    echo "[final.sh] USR2 at $(date -Is): requeueing job $SLURM_JOB_ID; it resumes from its last checkpoint"
    # Fails harmlessly when SLURM is already requeueing the job (preemption).
    scontrol requeue "$SLURM_JOB_ID" || true
  fi
}

# The traps come first: a USR2 that arrived before them would end this shell
# (exit 140) and the job with it.
child=
interrupted=0
trap requeue_self USR2
trap 'interrupted=1; if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null || true; else exit 143; fi' TERM INT

usage="usage: sbatch slurm/final.sh <sweep_dir> [overrides...]"
cd "${SLURM_SUBMIT_DIR:-$PWD}"
if [ $# -lt 1 ] || [ -z "$1" ]; then
  echo "final.sh: missing <sweep_dir> ($usage)" >&2
  exit 2
fi
if [ ! -d "$1" ]; then
  echo "final.sh: sweep_dir '$1' is not a directory ($usage)" >&2
  exit 2
fi
# Absolute, so the run does not depend on its working directory.
sweep_dir=$(cd "$1" && pwd)
shift
# As a Hydra override value: plain when it is a plain path, otherwise quoted
# (a space, comma, bracket or '=' would change how Hydra parses it).
if [[ ! $sweep_dir =~ ^[A-Za-z0-9_./@+-]+$ ]]; then
  sweep_dir="'${sweep_dir//\'/\\\'}'"
fi

venv=${GRIDTUNE_VENV:-.venv}
if [ -f "$venv/bin/activate" ]; then
  # shellcheck disable=SC1091 # the venv is created at install time
  source "$venv/bin/activate"
fi
# W&B must never block an unattended job on a login prompt: without an API key
# (environment or ~/.netrc) log offline; `wandb sync` can upload later.
if [ -z "${WANDB_API_KEY:-}" ] && ! grep -qs 'api.wandb.ai' "${NETRC:-$HOME/.netrc}"; then
  export WANDB_MODE=${WANDB_MODE:-offline}
fi
export PYTHONUNBUFFERED=1

python_bin=${GRIDTUNE_PYTHON:-python}
cmd=("$python_bin" -m gridtune.final "sweep_dir=$sweep_dir" "$@")
echo "[final.sh] job ${SLURM_JOB_ID:-none} (restart ${SLURM_RESTART_COUNT:-0}) on $HOSTNAME at $(date -Is) in $PWD"
echo "[final.sh] ${cmd[*]@Q}"

# Python runs as a child, not exec'd, so that this shell can receive USR2.
# Background children of a script ignore SIGINT, so INT/TERM are passed on.
"${cmd[@]}" &
child=$!
# `wait` returns early (status > 128) whenever a trapped signal arrives, whether
# or not the child has ended meanwhile: then wait again, which gives the child's
# own status once it has ended. Exit with that status.
while :; do
  interrupted=0
  status=0
  wait "$child" || status=$?
  if ((interrupted)) && ((status > 128)); then continue; fi
  break
done
exit "$status"
