"""Pre-launch checks: data (classes, recordings per class, objective, batch size, cache key) and
SLURM requests against recorded `sinfo` output; a finished trial counts only on the same data."""
from __future__ import annotations

import os
import shutil

import pytest
from omegaconf import OmegaConf

from conftest import compose
from gridtune.slurm import cluster
from gridtune.data import cache, feed, layouts
from gridtune.train import metrics
from gridtune.checks import preflight
from gridtune.sweepdir import records
from gridtune.sweepdir.ledger import done_record as final_record, same_data

FAST = ("preset=debug", "train.epochs=1")

# `sinfo -h -N -o "%P|%N|%c|%m|%G|%l|%a"` on the local one-node cluster
SINFO_LOCAL = "debug*|vm|4|23593|gpu:2|infinite|up\nurgent|vm|4|23593|gpu:2|infinite|up\n"
# ... and on a larger cluster: typed GPUs with socket affinity, several gres, time limits, a drained node
SINFO_BIG = """\
cpu*|c001|64|257000|(null)|2-00:00:00|up
cpu*|c002|64|257000|(null)|2-00:00:00|up
gpu|g001|32|515000|gpu:a100:4(S:0-1)|1-00:00:00|up
gpu|g002|48|1030000|gpu:h100:8(S:0-1),mps:400|1-00:00:00|up
short|g001|32|515000|gpu:a100:4(S:0-1)|30:00|up
debug|d01|8|16000|gpu:1|infinite|down
garbage line without fields
"""


# ---- sinfo parsing and fitting -------------------------------------------------------------

def test_parse_local_sinfo():
    nodes = cluster.parse(SINFO_LOCAL)
    assert [(n.partition, n.default, n.name, n.cpus, n.mem_mb, n.gpus, n.time_min) for n in nodes] == [
        ("debug", True, "vm", 4, 23593, 2, None), ("urgent", False, "vm", 4, 23593, 2, None)]


def test_parse_big_cluster_sinfo():
    nodes = {(n.partition, n.name): n for n in cluster.parse(SINFO_BIG)}
    assert len(nodes) == 6
    assert nodes["gpu", "g001"].gpus == 4 and nodes["gpu", "g002"].gpus == 8 and nodes["cpu", "c001"].gpus == 0
    assert nodes["cpu", "c001"].time_min == 2 * 24 * 60 and nodes["short", "g001"].time_min == 30
    assert nodes["cpu", "c002"].default and not nodes["gpu", "g001"].default
    assert not nodes["debug", "d01"].up


def test_partitions_summarise_each_partition_once():
    lines = cluster.partitions(cluster.parse(SINFO_BIG))
    assert lines == ["cpu (default): 2 node(s), up to 64 CPUs, 250 GB, no GPUs, limit 2880 min",
                     "gpu: 2 node(s), up to 48 CPUs, 1005 GB, 8 GPU(s), limit 1440 min",
                     "short: 1 node(s), up to 32 CPUs, 502 GB, 4 GPU(s), limit 30 min",
                     "debug: 1 node(s), up to 8 CPUs, 15 GB, 1 GPU(s), limit none"]


def test_asking_slurm_says_why_there_is_no_answer(tmp_path, monkeypatch):
    for name, body in (("sinfo", "echo 'slurm_load_partitions: Unable to contact slurm controller' >&2; exit 1"),
                       ("squeue", "echo 'JOB'")):
        (tmp_path / name).write_text(f"#!/bin/sh\n{body}\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert cluster.query_or_why(5) == (None, "sinfo failed: slurm_load_partitions: Unable to contact slurm controller")
    assert cluster.ask(["squeue"]) == (["JOB"], None)
    assert cluster.ask(["sacct"]) == (None, "sacct is not on PATH")


@pytest.mark.parametrize("text, minutes", [("infinite", None), ("UNLIMITED", None), ("30", 30), ("30:00", 30),
                                           ("2:00:00", 120), ("1-00:00:00", 1440), ("1-12", 2160),
                                           ("0:30:01", 31)])
def test_parse_time(text, minutes):
    assert cluster.parse_time(text) == minutes


def _slurm(**over):
    base = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
            "partition": None, "cpus_per_task": 4, "mem_gb": 16, "gpus_per_node": 1, "timeout_min": 60,
            "tasks_per_node": 1, "nodes": 1, "array_parallelism": 64, "signal_delay_s": 120, "max_num_timeout": 3}
    return OmegaConf.create({**base, **over})


def test_the_default_request_fits_the_local_cluster():
    assert preflight.check_slurm(_slurm(), cluster.parse(SINFO_LOCAL)) == []
    assert preflight.check_slurm(_slurm(partition="urgent"), cluster.parse(SINFO_LOCAL)) == []


