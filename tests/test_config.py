"""Config tree: every group option composes, grids expand to the right size, trial ids are stable,
and invalid values are named in one line."""

import pytest
from omegaconf import OmegaConf

from conftest import REPO, compose
from gridtune.checks import builds
from gridtune.config import checks, identity

GROUPS = ["data", "features", "augment", "model", "optim", "sched", "train", "launcher", "tracking", "final", "preset"]


@pytest.mark.parametrize("group,option", [(g, p.stem) for g in GROUPS for p in sorted((REPO / "conf" / g).glob("*.yaml"))])
def test_every_group_option_composes_and_validates(group, option):
    cfg = compose(f"{group}={option}")
    OmegaConf.to_container(cfg, resolve=True)          # every interpolation resolves
    assert checks.validate(cfg) == [], checks.validate(cfg)


def test_top_level_knobs_feed_the_groups():
    cfg = compose("lr=0.005", "dropout=0.25", "l2=0.0")
    assert cfg.optim.lr_conv == cfg.optim.lr_head == 0.005
    assert cfg.model.dropout == 0.25
    cfg = compose("lr=0.005", "lr_head=0.1")
    assert (cfg.optim.lr_conv, cfg.optim.lr_head) == (0.005, 0.1)


def test_trial_id_is_a_hash_of_the_semantic_config():
    base = identity.trial_id(compose())
    assert base == identity.trial_id(compose()) and len(base) == 10
    for same in ("device=cpu", "out_root=/elsewhere", "tracking=wandb", "launcher=slurm", "data.root=/x",
                 "sweep_name=other", "train.threads=1"):
        assert identity.trial_id(compose(same)) == base, same
    for different in ("lr=0.002", "dropout=0.3", "l2=0", "seed=1", "optim=sgd", "train.epochs=3", "augment=none"):
        assert identity.trial_id(compose(different)) != base, different


@pytest.mark.parametrize("override,needle", [
    ("lr=-1", "lr=-1"), ("lr=0", "lr=0"), ("dropout=1.0", "dropout=1.0"), ("dropout=-0.1", "dropout=-0.1"),
    ("l2=-0.1", "l2=-0.1"), ("train.epochs=0", "train.epochs=0"), ("train.batch_size=0", "train.batch_size=0"),
    ("sweep_name=../escape", "sweep_name='../escape'"), ("device=tpu", "device='tpu'"),
    ("optim.name=lbfgs", "unknown optimizer"), ("sched.name=cyclic", "unknown schedule"),
    ("model.name=resnet", "unknown model"),
])
def test_invalid_values_are_named(override, needle):
    problems = checks.validate(compose(override))
    assert problems and any(needle in p for p in problems), problems
    assert all("\n" not in p for p in problems)


@pytest.mark.parametrize("field,value", [("partition", "gpu;rm -rf ~"), ("account", "a$(id)"), ("qos", "x\ny")])
def test_slurm_fields_refuse_shell_metacharacters(field, value):
    cfg = compose("launcher=slurm", hydra=True)
    assert checks.validate(cfg) == []
    OmegaConf.update(cfg, f"hydra.launcher.{field}", value, force_add=True)
    problems = checks.validate(cfg)
    assert any(f"hydra.launcher.{field}" in p for p in problems), problems


def test_check_inside_refuses_escapes(tmp_path):
    assert identity.check_inside(tmp_path / "a" / "b", tmp_path, "x") == (tmp_path / "a" / "b").resolve()
    with pytest.raises(identity.ConfigError, match="escapes"):
        identity.check_inside(tmp_path / ".." / "evil", tmp_path, "hydra.sweep.subdir")


@pytest.mark.slow
@pytest.mark.parametrize("grid,n", [("task11", 18), ("smoke", 4), ("lr_compare", 4), ("lr_groups", 9),
                                    ("momentum", 3), ("optimizers", 5), ("schedules", 5), ("seeds", 12)])
def test_grid_files_expand(run_gridtune, tmp_path, demo_root, grid, n):
    r = run_gridtune(f"sweep={grid}", "hydra.sweeper.dry_run=true", f"out_root={tmp_path}", f"data.root={demo_root}")
    assert f"{n} trials, 0 already done" in r.stdout, r.stdout
    assert not (tmp_path / grid).exists()        # a dry run writes nothing


def test_cli_lists_combine_with_grid_files(run_gridtune, tmp_path, demo_root):
    r = run_gridtune("-m", "sweep=task11", "lr=1e-3", "hydra.sweeper.dry_run=true", f"out_root={tmp_path}",
                     f"data.root={demo_root}")
    plan = [line for line in r.stdout.splitlines() if line.startswith("  ")]
    assert "6 trials" in r.stdout and len(plan) == 6
    assert all(" lr=0.001 " in line for line in plan), plan


@pytest.mark.parametrize("overrides,needle", [
    (("model.kernel_size=4",), "model.kernel_size=4"),
    (("optim=sgd", "optim.momentum=0"), "nesterov"),
    (("optim=adam", "+optim.momentum=0.9"), "momentum"),
    (("sched=step", "sched.gamma=2"), "gamma"),
])
def test_builder_errors_are_found_before_launch(overrides, needle):
    cfg = compose(*overrides)
    problems = builds.check_builds(cfg)                  # building the parts (on the meta device) refuses...
    assert len(problems) == 1 and needle in problems[0] and "\n" not in problems[0], problems
    assert checks.validate(cfg) == problems              # ...and the torch-free checks say the same
    assert builds.check_builds(compose()) == []


@pytest.mark.parametrize("overrides,tid", [
    ((), "922ba67875"), (("optim=sgd",), "11bbf300df"), (("sched=plateau", "optim=rmsprop"), "86960cd56c"),
    (("preset=debug", "model=cnn256_deep", "augment=none"), "3646ad00c8"), (("features=image",), "52ce68fecb"),
    (("dropout=0",), "f947821f92"), (("lr=1",), "32ea8da648"), (("lr=0.5", "lr_head=1"), "8ca78125be"),
])
def test_trial_ids_of_sweeps_on_disk_do_not_change(overrides, tid):
    """Ids as the releases before the typed schemas computed them: a rerun must find those trials."""
    assert identity.trial_id(compose(*overrides)) == tid


def test_the_validation_path_imports_no_torch_until_it_builds():
    """Planning (values, names, data) needs no torch; only the meta-device build check brings it."""
    import subprocess
    import sys
    code = ("import sys; from gridtune.config import checks, identity, overrides, planner, schema; "
            "from gridtune.checks import validation; "
            "from hydra_plugins.gridtune_sweeper import gridtune_sweeper; "
            "print(sorted(m for m in ('torch', 'torchaudio') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
