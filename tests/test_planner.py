"""Fast planning: composing once per set of group choices and merging the value overrides gives the
configs and trial ids of a full compose per trial, on every grid file and on a generated 1,000-trial
grid; and its errors are Hydra's (unknown key, wrong type, missing option)."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from conftest import REPO
from gridtune.config import checks, identity, overrides as ov
from gridtune.config.planner import PlanError, Planner, snapshot
from gridtune.config.schema import CONF_DIR

GRIDS = sorted(p.stem for p in (REPO / "conf" / "sweep").glob("*.yaml"))
# 2 optimizers x 2 schedules x 2 models x 5 lr x 5 dropout x 5 seeds = 1,000 trials, 8 sets of group choices
BIG = ["optim=adam,sgd", "sched=constant,cosine", "model=cnn256,cnn256_deep", "lr=1e-4,2e-4,5e-4,1e-3,2e-3",
       "dropout=0.1,0.2,0.3,0.4,0.5", "seed=0,1,2,3,4"]


def _planner(*base: str):
    """A planner on the master config of `base` (as the sweeper gets it) and the grid's trial overrides."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        master = compose("config", overrides=list(base), return_hydra_config=True)
        loader = GlobalHydra.instance().config_loader()
        params = master.hydra.sweeper.params
        params = OmegaConf.to_container(params) if params else {}
        yield Planner(loader, master), [f"{k}={v}" for k, v in params.items()] + list(base)


