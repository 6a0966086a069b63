"""Successive halving against the full grid: epochs, time, whether it keeps the pick, and how the
pick scores on recordings the sweep never saw.

    python scripts/bench_halving.py [--data data/demo] [--heldout data/heldout] [--preset demo]
        [--epochs 15] [--eta 3] [--min-epochs M] [--noise Z] [--threads 1] [--out sweeps/bench_halving]

1. The full grid: task11 (18 configs) with `repeats=3` (seeds 0, 1, 2), in one directory: three
   single-seed task11 grids, and the repeats grid (task11's 9 dropout x lr configs at l2=1e-4, 3 seeds).
2. Four halved procedures, each run for real in a directory of its own with the rule as configured
   (`--min-epochs`, `--noise`; unset: the sweeper's defaults): task11 with seed 0, 1 and 2, and the
   repeats grid.
3. Three other rules replayed on the full grid's records with the driver's own decision function
   (gridtune.halving.policy.decide_rung reads only history rows up to each rung and the records' val
   count, so a replay is the ladder a real run decides; each real run is checked against its own
   replay): the old rule (noise 0, first rung at epoch 1), the plain rule at the runs' first rung,
   and the runs' noise margin without a budget.
4. Every pick (the leaderboard winner of each procedure and of the full grid) is scored on the
   held-out render (`--heldout`; rendered when missing: the sweep data's size, its seed + 1, and
   track ids past the sweep data's, `gridtune.data.demo --track-offset`): top-1 accuracy of the
   trial's best model on all its training clips (`gridtune.predict`); a repeats pick by the mean over
   its seeds' models.
Reports per procedure and rule: epochs halved / full (trained history rows), trial time, the pick,
whether it is the full grid's pick or inside the full winner's 95 % interval (Wilson on the val clips
for one seed, the seeds' t interval with repeats), and the held-out accuracy of the pick against the
full grid's pick with one binomial standard error. Writes bench_halving.json and bench_halving.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from gridtune.halving import policy
from gridtune.sweepdir import records  # noqa: E402
from gridtune.halving.noise import Noise  # noqa: E402
from gridtune.report.leaderboard import build  # noqa: E402
from gridtune.sweepdir.ledger import Sweep, read_sweep  # noqa: E402

OBJ, MODE = "val/acc", "max"
PROCEDURES = [(f"task11 seed {s}", f"halved_s{s}", (f"seed={s}",), lambda p, s=s: p.get("seed") == s) for s in range(3)]
PROCEDURES.append(("repeats 9 x 3 seeds", "halved_repeats", ("l2=1e-4", "hydra.sweeper.repeats=3", "seed=0"),
                   lambda p: p.get("l2") == 1e-4))


def sweep(args, name: str, *extra: str, halved: bool) -> float:
    cmd = [sys.executable, "-m", "gridtune.sweep", "sweep=task11", f"preset={args.preset}",
           f"train.epochs={args.epochs}", f"train.threads={args.threads}", f"data.root={args.data}",
           f"out_root={args.out}", f"sweep_name={name}", *extra]
    if halved:
        cmd.append(f"hydra.sweeper.halving.eta={args.eta}")
        cmd += [f"hydra.sweeper.halving.{k}={v}" for k, v in (("min_epochs", args.min_epochs), ("noise", args.noise))
                if v is not None]
    print(f"$ {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def config(params: dict) -> dict:
    return {k: params.get(k) for k in ("dropout", "lr", "l2")}


def board(recs: Sweep, trials):
    return build(Sweep(recs.dir, recs.name, recs.manifest, list(trials)), OBJ, MODE)


def replay(trials, spec: policy.Spec) -> tuple[list[dict], list]:
    """The ladder the driver decides on these records (gridtune.halving.policy.decide), and its survivors."""
    members, decisions = list(trials), []
    for k, epoch in enumerate(spec.rungs[:-1]):
        values = {t.trial_id: policy.rung_value(t.history(), OBJ, MODE, epoch) for t in members}
        noise = Noise.of(spec.noise, OBJ, [t.result for t in members])
        d = policy.decide_rung(spec, decisions, {t.trial_id: json.dumps(config(t.params)) for t in members}, values,
                                MODE, noise)
        decisions.append({"rung": k, "epoch": epoch, **d})
        members = [t for t in members if t.trial_id in set(d["promoted"])]
    return decisions, members


def ladder_ids(decisions: list[dict]) -> list:
    return [[g["trial_ids"] for g in d["ranking"]] + [d["promoted"]] for d in decisions]


def replay_epochs(trials, decisions, spec) -> int:
    reach = {t.trial_id: spec.epochs for t in trials}
    for d in decisions:
        for tid in d["stopped"]:
            reach[tid] = min(reach[tid], d["epoch"])
    return sum(reach.values())


def fate(decisions: list[dict], key: dict, trials) -> str:
    """Where a ladder left the config `key`: 'survived', or where it stopped and why."""
    ids = {t.trial_id for t in trials if config(t.params) == key}
    for d in decisions:
        for g in d["ranking"]:
            if ids & set(g["trial_ids"]) and not g["promoted"]:
                return f"stopped at rung {d['rung']} (epoch {d['epoch']}, rank {g['rank']} of {d['n']}: {g['why']})"
    return "survived"


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def ensure_heldout(args) -> None:
    """Render the held-out data when it is not there: the sweep data's size, the next seed, and track
    ids past the sweep data's (gridtune.data.demo.track_span), so no recording is in both."""
    from gridtune.data import demo
    if (args.heldout / demo.TRAIN_DIR).is_dir():
        return
    first = json.loads((args.data / demo.MANIFEST).read_text())
    offset = first.get("track_offset", 0) + demo.track_span(first["per_class"])
    print(f"rendering held-out data into {args.heldout} (seed {first['seed'] + 1}, track offset {offset})", flush=True)
    demo.generate(args.heldout, seed=first["seed"] + 1, per_class=first["per_class"], test_clips=0,
                       track_offset=offset)


