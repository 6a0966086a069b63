"""How fast `python -m gridtune.predict` labels recordings on this machine, against its own parts.

    .venv/bin/python scripts/bench_predict.py [--files 100] [--seconds 30] [--preset demo|none] [--model DIR]

Writes --files recordings of --seconds each (44.1 kHz stereo 16-bit WAV, as IRMAS ships) into a
temporary folder and measures, in one run:
  decode   decoding and resampling every file, one after another (cache.decode_as_stored)
  model    the model alone on the already-decoded windows, in predict's batches
  predict  predict's own loop (gridtune.predict.label): decoding in threads ahead of batched inference
  command  `python -m gridtune.predict MODEL FOLDER --out rows.csv` end to end, process start included
and prints files/s for each, with predict's ratio to decode + model run back to back (> 1: the
overlap pays). Without --model, an untrained model of the chosen preset is used (speed does not
depend on the weights); --preset none is the default 224-band model and cnn256.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def untrained_final_dir(path: Path, preset: str) -> Path:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from gridtune.train import frontend
    from gridtune.train.model import build_model
    from gridtune.sweep import CONF_DIR
    from gridtune.train.runtime import save_torch
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[] if preset == "none" else [f"preset={preset}"])
    classes = list(cfg.data.classes)
    window = int(round(cfg.data.sample_rate * cfg.data.clip_seconds))
    features = frontend.Features(cfg.features, int(cfg.data.sample_rate))
    model = build_model(cfg.model, len(classes), frontend.input_shape(cfg.features, window))
    path.mkdir(parents=True)
    save_torch(path / "model.pt", {"model": model.state_dict(), "features": features.state_dict()})
    (path / "final_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (path / "final.json").write_text(json.dumps({"classes": classes, "threshold": 0.2}))
    return path


def write_files(folder: Path, n: int, seconds: float) -> list[Path]:
    import soundfile as sf
    rng = np.random.default_rng(0)
    folder.mkdir()
    t = np.arange(int(seconds * 44100)) / 44100
    paths = []
    for i in range(n):
        tone = 0.2 * np.sin(2 * np.pi * (110 + 20 * i) * t)[:, None] + 0.02 * rng.standard_normal((len(t), 2))
        paths.append(folder / f"rec{i:04d}.wav")
        sf.write(paths[-1], tone.astype(np.float32), 44100, subtype="PCM_16")
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--preset", default="demo", help="demo (64 mel bands, what `make demo` trains) or none")
    ap.add_argument("--model", type=Path, help="a final run directory to time instead of an untrained model")
    args = ap.parse_args()
    import torch

    from gridtune.data import cache
    from gridtune.use import evaluate, trained
    from gridtune import predict
    from gridtune.train.runtime import set_cpu
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = args.model or untrained_final_dir(tmp / "final", args.preset)
        paths = write_files(tmp / "recordings", args.files, args.seconds)
        t = trained.load(model_dir)
        set_cpu(t.cfg)
        window, hop = evaluate.window_and_hop(t.cfg)
        bs = int(t.cfg.train.eval_batch_size)
        cache.decode_as_stored(paths[0], t.sample_rate)          # imports (scipy.signal) out of the timings
        fn = predict.model_fn(t, torch.device("cpu"))       # predict's own autocast and memory format
        fn(np.zeros((2, window), np.float32))
        figures = {}
        t0 = time.perf_counter()
        waves = [cache.decode_as_stored(p, t.sample_rate) for p in paths]
        figures["decode"] = time.perf_counter() - t0
        offsets = np.concatenate([[0], np.cumsum([len(w) for w in waves])])
        t0 = time.perf_counter()
        _, n_windows = evaluate.clip_probabilities(fn, np.concatenate(waves), offsets, window, hop, bs)
        figures["model"] = time.perf_counter() - t0
        rows = []
        t0 = time.perf_counter()
        predict.label(t, paths, prob_fn=fn, batch_size=bs, threshold=t.threshold, threads=predict.decode_threads(),
                      on_row=rows.append, on_bad=lambda p, r: None)
        figures["predict"] = time.perf_counter() - t0
        assert len(rows) == len(paths)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gridtune.predict", str(model_dir), str(tmp / "recordings"),
                        "--out", str(tmp / "rows.csv")], check=True, cwd=ROOT, capture_output=True)
        figures["command"] = time.perf_counter() - t0
    n = len(paths)
    print(f"{n} files x {args.seconds:g} s (44.1 kHz stereo PCM_16), {n_windows} windows, model "
          f"{args.model or 'untrained preset=' + args.preset}, torch threads {torch.get_num_threads()}")
    for k, v in figures.items():
        print(f"  {k:<8} {v:7.2f} s  {n / v:7.2f} files/s")
    serial = figures["decode"] + figures["model"]
    print(f"  predict vs decode + model back to back: {serial / figures['predict']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
