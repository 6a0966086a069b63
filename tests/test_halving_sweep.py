"""Halved local sweeps end to end: the ladder promotes exactly the trials their histories rank on
top, stopped trials keep their best metrics and rank after the survivors, a rerun trains nothing,
a driver killed at random points and rerun ends with the same ladder and no epoch trained twice,
and bad halving settings stop the sweep before anything runs."""
import os
import random
import re
import signal
import subprocess
import sys

import pytest

from gridtune.halving import policy
from gridtune.sweepdir import records
from gridtune.config.identity import trial_id

from conftest import REPO, compose

# noise=0: the plain top-1/eta ladder these tests recompute (the noise margin: test_noise_margin_ladder...)
GRID = ("preset=debug", "train.epochs=4", "lr=1e-3,1e-4", "dropout=0.3,0.5", "train.threads=1",
        "hydra.sweeper.halving.eta=2", "hydra.sweeper.halving.min_epochs=1", "hydra.sweeper.halving.noise=0")
EPOCH_LINE = re.compile(r"^\[gridtune\] (\w+) epoch (\d+)/\d+ ", re.M)


def _args(root, out, name):
    return ("-m", *GRID, f"sweep_name={name}", f"out_root={out}", f"data.root={root}")


def _histories(sweep):
    return {p.parent.name: records.read_history(p) for p in sweep.glob("*/history.jsonl")}