def heldout_scores(args, trial_dirs) -> tuple[dict, int]:
    """Top-1 accuracy of each trial's best model on every training clip of the held-out render, the
    clips decoded once (gridtune.predict's decoding and window averaging); and the number of clips."""
    import numpy as np
    import torch

    from gridtune.use import evaluate, trained
    from gridtune import predict
    torch.set_num_threads(args.threads)
    paths, _ = predict.expand([str(args.heldout / "IRMAS-TrainingData")])
    scores, clips = {}, None
    for d in sorted(set(map(str, trial_dirs))):
        model = trained.load(d, "cpu")
        if clips is None:
            clips = [(p, x) for p, x, _ in predict.decoded(paths, model.sample_rate, args.threads) if x is not None]
            offsets = np.concatenate([[0], np.cumsum([len(x) for _, x in clips])])
            audio, truth = np.concatenate([x for _, x in clips]), [Path(p).parent.name for p, _ in clips]
        window, hop = evaluate.window_and_hop(model.cfg)
        probs, _ = evaluate.clip_probabilities(predict.model_fn(model, torch.device("cpu")), audio, offsets, window,
                                               hop, int(model.cfg.train.eval_batch_size))
        scores[d] = float(np.mean([model.classes[int(np.argmax(p))] == t for p, t in zip(probs, truth)]))
    return scores, len(clips or [])


def pick_of(recs: Sweep, trials) -> tuple[dict, list]:
    """The leaderboard winner's config and its trials."""
    w = board(recs, trials).winner
    return config(w.params), list(w.members)


def verdict(args, pick: tuple[dict, list], full: tuple[Sweep, list], n_val: int, scores: dict) -> dict:
    """Is the pick the full grid's pick, or inside its 95 % interval; and both picks' held-out accuracy."""
    fb = board(*full)
    fw, mine = fb.winner, next(g for g in fb.groups if config(g.params) == pick[0])
    o = fw.objective
    lo, hi = (o.lo, o.hi) if o.n > 1 else wilson(o.mean, n_val)
    held = sum(scores[str(t.dir)] for t in pick[1]) / len(pick[1])
    held_full = sum(scores[str(t.dir)] for t in fw.members) / len(fw.members)
    se = math.sqrt(held_full * (1 - held_full) / scores["n"])
    return {"pick": pick[0], "full_pick": config(fw.params), "same": pick[0] == config(fw.params),
            "pick_full_rank": mine.rank, "pick_full_value": mine.objective.mean, "full_value": o.mean,
            "full_ci95": [lo, hi], "inside_ci95": lo <= mine.objective.mean <= hi,
            "heldout": held, "heldout_full": held_full, "heldout_se": se, "n_heldout": scores["n"],
            "heldout_within_se": held >= held_full - se}


