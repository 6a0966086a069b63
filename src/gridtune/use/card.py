"""The model card written beside an exported model: what goes in and out, where it came from, how well it did.

`build()` gathers it from the records on disk (final.json or a trial's result.json, the sweep
winner's result.json for the training cache key when the final record lacks it) and the export's
own checks; `markdown()` renders it for people. model_card.json holds the same facts for programs.
"""
from __future__ import annotations

import time
from pathlib import Path

from . import evaluate
from gridtune.sweepdir import records

JSON = "model_card.json"
MARKDOWN = "model_card.md"


def _cache_key(trained) -> tuple[str | None, str]:
    rec = trained.record
    if rec.get("cache_hash"):
        return rec["cache_hash"], "this run's record"
    if trained.kind == "final" and rec.get("sweep_dir") and rec.get("trial_id"):
        try:
            winner = records.read_json(Path(rec["sweep_dir"]) / str(rec["trial_id"]) / records.RESULT)
            if winner.get("cache_hash"):
                return winner["cache_hash"], "the sweep winner's record (same data and audio parameters)"
        except (OSError, records.TornRecord):
            pass
    return None, "not recorded"


def build(trained, artifacts: dict, *, checked_on: str, tolerance: float, onnx_opset: int | None) -> dict:
    import torch
    from omegaconf import OmegaConf

    from gridtune.train.model import count_params
    cfg, rec = trained.cfg, trained.record
    window, hop = evaluate.window_and_hop(cfg)
    sr = trained.sample_rate
    key, key_source = _cache_key(trained)
    sha, dirty = records.git_info()
    final = trained.kind == "final"
    feats = OmegaConf.to_container(cfg.features, resolve=True)
    return {
        "schema": 1,
        "name": f"gridtune-{rec.get('sweep') or cfg.sweep_name}-{rec.get('trial_id') or trained.dir.name}",
        "kind": trained.kind, "source_dir": str(trained.dir), "weights": str(trained.weights),
        "classes": list(trained.classes),
        "input": {"name": "waveform", "shape": ["batch", window], "dtype": "float32", "channels": "mono",
                  "sample_rate": sr, "window_samples": window, "window_s": window / sr,
                  "scale": "soundfile's float scale, full scale = 1.0"},
        "output": {"name": "probabilities", "shape": ["batch", len(trained.classes)],
                   "meaning": "softmax over the classes, per window"},
        "recording": {"hop_samples": hop, "hop_s": hop / sr,
                      "windows": "starts at 0, hop, 2*hop, ... until the end is covered; the last window zero-padded",
                      "average": "mean of the window probabilities",
                      "decision": ("classes whose mean probability >= threshold" if final and trained.threshold is not None
                                   else "the top-1 class (no threshold: a trial's weights)"),
                      "threshold": trained.threshold, "threshold_source": rec.get("threshold_source")},
        "front_end": {**feats, "normalization": {"mean": float(trained.features.mean),
                                                 "std": float(trained.features.std)}},
        "model": {**OmegaConf.to_container(cfg.model, resolve=True), "parameters": count_params(trained.model)},
        "training": {"data_root": str(cfg.data.root), "cache_key": key, "cache_key_source": key_source,
                     "train_on": rec.get("train_on", "train"), "epochs_run": rec.get("epochs_run"),
                     "weights": rec.get("weights") or ("best epoch by " + str(cfg.objective) + " on val"),
                     "n_train_clips": rec.get("n_train_clips"), "git_sha": rec.get("git_sha"),
                     "git_dirty": rec.get("git_dirty")},
        "sweep": {"name": rec.get("sweep") or str(cfg.sweep_name), "dir": rec.get("sweep_dir"),
                  "winner_trial_id": rec.get("trial_id"), "objective": rec.get("objective"),
                  "winner_value": rec.get("winner_value") if final else (rec.get("metrics") or {}).get(cfg.objective),
                  "overrides": rec.get("overrides")},
        "test": rec.get("test") if final else None,
        "val": None if final else rec.get("metrics"),
        "artifacts": artifacts,
        "check": {"against": "gridtune's own model (evaluate.model_prob_fn) in fp32 on the CPU",
                  "on": checked_on, "tolerance": tolerance, "onnx_opset": onnx_opset},
        "exported": {"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "git_sha": sha, "git_dirty": dirty,
                     "torch": torch.__version__},
    }


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def markdown(c: dict) -> str:
    i, r, t, s, tr = c["input"], c["recording"], c["test"] or {}, c["sweep"], c["training"]
    lines = [f"# Model card: `{c['name']}`", "",
             f"Instrument recognition: {len(c['classes'])} classes, `{' '.join(c['classes'])}`.", "",
             "## Input and output", "",
             f"- Input `{i['name']}`: float32 **mono** waveform, **{i['sample_rate']} Hz**, shape (batch, "
             f"{i['window_samples']}) = {i['window_s']:g} s windows, {i['scale']}. Any batch size.",
             f"- Output `{c['output']['name']}`: (batch, {len(c['classes'])}) softmax probabilities, classes in the "
             "order above.",
             f"- A recording: resample to {i['sample_rate']} Hz and mix to mono, cut {i['window_s']:g} s windows every "
             f"{r['hop_s']:g} s ({r['hop_samples']} samples; {r['windows']}), {r['average']}; predicted: {r['decision']}"
             + (f", threshold **{r['threshold']:g}** ({r['threshold_source']})." if r["threshold"] is not None else "."),
             f"- Front end inside the model: log-mel ({c['front_end'].get('n_mels')} bands, n_fft "
             f"{c['front_end'].get('n_fft')}, hop {c['front_end'].get('hop_length')}, top_db "
             f"{c['front_end'].get('top_db')}), normalized with mean {c['front_end']['normalization']['mean']:.4f} "
             f"and std {c['front_end']['normalization']['std']:.4f} fitted on training clips.", "",
             "## Where it came from", "",
             f"- Sweep `{s['name']}` ({s['dir']}), winner trial `{s['winner_trial_id']}` "
             f"({s['objective']} = {_fmt(s['winner_value'])}), overrides `{' '.join(s['overrides'] or [])}`",
             f"- Trained on {tr['train_on']} ({tr['n_train_clips']} clips) of `{tr['data_root']}`, training cache "
             f"key `{tr['cache_key']}` ({tr['cache_key_source']}); weights: {tr['weights']}",
             f"- Model: {c['model'].get('name')} channels {c['model'].get('channels')}, head {c['model'].get('head')}, "
             f"{c['model']['parameters']:,} parameters",
             f"- Trained at git `{tr['git_sha']}`{' (dirty)' if tr['git_dirty'] else ''}; exported at git "
             f"`{c['exported']['git_sha']}`{' (dirty)' if c['exported']['git_dirty'] else ''} with torch "
             f"{c['exported']['torch']} on {c['exported']['at']}", "",
             "## Test metrics", ""]
    if t.get("micro_f1") is not None or t.get("acc") is not None:
        figures = [f"{k} {t[k]:.4f}" for k in ("micro_f1", "macro_f1", "acc", "bal_acc") if t.get(k) is not None]
        lines.append(f"- {t.get('mode')}: {', '.join(figures)} on {t.get('n_clips')} clips")
        if isinstance(t.get("per_class_f1"), dict):
            lines.append("- per-class F1: " + ", ".join(f"{k} {_fmt(v)}" for k, v in t["per_class_f1"].items()))
    else:
        lines.append("- none recorded" + ("" if c["val"] is None else
                                          f" (a trial: val {', '.join(f'{k} {_fmt(v)}' for k, v in c['val'].items())})"))
    lines += ["", "## Files", "",
              f"Each was checked against {c['check']['against']} on {c['check']['on']}: max |difference| of any "
              f"probability must be <= {c['check']['tolerance']:g}.", "",
              "| file | bytes | max abs diff | load with |", "|---|---|---|---|"]
    how = {"pt2": "`torch.export.load(path).module()(x)`",
           "onnx": "`onnxruntime.InferenceSession(path).run(None, {'waveform': x})[0]`",
           "torchscript": "`torch.jit.load(path)(x)`"}
    for fmt, a in c["artifacts"].items():
        if a.get("max_abs_diff") is None:
            lines.append(f"| {fmt}: `{a['file']}` | {a.get('bytes', '-')} | {a['error']} | {how[fmt]} |")
        else:
            lines.append(f"| `{a['file']}` | {a['bytes']:,} | {a['max_abs_diff']:.1e} | {how[fmt]} |")
    return "\n".join(lines) + "\n"
