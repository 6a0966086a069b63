"""gridtune.export: each artifact gives gridtune's probabilities on the demo test clips (max abs diff
<= 1e-4 in fp32), loads in a process that never imports gridtune, and has a model card beside it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from modeldirs import make_final_dir

from gridtune.data import cache
from gridtune.use import evaluate, trained
from gridtune import export
from gridtune.data.demo import CLASSES
from gridtune.data.layouts import index_test

TOLERANCE = 1e-4
STANDALONE = r"""
import sys
import numpy as np
folder, x_path = sys.argv[1:]
x = np.load(x_path)
out = {}
import onnxruntime as ort
sess = ort.InferenceSession(folder + "/model.onnx", providers=["CPUExecutionProvider"])
out["onnx"] = sess.run(None, {"waveform": x})[0]
import torch
with torch.no_grad():
    out["pt2"] = torch.export.load(folder + "/model.pt2").module()(torch.from_numpy(x)).numpy()
    out["torchscript"] = torch.jit.load(folder + "/model.torchscript.pt")(torch.from_numpy(x)).numpy()
leaked = sorted(m for m in sys.modules if m.split(".")[0] == "gridtune")
assert not leaked, leaked
np.savez(folder + "/standalone.npz", **out)
print("ok", sorted(out))
"""


@pytest.fixture(scope="module")
def exported(demo_root, tmp_path_factory):
    """A tiny final run on the demo data, exported once in every format (~15 s)."""
    final_dir = make_final_dir(tmp_path_factory.mktemp("export") / "final", demo_root, threshold=0.12)
    t = trained.load(final_dir)
    out = final_dir / "export"
    card = export.export(t, out)
    return final_dir, out, card


@pytest.fixture(scope="module")
def test_windows(demo_root, exported) -> tuple[np.ndarray, np.ndarray]:
    """(every window of the demo test clips, gridtune's own probabilities for them, fp32)."""
    t = trained.load(exported[0])
    window, hop = evaluate.window_and_hop(t.cfg)
    rows = []
    for rel, _ in index_test(demo_root, list(CLASSES)):
        x = cache.decode_as_stored(demo_root / rel, 16000).astype(np.float32)
        rows += [np.pad(x[s:s + window], (0, max(0, s + window - len(x)))) for s in evaluate.window_starts(len(x), window, hop)]
    x = np.stack(rows)
    return x, evaluate.model_prob_fn(t.model, t.features, torch.device("cpu"))(x)


@pytest.mark.slow
def test_every_artifact_matches_gridtune_in_a_process_without_gridtune(exported, test_windows, tmp_path):
    _, out, _ = exported
    x, ref = test_windows
    assert len(x) >= 8 and ref.shape == (len(x), len(CLASSES))
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "standalone.py"
    script.write_text(STANDALONE)
    proc = subprocess.run([sys.executable, "-I", str(script), str(out), str(tmp_path / "x.npy")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = np.load(out / "standalone.npz")
    assert sorted(got.files) == ["onnx", "pt2", "torchscript"]
    for fmt in got.files:
        assert got[fmt].shape == ref.shape
        assert np.abs(got[fmt] - ref).max() <= TOLERANCE, fmt
    assert np.abs(ref - ref.mean(axis=0)).max() > 1e-3         # the windows get different probabilities


@pytest.mark.slow
def test_any_batch_size_and_the_card_records_the_check(exported, test_windows):
    _, out, card = exported
    x, ref = test_windows
    for fmt in export.FORMATS:
        for rows in (slice(0, 1), slice(1, 8)):
            got = export.run_artifact(fmt, out / export.FILES[fmt], x[rows])
            assert np.abs(got - ref[rows]).max() <= TOLERANCE, (fmt, rows)
        assert card["artifacts"][fmt]["max_abs_diff"] <= TOLERANCE
    assert card["check"]["tolerance"] == TOLERANCE and "4 test clips" in card["check"]["on"]


@pytest.mark.slow
def test_model_card_says_what_goes_in_and_where_it_came_from(exported):
    final_dir, out, card = exported
    on_disk = json.loads((out / "model_card.json").read_text())
    assert on_disk == json.loads(json.dumps(card))
    rec = json.loads((final_dir / "final.json").read_text())
    assert on_disk["classes"] == list(CLASSES)
    i = on_disk["input"]
    assert (i["sample_rate"], i["window_samples"], i["channels"], i["dtype"]) == (16000, 48000, "mono", "float32")
    assert i["shape"] == ["batch", 48000] and on_disk["output"]["shape"] == ["batch", len(CLASSES)]
    assert on_disk["recording"]["hop_samples"] == 24000 and on_disk["recording"]["threshold"] == 0.12
    assert on_disk["training"]["cache_key"] == rec["cache_hash"] and on_disk["training"]["data_root"]
    assert on_disk["sweep"]["winner_trial_id"] == rec["trial_id"] and on_disk["sweep"]["overrides"] == rec["overrides"]
    assert on_disk["test"]["micro_f1"] == rec["test"]["micro_f1"] and on_disk["exported"]["git_sha"]
    assert on_disk["training"]["git_sha"] == rec["git_sha"]
    md = (out / "model_card.md").read_text()
    for fact in ("16000 Hz", "(batch, 48000)", "threshold **0.12**", rec["trial_id"], rec["cache_hash"],
                 "micro_f1 0.2500", " ".join(CLASSES), "model.onnx", "model.pt2", "model.torchscript.pt"):
        assert fact in md, fact


def test_bad_model_dir_is_one_line_exit_2(tmp_path, capsys):
    assert export.main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "nope") in err


def test_front_end_and_cnn_in_one_module_equal_gridtune_model(demo_root, tmp_path):
    t = trained.load(make_final_dir(tmp_path / "final", demo_root))
    x = np.random.default_rng(0).standard_normal((3, 48000)).astype(np.float32) * 0.1
    ref = evaluate.model_prob_fn(t.model, t.features, torch.device("cpu"))(x)
    with torch.no_grad():
        got = export.probability_module(t)(torch.from_numpy(x)).numpy()
    assert np.abs(got - ref).max() <= 1e-6 and np.allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert Path(t.weights).name == "model.pt"
