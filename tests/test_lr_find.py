"""LR range test: the algorithm on toy problems with a known good LR, the suggestion rule, the cost cap,
and `python -m gridtune.lr_find` end to end on the small demo data."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import compose, gridtune
from gridtune import lr_find
from gridtune.config.identity import ConfigError
from gridtune.lr_find import cap_iters, fmt_lr, range_test, round1, suggest, suggest_grid


# -- toy problem: a small MLP on four overlapping Gaussian classes --------------------------------------
def _toy_data(n: int = 512, d: int = 20, k: int = 4):
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(k, d, generator=g) * 0.6
    y = torch.randint(0, k, (n,), generator=g)
    return centers[y] + torch.randn(n, d, generator=g), y


def _toy(opt: str, seed: int = 0):
    """(model, optimizer, step function) training on batches of 32."""
    x, y = _toy_data()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4))
    optimizer = (torch.optim.Adam if opt == "adam" else torch.optim.SGD)(model.parameters(), lr=1.0)
    g = torch.Generator().manual_seed(seed + 1)

    def step() -> float:
        idx = torch.randint(0, len(x), (32,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()
    return model, optimizer, step, (x, y)


def _known_good(opt: str, steps: int = 100) -> float:
    """The LR (half-decade grid) with the lowest training loss after `steps` steps at a constant LR."""
    grid = 10.0 ** np.arange(-4, 0.01, 0.5)
    final = []
    for lr in grid:
        model, optimizer, step, (x, y) = _toy(opt)
        for group in optimizer.param_groups:
            group["lr"] = lr
        for _ in range(steps):
            step()
        with torch.no_grad():
            final.append(F.cross_entropy(model(x), y).item())
    return float(grid[int(np.nanargmin(final))])


@pytest.fixture
def one_thread():
    """Tiny matmuls: one thread is faster, and immune to a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_suggestion_within_10x_of_known_good_lr(opt, one_thread):
    good = _known_good(opt)
    assert 1e-2 <= good <= 1.0, good          # the toy is what it claims: a moderate LR wins
    for seed in range(3):
        _, optimizer, step, _ = _toy(opt, seed)

        def set_lr(lr):
            for group in optimizer.param_groups:
                group["lr"] = lr
        res = range_test(step, set_lr, 100, 1e-7, 10.0)
        s = suggest(res["lrs"][:len(res["smoothed"])], res["smoothed"])
        assert s.method == "steepest"
        assert good / 10 <= s.lr <= good * 10, (opt, seed, s, good)


def test_lrs_grow_exponentially_from_start_to_end():
    seen = []
    res = range_test(lambda: 1.0, seen.append, 9, 1e-6, 1e2)
    assert res["stopped_reason"] == "completed" and res["iters_run"] == 9
    assert seen == res["lrs"]
    assert math.isclose(seen[0], 1e-6) and math.isclose(seen[-1], 1e2)
    assert np.allclose(np.diff(np.log10(seen)), 1.0)
    assert np.allclose(res["smoothed"], 1.0)   # bias correction: a constant loss stays constant from step 1


def test_divergence_stops_the_sweep_early():
    lr_now = []
    res = range_test(lambda: 2.0 if lr_now[-1] < 1e-2 else 2.0 + 1e3 * lr_now[-1], lr_now.append,
                     100, 1e-7, 10.0, diverge_factor=4.0)
    assert res["stopped_reason"] == "diverged"
    assert res["iters_run"] < 100 and len(res["smoothed"]) == res["iters_run"]
    assert res["smoothed"][-1] > 4 * min(res["smoothed"])
    assert max(res["smoothed"][:-1]) <= 4 * min(res["smoothed"])   # it stopped at the first point past 4x


def test_nonfinite_loss_stops_the_sweep():
    lr_now = []
    res = range_test(lambda: 1.0 if lr_now[-1] < 1e-3 else math.nan, lr_now.append, 50, 1e-7, 10.0)
    assert res["stopped_reason"] == "nonfinite"
    assert math.isnan(res["losses"][-1]) and len(res["smoothed"]) == res["iters_run"] - 1
    assert res["lrs"][-1] >= 1e-3 > res["lrs"][-2]


def _curve(lrs, centre: float) -> np.ndarray:
    """A loss falling around `centre` (steepest there), then blowing up past 0.3."""
    x = np.log10(lrs)
    blow_up = np.where(x > math.log10(0.3), 40 * (x - math.log10(0.3)) ** 2, 0)
    return 2.0 - np.tanh(1.5 * (x - math.log10(centre))) + blow_up


def test_suggest_picks_the_steepest_descent_before_the_minimum():
    lrs = np.logspace(-7, 1, 81)
    y = _curve(lrs, 1e-3)
    y[:4] = [9.0, 6.0, 3.5, 3.2]            # a steep settling start: inside the skipped first 10 %
    y[-4:] = [30.0, 20.0, 10.0, 4.0]        # falling back after the blow-up: after the minimum
    s = suggest(lrs, y)
    assert s.method == "steepest"
    assert math.isclose(s.lr, 1e-3, rel_tol=0.13)      # the grid point nearest the true steepest point
    assert lrs[s.min_index] < 1 and s.index < s.min_index


def test_suggest_falls_back_to_a_tenth_of_the_minimum_when_the_loss_never_falls():
    lrs = np.logspace(-5, 0, 30)
    s = suggest(lrs, np.linspace(1.0, 3.0, 30))
    assert s.method == "min/10" and s.min_index == 3 and math.isclose(s.lr, lrs[3] / 10)
    with pytest.raises(ValueError):
        suggest([1e-3], [1.0])


