"""Everything is checked before anything is submitted: invalid trials among valid ones, unsafe SLURM
fields, unusable data, and `gridtune.plan` on a half-done sweep (which launches nothing)."""
from __future__ import annotations


import pytest

from faultkit import sweep_args
from gridtune import layouts, records


def _snapshot(root):
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")} if root.exists() else {}


def test_grid_with_invalid_trials_among_valid_ones_submits_nothing(run_gridtune, demo_root, tmp_path):
    out = tmp_path / "out"
    r = run_gridtune(*sweep_args(demo_root, out, "mixed", "lr=1e-3,0", "dropout=0.3,1.5"), check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("gridtune: invalid trial")]
    # 4 trials: one valid, two with one problem, one with two; one line per problem
    assert sorted(ln.split("] ", 1)[1] for ln in lines) == sorted([
        "dropout=1.5: must be in [0, 1)", "lr=0: must be a number > 0",
        "lr=0: must be a number > 0", "dropout=1.5: must be in [0, 1)"])
    for ln in lines:
        overrides = ln.split("[", 1)[1].split("]", 1)[0]
        key_value = ln.split("] ", 1)[1].split(":", 1)[0]
        assert key_value in overrides.split() and "sweep_name=mixed" in overrides, ln   # names the trial's overrides
    assert sum("lr=0 " in ln and "dropout=1.5" in ln for ln in lines) == 2      # the doubly bad trial
    assert "4 problem(s) in the grid; nothing was launched" in r.stderr
    assert not out.exists()                           # no sweep dir, no trial dir, no manifest


def test_unsafe_slurm_field_is_refused_before_any_sbatch(run_gridtune, demo_root, tmp_path):
    out = tmp_path / "out"
    r = run_gridtune(*sweep_args(demo_root, out, "slurmbad", "lr=1e-3,5e-4", "launcher=slurm",
                                 "hydra.launcher.partition='a;b'"), check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("gridtune: invalid trial")]
    assert len(lines) == 2 and all(ln.endswith("hydra.launcher.partition='a;b': shell metacharacters or "
                                              "newlines are not allowed") for ln in lines), lines
    assert "Submitit" not in r.stdout + r.stderr
    assert not out.exists() and not list(tmp_path.rglob(".submitit"))


@pytest.mark.parametrize("how", ["empty folder", "only zero-byte files"])
def test_class_without_usable_audio_is_named(run_gridtune, fresh_data, tmp_path, how):
    cel = fresh_data / layouts.TRAIN_DIR / "cel"
    for wav in cel.iterdir():
        if how == "empty folder":
            wav.unlink()
        else:
            wav.write_bytes(b"")
    out = tmp_path / "out"
    r = run_gridtune(*sweep_args(fresh_data, out, "nodata", "lr=1e-3,5e-4"), check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    problems = [ln for ln in r.stderr.splitlines() if ln.startswith("gridtune: invalid ")]
    assert len(problems) == 1 and f"{cel}: class 'cel' has no readable" in problems[0], r.stderr
    assert not out.exists() and not (fresh_data / ".gridtune_cache").exists()   # nothing decoded either


@pytest.mark.slow
def test_plan_on_a_half_done_sweep_launches_nothing(run_gridtune, demo_root, tmp_path):
    out = tmp_path / "out"
    run_gridtune(*sweep_args(demo_root, out, "half", "train.epochs=1", "lr=1e-3"))
    sweep = out / "half"
    done = [p.parent.name for p in sweep.glob("*/result.json")]
    assert len(done) == 1
    before, manifest = _snapshot(out), (sweep / records.MANIFEST).read_bytes()

    args = sweep_args(demo_root, out, "half", "train.epochs=1", "lr=1e-3,5e-4,1e-4")[1:]   # plan takes no -m
    r = run_gridtune(*args, module="gridtune.plan")
    n_clips = len(layouts.index_train(demo_root)[0])
    assert (f"3 trials, 1 already done (skipped), 2 to run as 2 job(s) of <= 1; "
            f"est. cost {2 * 1 * n_clips:,} clip-epochs") in r.stdout, r.stdout
    plan = [ln.split() for ln in r.stdout.splitlines() if ln.startswith("  ")]
    assert [(p[0], p[1]) for p in plan if p[1] == "done"] == [(done[0], "done")]
    assert sorted(p[-1] for p in plan if p[1] == "run") == ["lr=0.0001", "lr=0.0005"]
    assert "Launching" not in r.stdout + r.stderr
    assert _snapshot(out) == before and (sweep / records.MANIFEST).read_bytes() == manifest

    bad = run_gridtune(*args[:-1], "lr=1e-3,-1", module="gridtune.plan", check=False)
    assert bad.returncode == 2 and "lr=-1: must be a number > 0" in bad.stderr
    assert _snapshot(out) == before
