"""The config tree's location and types: `CONF_DIR` and one typed schema per config group.

Every option file in `conf/<group>/` extends its schema through its defaults list
(`defaults: [adam_schema, _self_]`), and `conf/config.yaml` extends `gridtune_schema`, so a value
of the wrong type or a key that does not exist is refused by Hydra itself while the config is
composed. The schemas carry types only where the YAML gives the values (the YAML files stay the
commented documentation); the optimizer and schedule schemas also hold each knob's default, which
the builders use for keys a hand-written mapping leaves out.

The name lists (`OPTIMIZERS`, `SCHEDULES`, `MODELS`, `FEATURES`, `AUGMENTS`, `TRACKERS`) are the
keys of the tables below, defined once here (the optimizer and schedule schemas themselves are in
`optim_schema`): the builders in optim.py, model.py and frontend.py
build exactly these names, and the checks in checks.py name them. No torch is imported here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from .optim_schema import (AdagradConf, AdamaxConf, AdamConf, AdamWConf, ConstantConf, CosineConf, PlateauConf,
                           RMSpropConf, SGDConf, StepConf, WarmupCosineConf)

CONF_DIR = str(Path(__file__).resolve().parents[3] / "conf")


# -- data, features, augmentation -------------------------------------------------------------------
@dataclass
class DataConf:
    root: str = MISSING
    layout: str = MISSING
    classes: Optional[List[str]] = MISSING
    sample_rate: int = MISSING
    clip_seconds: float = MISSING
    val_fraction: float = MISSING
    test_fraction: float = MISSING
    split_seed: int = MISSING
    on_bad_file: str = MISSING
    cache_dir: str = MISSING
    resident: str = MISSING
    resident_max_gb: float = MISSING
    cache_key: Optional[str] = None    # set by the sweep driver: the cache key of the data it indexed


@dataclass
class LogmelConf:
    name: str = "logmel"
    n_fft: int = MISSING
    win_length: Optional[int] = None
    hop_length: int = MISSING
    n_mels: int = MISSING
    f_min: float = MISSING
    f_max: Optional[float] = None
    top_db: float = MISSING


@dataclass
class ImageConf:
    name: str = "image"
    n_mels: int = MISSING
    frames: int = MISSING


@dataclass
class SpecAugmentConf:
    name: str = "specaugment"
    freq_mask_param: int = MISSING
    time_mask_param: int = MISSING
    n_freq_masks: int = MISSING
    n_time_masks: int = MISSING


@dataclass
class NoAugmentConf:
    name: str = "none"


# -- model ------------------------------------------------------------------------------------------
@dataclass
class CNNConf:
    name: str = "cnn"
    channels: List[int] = MISSING
    convs_per_block: int = MISSING
    kernel_size: int = MISSING
    pool: str = MISSING
    head: str = MISSING
    hidden: int = MISSING
    dropout: float = MISSING


# -- training, launcher, tracking, final run ---------------------------------------------------------
@dataclass
class EarlyStopConf:
    patience: int = MISSING
    min_delta: float = MISSING


@dataclass
class TrainConf:
    epochs: int = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    class_weights: str = MISSING
    amp: str = MISSING
    channels_last: Any = MISSING       # auto | true | false
    compile: Any = MISSING             # auto | true | false
    cudnn_benchmark: Any = MISSING     # auto | true | false
    onednn: bool = MISSING             # CPU convolutions through oneDNN (false: ATen's own)
    grad_clip: float = MISSING
    diverge_loss: float = MISSING
    diverge_factor: float = MISSING
    early_stop: EarlyStopConf = field(default_factory=EarlyStopConf)
    threads: Optional[int] = None
    oom_retry: bool = MISSING
    stop_after_epoch: Optional[int] = None   # set by successive halving: pause after this rung's epoch


@dataclass
class LauncherConf:
    trials_per_job: int = MISSING
    # The defaults of fusion, here only (the launcher files leave them out): auto | on | off, whether a
    # job's fusable trials (differing only in lr, dropout, l2, ...) train as one model; auto = on CUDA
    fuse: str = "auto"
    fuse_max: int = 18                  # largest fused group; a larger one is split evenly (a CUDA OOM halves it)
    chunk: Optional[List[str]] = None   # set by the sweep driver: the other trials of this job
    # SLURM limits of one launch (gridtune.slurm.arrays); null: what the scheduler reports
    max_array_size: Optional[int] = None    # most tasks per job array (MaxArraySize)
    max_submit_jobs: Optional[int] = None   # most pending + running jobs of the user (MaxSubmitJobs)
    # The sweep refuses to start when its estimated device-hours (gridtune.checks.budget) exceed this; null: no limit
    max_gpu_hours: Optional[float] = None


@dataclass
class NoTrackingConf:
    name: str = "none"


@dataclass
class WandbConf:
    name: str = "wandb"
    project: str = MISSING
    entity: Optional[str] = None
    mode: str = MISSING
    dir: Optional[str] = None
    tags: List[str] = field(default_factory=list)


@dataclass
class FinalConf:
    epochs: int = MISSING
    train_on: str = MISSING
    test: str = MISSING
    window_hop: float = MISSING
    out_dir: Optional[str] = None


@dataclass
class LrFindConf:
    """`python -m gridtune.lr_find`'s knobs, given as +lr_find.<knob>=value (not part of a trial)."""
    iters: int = 100
    start_lr: float = 1e-7
    end_lr: float = 10.0
    smooth: float = 0.05
    diverge_factor: float = 4.0