def real_row(args, name: str, subdir: str, full, n_val: int, scores: dict) -> dict:
    """A halved procedure run for real in its own directory, against the full grid's same trials."""
    recs = read_sweep(args.out / subdir)
    ladder = records.read_json(args.out / subdir / policy.LADDER)
    spec = policy.Spec(ladder["eta"], ladder["min_epochs"], ladder["epochs"], ladder["noise"], ladder["budget"])
    decisions, _ = replay(full[1], spec)
    return {"procedure": name, "rule": rule(spec, "run"), "spec": vars(spec),
            "rungs": spec.rungs, "ladder": [d["n"] for d in ladder["decisions"]] + [ladder["decisions"][-1]["keep"]],
            "epochs_halved": sum(len(t.history()) for t in recs.trials), "epochs_full": sum(len(t.history()) for t in full[1]),
            "time_halved_s": sum(float(t.get("wall_time_s") or 0) for t in recs.trials),
            "time_full_s": sum(float(t.get("wall_time_s") or 0) for t in full[1]),
            "ladder_matches_replay": ladder_ids(ladder["decisions"]) == ladder_ids(decisions),
            "full_pick_in_ladder": fate(ladder["decisions"], config(board(*full).winner.params), recs.trials),
            **verdict(args, pick_of(recs, recs.trials), full, n_val, scores)}


def rule(spec: policy.Spec, how: str) -> str:
    name = "old: plain" if spec.noise == 0 and spec.min_epochs == 1 else "plain" if spec.noise == 0 else \
        f"noise {spec.noise:g}" + (f", budget {spec.budget:g}" if spec.budget < 1 else ", no budget")
    return f"{name}, min_epochs {spec.min_epochs} ({how})"


def replay_row(args, name: str, spec: policy.Spec, full, n_val: int, scores: dict) -> dict:
    decisions, survivors = replay(full[1], spec)
    return {"procedure": name, "rule": rule(spec, "replayed"),
            "rungs": spec.rungs, "ladder": [d["n"] for d in decisions] + [decisions[-1]["keep"]],
            "epochs_halved": replay_epochs(full[1], decisions, spec), "epochs_full": sum(len(t.history()) for t in full[1]),
            "full_pick_in_ladder": fate(decisions, config(board(*full).winner.params), full[1]),
            **verdict(args, pick_of(full[0], survivors), full, n_val, scores)}


def horizon(full) -> list[int]:
    """Rank of the full grid's pick by each epoch's rung value (best up to that epoch, mean over seeds)."""
    recs, trials = full
    w = config(board(recs, trials).winner.params)
    groups: dict[str, list] = {}
    for t in trials:
        groups.setdefault(json.dumps(config(t.params)), []).append(t)
    ranks = []
    for e in range(1, max(len(t.history()) for t in trials) + 1):
        v = {k: sum(policy.rung_value(t.history(), OBJ, MODE, e) for t in ts) / len(ts) for k, ts in groups.items()}
        ranks.append(sorted(v, key=lambda k: (-v[k], k)).index(json.dumps(w)) + 1)
    return ranks


def run(args) -> dict:
    out = {"settings": {k: str(v) for k, v in vars(args).items()}, "rows": [], "horizon": {}}
    out["full_wall_s"] = sweep(args, "full", "hydra.sweeper.repeats=3", "seed=0", halved=False)
    for name, subdir, extra, keep in PROCEDURES:
        out.setdefault("wall_s", {})[name] = sweep(args, subdir, *extra, halved=True)
    allrecs = read_sweep(args.out / "full")
    n_val = next(t.get("n_val_clips") for t in allrecs.trials)
    dirs = [t.dir for sub in ["full"] + [p[1] for p in PROCEDURES] for t in read_sweep(args.out / sub).trials]
    scores, out["n_heldout"] = heldout_scores(args, dirs)
    scores["n"] = out["n_heldout"]
    for name, subdir, extra, keep in PROCEDURES:
        full = (allrecs, [t for t in allrecs.trials if keep(t.params)])
        out["horizon"][name] = horizon(full)
        new = real_row(args, name, subdir, full, n_val, scores)
        m, z = new["spec"]["min_epochs"], new["spec"]["noise"]
        specs = [policy.Spec(args.eta, 1, args.epochs), policy.Spec(args.eta, m, args.epochs),
                 policy.Spec(args.eta, m, args.epochs, z, 1.0)]
        rows = [replay_row(args, name, spec, full, n_val, scores) for spec in specs] + [new]
        out["rows"] += rows
        for r in rows:
            print(json.dumps(r), flush=True)
    out["n_val"] = n_val
    return out


