#!/usr/bin/env bash
# Run gridtune's sweep *driver* as a small CPU job, so the sweep survives logging out.
#
#   sbatch slurm/sweep.sh sweep=task11 [more Hydra overrides...]
#
# Submit from the repository root: the job runs there ($SLURM_SUBMIT_DIR).
# The driver itself does little work: it submits the grid's trials as their own
# SLURM jobs (Hydra's submitit launcher, launcher=slurm), waits for them and
# collects the results, so one CPU and a few GB are enough.
#
# sbatch reads #SBATCH lines only up to the first command, and options given on
# the sbatch command line win over them, e.g. `sbatch -t 48:00:00 slurm/sweep.sh ...`.
# The time limit must cover the whole sweep (all waves of trials, including
# time spent queued), hence a generous 24 h.
# Output goes to slurm-<jobid>-sweep.out in the submit directory (sbatch does
# not create directories, so no logs/ folder that might not exist).
#
# Environment:
#   GRIDTUNE_VENV    virtualenv to activate if it exists (default .venv)
#   GRIDTUNE_PYTHON  interpreter to run (default python, from the venv if any)
#   WANDB_MODE       defaults to offline when no W&B credentials are available
#
#SBATCH --job-name=gridtune-sweep
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=4G
#SBATCH --time=24:00:00
#SBATCH --output=slurm-%j-sweep.out
set -Eeuo pipefail

cd "${SLURM_SUBMIT_DIR:-$PWD}"

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
# Log lines reach slurm-<jobid>-sweep.out as they happen, not at exit.
export PYTHONUNBUFFERED=1

python_bin=${GRIDTUNE_PYTHON:-python}
echo "[sweep.sh] job ${SLURM_JOB_ID:-none} on $HOSTNAME at $(date -Is) in $PWD"
# Each override stays one argument: values are never re-split or re-evaluated
# by a shell (@Q only quotes them for this log line).
echo "[sweep.sh] $python_bin -m gridtune.sweep -m launcher=slurm ${*@Q}"
exec "$python_bin" -m gridtune.sweep -m launcher=slurm "$@"