def test_requests_beyond_every_node_are_refused_with_the_numbers():
    local = cluster.parse(SINFO_LOCAL)
    assert preflight.check_slurm(_slurm(cpus_per_task=64), local) == [
        "hydra.launcher.cpus_per_task=64: no node of the default partition 'debug' has 64 CPUs "
        "(the largest has 4 CPUs)"]
    assert preflight.check_slurm(_slurm(partition="nope"), local) == [
        "hydra.launcher.partition=nope: no such partition (the cluster has: debug, urgent)"]
    big = cluster.parse(SINFO_BIG)
    got = preflight.check_slurm(_slurm(partition="gpu", gpus_per_node=16, mem_gb=2000, timeout_min=2000), big)
    assert got == ["hydra.launcher.mem_gb=2000: no node of partition 'gpu' has 2000 GB (the largest has 1005.86 GB)",
                   "hydra.launcher.gpus_per_node=16: no node of partition 'gpu' has 16 GPUs (the largest has 8 GPUs)",
                   "hydra.launcher.timeout_min=2000: above the time limit of partition 'gpu' (1440 min)"]
    # 48 CPUs, 600 GB and 8 GPUs: only g002 has them all, and one node is enough
    assert preflight.check_slurm(_slurm(partition="gpu", cpus_per_task=48, mem_gb=600, gpus_per_node=8), big) == []
    # the cpu partition has the CPUs but no GPU at all
    mixed = preflight.check_slurm(_slurm(partition="cpu", cpus_per_task=64, gpus_per_node=1), big)
    assert mixed == ["hydra.launcher.gpus_per_node=1: no node of partition 'cpu' has 1 GPUs "
                     "(the largest has 0 GPUs)"]
    assert preflight.check_slurm(_slurm(partition="cpu", nodes=3, gpus_per_node=0), big) == [
        "hydra.launcher.nodes=3: partition 'cpu' has 2 nodes"]


def test_fields_that_fit_only_on_different_nodes_are_refused_together():
    nodes = cluster.parse("p*|fat|64|64000|(null)|infinite|up\np*|gpu|8|512000|gpu:4|infinite|up\n")
    got = preflight.check_slurm(_slurm(cpus_per_task=64, mem_gb=256, gpus_per_node=0), nodes)
    assert got == ["hydra.launcher: 64 CPUs, 256 GB and 0 GPUs together fit no node of the default partition 'p' "
                   "(fat: 64 CPUs, 62.5 GB, 0 GPUs; gpu: 8 CPUs, 500 GB, 4 GPUs)"]


@pytest.mark.parametrize("over, line", [
    ({"timeout_min": -5}, "hydra.launcher.timeout_min=-5: must be >= 1"),
    ({"cpus_per_task": 0}, "hydra.launcher.cpus_per_task=0: must be >= 1"),
    ({"mem_gb": 0}, "hydra.launcher.mem_gb=0: must be > 0"),
    ({"gpus_per_node": 1.5}, "hydra.launcher.gpus_per_node=1.5: must be an integer"),
    ({"cpus_per_task": "four"}, "hydra.launcher.cpus_per_task='four': must be an integer"),
    ({"array_parallelism": True}, "hydra.launcher.array_parallelism=True: must be an integer"),
    ({"timeout_min": 2, "signal_delay_s": 120}, "hydra.launcher.signal_delay_s=120: must be below the time limit "
                                                "(hydra.launcher.timeout_min=2 is 120 s)"),
])
def test_numeric_fields_out_of_range(over, line):
    assert preflight.check_slurm(_slurm(**over), []) == [line]     # no cluster: only the numbers are checked


def test_local_launcher_is_not_checked():
    assert preflight.check_slurm(OmegaConf.create({"_target_": "hydra._internal.core_plugins.basic_launcher"
                                                              ".BasicLauncher"}), []) == []


# ---- data ---------------------------------------------------------------------------------

def test_clean_grid_has_no_problems_and_facts_per_trial(demo_root):
    cfgs = [compose(*FAST, f"data.root={demo_root}", f"lr={lr}") for lr in (1e-3, 1e-4)]
    facts, problems = preflight.inspect_data(cfgs)
    assert problems == []
    assert facts[0] == facts[1] and facts[0].n_clips == 66
    labels = [c.label for c in layouts.index_train(demo_root, "auto", None)[0]]
    assert 0 < facts[0].n_train == len(feed.split(labels, [c.group for c in layouts.index_train(
        demo_root, "auto", None)[0]], {"val": 0.15}, 0)["train"]) < 66