def _strict(v):
    """A value with the type of every leaf spelled out: 1, 1.0 and True differ."""
    if isinstance(v, dict):
        return {k: _strict(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_strict(x) for x in v]
    return type(v).__name__, repr(v)


def _same(planner: Planner, trial: list[str]) -> str:
    """The four ways agree: full compose, compose by merge, the shared working copy, and the plain
    resolved values the checks read (same values, same types, same problems)."""
    fast, full = planner.compose(trial), planner.full(trial)
    assert OmegaConf.to_container(fast, resolve=False) == OmegaConf.to_container(full, resolve=False), trial
    tid = identity.trial_id(full)
    assert identity.trial_id(fast) == tid
    with planner.trial(trial) as (work, work_id):
        assert work_id == tid, trial
        assert OmegaConf.to_container(snapshot(work), resolve=False) == \
            OmegaConf.to_container(snapshot(full), resolve=False), trial
        assert OmegaConf.to_container(snapshot(work), resolve=True) == \
            OmegaConf.to_container(snapshot(full), resolve=True), trial
    _same_values(planner, trial, full, tid)
    return tid


def _same_values(planner: Planner, trial: list[str], full, tid: str) -> None:
    resolved = _strict(OmegaConf.to_container(snapshot(full), resolve=True))
    t = planner.open(trial)
    assert t.trial_id == tid, trial
    assert t.values is not None, trial
    assert _strict({k: v for k, v in t.values.items() if k != "hydra"}) == resolved, trial
    assert checks.validate(t.values) == checks.validate(full), trial
    lazy = planner.open(trial, with_id=False, lazy=True)
    assert lazy.cfg is None and _strict(dict(lazy.values)) == resolved, trial


@pytest.mark.parametrize("grid", GRIDS)
def test_every_grid_file_plans_like_a_full_compose(grid):
    for planner, args in _planner(f"sweep={grid}"):
        trials = ov.grid(args)
        assert len(trials) >= 3
        ids = [_same(planner, t) for t in trials]
        assert len(set(ids)) == len(ids)                # every point of the grid is its own trial
        groups = {k for k in ("optim", "sched", "model", "preset", "sweep", "features", "augment")}
        assert len(planner._bases) == len({tuple(o for o in t if o.split("=")[0] in groups) for t in trials})


@pytest.mark.parametrize("stride", [pytest.param(37, id="every-37th"),
                                    pytest.param(10, id="every-10th", marks=pytest.mark.slow)])
def test_a_1000_trial_grid_plans_like_a_full_compose(stride):
    for planner, args in _planner("preset=debug"):
        trials = ov.grid(args + BIG)
        assert len(trials) == 1000
        fast_ids = []
        for t in trials:
            with planner.trial(t) as (_, tid):
                fast_ids.append(tid)
        assert len(set(fast_ids)) == 1000 and len(planner._bases) == 8      # composed 8 times, not 1,000
        for i in range(0, 1000, stride):
            assert _same(planner, trials[i]) == fast_ids[i]


@pytest.mark.parametrize("trial, needle", [
    (["nope=1"], "Could not override 'nope'"),
    (["optim.momentum=0.9"], "Could not override 'optim.momentum'"),      # adam has no momentum
    (["train.epochs=abc"], "train.epochs=abc"),
    (["+lr=1"], "An item is already at 'lr'"),
])
def test_value_override_errors_match_a_full_compose(trial, needle):
    for planner, _ in _planner():
        with pytest.raises(PlanError, match=needle.replace("+", r"\+")):
            planner.compose(trial)
        with pytest.raises(PlanError, match=needle.replace("+", r"\+")):
            with planner.trial(trial):
                pass
        with pytest.raises(Exception):
            planner.full(trial)


def test_overrides_parse_and_grid():
    assert ov.parse(["lr=1e-3", "sweep_dir='/a b'", "+lr_find.iters=5", "~x"]) == {
        "lr": 0.001, "sweep_dir": "/a b", "lr_find.iters": 5}
    assert ov.grid(["lr=1,2", "dropout=0.3,0.5", "lr=3"]) == [["lr=3", "dropout=0.3"], ["lr=3", "dropout=0.5"]]
    assert ov.key("++launcher.chunk=[a]") == "launcher.chunk"
    with pytest.raises(ov.OverrideError, match=r"lr=\[1: not a valid override"):
        ov.parse(["lr=[1"])


# invalid values: the plain values give the problems the composed config gives (tests/test_builder_rules.py's cases)
INVALID = [["lr=-1"], ["dropout=1.5"], ["l2=-1"], ["train.epochs=0"], ["optim.eps=0"], ["model.kernel_size=4"],
           ["model.channels=[]"], ["features.n_mels=8"], ["optim=sgd", "optim.momentum=0"], ["sched=step", "sched.gamma=2"],
           ["sched=plateau", "sched.threshold_mode=relative"], ["features.f_min=9000"], ["lr=0", "lr_head=1"],
           ["data.val_fraction=1.5"], ["sweep_name=a/b"], ["device=tpu"], ["optim.betas=[0.9,1.0]"]]


@pytest.mark.parametrize("trial", INVALID, ids=[" ".join(t) for t in INVALID])
def test_plain_values_give_the_problems_of_a_full_compose(trial):
    for planner, _ in _planner("preset=debug"):
        full = planner.full(["preset=debug", *trial])
        assert checks.validate(full), trial
        _same_values(planner, ["preset=debug", *trial], full, identity.trial_id(full))
        _same(planner, ["preset=debug", "lr=1e-3"])       # and the working copy goes back to valid values


def test_a_long_dry_run_lists_its_first_and_last_trials():
    from gridtune.launch import show
    trials = [{"trial_id": f"{i:010x}", "overrides": [f"seed={i}"]} for i in range(10)]
    lines = show.trial_lines(trials, {trials[5]["trial_id"]}, {trials[6]["trial_id"]: ("a", "b")}, 4)
    assert lines[:2] == ["  0000000000  run   seed=0", "  0000000001  run   seed=1"]
    assert lines[2] == "  ... 6 more trials (4 run, 1 done, 1 redo; hydra.sweeper.list_max=null lists every one)"
    assert lines[3:] == ["  0000000008  run   seed=8", "  0000000009  run   seed=9"]
    assert len(show.trial_lines(trials, set(), {}, None)) == 10