@dataclass
class Config:
    """The root: the grid's knobs, typed; groups with several kinds of options are typed by them."""
    data: DataConf = MISSING
    features: Any = MISSING
    augment: Any = MISSING
    model: Any = MISSING
    optim: Any = MISSING
    sched: Any = MISSING
    train: TrainConf = MISSING
    launcher: LauncherConf = MISSING
    tracking: Any = MISSING
    final: FinalConf = MISSING
    # The grid's numeric knobs keep the type they are written with (lr=0 stays the int 0): their values
    # enter the trial id, and ids of sweeps already on disk must not change. checks.validate
    # refuses anything that is not a number in range.
    lr: Any = MISSING
    lr_conv: Any = MISSING
    lr_head: Any = MISSING
    dropout: Any = MISSING
    l2: Any = MISSING
    seed: int = MISSING
    device: str = MISSING
    objective: str = MISSING
    objective_mode: str = MISSING
    sweep_name: str = MISSING
    out_root: str = MISSING
    lr_find: Dict[str, Any] = field(default_factory=dict)   # python -m gridtune.lr_find's +lr_find.<knob>


# -- the name lists: option name -> schema ----------------------------------------------------------------
OPTIMIZERS: Dict[str, type] = {"adam": AdamConf, "adamw": AdamWConf, "adamax": AdamaxConf, "sgd": SGDConf,
                               "rmsprop": RMSpropConf, "adagrad": AdagradConf}
SCHEDULES: Dict[str, type] = {"constant": ConstantConf, "step": StepConf, "cosine": CosineConf,
                              "warmup_cosine": WarmupCosineConf, "plateau": PlateauConf}
MODELS: Dict[str, type] = {"cnn": CNNConf}
FEATURES: Dict[str, type] = {"logmel": LogmelConf, "image": ImageConf}
AUGMENTS: Dict[str, type] = {"specaugment": SpecAugmentConf, "none": NoAugmentConf}
TRACKERS: Dict[str, type] = {"none": NoTrackingConf, "wandb": WandbConf}
# group -> {schema name in the ConfigStore: schema}; conf/<group>/<option>.yaml names one in its defaults
GROUP_SCHEMAS: Dict[str, Dict[str, type]] = {
    "data": {"data_schema": DataConf},
    "features": {f"{n}_schema": s for n, s in FEATURES.items()},
    "augment": {f"{n}_schema": s for n, s in AUGMENTS.items()},
    "model": {f"{n}_schema": s for n, s in MODELS.items()},
    "optim": {f"{n}_schema": s for n, s in OPTIMIZERS.items()},
    "sched": {f"{n}_schema": s for n, s in SCHEDULES.items()},
    "train": {"train_schema": TrainConf},
    "tracking": {f"{n}_schema": s for n, s in TRACKERS.items()},
    "final": {"final_schema": FinalConf},
}


def knobs(schema: type, common: tuple[str, ...] = ("name",)) -> Dict[str, Any]:
    """A schema's own knobs and their defaults (the fields after `common`), e.g. for a builder."""
    out = {}
    for f in fields(schema):
        if f.name not in common:
            out[f.name] = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
    return out


def register() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent; done on import)."""
    cs = ConfigStore.instance()
    cs.store(name="gridtune_schema", node=Config, provider="gridtune")
    for group, schemas in GROUP_SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=group, name=name, node=node, provider="gridtune")


register()
