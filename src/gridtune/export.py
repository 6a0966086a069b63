"""`python -m gridtune.export MODEL [--out DIR] [--formats pt2,onnx,torchscript]`: the model outside gridtune.

Writes the front end (log-mel with its fitted normalization) and the CNN, followed by a softmax,
as one self-contained module: a float32 mono waveform batch (batch, window) at the training sample
rate in, class probabilities (batch, classes) out, any batch size. Formats: `model.pt2`
(`torch.export`; `torch.export.load(path).module()`), `model.onnx` (opset 18, whose STFT operator
carries the spectrogram; runs in onnxruntime) and `model.torchscript.pt` (`torch.jit.trace`;
`torch.jit.script` of this module stops at an internal assert in torch 2.11, and the traced graph
has no data-dependent branch). Each artifact is run after writing on the data root's test clips
(or seeded noise) and compared with gridtune's own model in fp32; one whose probabilities differ
by more than TOLERANCE fails the command (exit 1). The model card (`gridtune.use.card`) goes beside
them; an ONNX export that fails (an operator ONNX cannot express) or cannot be checked (no
onnxruntime) is recorded there with its reason. MODEL is anything `gridtune.use.trained` loads; the
default --out is MODEL/export. Exit 2 for a bad model directory.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import time
from pathlib import Path

import numpy as np

from gridtune.use import card, evaluate
from gridtune.sweepdir import records
from gridtune.use.trained import ModelDirError, load

FORMATS = ("pt2", "onnx", "torchscript")
FILES = {"pt2": "model.pt2", "onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
TOLERANCE = 1e-4          # max |p_artifact - p_gridtune| over every class of every check window, fp32
ONNX_OPSET = 18


def probability_module(trained):
    """features -> CNN -> softmax, in fp32 on the CPU, eval mode (what every artifact holds)."""
    import torch

    class Probabilities(torch.nn.Module):
        def __init__(self, features, model):
            super().__init__()
            self.features, self.model = features, model

        def forward(self, waveform: torch.Tensor) -> torch.Tensor:   # (batch, window) float32, mono
            return torch.softmax(self.model(self.features(waveform)), dim=1)

    return Probabilities(trained.features.cpu().float(), trained.model.cpu().float().to(
        memory_format=torch.contiguous_format)).eval()


def check_windows(trained, max_windows: int = 32) -> tuple[np.ndarray, str]:
    """(float32 windows (N, window), what they are): the data root's test clips cut as predict cuts
    them, else seeded noise; a zero-padded short window is always among them."""
    from gridtune.data import cache, layouts
    window, hop = evaluate.window_and_hop(trained.cfg)
    rng = np.random.default_rng(0)
    rows, what = [], "seeded noise"
    try:
        clips = layouts.index_test(trained.cfg.data.root, trained.classes)
    except (OSError, layouts.DataError):
        clips = []
    for rel, _ in clips:
        try:
            x = cache.decode_as_stored(Path(trained.cfg.data.root) / rel, trained.sample_rate).astype(np.float32)
        except (OSError, ValueError):
            continue
        for s in evaluate.window_starts(len(x), window, hop):
            rows.append(np.pad(x[s:s + window], (0, max(0, s + window - len(x)))))
        what = f"{len(clips)} test clips under {trained.cfg.data.root}"
    if not rows:
        rows = [rng.standard_normal(window).astype(np.float32) * a for a in (0.01, 0.1, 0.3, 1.0)]
    short = rng.standard_normal(window // 3).astype(np.float32) * 0.1
    rows = rows[:max_windows - 1] + [np.pad(short, (0, window - len(short)))]
    return np.stack(rows).astype(np.float32), what


def _save_bytes(fmt: str, module, example, path: Path) -> None:
    import logging
    import warnings
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)    # optional-operator notes, not problems
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (UserWarning, FutureWarning, DeprecationWarning))
        _save(fmt, module, example, path)


def _save(fmt: str, module, example, path: Path) -> None:
    import torch
    batch = torch.export.Dim("batch", min=1)
    if fmt == "pt2":
        buf = io.BytesIO()
        torch.export.save(torch.export.export(module, (example,), dynamic_shapes={"waveform": {0: batch}}), buf)
        records.atomic_write_bytes(path, buf.getvalue())
    elif fmt == "torchscript":
        buf = io.BytesIO()
        torch.jit.save(torch.jit.trace(module, example), buf)
        records.atomic_write_bytes(path, buf.getvalue())
    else:
        prog = torch.onnx.export(module, (example,), dynamo=True, opset_version=ONNX_OPSET, verbose=False,
                                 input_names=["waveform"], output_names=["probabilities"],
                                 dynamic_shapes={"waveform": {0: batch}})
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        prog.save(str(tmp))
        os.replace(tmp, path)


def run_artifact(fmt: str, path: Path, x: np.ndarray) -> np.ndarray:
    """Probabilities of an exported file on `x`, loaded the way a user without gridtune loads it."""
    if fmt == "onnx":
        import onnxruntime as ort
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.run(None, {sess.get_inputs()[0].name: x})[0]
    import warnings

    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (UserWarning, FutureWarning, DeprecationWarning))
        m = torch.export.load(str(path)).module() if fmt == "pt2" else torch.jit.load(str(path)).eval()
    with torch.no_grad():
        return m(torch.from_numpy(x)).numpy()


def export(trained, out: Path, formats=FORMATS) -> dict:
    """Write the artifacts and the model card into `out`; returns the card (dict)."""
    import torch
    module = probability_module(trained)
    x, what = check_windows(trained)
    ref = evaluate.model_prob_fn(trained.model, trained.features, torch.device("cpu"))(x)
    example = torch.from_numpy(x[:2].copy())
    out.mkdir(parents=True, exist_ok=True)
    artifacts = {}
    for fmt in formats:
        path = out / FILES[fmt]
        t0 = time.perf_counter()
        try:
            _save_bytes(fmt, module, example, path)
        except Exception as e:     # an operator the format cannot express: the others still count
            if fmt != "onnx":
                raise
            artifacts[fmt] = {"file": None, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
            continue
        a = {"file": path.name, "bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        try:
            got = np.concatenate([run_artifact(fmt, path, x), run_artifact(fmt, path, x[:1])])
            a["max_abs_diff"] = float(np.abs(got - np.concatenate([ref, ref[:1]])).max())
        except ImportError as e:   # onnxruntime is an optional extra (gridtune[export])
            a["max_abs_diff"], a["error"] = None, f"not checked: {e}"
        artifacts[fmt] = {**a, "export_s": round(time.perf_counter() - t0, 2)}
    c = card.build(trained, artifacts, checked_on=f"{len(x)} windows ({what}) and a batch of 1",
                   tolerance=TOLERANCE, onnx_opset=ONNX_OPSET if "onnx" in formats else None)
    records.write_json(out / card.JSON, c)
    records.atomic_write_text(out / card.MARKDOWN, card.markdown(c))
    return c


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gridtune.export", description=(
        "Export a final run's model (front end + CNN + softmax) as torch.export, ONNX and TorchScript "
        "files with a model card."))
    ap.add_argument("model", help="final run directory (DIR/final), sweep directory, or trial directory")
    ap.add_argument("--out", type=Path, help="output folder (default: MODEL/export)")
    ap.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated subset of {','.join(FORMATS)}")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        ap.error(f"--formats={args.formats}: each must be one of {', '.join(FORMATS)}")
    try:
        trained = load(args.model, "cpu")
    except ModelDirError as e:
        print(f"gridtune.export: error: {e}", file=sys.stderr)
        return 2
    out = (args.out or trained.dir / "export").resolve()
    c = export(trained, out, formats)
    failed = []
    for fmt, a in c["artifacts"].items():
        if a.get("max_abs_diff") is None:
            print(f"{fmt}: {'not written' if a['file'] is None else out / a['file']}: {a['error']}")
            continue
        ok = a["max_abs_diff"] <= TOLERANCE
        failed += [] if ok else [fmt]
        print(f"{out / a['file']}: {a['bytes'] / 1e6:.1f} MB, max |p - p_gridtune| = {a['max_abs_diff']:.1e} "
              f"({'ok' if ok else 'FAILS'} at {TOLERANCE:g})")
    print(f"model card: {out / card.MARKDOWN}, {out / card.JSON}")
    if failed:
        print(f"gridtune.export: error: {', '.join(failed)} differ from gridtune's model by more than "
              f"{TOLERANCE:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
