"""A trained model on disk, loaded for use: a final run's directory or a trial's best.pt.

`load(path)` accepts a final run directory (`model.pt`, `final_config.yaml` and `final.json`,
which holds the class names and the threshold chosen on validation), a sweep directory that has
one in `final/`, or a trial directory (`best.pt` beside `.hydra/config.yaml`; the path of the
best.pt itself works too). A trial has no threshold: its `threshold` is None and callers predict
the top-1 class. Anything missing or inconsistent is a `ModelDirError` whose one line names the path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gridtune.sweepdir import records

FINAL_FILES = ("model.pt", "final_config.yaml", "final.json")


class ModelDirError(ValueError):
    """The path does not hold a usable trained model; the message is one line naming it."""


@dataclass
class Trained:
    kind: str                   # "final" | "trial"
    dir: Path                   # the final run's or the trial's directory
    weights: Path               # model.pt or best.pt
    cfg: object                 # the composed config it was trained with (DictConfig)
    features: object            # gridtune.train.frontend.Features, fitted normalization loaded, eval mode
    model: object               # gridtune.train.model.AudioCNN, eval mode
    classes: list[str]
    threshold: float | None     # the final run's validation-chosen threshold; None for a trial
    record: dict = field(default_factory=dict)    # final.json or result.json ({} when absent)

    @property
    def sample_rate(self) -> int:
        return int(self.cfg.data.sample_rate)


def locate(path: str | Path) -> tuple[str, Path, Path, Path]:
    """(kind, directory, weights file, config file) of a final run or trial directory."""
    p = Path(path)
    if p.is_file() and p.name == records.BEST:
        p = p.parent
    if not p.is_dir():
        raise ModelDirError(f"{p}: no such directory (give a final run directory or a trial directory)")
    if not (p / "model.pt").exists() and (p / "final" / "model.pt").exists():
        p = p / "final"                                  # a sweep directory with its final run
    if (p / "model.pt").exists():
        missing = [f for f in FINAL_FILES if not (p / f).exists()]
        if missing:
            raise ModelDirError(f"{p}: has model.pt but no {missing[0]} (not a complete final run)")
        return "final", p, p / "model.pt", p / "final_config.yaml"
    if (p / records.BEST).exists():
        if not (p / ".hydra" / "config.yaml").exists():
            raise ModelDirError(f"{p}: has best.pt but no .hydra/config.yaml (not a trial directory)")
        return "trial", p, p / records.BEST, p / ".hydra" / "config.yaml"
    raise ModelDirError(f"{p}: neither a final run (model.pt, final.json) nor a trial directory (best.pt)")


def _classes(kind: str, cfg, record: dict, where: Path) -> list[str]:
    if record.get("classes"):
        return list(record["classes"])
    if cfg.data.get("classes"):
        return [str(c) for c in cfg.data.classes]
    if isinstance(record.get("per_class_acc"), dict):  # a trial's record keys it by class, in order
        return list(record["per_class_acc"])
    raise ModelDirError(f"{where}: no class names in its record or config (data.classes is null)")


def load(path: str | Path, device="cpu", audio: bool = True) -> Trained:
    """The model at `path`, rebuilt from its config and weights, on `device`, in eval mode;
    `audio` refuses a model of mel images (features=image), which cannot take recordings."""
    from omegaconf import OmegaConf

    from gridtune.train import frontend
    from gridtune.train.model import build_model
    from gridtune.train.runtime import load_torch
    kind, where, weights, cfg_path = locate(path)
    rec_path = where / ("final.json" if kind == "final" else records.RESULT)
    try:
        cfg = OmegaConf.load(cfg_path)
        record = records.read_json(rec_path) if rec_path.exists() else {}
        state = load_torch(weights, "cpu")
    except Exception as e:      # torn JSON, bad YAML, a truncated or foreign checkpoint
        raise ModelDirError(f"{where}: unreadable model files ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    if not isinstance(state, dict) or not {"model", "features"} <= set(state):
        raise ModelDirError(f"{weights}: not a gridtune model (no 'model' and 'features' state)")
    if audio and cfg.features.name != "logmel":
        raise ModelDirError(f"{where}: trained on features.name={cfg.features.name}; only audio (logmel) models "
                            "take recordings")
    classes = _classes(kind, cfg, record, where)
    sr = int(cfg.data.sample_rate)
    window = int(round(sr * float(cfg.data.clip_seconds)))
    try:
        features = frontend.Features(cfg.features, sr)
        model = build_model(cfg.model, len(classes), frontend.input_shape(cfg.features, window))
        features.load_state_dict(state["features"])
        model.load_state_dict(state["model"])
    except (RuntimeError, ValueError) as e:    # shapes that do not match the config or the class count
        raise ModelDirError(f"{weights}: does not match {cfg_path.name} and {len(classes)} classes "
                            f"({str(e).splitlines()[0][:160]})") from None
    threshold = record.get("threshold") if kind == "final" else None
    return Trained(kind, where, weights, cfg, features.to(device).eval(), model.to(device).eval(), classes,
                   None if threshold is None else float(threshold), record)
