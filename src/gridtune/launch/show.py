"""What the sweep driver prints before it launches: the plan's header (trials, done, to run, jobs,
cost in clip-epochs), trials redone on other data, the halving ladder, and the dry run's list of
trials (at most `list_max` lines: the first and the last, the rest counted by state).
"""
from __future__ import annotations

from pathlib import Path

from gridtune.checks import preflight
from gridtune.halving import ladder, policy


def plan(name: str, sweep_dir: Path, trials: list[dict], done: set, stale: dict, todo: list[dict], k: int,
         seconds: float, spec=None) -> None:
    """The plan's header lines; with `spec` (halving on), its rungs and configs per rung."""
    n_jobs = -(-len(todo) // k)
    cost = sum(t["epochs"] * t["n_clips"] for t in todo)
    print(f"gridtune: sweep '{name}' in {sweep_dir}: {len(trials)} trials, {len(done)} already done "
          f"(skipped), {len(todo)} to run as {n_jobs} job(s) of <= {k}; est. cost {cost:,} clip-epochs "
          f"(composed in {seconds:.1f}s)", flush=True)
    if stale:
        print(f"gridtune: {preflight.redone_message(list(stale.values()))}", flush=True)
    if spec is not None:
        n_configs = len({ladder.config_key(t["cfg"]) for t in trials})
        print(f"gridtune: successive halving, eta={spec.eta}, min_epochs={spec.min_epochs}, rungs at epochs "
              f"{spec.rungs}:\n" + "\n".join(policy.plan_lines(spec, n_configs, len(trials) // n_configs)),
              flush=True)


def trial_lines(trials: list[dict], done: set, stale: dict, list_max: int | None) -> list[str]:
    """The dry run's list: one line per trial (id, state, overrides), at most `list_max` lines: a
    longer grid shows its first and last trials and the count of those left out."""
    def state(t) -> str:
        return "done" if t["trial_id"] in done else "redo" if t["trial_id"] in stale else "run"

    def line(t) -> str:
        return f"  {t['trial_id']}  {state(t):4s}  {' '.join(t['overrides'])}"
    n = len(trials)
    if list_max is None or n <= list_max:
        return [line(t) for t in trials]
    head, tail = (list_max + 1) // 2, list_max // 2
    left = trials[head:n - tail]
    counts = {s: 0 for s in ("run", "done", "redo")}
    for t in left:
        counts[state(t)] += 1
    return [*(line(t) for t in trials[:head]),
            f"  ... {len(left):,} more trials ({', '.join(f'{c:,} {s}' for s, c in counts.items())}; "
            "hydra.sweeper.list_max=null lists every one)",
            *(line(t) for t in trials[n - tail:])]