def test_batch_size_above_the_training_split(demo_root):
    cfg = compose(*FAST, f"data.root={demo_root}", "train.batch_size=100000")
    n = preflight.inspect_data([cfg])[0][0].n_train
    assert preflight.check_data([cfg]) == [f"train.batch_size=100000 > {n} training clips (data.root={demo_root}, "
                                           f"data.val_fraction=0.15): at most {n}"]
    assert preflight.check_data([compose(*FAST, f"data.root={demo_root}", f"train.batch_size={n}")]) == []


def test_objective_must_be_a_recorded_metric(demo_root):
    got = preflight.check_data([compose(*FAST, f"data.root={demo_root}", "objective=val/accuracy")])
    assert got == [f"objective=val/accuracy: not a metric a trial records (one of {', '.join(metrics.RECORDED)})"]
    for name in metrics.RECORDED:
        assert preflight.check_data([compose(*FAST, f"data.root={demo_root}", f"objective={name}")]) == []


@pytest.mark.slow
def test_recorded_metrics_are_what_a_trial_records(demo_root, tmp_path):
    from gridtune.train.trial import run_trial
    rec = run_trial(compose(*FAST, f"data.root={demo_root}"), tmp_path / "t")
    assert rec["status"] == "ok" and sorted(rec["metrics"]) == sorted(metrics.RECORDED)


def test_classes_that_do_not_match_the_folders(demo_root):
    cfg = compose(*FAST, f"data.root={demo_root}", "data.classes=[cel,cla,flu,gac,gel,org,pia,sax,tru,vio,drums]")
    assert preflight.check_data([cfg]) == [
        f"data.classes=[cel, cla, flu, gac, gel, org, pia, sax, tru, vio, drums]: do not match the class folders "
        f"of {demo_root / layouts.TRAIN_DIR} (no folder for drums; folders not in data.classes: voi); fix the list, "
        "or data.classes=null to use the folders"]
    assert preflight.check_data([compose(*FAST, f"data.root={demo_root}", "data.classes=null")]) == []


def test_a_subset_of_the_class_folders_is_allowed(demo_root):
    cfg = compose(*FAST, f"data.root={demo_root}", "data.classes=[cel,cla,flu,voi]", "train.batch_size=4")
    assert preflight.check_data([cfg]) == []


def test_a_class_with_too_few_recordings(fresh_data):
    cel = fresh_data / layouts.TRAIN_DIR / "cel"
    groups = sorted({layouts.group_of(p.name) for p in cel.glob("*.wav")})
    for p in cel.glob("*.wav"):
        if layouts.group_of(p.name) != groups[0]:
            p.unlink()
    n_clips = len(list(cel.glob("*.wav")))
    cfgs = [compose(*FAST, f"data.root={fresh_data}", f"lr={lr}") for lr in (1e-3, 1e-4)]
    assert preflight.check_data(cfgs) == [       # once for the grid, not once per trial
        f"data.root={fresh_data}: class 'cel' has 1 recording ({n_clips} clips); the split needs at least 2 per "
        "class (1 for training, 1 each for data.val_fraction=0.15; clips of one recording stay together)"]
    # every class of the demo data has 2 recordings: a test split as well needs 3
    got = preflight.check_data([compose(*FAST, f"data.root={fresh_data}", "data.test_fraction=0.1")])
    assert len(got) == 11 and all("needs at least 3 per class" in line for line in got)


def test_unusable_root_is_one_line(tmp_path):
    assert preflight.check_data([compose(*FAST, f"data.root={tmp_path}/nope")]) == [
        f"data.root={tmp_path}/nope: not a directory"]


# ---- data identity -----------------------------------------------------------------------

def test_data_key_is_the_key_the_cache_opens(fresh_data):
    cfg = compose(*FAST, f"data.root={fresh_data}")
    key = cache.data_key(cfg)
    assert key == preflight.inspect_data([cfg])[0][0].cache_key == feed.prepare(cfg).entry.key
    wav = sorted((fresh_data / layouts.TRAIN_DIR / "gel").glob("*.wav"))[0]
    os.utime(wav, ns=(wav.stat().st_atime_ns, wav.stat().st_mtime_ns + 1_000_000))   # touched
    touched = cache.data_key(cfg)
    assert touched != key
    shutil.copy2(wav, wav.with_name("extra__1.wav"))                                    # a file more
    assert cache.data_key(cfg) not in (key, touched)
    assert cache.data_key(compose(*FAST, f"data.root={fresh_data}", "data.sample_rate=8000")) != \
        cache.data_key(cfg)                                                        # other audio params


def test_a_final_record_counts_only_on_the_same_data(tmp_path):
    records.write_json(tmp_path / records.RESULT, {"trial_id": "t1", "status": "ok", "cache_hash": "aaa"})
    rec = final_record(tmp_path, "t1")
    assert same_data(rec, "aaa") and not same_data(rec, "bbb")
    assert same_data(rec, None)                  # the data cannot be indexed now: the record stands