def test_a_lucky_first_batch_is_not_the_minimum():
    lrs = np.logspace(-7, 1, 21)
    y = _curve(lrs, 1e-3) * 0.3 + 2.0
    y[0] = 1.0                              # one low first batch: smoothed[0] is that batch alone
    s = suggest(lrs, y)
    assert s.method == "steepest" and s.min_index > 2 and 1e-4 < s.lr < 1e-2


def test_suggest_uses_only_the_finite_prefix():
    lrs = np.logspace(-6, 0, 40)
    y = _curve(lrs, 1e-4)
    y[30:] = np.nan
    assert suggest(lrs, y).lr == pytest.approx(1e-4, rel=0.2)


def test_grid_and_formatting():
    assert suggest_grid(3.7e-3) == [4e-4, 1e-3, 4e-3, 1e-2]
    assert suggest_grid(1e-3) == [1e-4, 3e-4, 1e-3, 3e-3]
    for v in (3.7e-3, 0.016, 2e-3, 5e-5, 0.3, 1.0, 10.0, 1e-7):
        assert float(fmt_lr(v, 1)) == round1(v)
    assert [fmt_lr(v) for v in (0.0158, 2e-3, 3.7e-4, 10.0)] == ["0.016", "2e-3", "3.7e-4", "10"]


def test_cost_cap():
    assert cap_iters(100, 16, 231) == 21 and 21 * 16 / 231 <= lr_find.MAX_EPOCHS
    assert cap_iters(20, 16, 231) == 20
    assert cap_iters(100, 2, 33) == 24
    with pytest.raises(ValueError, match="train.batch_size=16: 1.5 epochs of the 60-clip"):
        cap_iters(100, 16, 60)
    with pytest.raises(ValueError, match="only 1 steps"):
        cap_iters(100, 64, 30)         # a batch larger than the split is the whole split


def test_options_and_command():
    cfg = compose("+lr_find.iters=50", "+lr_find.end_lr=1.0")
    o = lr_find.options(cfg)
    assert o["iters"] == 50 and o["end_lr"] == 1.0 and o["start_lr"] == 1e-7
    assert lr_find.options(compose()) == lr_find.DEFAULTS
    with pytest.raises(ConfigError, match="lr_find.iter: unknown key"):
        lr_find.options(compose("+lr_find.iter=50"))
    with pytest.raises(ConfigError, match="lr_find.end_lr"):
        lr_find.options(compose("+lr_find.end_lr=1e-8"))
    cmd = lr_find.sweep_command(["preset=demo", "lr=1e-2", "+lr_find.iters=50", "hydra.run.dir=/x",
                                 "data.root=/a b"], [1e-4, 3e-4])
    assert cmd == "python -m gridtune.sweep -m preset=demo 'data.root=/a b' lr=1e-4,3e-4"
    assert lr_find.fixed_groups(compose()) == []
    assert lr_find.fixed_groups(compose("lr_head=1e-2")) == ["lr_head"]


# -- end to end -----------------------------------------------------------------------------------------
def _run(tmp_path: Path, demo_root: Path, *args: str, check: bool = True):
    out = tmp_path / "lrf"
    r = gridtune("preset=debug", f"data.root={demo_root}", f"hydra.run.dir={out}", *args,
                 module="gridtune.lr_find", env={"GRIDTUNE_OUT": str(tmp_path / "out")}, timeout=300, check=check)
    return out, r


def test_cli_writes_json_and_png(demo_root, tmp_path):
    out, r = _run(tmp_path, demo_root, "train.batch_size=2", "train.threads=1", "+lr_find.iters=20")
    rec = json.loads((out / "lr_find.json").read_text())
    assert rec["suggested_lr"] > 0 and rec["iters_run"] <= 20 and rec["iters"] == 20
    assert len(rec["lrs"]) == len(rec["losses"]) == rec["iters_run"]
    assert rec["suggested_grid"] == suggest_grid(rec["suggested_lr"])
    assert rec["cost_epochs"] == pytest.approx(rec["iters_run"] * 2 / rec["n_train"])
    assert "train.batch_size=2" in rec["overrides"] and rec["command"].startswith("python -m gridtune.sweep -m ")
    png = (out / "lr_find.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert "suggested lr=" in r.stdout.strip().splitlines()[-1]
    # a probe: no weights or trial records anywhere
    left = {p.name for p in out.iterdir()}
    assert left <= {"lr_find.json", "lr_find.png", ".hydra", "lr_find.log"}, left
    assert not list((tmp_path / "out").rglob("*.pt")) if (tmp_path / "out").exists() else True


def test_cli_caps_the_cost_and_keeps_the_lr_ratio(demo_root, tmp_path):
    out, r = _run(tmp_path, demo_root, "train.batch_size=4", "train.threads=1", "lr_head=2e-3",
                  "+lr_find.iters=100")
    rec = json.loads((out / "lr_find.json").read_text())
    assert rec["iters_requested"] == 100 and rec["iters"] < 100
    assert rec["iters"] * 4 <= 1.5 * rec["n_train"] and rec["cost_epochs"] <= 1.5
    assert "running" in r.stdout and "at most 1.5 epochs" in r.stdout
    assert rec["group_lr_ratios"] == {"conv": 1.0, "head": 2.0} and rec["fixed_groups"] == ["lr_head"]


def test_cli_refuses_sweep_directories_and_multirun(demo_root, tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "gridtune_sweep.json").write_text("{}")
    out, r = _run(tmp_path, demo_root, f"hydra.run.dir={sweep / 'abc'}", check=False)
    assert r.returncode != 0 and "inside sweep or trial directory" in r.stderr
    assert not (sweep / "abc").exists()
    _, r = _run(tmp_path, demo_root, "-m", check=False)
    assert r.returncode != 0 and "multirun" in r.stderr
