"""Everything is checked before anything is submitted: invalid trials among valid ones, unsafe SLURM
fields, unusable data, `gridtune.plan` on a half-done sweep (which launches nothing), and a corpus of
bad inputs to every command (run in-process), each refused with exit 2, no traceback, the culprit
named in the last line of stderr, and no directory created."""
from __future__ import annotations

from pathlib import Path

import pytest

from faultkit import sweep_args
from gridtune.data import layouts
from gridtune.sweepdir import records


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


# -- the bad-input corpus: every command, each case refused before anything is created -----------------
# (command, arguments, the text the last line of stderr must hold); {data} is a usable data root,
# {out} the output root, {file} a plain file, {empty} an empty folder, {sweep} a sweep directory.
CORPUS = [
    ("sweep", ["lr=-1"], "lr=-1"),
    ("sweep", ["lr=abc"], "lr='abc'"),
    ("sweep", ["seed=abc"], "seed=abc"),
    ("sweep", ["nope=1"], "'nope'"),
    ("sweep", ["optim=lbfgs"], "optim/lbfgs"),
    ("sweep", ["optim.momentum=0.9"], "optim.momentum"),
    ("sweep", ["dropout=1.5"], "dropout=1.5"),
    ("sweep", ["train.epochs=0"], "train.epochs=0"),
    ("sweep", ["train.epochs=1.5"], "train.epochs=1.5"),
    ("sweep", ["train.batch_size=-3"], "train.batch_size=-3"),
    ("sweep", ["device=tpu"], "device='tpu'"),
    ("sweep", ["sweep_name=../x"], "sweep_name='../x'"),
    ("sweep", ["lr=[1"], "[1"),
    ("sweep", ["model.kernel_size=4"], "model.kernel_size=4"),
    ("sweep", ["data.root={file}"], "data.root="),
    ("sweep", ["data.root={empty}"], "{empty}"),
    ("sweep", ["data.root=/nonexistent/gridtune"], "data.root=/nonexistent/gridtune"),
    ("sweep", ["-m", "lr=1e-3,-1"], "lr=-1"),
    ("sweep", ["-m", "optim=adam,lbfgs"], "optim/lbfgs"),
    ("sweep", ["-m", "dropout=0.3,abc"], "dropout='abc'"),
    ("sweep", ["-m", "train.epochs=1,0.5"], "train.epochs=0.5"),
    ("sweep", ["-m", "launcher=slurm", "hydra.launcher.partition='a;b'"], "hydra.launcher.partition"),
    ("sweep", ["-m", "hydra.sweeper.repeats=many"], "repeats"),
    ("sweep", ["-m", "lr=1e-3,1e-4", "data.root=/nonexistent/gridtune"], "data.root=/nonexistent/gridtune"),
    ("plan", ["lr=-1"], "lr=-1"),
    ("plan", ["sweep=nosuchgrid"], "sweep/nosuchgrid"),
    ("plan", ["train.epochs=abc"], "train.epochs=abc"),
    ("plan", ["objective_mode=maximum"], "objective_mode='maximum'"),
    ("lr_find", ["+lr_find.iters=3"], "lr_find.iters=3"),
    ("lr_find", ["+lr_find.iter=50"], "lr_find.iter"),
    ("lr_find", ["-m"], "-m/--multirun"),
    ("lr_find", ["hydra.run.dir={sweep}/probe"], "hydra.run.dir="),
    ("lr_find", ["lr=-1"], "lr=-1"),
    ("final", [], "sweep_dir"),
    ("final", ["sweep_dir=/nonexistent/gridtune"], "best.yaml"),
    ("final", ["sweep_dir={sweep}", "final.train_on=everything"], "final.train_on='everything'"),
    ("final", ["sweep_dir={sweep}", "lr=abc"], "lr='abc'"),
    ("final", ["sweep_dir={sweep}", "final.window_hop=2"], "final.window_hop=2"),
    ("reduce", ["/nonexistent/gridtune"], "/nonexistent/gridtune"),
    ("reduce", [], "sweep_dir"),
    ("status", ["/nonexistent/gridtune"], "/nonexistent/gridtune"),
    ("status", ["/nonexistent/gridtune", "--colour"], "--colour"),
]


@pytest.fixture(scope="module")
def corpus_paths(demo_root, tmp_path_factory):
    import yaml
    root = tmp_path_factory.mktemp("corpus")
    (root / "a_file").write_text("not a dataset\n")
    (root / "empty").mkdir()
    sweep = root / "sweep"
    sweep.mkdir()
    (sweep / records.MANIFEST).write_text('{"trials": []}\n')
    (sweep / "best.yaml").write_text(yaml.safe_dump({"trial_id": "0123456789", "overrides": ["preset=debug"]}))
    return {"data": str(demo_root), "file": str(root / "a_file"), "empty": str(root / "empty"),
            "sweep": str(sweep), "root": root}


@pytest.mark.parametrize("command,args,culprit", CORPUS,
                         ids=[f"{c}:{' '.join(a) or '-'}" for c, a, _ in CORPUS])
def test_bad_input_is_one_line_exit_2_and_creates_nothing(command, args, culprit, corpus_paths, tmp_path,
                                                          capsys, monkeypatch):
    from faultkit import assert_refused, run_cli
    out = tmp_path / "out"
    fill = {**corpus_paths, "out": str(out)}
    args = [a.format(**fill) for a in args]
    if command in ("sweep", "plan", "lr_find") and not any(a.startswith("data.root=") for a in args):
        args = [*args, f"data.root={corpus_paths['data']}"]
    if command in ("sweep", "plan", "lr_find"):
        args = [*args, f"out_root={out}", "preset=debug"]
    before = sorted(p.name for p in Path(corpus_paths["sweep"]).iterdir())
    assert_refused(run_cli(command, args, capsys, monkeypatch), culprit.format(**fill))
    assert not out.exists()                                   # no sweep, run or trial directory
    assert sorted(p.name for p in Path(corpus_paths["sweep"]).iterdir()) == before


# -- exit codes: 0 when every trial ended ok or diverged, 1 when one did not ---------------------------
@pytest.mark.parametrize("status,code", [("ok", 0), ("diverged", 0), ("failed", 1), ("oom", 1)])
@pytest.mark.parametrize("multirun", [False, True], ids=["single", "multirun"])
def test_exit_code_says_how_the_trials_ended(status, code, multirun, demo_root, tmp_path, capsys, monkeypatch):
    from faultkit import run_cli
    from gridtune.train import trial

    def fake_run_trial(cfg, out_dir, *, overrides=None, job_type="trial"):
        rec = {"schema": 1, "trial_id": trial.trial_id(cfg), "status": status, "metrics": {},
               "error": None if status in ("ok", "diverged") else "boom"}
        records.write_json(Path(out_dir) / records.RESULT, rec)
        return rec
    monkeypatch.setattr(trial, "run_trial", fake_run_trial)
    out = tmp_path / "out"
    args = (["-m", "lr=1e-3,1e-4"] if multirun else []) + [
        "preset=debug", f"data.root={demo_root}", f"out_root={out}", "sweep_name=codes", "hydra.sweeper.prepare_cache=false"]
    rc, stdout, err = run_cli("sweep", args, capsys, monkeypatch)
    assert rc == code, (stdout[-1500:], err[-1500:])
    assert "Traceback" not in stdout + err
    if code:
        assert status in err.strip().splitlines()[-1]
