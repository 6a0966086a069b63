"""The budget: the estimator on synthetic records, the launcher.max_gpu_hours refusal, and the issue's
acceptance: plan's estimate of the smoke grid within 30 % of the wall time of running it."""
from __future__ import annotations

import re
import time

import pytest
from omegaconf import OmegaConf

from conftest import compose
from gridtune.checks import budget, costs, preflight
from gridtune.sweepdir import records
from gridtune.config.identity import semantic_config
from gridtune.halving.policy import Spec
from gridtune.config.knobs import EPOCH_COST_HINTS, epoch_shape


def _run(setup_s: float, epochs: list[float], cold: bool, cfg=None, n_clips: int = 100, threads: int = 1):
    timing = {"setup_s": setup_s, "cold": cold, "first_epoch": 1, "n_clips": n_clips, "threads": threads,
              "hints": {k: OmegaConf.select(cfg, k) for k in EPOCH_COST_HINTS} if cfg is not None else {}}
    rec = {"status": "ok", "timing": timing, "trained": {"device": "cpu", "group_size": 1},
           "config": semantic_config(cfg) if cfg is not None else None}
    return rec, [{"epoch": i + 1, "time_s": s} for i, s in enumerate(epochs)]


def test_cost_separates_the_cold_run_from_steady_epochs():
    c = costs.cost_of([_run(3.0, [10.0, 1.0, 1.0], cold=True), _run(0.5, [1.2, 1.0], cold=False)])
    assert c.epoch_s == 1.0 and c.setup_s == {True: 3.0, False: 0.5}
    assert c.extra_s[True] == pytest.approx(9.0) and c.extra_s[False] == pytest.approx(0.2)
    assert c.unit_s(1, 5, cold=True) == pytest.approx(3 + 9 + 5)      # setup, warm-up, epochs
    assert c.unit_s(1, 5, cold=False) == pytest.approx(0.5 + 0.2 + 5)
    assert c.unit_s(3, 5, cold=False) == pytest.approx(3 * 0.5 + 0.2 + 5)   # a fused group: one epoch for all
    only_cold = costs.cost_of([_run(3.0, [10.0, 1.0], cold=True)])
    assert only_cold.unit_s(1, 2, cold=False) == only_cold.unit_s(1, 2, cold=True)   # the side measured stands in
    assert costs.cost_of([_run(1.0, [], cold=True)]) is None


def test_epochs_of_an_earlier_process_are_not_this_runs():
    rec, hist = _run(1.0, [50.0, 2.0, 2.0, 2.0], cold=True)
    rec["timing"]["first_epoch"] = 3          # resumed after epoch 2 (a halving rung): epochs 3, 4 are this run's
    c = costs.cost_of([(rec, hist)])
    assert c.epoch_s == 2.0 and c.extra_s[True] == 0.0


def test_jobs_local_pay_warm_up_once_slurm_once_per_job():
    cost = costs.cost_of([_run(2.0, [12.0, 1.0], cold=True), _run(0.5, [1.0, 1.0], cold=False)])
    todo = [{"epochs": 3, "trial_id": str(i)} for i in range(4)]
    jobs = [[([t], "s")] for t in todo]
    local, missing = costs.launch(jobs, None, {"s": cost}, slurm=False, first_cold=True, start_s=0.0)
    assert missing == 0 and local == [2 + 11 + 3, 0.5 + 3, 0.5 + 3, 0.5 + 3]
    slurm, _ = costs.launch(jobs, None, {"s": cost}, slurm=True, first_cold=True, start_s=5.0)
    assert slurm == [5 + 2 + 11 + 3] * 4
    assert costs.makespan(slurm, 2) == 2 * slurm[0] and costs.makespan(slurm, 64) == slurm[0]
    assert costs.makespan(local, 1) == sum(local)
    _, missing = costs.launch(jobs, None, {}, slurm=False, first_cold=True, start_s=0)
    assert missing == 4


def test_halving_trains_fewer_epochs():
    cost = costs.cost_of([_run(0.0, [1.0, 1.0], cold=False)])
    todo = [{"epochs": 4, "trial_id": str(i)} for i in range(4)]
    jobs = [[([t], "s")] for t in todo]
    full = costs.total(jobs, None, {"s": cost}, False, 1, 0.0)
    ladder = costs.total(jobs, Spec(2, 1, 4), {"s": cost}, False, 1, 0.0)
    assert full[0] == 16 and ladder[0] == Spec(2, 1, 4).epochs_trained(4) == 8 and ladder[2] == 0


def test_the_same_shape_ignores_lr_dropout_seed_but_not_the_batch():
    base = compose("preset=debug")
    key = epoch_shape(base, 100, "cpu/1t")
    for o in ("lr=1e-4", "dropout=0.3", "seed=3", "l2=0", "train.epochs=9", "optim.weight_decay=0.1"):
        assert epoch_shape(compose("preset=debug", o), 100, "cpu/1t") == key, o
    for o in ("train.batch_size=8", "model=cnn256_deep", "features.n_mels=16", "train.amp=off", "train.compile=true"):
        assert epoch_shape(compose("preset=debug", o), 100, "cpu/1t") != key, o
    assert epoch_shape(base, 101, "cpu/1t") != key and epoch_shape(base, 100, "cpu/2t") != key
    assert epoch_shape(base, 100, "cpu/1t", group_size=3) != key
    rec, _ = _run(1.0, [1.0], cold=True, cfg=base)         # a record of it: the same key
    assert costs.record_shape(rec) == key