def test_redone_message():
    assert preflight.redone_message([("abc", "def")] * 3) == "3 trials redone: trained on other data " \
                                                             "(cache key abc ≠ def)"
    assert preflight.redone_message([("abc", "def"), (None, "def")]) == (
        "2 trials redone: trained on other data (1× cache key abc ≠ def; 1× cache key none recorded ≠ def)")


@pytest.mark.slow
def test_rerun_on_other_data_redoes_the_trials(run_gridtune, demo_root, tmp_path):
    from gridtune.data.demo import generate
    other = tmp_path / "other"
    generate(other, per_class=6, test_clips=0, seed=1)
    args = ("-m", *FAST, "lr=1e-3,1e-4", "sweep_name=ident", f"out_root={tmp_path}")
    run_gridtune(*args, f"data.root={demo_root}")
    sweep = tmp_path / "ident"
    old = {p.parent.name: records.read_json(p)["cache_hash"] for p in sweep.glob("*/result.json")}
    old_key = cache.data_key(compose(*FAST, f"data.root={demo_root}"))
    new_key = cache.data_key(compose(*FAST, f"data.root={other}"))
    assert len(old) == 2 and set(old.values()) == {old_key} != {new_key}

    plan = run_gridtune(*args[1:], f"data.root={other}", module="gridtune.plan")
    assert f"2 trials redone: trained on other data (cache key {old_key} ≠ {new_key})" in plan.stdout
    assert plan.stdout.count(" redo ") == 2
    r = run_gridtune(*args, f"data.root={other}")
    assert "2 trials, 0 already done (skipped), 2 to run" in r.stdout and "2 trials: 2 ok" in r.stdout
    assert f"2 trials redone: trained on other data (cache key {old_key} ≠ {new_key})" in r.stdout
    for tid in old:
        assert records.read_json(sweep / tid / records.RESULT)["cache_hash"] == new_key
        assert records.read_json(sweep / tid / f"result.{old_key}.json")["cache_hash"] == old_key   # kept beside

    same = run_gridtune(*args, f"data.root={other}")
    assert "2 trials, 2 already done (skipped), 0 to run" in same.stdout and "redone" not in same.stdout

    wav = sorted((other / layouts.TRAIN_DIR / "pia").glob("*.wav"))[0]
    os.utime(wav, ns=(wav.stat().st_atime_ns, wav.stat().st_mtime_ns + 1_000_000))   # touched: other data
    touched = run_gridtune(*args, f"data.root={other}")
    assert "2 trials, 0 already done (skipped), 2 to run" in touched.stdout
    assert "2 trials redone: trained on other data (cache key " + new_key in touched.stdout


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_requests_refused_before_submission_and_sbatch_refusal_exits_non_zero(run_gridtune, demo_root,
                                                                                    tmp_path):
    import subprocess
    import uuid
    name = f"gtpre{uuid.uuid4().hex[:6]}"
    args = ("-m", *FAST, "lr=1e-3,1e-4", f"data.root={demo_root}", f"out_root={tmp_path}", "launcher=slurm",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", "hydra.launcher.gpus_per_node=0",
            "hydra.launcher.timeout_min=20", f"hydra.launcher.name={name}")
    for i, (module, extra, line) in enumerate([      # the driver and the dry run say the same
            ("gridtune.sweep", "hydra.launcher.cpus_per_task=64",
             "hydra.launcher.cpus_per_task=64: no node of the default partition"),
            ("gridtune.plan", "hydra.launcher.partition=nope",
             "hydra.launcher.partition=nope: no such partition (the cluster has:")]):
        r = run_gridtune(*args, f"sweep_name=pre{i}", extra, module=module, check=False)
        assert r.returncode == 2, r.stdout + r.stderr
        assert r.stderr.strip().splitlines()[-1].startswith("gridtune: invalid " + line), r.stderr
        assert "Traceback" not in r.stderr and not (tmp_path / f"pre{i}").exists()
    # a request sinfo cannot judge: sbatch refuses it, and the driver says why and exits non-zero
    r = run_gridtune(*args, "sweep_name=refused", "hydra.launcher.constraint=nofeature", check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "gridtune: launcher: FailedJobError: sbatch: error: Batch job submission failed: Invalid feature " \
           "specification" in r.stderr.splitlines()
    queued = subprocess.run(["squeue", "-h", "--name", name], capture_output=True, text=True, timeout=30).stdout
    accounted = subprocess.run(["sacct", "-n", "-X", "--name", name, "-S", "now-1hour", "-o", "JobID"],
                               capture_output=True, text=True, timeout=30).stdout
    assert queued.strip() == "" and accounted.strip() == ""
