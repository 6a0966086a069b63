"""best.yaml: the winner of a leaderboard, the overrides the final run composes, and provenance.

Its `params` are the sweep's own axes plus the default knobs (`Leaderboard.base`), as the
leaderboard shows them; `overrides` are the winner's own (minus seed when averaged over seeds).
"""
from __future__ import annotations

import json
import time

from .leaderboard import Leaderboard, default_mode
from gridtune.sweepdir.ledger import Sweep


def resolve_objective(records: Sweep, objective: str | None = None,
                      mode: str | None = None) -> tuple[str, str]:
    """CLI value, else the manifest's, else the first result's, else val/acc; mode follows its source."""
    sources = [records.manifest or {}] + [t.result for t in records.trials if t.result]
    if objective is None:
        objective = next((s["objective"] for s in sources if s.get("objective")), "val/acc")
    if mode is None:
        mode = next((s["objective_mode"] for s in sources
                     if s.get("objective") == objective and s.get("objective_mode") in ("max", "min")),
                    default_mode(objective))
    return objective, mode


def best_record(board: Leaderboard) -> dict | None:
    """The content of best.yaml: the winner, its overrides and provenance, and the runners-up."""
    win = board.winner
    if win is None:
        return None
    rep = win.representative
    keys = list(dict.fromkeys(board.base + board.varying))
    params = {k: board.value(rep, k) for k in keys}
    if len(win.seeds) > 1:
        params.pop("seed", None)
    overrides = [str(o) for o in win.overrides()]
    if not overrides:  # an ad-hoc directory without recorded overrides: rebuild them from the params
        overrides = [f"{k}={params[k]}" for k in board.varying if k in params and params[k] is not None]
    return {
        "trial_id": rep.trial_id,
        "sweep": board.records.name,
        "sweep_dir": str(board.sweep_dir.resolve()),
        "objective": board.objective,
        "objective_mode": board.mode,
        "value": win.objective.mean,
        "value_std": win.objective.std,
        "value_ci95": [win.objective.lo, win.objective.hi] if win.objective.n > 1 else None,
        "overrides": overrides,
        "params": params,
        "n_seeds": win.objective.n,
        "seeds": win.seeds,
        "trial_ids": [t.trial_id for t in win.members],
        "separable": bool(board.separable),
        "separability": board.separability,
        "note": board.note,
        "runners_up": [{"trial_id": g.representative.trial_id, "value": g.objective.mean,
                        "n_seeds": g.objective.n, "overrides": [str(o) for o in g.overrides()]}
                       for g in board.groups[1:3]],
        "git_sha": rep.get("git_sha"),
        "git_dirty": rep.get("git_dirty"),
        "cache_hash": rep.get("cache_hash"),
        "reduced_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def dump_yaml(data: dict) -> str:
    try:
        import yaml
    except ImportError:  # JSON is valid YAML, so the final run can still read it
        return json.dumps(data, indent=2) + "\n"
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