def _fake_sweep(root, cfg, n_clips: int, epoch_s: float) -> None:
    """An earlier sweep's trial record of this config's shape: cold and warm, `epoch_s` a steady epoch."""
    for name, cold in (("aaaaaaaaaa", True), ("bbbbbbbbbb", False)):
        rec, hist = _run(1.0, [epoch_s, epoch_s], cold=cold, cfg=cfg, n_clips=n_clips)
        records.write_json(root / "earlier" / name / records.RESULT, {**rec, "trial_id": name})
        records.write_history(root / "earlier" / name / records.HISTORY, hist)


def test_sweep_over_max_gpu_hours_is_refused_and_creates_nothing(run_gridtune, demo_root, tmp_path):
    args = ("sweep=smoke", "device=cpu", "train.threads=1", f"out_root={tmp_path}", f"data.root={demo_root}")
    cfg = compose(*args)
    (facts,), _ = preflight.inspect_data([cfg])
    _fake_sweep(tmp_path, cfg, facts.n_clips, epoch_s=900.0)       # 4 trials x 2 epochs x 900 s: about 2 hours
    r = run_gridtune(*args, "launcher.max_gpu_hours=0.5", check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    line = [ln for ln in r.stderr.splitlines() if "launcher.max_gpu_hours" in ln]
    assert line == ["gridtune: est. 2.00 device-hours exceed launcher.max_gpu_hours=0.5 by 1.50 (300%); "
                    "nothing was launched"], r.stderr
    assert not (tmp_path / "smoke").exists() and not any(p.name.startswith(".") for p in tmp_path.iterdir())
    ok = run_gridtune(*args, "launcher.max_gpu_hours=5", module="gridtune.plan")   # under the limit: planned
    assert "gridtune: budget: est. 2.00 CPU-hours: 1 CPU threads, no GPU; wall 2h00m" in ok.stdout and not (tmp_path / "smoke").exists()


def test_unmeasured_grid_says_the_limit_is_not_checked(run_gridtune, demo_root, tmp_path):
    r = run_gridtune("sweep=smoke", "launcher.max_gpu_hours=1", f"out_root={tmp_path}", f"data.root={demo_root}",
                     module="gridtune.plan")
    assert "gridtune: budget: unknown: no epoch of this grid's 1 shape(s) was measured" in r.stdout
    assert "launcher.max_gpu_hours=1 is set, but nothing of this grid is measured: the limit is not checked" in r.stdout


def _seconds(text: str) -> float:
    """fmt_s's "12.3s" or sweepdir.fmt_duration's "1m05s" / "2h03m" as seconds."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:([\d.]+)s)?", text)
    h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return 3600 * h + 60 * mi + s


@pytest.mark.slow
def test_plan_estimates_the_smoke_grid_within_30_percent(run_gridtune, tmp_path):
    """The issue's acceptance, on the demo data at its default size (gridtune.data.demo.generate, as
    data/demo). Like with like: the estimate and the run are measured back to back on this machine
    with train.threads fixed and the audio cache built; a one-trial sweep elsewhere first warms the OS
    caches (torch's libraries) and builds that cache, so that neither the probe nor the sweep pays a
    cold disk. The probe times a sweep's own driver and per-job seconds end to end (checks.probe.time_sweep).
    The machine's load drifts (other tests beside this one): the sweep runs just before the plan and
    just after it, and the estimate is held to the mean of the two."""
    from gridtune.data.demo import generate
    generate(tmp_path / "demo", seed=0)
    args = ("sweep=smoke", "train.threads=1", f"data.root={tmp_path / 'demo'}")
    run_gridtune(*args, f"out_root={tmp_path / 'warm'}", "lr=1e-3", "dropout=0.3", "train.epochs=1")

    def sweep(name: str) -> float:
        t0 = time.perf_counter()
        r = run_gridtune(*args, f"out_root={tmp_path / name}")
        assert "4 trials: 4 ok" in r.stdout
        return time.perf_counter() - t0

    before = sweep("before")
    plan = run_gridtune("--probe", *args, f"out_root={tmp_path / 'plan'}", module="gridtune.plan")
    after = sweep("after")
    est = _seconds(re.search(r"gridtune: budget: est\. [\d.e-]+ CPU-hours: 1 CPU threads, no GPU; wall (\S+):",
                             plan.stdout).group(1))
    measured = (before + after) / 2
    print(f"smoke grid: estimate {est:.1f}s, measured {measured:.1f}s ({before:.1f}s before, {after:.1f}s after) "
          f"({(est - measured) / measured:+.0%})")
    assert abs(est - measured) / measured <= 0.3, (est, before, after, plan.stdout)
