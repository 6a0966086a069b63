"""Plan and sweep refuse the same configs: every check the part builders make is also made without
torch (gridtune.config.rules through gridtune.config.checks), so the dry run, which builds nothing,
names the same problem as the driver, which also builds every part on the meta device."""
import pytest

from conftest import compose
from gridtune.checks import validation

# one case per rule of the builders (frontend, model, optim), with the line both paths must print
BUILDER_CASES = [
    (("model.kernel_size=4",), "model.kernel_size=4 is not valid; expected an odd int >= 1"),
    (("model.kernel_size=0",), "model.kernel_size=0 is not valid"),
    (("model.channels=[]",), "model.channels=[] is not valid"),
    (("model.channels=[0,4]",), "model.channels=[0, 4] is not valid"),
    (("model.convs_per_block=0",), "model.convs_per_block=0 is not valid"),
    (("model.pool=mean",), "model.pool='mean' is not valid; expected one of: max, avg"),
    (("model.head=attn",), "model.head='attn' is not valid; expected one of: gap, flatten"),
    (("model.hidden=-1",), "model.hidden=-1 is not valid"),
    (("model.dropout=1.0",), "model.dropout=1.0 is not valid"),
    (("features.n_mels=8",), "model.input_shape=[8, 224] is not valid; expected both sides >= 16"),
    (("+model.foo=1",), "model.foo is not a known key"),
    (("optim=sgd", "optim.momentum=0"), "optim.nesterov=True needs momentum > 0 and dampening = 0"),
    (("optim=sgd", "optim.dampening=0.1"), "optim.nesterov=True needs momentum > 0 and dampening = 0"),
    (("optim=adam", "+optim.momentum=0.9"), "optim.momentum does not apply to optim.name='adam'"),
    (("optim.betas=[0.9]",), "optim.betas=[0.9] is not valid"),
    (("optim.betas=[0.9,1.0]",), "optim.betas=1.0 is not valid"),
    (("optim.eps=0",), "optim.eps=0.0 is not valid"),
    (("optim.weight_decay=-1",), "optim.weight_decay=-1.0 is not valid"),
    (("optim=rmsprop", "optim.alpha=2"), "optim.alpha=2.0 is not valid"),
    (("optim=sgd", "optim.dampening=2", "optim.nesterov=false"), "optim.dampening=2.0 is not valid"),
    (("optim=sgd", "optim.momentum=-1", "optim.nesterov=false"), "optim.momentum=-1.0 is not valid"),
    (("optim=adagrad", "optim.lr_decay=-1"), "optim.lr_decay=-1.0 is not valid"),
    (("optim=adagrad", "optim.initial_accumulator_value=-1"), "optim.initial_accumulator_value=-1.0 is not valid"),
    (("sched=step", "sched.gamma=2"), "sched.gamma=2.0 is not valid"),
    (("sched=step", "sched.step_size=0"), "sched.step_size=0 is not valid"),
    (("sched=cosine", "sched.min_lr_factor=1.5"), "sched.min_lr_factor=1.5 is not valid"),
    (("sched=cosine", "+sched.gamma=0.5"), "sched.gamma does not apply to sched.name='cosine'"),
    (("sched=plateau", "sched.factor=1.0"), "sched.factor=1.0 is not valid"),
    (("sched=plateau", "sched.threshold_mode=relative"), "sched.threshold_mode='relative' is not valid"),
    (("sched=plateau", "sched.patience=-1"), "sched.patience=-1 is not valid"),
    (("sched=plateau", "sched.threshold=-1"), "sched.threshold=-1.0 is not valid"),
    (("sched=plateau", "sched.cooldown=-1"), "sched.cooldown=-1 is not valid"),
    (("sched=plateau", "sched.min_lr=-1"), "sched.min_lr=-1.0 is not valid"),
    (("sched=warmup_cosine", "sched.warmup_epochs=-1"), "sched.warmup_epochs=-1.0 is not valid"),
    (("sched=warmup_cosine", "sched.warmup_start_factor=2"), "sched.warmup_start_factor=2.0 is not valid"),
    (("features.hop_length=0",), "features.hop_length=0 is not valid"),
    (("features.top_db=-1",), "features.top_db=-1.0 is not valid"),
    (("features.f_min=9000",), "features.f_min=9000.0 is not valid"),
    (("features=image", "features.frames=0"), "features.frames=0 is not valid"),
]


@pytest.mark.parametrize("overrides,line", BUILDER_CASES, ids=[" ".join(o) for o, _ in BUILDER_CASES])
def test_planning_without_torch_refuses_what_building_refuses(overrides, line):
    """The dry run's path (deep=False: no builds) and the driver's (deep=True) give the same problems."""
    cfg = compose(*overrides)
    planned = validation.trial_problems(cfg, deep=False)
    built = validation.trial_problems(cfg, deep=True)
    assert planned == built, (planned, built)
    assert len(planned) == 1 and planned[0].startswith(line) and "\n" not in planned[0], planned


def test_the_defaults_of_every_option_pass_the_builder_rules():
    for overrides in [(), ("optim=sgd",), ("optim=rmsprop", "sched=plateau"), ("sched=warmup_cosine",),
                      ("features=image",), ("preset=debug", "model=cnn256_deep", "augment=none")]:
        assert validation.trial_problems(compose(*overrides), deep=False) == [], overrides


@pytest.mark.parametrize("overrides,line", [
    (("model.kernel_size=4", "lr=1e-3,1e-4"), "model.kernel_size=4 is not valid; expected an odd int >= 1"),
    (("optim=sgd", "optim.momentum=0", "lr=1e-3,1e-4"), "optim.nesterov=True needs momentum > 0"),
], ids=["odd-kernel", "nesterov"])
def test_plan_and_sweep_exit_2_with_the_same_lines(overrides, line, run_gridtune, demo_root, tmp_path):
    common = (*overrides, "preset=debug", f"data.root={demo_root}", f"out_root={tmp_path}", "sweep_name=agree")
    plan = run_gridtune(*common, module="gridtune.plan", check=False)
    sweep = run_gridtune("-m", *common, check=False)
    assert plan.returncode == sweep.returncode == 2, plan.stdout + plan.stderr
    lines = [ln for ln in plan.stderr.splitlines() if ln.startswith("gridtune: invalid")]
    assert lines == [ln for ln in sweep.stderr.splitlines() if ln.startswith("gridtune: invalid")]
    assert len(lines) == 2 and all(line in ln for ln in lines), plan.stderr
    assert not (tmp_path / "agree").exists()