def _expected_ladder(histories):
    """The ladder recomputed here, independently of gridtune.halving.policy: best val/acc up to the rung
    epoch, top half go on, ties to the smaller trial id."""
    members, out = sorted(histories), []
    for epoch in (1, 2):
        value = {t: max(r["val/acc"] for r in histories[t] if r["epoch"] <= epoch) for t in members}
        ranked = sorted(members, key=lambda t: (-round(value[t], 12), t))
        members = sorted(ranked[:-(-len(ranked) // 2)])
        out.append((ranked, members))
    return out


@pytest.fixture(scope="module")
def reference(demo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("halving_ref")
    r = subprocess.run([sys.executable, "-m", "gridtune.sweep", *_args(demo_root, out, "ref")], cwd=REPO,
                       capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return {"dir": out / "ref", "stdout": r.stdout, "out": out}


@pytest.mark.slow
def test_halved_sweep_promotes_exactly_the_top_trials(reference, demo_root, run_gridtune):
    sweep = reference["dir"]
    hist = _histories(sweep)
    ladder = records.read_json(sweep / policy.LADDER)
    assert ladder["complete"] and ladder["rungs"] == [1, 2, 4] and len(ladder["decisions"]) == 2
    for decision, (ranked, promoted) in zip(ladder["decisions"], _expected_ladder(hist)):
        assert [g["trial_ids"][0] for g in decision["ranking"]] == ranked
        assert decision["promoted"] == promoted
    survivor = ladder["decisions"][1]["promoted"]
    res = {tid: records.read_json(sweep / tid / records.RESULT) for tid in hist}
    assert [t for t, r in res.items() if r["status"] == "ok"] == survivor
    assert {t: r["epochs_run"] for t, r in res.items()} == {
        t: 4 if t in survivor else 2 if t in ladder["decisions"][1]["stopped"] else 1
        for t in res}
    first = ladder["decisions"][0]
    at1 = {t: max(r["val/acc"] for r in hist[t] if r["epoch"] == 1) for t in hist}
    cut = at1[first["ranking"][1]["trial_ids"][0]]              # the last of the top 2 at epoch 1
    for g in first["ranking"][2:]:
        rec = res[g["trial_ids"][0]]
        gap = cut - at1[g["trial_ids"][0]]
        assert rec["status"] == "stopped" and rec["stop_reason"] == (
            f"stopped at rung 0: rank {g['rank']} of 4, {gap:.4f} worse than the cut {cut:.4f}, noise margin 0.0000")
        assert rec["metrics"]["val/acc"] == max(r["val/acc"] for r in hist[g["trial_ids"][0]])
    assert sum(len(h) for h in hist.values()) == policy.Spec(2, 1, 4).epochs_trained(4) == 8
    # the trial ids (directories) are those of the grid without halving
    ids = {trial_id(compose("preset=debug", "train.epochs=4", f"lr={lr}", f"dropout={d}", "sweep_name=ref",
                            f"data.root={demo_root}")) for lr in ("1e-3", "1e-4") for d in ("0.3", "0.5")}
    assert ids == set(hist)
    # the leaderboard: survivor first, then the rung-1 config, then the rung-0 ones; best.yaml is the survivor
    r = run_gridtune(str(sweep), "--no-plots", module="gridtune.reduce")
    order = re.findall(r"^\d+\s+(\w{10})\s", r.stdout, re.M)
    assert order == survivor + ladder["decisions"][1]["stopped"] + [g["trial_ids"][0] for g in first["ranking"][2:]]
    best = (sweep / "best.yaml").read_text()
    assert survivor[0] in best and "stop_after_epoch" not in best


@pytest.mark.slow
def test_rerun_trains_nothing(reference, demo_root, run_gridtune):
    before = _histories(reference["dir"])
    r = run_gridtune(*_args(demo_root, reference["out"], "ref"))
    assert "Launching" not in r.stdout and r.stdout.count("0 to run") == 3
    assert _histories(reference["dir"]) == before


RUNNER = REPO / "tests" / "faults" / "runner.py"


def _kill_point(rng, kills: int, sweep) -> tuple[str, int] | None:
    """Where the next attempt dies, counted in the run's own writes (tests/faults/runner.py kills the
    driver inside the n-th atomic write of that file, before the rename): `checkpoint.pt` or
    `history.jsonl` number n + 1 of this attempt leaves exactly n more epochs trained (each epoch writes
    each file once), and `halving.json` number 1 is the next ladder decision (or the closing write).
    At most 2 epochs per kill out of the ladder's 8, so at least 3 kills happen, on any machine."""
    remaining = 8 - sum(len(h) for h in _histories(sweep).values())      # fewer when a checkpoint was lost
    if kills >= 2 and rng.random() < 0.5:
        return "halving.json", 1
    if remaining < 2:
        return None
    return rng.choice(("checkpoint.pt", "history.jsonl")), rng.randint(1, min(2, remaining - 1)) + 1


@pytest.mark.slow
def test_killed_driver_rerun_ends_with_the_same_ladder(reference, demo_root, tmp_path):
    """Kill the driver inside an epoch's records or a ladder decision, rerun the same command each
    time: the same ladder as the uninterrupted run, and every (trial, epoch) trained exactly once."""
    rng = random.Random(int(os.environ.get("GRIDTUNE_KILL_SEED", "13")))
    args = [sys.executable, str(RUNNER), *_args(demo_root, tmp_path, "ref")]
    logs, kills, points = [], 0, []
    for attempt in range(8):
        point = _kill_point(rng, kills, tmp_path / "ref") if kills < 4 else None
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if point:
            env.update(GRIDTUNE_TEST_KILL_ON=point[0], GRIDTUNE_TEST_KILL_NTH=str(point[1]))
        r = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
        logs.append(r.stdout)
        if r.returncode == -signal.SIGKILL:
            kills += 1
            points.append(point)
        elif r.returncode == 0:
            break
        else:
            pytest.fail(f"attempt {attempt} (kill point {point}) exited {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    assert r.returncode == 0 and kills >= 3, f"{kills} kills at {points}, rc {r.returncode}\n{logs[-1][-2000:]}"
    trained = [(m.group(1), int(m.group(2))) for text in logs for m in EPOCH_LINE.finditer(text)]
    assert len(trained) == len(set(trained)), "an epoch was trained twice"
    hist = _histories(tmp_path / "ref")
    assert sum(len(h) for h in hist.values()) == 8 and set(trained) <= {(t, r["epoch"]) for t, h in hist.items() for r in h}
    got, want = (records.read_json(d / policy.LADDER) for d in (tmp_path / "ref", reference["dir"]))
    assert [d["promoted"] for d in got["decisions"]] == [d["promoted"] for d in want["decisions"]]
    assert [[g["trial_ids"] for g in d["ranking"]] for d in got["decisions"]] == \
           [[g["trial_ids"] for g in d["ranking"]] for d in want["decisions"]]
    status = {t: records.read_json(tmp_path / "ref" / t / records.RESULT)["status"] for t in hist}
    assert sorted(status.values()) == ["ok", "stopped", "stopped", "stopped"]


def test_plan_prints_the_ladder(run_gridtune, demo_root, tmp_path):
    r = run_gridtune(*GRID[:4], "dropout=0.3,0.4,0.5", "hydra.sweeper.halving.eta=3", f"out_root={tmp_path}",
                     f"data.root={demo_root}", module="gridtune.plan")
    assert "successive halving, eta=3, min_epochs=1, rungs at epochs [1, 3, 4]" in r.stdout
    assert "  rung 1: 2 config(s) x 1 seed(s) to epoch 3 (+2 epochs each)" in r.stdout
    assert "  total: 11 trained epochs vs 24 for the full grid (0.46x)" in r.stdout
    assert not (tmp_path / "adhoc").exists()


@pytest.mark.parametrize("setting,message", [
    (("hydra.sweeper.halving.eta=1",), "hydra.sweeper.halving.eta=1: must be an integer >= 2"),
    (("hydra.sweeper.halving.eta=3", "hydra.sweeper.halving.min_epochs=4"),
     "hydra.sweeper.halving.min_epochs=4: must be an integer >= 1 and < train.epochs (4)"),
    (("hydra.sweeper.halving.eta=3", "objective=test/micro_f1"),
     "objective=test/micro_f1: not a metric a trial records (one of val/loss, val/acc"),
])
def test_bad_halving_settings_launch_nothing(run_gridtune, demo_root, tmp_path, setting, message):
    r = run_gridtune("-m", *GRID[:4], *setting, f"out_root={tmp_path}", f"data.root={demo_root}", check=False)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.startswith("gridtune:")]
    assert lines[0].startswith("gridtune: 1 problem(s)") and len(lines) == 2, r.stderr[-2000:]
    assert message in lines[-1] and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_noise_margin_ladder_keeps_what_the_val_set_cannot_separate(demo_root, tmp_path, run_gridtune):
    """With the noise margin on, the ladder recomputed here from the records (binomial SE on the val
    clips result.json records, Agresti-Coull) matches halving.json, whose every config says why."""
    r = run_gridtune("-m", "preset=debug", "train.epochs=4", "lr=1e-3,1e-4,3e-3", "dropout=0.3,0.5", "train.threads=1",
                     "hydra.sweeper.halving.eta=2", "hydra.sweeper.halving.min_epochs=1", "hydra.sweeper.halving.noise=0.2",
                     "hydra.sweeper.halving.budget=1", "sweep_name=noisy", f"out_root={tmp_path}", f"data.root={demo_root}")
    sweep = tmp_path / "noisy"
    ladder, hist = records.read_json(sweep / policy.LADDER), _histories(sweep)
    res = {t: records.read_json(sweep / t / records.RESULT) for t in hist}
    counts = {rec["n_val_clips"] for rec in res.values()}
    assert len(counts) == 1
    n = counts.pop()
    assert 0 < n < 66
    var = lambda v: ((v * n + 2) / (n + 4)) * (1 - (v * n + 2) / (n + 4)) / (n + 4)
    members = sorted(hist)
    for d, epoch in zip(ladder["decisions"], (1, 2)):
        value = {t: max(row["val/acc"] for row in hist[t] if row["epoch"] <= epoch) for t in members}
        ranked = sorted(members, key=lambda t: (-round(value[t], 12), t))
        cut = value[ranked[-(-len(ranked) // 2) - 1]]
        kept = [t for i, t in enumerate(ranked) if i < -(-len(ranked) // 2)
                or cut - value[t] < 0.2 * (var(value[t]) + var(cut)) ** 0.5]
        assert d["promoted"] == sorted(kept) and d["noise"] == {"z": 0.2, "n_val": n, "binomial": True}
        assert all({"value", "cut", "gap", "se", "margin", "why"} <= set(g) for g in d["ranking"])
        for g in d["ranking"]:
            if not g["promoted"]:
                rec = res[g["trial_ids"][0]]
                assert rec["status"] == "stopped" and rec["halving"]["margin"] == pytest.approx(g["margin"])
                assert rec["stop_reason"] == policy.stop_reason(d["rung"], g, d["n"])
        members = sorted(kept)
    assert {t: len(h) for t, h in hist.items()} == {t: 4 if t in members else res[t]["halving"]["epoch"] for t in hist}
    assert "noise margin 0.2 SE" in r.stdout


def test_bad_noise_or_budget_launches_nothing(run_gridtune, demo_root, tmp_path):
    for setting, message in (("hydra.sweeper.halving.noise=-1", "hydra.sweeper.halving.noise=-1.0: must be a number >= 0"),
                             ("hydra.sweeper.halving.budget=1.5", "hydra.sweeper.halving.budget=1.5: must be a number in (0, 1]")):
        r = run_gridtune("-m", *GRID[:4], "hydra.sweeper.halving.eta=2", setting, f"out_root={tmp_path}",
                         f"data.root={demo_root}", check=False)
        lines = [line for line in r.stderr.splitlines() if line.startswith("gridtune:")]
        assert r.returncode == 2 and len(lines) == 2 and message in lines[-1], r.stderr[-2000:]
        assert not any(tmp_path.iterdir())
