"""Local multiruns end to end: trials land in their own dirs, reruns skip finished trials, an
invalid grid launches nothing, and K trials per job give exactly the results of K=1."""

import pytest

from gridtune.sweepdir import records

COMMON = ("preset=debug", "train.epochs=2")


def _results(sweep_dir):
    out = {}
    for p in sorted(sweep_dir.glob("*/result.json")):
        rec = records.read_json(p)
        out[rec["trial_id"]] = rec
    return out


@pytest.mark.slow
def test_three_trial_multirun_then_rerun_skips(run_gridtune, demo_root, tmp_path):
    args = ("-m", *COMMON, "lr=1e-3,5e-4,1e-4", "sweep_name=three", f"out_root={tmp_path}", f"data.root={demo_root}")
    r = run_gridtune(*args)
    sweep = tmp_path / "three"
    res = _results(sweep)
    assert len(res) == 3 and {r["status"] for r in res.values()} == {"ok"}
    assert sorted(r["params"]["lr"] for r in res.values()) == [1e-4, 5e-4, 1e-3]
    assert all((sweep / tid / ".hydra" / "config.yaml").exists() for tid in res)
    manifest = records.read_json(sweep / records.MANIFEST)
    assert sorted(t["trial_id"] for t in manifest["trials"]) == sorted(res)
    assert "3 trials: 3 ok" in r.stdout
    again = run_gridtune(*args)
    assert "3 trials, 3 already done (skipped), 0 to run" in again.stdout
    assert _results(sweep) == res


def test_invalid_grid_launches_nothing(run_gridtune, demo_root, tmp_path):
    r = run_gridtune("-m", *COMMON, "lr=1e-3,-5", "sweep_name=bad", f"out_root={tmp_path}", f"data.root={demo_root}",
                     check=False)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.startswith("gridtune: invalid trial")]
    assert lines == ["gridtune: invalid trial [preset=debug train.epochs=2 lr=-5 sweep_name=bad "
                     f"out_root={tmp_path} data.root={demo_root}] lr=-5: must be a number > 0"]
    assert not (tmp_path / "bad").exists()


def test_missing_data_root_launches_nothing(run_gridtune, tmp_path):
    r = run_gridtune("-m", *COMMON, "lr=1e-3,1e-4", f"out_root={tmp_path}", f"data.root={tmp_path}/nope",
                     check=False)
    assert r.returncode == 2 and f"data.root={tmp_path}/nope: not a directory" in r.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_trials_per_job_gives_the_same_results(run_gridtune, demo_root, tmp_path):
    base = ("-m", *COMMON, "lr=1e-3,1e-4", "dropout=0.3,0.5", f"data.root={demo_root}")
    run_gridtune(*base, "sweep_name=k1", f"out_root={tmp_path}")
    r = run_gridtune(*base, "sweep_name=k2", f"out_root={tmp_path}", "launcher.trials_per_job=3")
    assert "4 to run as 2 job(s) of <= 3" in r.stdout
    k1, k2 = _results(tmp_path / "k1"), _results(tmp_path / "k2")
    assert sorted(k1) == sorted(k2) and len(k1) == 4
    for tid in k1:
        assert k1[tid]["metrics"] == k2[tid]["metrics"], tid
        assert (tmp_path / "k2" / tid / "best.pt").exists()
