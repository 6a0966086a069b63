"""Smoke tests of scripts/bench.py's parts at tiny sizes; nothing here is timed or compared for speed."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import bench  # noqa: E402
import bench_data  # noqa: E402
import bench_procs  # noqa: E402
import bench_report  # noqa: E402
import bench_steps  # noqa: E402

DEBUG = ["preset=debug"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from gridtune.data.demo import generate
    root = tmp_path_factory.mktemp("bench") / "data"
    generate(root, per_class=6, test_clips=0, seed=0)
    return root


def test_sizes_follow_mode_and_flags(tmp_path):
    args = bench.parse_args(["--quick", "--batch", "3", "--ks", "1,4"])
    sizes = bench.resolve_sizes(args, "cpu", tmp_path)
    assert sizes["batch"] == 3 and sizes["ks"] == [1, 4] and sizes["compile_budget"] == 0 and sizes["quick"]
    cpu = bench.resolve_sizes(bench.parse_args([]), "cpu", tmp_path)
    cuda = bench.resolve_sizes(bench.parse_args([]), "cuda", tmp_path)
    assert cpu["size"] == cuda["size"] == 224 and cuda["steps"] > cpu["steps"] and cpu["ks"] == [1, 2, 4]


def test_synthetic_data_yields_whole_batches():
    x, y = torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long)
    batches = list(bench_steps.SyntheticData(x, y).batches(np.arange(5), 2))
    assert len(batches) == 2 and batches[0][0] is x


@pytest.mark.parametrize("dtype,cl", [("fp32", False), ("bf16", True)])
def test_measure_variant_runs_the_trial_loop(dtype, cl):
    cfg = bench_steps.compose(DEBUG)
    r = bench_steps.measure_variant(cfg, torch.device("cpu"), dtype, cl, False, batch=2, size=32, steps=1, warmup=1)
    assert r["samples_per_s"] > 0 and r["steps"] == 1 and r["batch"] == 2


def test_naive_features_match_gridtune_features(demo):
    """The baseline must compute the same log-mel as the trial, or the comparison means nothing."""
    from gridtune.data import feed
    from gridtune.train import frontend
    cfg = bench_steps.compose([f"data.root={demo}", *DEBUG])
    prepared = feed.prepare(cfg)
    waves = torch.from_numpy(np.asarray(prepared.entry.waves[:3], dtype=np.float32))
    feats = frontend.Features(cfg.features, int(cfg.data.sample_rate))
    feats.fit([waves])
    meta = prepared.entry.meta
    ds = bench_data.LibrosaClips(demo, meta["paths"], meta["labels"], cfg.features, int(cfg.data.sample_rate),
                                 waves.shape[-1], float(feats.mean), float(feats.std))
    naive = np.stack([ds[i][0] for i in range(3)])
    ref = feats(waves).numpy()
    assert naive.shape == ref.shape and naive.dtype == np.float32
    assert np.abs(naive - ref).mean() < 0.1           # normalized units; resamplers differ slightly
    assert ds[0][1] == meta["labels"][0]


def test_naive_loader_feeds_train_epoch(demo):
    cfg = bench_steps.compose([f"data.root={demo}", *DEBUG])
    from gridtune.data import feed
    from gridtune.train import frontend
    prepared = feed.prepare(cfg)
    meta, n = prepared.entry.meta, prepared.entry.waves.shape[-1]
    ds = bench_data.LibrosaClips(demo, meta["paths"], meta["labels"], cfg.features, 16000, n, 0.0, 1.0)
    shape = frontend.input_shape(cfg.features, n)
    parts = bench_steps.build_parts(cfg, torch.device("cpu"), shape, 11)
    ident = torch.nn.Identity()
    secs = bench_steps.timed_epoch(parts, bench_data.NaiveData(ds, torch.device("cpu"), 0), ident, ident,
                                   np.arange(4), 2, cfg)
    assert secs > 0


def test_auto_flags_are_read_from_trial_runs(demo, tmp_path):
    flags = bench_data.auto_flags(demo, [*DEBUG, "train.amp=off", "train.channels_last=false"], torch.device("cpu"),
                                  tmp_path, 4)
    assert flags == {"amp": "off", "channels_last": False, "cudnn_benchmark": False, "compile_k1": False,
                     "compile_k3": False}


def test_paired_ratio_is_the_median_of_round_ratios():
    assert bench_data.paired([2.0, 4.0, 30.0], [1.0, 1.0, 10.0]) == pytest.approx(3.0)


def test_run_child_reports_a_failing_child():
    records, stopped = bench_steps.run_child("no-such-mode", {}, timeout=60)
    assert records == [] and stopped.startswith("exit 1")


def test_flag_verdicts_and_table():
    a = [{"dtype": "fp32", "channels_last": False, "compile": False, "samples_per_s": 10.0, "step_ms": 800},
         {"dtype": "bf16", "channels_last": False, "compile": False, "samples_per_s": 20.0, "step_ms": 400},
         {"dtype": "fp32", "channels_last": True, "compile": False, "samples_per_s": 10.1, "step_ms": 790},
         {"dtype": "fp32", "channels_last": False, "compile": True, "skipped": "skipped (budget)"}]
    auto = {"amp": "off", "channels_last": False, "compile_k1": False, "compile_k3": False, "cudnn_benchmark": False}
    flags = {f["flag"]: f for f in bench_report.flag_effects(a, auto, "bf16")}
    assert flags["amp"]["verdict"] == "auto disagrees" and flags["amp"]["ratio"] == pytest.approx(2.0)
    assert flags["channels_last"]["verdict"] == "no measurable effect"
    assert flags["compile"]["verdict"].startswith("not measured")
    b = {"samples_per_s": {"real": 9.6, "synthetic": 10.0, "naive": 5.0}, "feed_only_samples_per_s": 100.0,
         "real_vs_synthetic": 0.96, "gridtune_vs_naive": 1.92, "naive_workers": 1}
    de = {"grid": "smoke", "clips": 66, "local": [
        {"k": 1, "wall_s": 10.0, "walls": [10.0], "runs": 1, "trials": 4, "statuses": {"ok": 4}, "decodes": [66],
         "decodes_ok": True, "built_by_driver": True, "built_by": "h:1", "notes": []}],
          "slurm": [], "slurm_skipped": "skipped: not requested (--slurm)"}
    env = {"device_type": "cpu", "device_name": "cpu", "torch": torch.__version__, "threads": 2, "cpu_count": 2,
           "loadavg_start": 0.5, "loadavg_end": 0.7, "auto": auto}
    res = {"env": env, "sizes": {"quick": True}, "total_s": 12.0, "flags": list(flags.values()),
           "sections": {"a": a, "bf": b, "de": de, "c": {"error": "RuntimeError: boom"}}}
    assert bench.goals(res) == {"real_vs_synthetic >= 0.95": True, "gridtune_vs_naive >= 1.25": True,
                                "decodes == clips": True}
    text = bench_report.markdown(res)
    assert "| b. data path |" in text and "0.960×" in text and "≥ 1.25: yes" in text and "boom" in text
    assert all(line.count("|") == 6 for line in text.splitlines() if line.startswith("| "))


@pytest.mark.parametrize("sinfo, want", [
    (None, "no SLURM (sinfo not found)"),
    ("echo 'debug*'; echo urgent", None),                    # partitions listed: usable
    ("exit 1", "no SLURM (sinfo exit 1)"),                    # no controller answers
    ("exit 0", "no SLURM (sinfo exit 0)"),                    # answers, but with no partition
])
def test_slurm_probe_answers_with_a_reason_or_none(tmp_path, monkeypatch, sinfo, want):
    """What the probe says for each answer of `sinfo` (a stand-in on PATH, so any machine gives the
    same answers, with or without a cluster)."""
    if sinfo is not None:
        (tmp_path / "sinfo").write_text(f"#!/bin/sh\n{sinfo}\n")
        (tmp_path / "sinfo").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert bench_procs.slurm_usable() == want


@pytest.mark.slow
def test_quick_mode_end_to_end(tmp_path, demo):
    res = bench.main(["--quick", "--data", str(demo), "--out", str(tmp_path)])
    assert (tmp_path / "bench.json").exists() and (tmp_path / "bench.md").exists()
    assert not any(isinstance(v, dict) and "error" in v for v in res["sections"].values())
    assert res["goals"]["decodes == clips"] is True
    assert set(res["sections"]["c"]["stages_s"]) == {name for name, _, _ in bench_procs.STAGES}


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_sweep_decodes_once(tmp_path, demo):
    if bench_procs.slurm_usable():
        pytest.skip(bench_procs.slurm_usable())
    from gridtune.data.layouts import index_train
    r = bench_procs.run_grid(demo, tmp_path, 2, "smoke", bench_procs.SLURM_ARGS, timeout=300)
    assert r["statuses"] == {"ok": 4} and r["cache_entries"] == 1 and r["built_by_driver"]
    assert r["decodes_meta"] == len(index_train(demo)[0])
