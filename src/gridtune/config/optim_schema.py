"""The typed schemas of `conf/optim/*.yaml` and `conf/sched/*.yaml`: each optimizer's and each
learning-rate schedule's knobs, with torch's defaults, which the builders use for keys a hand-written
mapping leaves out. `schema` names them in its tables (`OPTIMIZERS`, `SCHEDULES`) and stores them in
Hydra's ConfigStore. No torch is imported here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, List

from omegaconf import MISSING


# -- optimizers: the fields after `weight_decay` are each optimizer's own knobs, with torch's defaults
@dataclass
class OptimConf:
    name: str = MISSING
    lr_conv: float = MISSING
    lr_head: float = MISSING
    weight_decay: float = 0.0


def _betas() -> List[float]:
    return [0.9, 0.999]


@dataclass
class AdamConf(OptimConf):
    torch_class: ClassVar[str] = "Adam"   # torch.optim.Adam
    name: str = "adam"
    betas: List[float] = field(default_factory=_betas)
    eps: float = 1e-8


@dataclass
class AdamWConf(AdamConf):
    torch_class: ClassVar[str] = "AdamW"   # torch.optim.AdamW
    name: str = "adamw"


@dataclass
class AdamaxConf(AdamConf):
    torch_class: ClassVar[str] = "Adamax"   # torch.optim.Adamax
    name: str = "adamax"


@dataclass
class SGDConf(OptimConf):
    torch_class: ClassVar[str] = "SGD"   # torch.optim.SGD
    name: str = "sgd"
    momentum: float = 0.0
    nesterov: bool = False
    dampening: float = 0.0


@dataclass
class RMSpropConf(OptimConf):
    torch_class: ClassVar[str] = "RMSprop"   # torch.optim.RMSprop
    name: str = "rmsprop"
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0
    centered: bool = False


@dataclass
class AdagradConf(OptimConf):
    torch_class: ClassVar[str] = "Adagrad"   # torch.optim.Adagrad
    name: str = "adagrad"
    lr_decay: float = 0.0
    eps: float = 1e-10
    initial_accumulator_value: float = 0.0


# -- schedules ---------------------------------------------------------------------------------------
@dataclass
class ConstantConf:
    name: str = "constant"


@dataclass
class StepConf:
    name: str = "step"
    step_size: int = 10
    gamma: float = 0.1


@dataclass
class CosineConf:
    name: str = "cosine"
    min_lr_factor: float = 0.0


@dataclass
class WarmupCosineConf:
    name: str = "warmup_cosine"
    warmup_epochs: float = 1.0
    warmup_start_factor: float = 0.0
    min_lr_factor: float = 0.0


@dataclass
class PlateauConf:
    name: str = "plateau"
    factor: float = 0.1
    patience: int = 5
    threshold: float = 1e-4
    threshold_mode: str = "rel"
    cooldown: int = 0
    min_lr: float = 0.0