def _cfg(c: dict) -> str:
    return f"d{c['dropout']} lr{c['lr']:g} l2{c['l2']:g}"


def markdown(res: dict) -> str:
    st = res["settings"]
    lines = [f"Successive halving vs the full grid: preset={st['preset']}, {st['epochs']} epochs, eta={st['eta']}, "
             f"train.threads={st['threads']}, data {st['data']} ({res['n_val']} val clips), held out: {st['heldout']} "
             f"({res['n_heldout']} clips)", "",
             "| procedure | rule | rungs: configs | epochs halved / full | pick: full rank, val acc | full pick, val acc "
             "[95 % CI] | same or inside CI | held-out acc: pick / full pick (1 SE) | full pick in the ladder |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        ok = "same" if r["same"] else "inside" if r["inside_ci95"] else "**no**"
        held = f"{r['heldout']:.3f} / {r['heldout_full']:.3f} ({r['heldout_se']:.3f})"
        held += "" if r["heldout_within_se"] else " **no**"
        lines.append(f"| {r['procedure']} | {r['rule']} | {', '.join(f'{e}: {n}' for e, n in zip(r['rungs'], r['ladder']))} "
                     f"| {r['epochs_halved']} / {r['epochs_full']} = {r['epochs_halved'] / r['epochs_full']:.2f} "
                     f"| {_cfg(r['pick'])} #{r['pick_full_rank']}, {r['pick_full_value']:.3f} "
                     f"| {_cfg(r['full_pick'])} {r['full_value']:.3f} [{r['full_ci95'][0]:.3f}, {r['full_ci95'][1]:.3f}] "
                     f"| {ok} | {held} | {r['full_pick_in_ladder']} |")
    lines.append("")
    for r in res["rows"]:
        if "ladder_matches_replay" in r:
            lines.append(f"- {r['procedure']} (run): trial time halved / full {r['time_halved_s']:.0f} / "
                         f"{r['time_full_s']:.0f} s = {r['time_halved_s'] / r['time_full_s']:.2f}; ladder = its replay: "
                         f"{r['ladder_matches_replay']}; driver {res['wall_s'][r['procedure']]:.0f} s")
    lines += [f"- full grid's pick, rank per epoch (best up to the epoch): {name}: {ranks}"
              for name, ranks in res["horizon"].items()]
    lines.append(f"- full grid (54 trials): driver {res['full_wall_s']:.0f} s in this run (0 when its records were "
                 "already there: a rerun skips finished trials)")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO / "data" / "demo")
    ap.add_argument("--heldout", type=Path, default=REPO / "data" / "heldout")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--min-epochs", type=int, default=None, help="first rung of the halved runs (default: the sweeper's)")
    ap.add_argument("--noise", type=float, default=None, help="noise margin of the halved runs (default: the sweeper's)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per trial (1: best on a shared machine)")
    ap.add_argument("--out", type=Path, default=REPO / "sweeps" / "bench_halving")
    args = ap.parse_args()
    args.data, args.heldout, args.out = args.data.resolve(), args.heldout.resolve(), args.out.resolve()
    t0 = time.perf_counter()
    ensure_heldout(args)
    res = run(args)
    res["total_s"] = time.perf_counter() - t0
    records.write_json(REPO / "bench_halving.json", res)
    text = markdown(res) + f"\nWhole benchmark: {res['total_s']:.0f} s.\n"
    records.atomic_write_text(REPO / "bench_halving.md", text)
    print(text)


if __name__ == "__main__":
    main()
