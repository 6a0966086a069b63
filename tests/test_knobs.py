"""Knobs derived from the grid itself: axes from the overrides, the LR each group used, params_of."""
from __future__ import annotations

from types import SimpleNamespace as T

import yaml
from conftest import compose
from test_reduce import reduce_quiet, write_manifest, write_trial

from gridtune.config import facts, knobs


def test_axes_come_from_the_overrides_in_grid_order():
    trials = [T(params={"lr": 0.001, "seed": 0}, overrides=[f"optim.momentum={m}", f"data.root=/d{m}",
                                                           f"hydra.launcher.mem_gb={m}", "l2=0.001", f"lr={lr}"])
              for m in (0.0, 0.9) for lr in (0.001, 0.01)]
    for t in trials:                            # lr is recorded; the override is only its source
        t.params["lr"] = knobs.item(t.overrides[-1])[1]
    assert knobs.axes(trials) == ["optim.momentum", "lr"]
    assert facts.title("optim.momentum") == "Momentum" and facts.title("lr_conv") == "LR conv"
    # a trial that does not know a key (only in the manifest, say) does not make it vary
    assert knobs.axes([T(params={"seed": 0}, overrides=["optim=adam"]), T(params={}, overrides=[])]) == []


def test_lr_split_only_when_a_group_did_not_train_at_lr():
    same = [T(params={"lr": 0.01, "lr_conv": 0.01, "lr_head": 0.01}, overrides=["lr=0.01"])]
    apart = [T(params={"lr": 0.001, "lr_conv": 0.1, "lr_head": 0.001}, overrides=["lr_conv=0.1"])]
    assert not knobs.lr_split(same) and knobs.lr_split(apart)
    # a grid over lr moves both group LRs with it: lr is the one axis
    follow = [T(params={"lr": lr, "lr_conv": lr, "lr_head": lr}, overrides=[f"lr={lr}"]) for lr in (0.1, 0.01)]
    assert knobs.axes(follow) == ["lr"]
    assert knobs.axes(apart + follow) == ["lr_conv", "lr", "lr_head"]     # in the order the overrides name them


def test_params_of_a_composed_trial():
    overrides = ["optim=sgd", "optim.momentum=0.5", "lr_conv=0.1", "data.root=/elsewhere"]
    cfg = compose("preset=debug", *overrides)
    params = knobs.params_of(cfg, overrides)
    assert params["optim"] == "sgd" and params["optim.momentum"] == 0.5
    assert (params["lr"], params["lr_conv"], params["lr_head"]) == (1e-3, 0.1, 1e-3)   # as the groups used
    assert "data.root" not in params and params["batch_size"] == cfg.train.batch_size
    assert knobs.params_of(cfg, overrides, batch_size=4)["batch_size"] == 4            # the OOM retry's
    assert knobs.group_lrs(cfg) == {"conv": 0.1, "head": 1e-3}
    assert knobs.set_apart(cfg) == ["lr_conv"]
    assert knobs.set_apart(compose("optim.lr_head=0.5")) == ["lr_head"]   # set on the optimizer itself


def test_lr_groups_grid_shows_the_rates_each_group_used(tmp_path):
    entries = []
    for i, (conv, head) in enumerate((c, h) for c in (0.1, 0.01) for h in (0.01, 0.001)):
        params = {"lr": 0.001, "lr_conv": conv, "lr_head": head}
        overrides = ["optim=sgd", f"lr_conv={conv}", f"lr_head={head}"]
        write_trial(tmp_path, f"g{i}", params, acc=0.7 + 0.01 * i, overrides=overrides)
        entries.append({"trial_id": f"g{i}", "overrides": overrides, "params": params})
    write_manifest(tmp_path, entries)
    board, _ = reduce_quiet(tmp_path)
    assert board.base == ["dropout", "lr_conv", "lr_head", "l2"] and board.extra == []
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| Rank | Run ID | Dropout | LR conv | LR head | L2 | Val Accuracy |" in md
    assert "| **1** | **g3** | **0.4** | **0.01** | **0.001** | **0.0001** |" in md
    assert "| LR |" not in md                    # lr=1e-3: no group trained at it
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best["params"]["lr_conv"] == 0.01 and best["params"]["lr_head"] == 0.001
    assert best["overrides"] == ["optim=sgd", "lr_conv=0.01", "lr_head=0.001"]
