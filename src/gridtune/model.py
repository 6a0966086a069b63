"""The spectrogram CNN and the numbers derived from it: builder, L2 penalty, parameter and FLOP counts.

`AudioCNN` is a VGG-style stack of conv blocks (`features`) followed by a small head
(`classifier`). The two sub-modules are kept separate on purpose: `gridtune.optim` gives each its
own learning rate. `build_model` turns a `conf/model/*.yaml` mapping into an `AudioCNN` and
rejects unknown or out-of-range values with a one-line `ValueError`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

import torch
from torch import Tensor, nn

from . import schema

POOLS = ("max", "avg")
HEADS = ("gap", "flatten")
MODEL_NAMES = tuple(schema.MODELS)
# Keys a conf/model/*.yaml may hold (the schema's fields); anything else is a typo that would be ignored.
MODEL_KEYS = tuple(f.name for f in fields(schema.CNNConf))


def _is_int(value: Any) -> bool:
    # bool is an int subclass; `channels: [true]` is a mistake, not one channel
    return isinstance(value, int) and not isinstance(value, bool)


def _check(ok: bool, key: str, value: Any, valid: str) -> None:
    if not ok:
        raise ValueError(f"model.{key}={value!r} is not valid; expected {valid}")


class AudioCNN(nn.Module):
    """Conv blocks of (Conv k×k 'same', no bias → BatchNorm → ReLU) × convs_per_block, then 2×2 pooling.

    Input (B, in_channels, n_mels, frames); output logits (B, n_classes). `input_shape` is only
    needed to size the flatten head's first Linear, and to check that the input survives the
    poolings (each block halves both spatial sizes, rounding down).
    """

    def __init__(
        self,
        n_classes: int = 11,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128, 256),
        convs_per_block: int = 1,
        kernel_size: int = 3,
        pool: str = "max",
        head: str = "gap",
        hidden: int = 0,
        dropout: float = 0.4,
        input_shape: tuple[int, int] = (224, 224),
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        _check(_is_int(n_classes) and n_classes >= 1, "n_classes", n_classes, "an int >= 1")
        _check(_is_int(in_channels) and in_channels >= 1, "in_channels", in_channels, "an int >= 1")
        _check(len(channels) >= 1 and all(_is_int(c) and c >= 1 for c in channels),
               "channels", list(channels), "a non-empty list of ints >= 1")
        _check(_is_int(convs_per_block) and convs_per_block >= 1,
               "convs_per_block", convs_per_block, "an int >= 1")
        # odd kernels only: 'same' padding is then symmetric (k // 2 on each side)
        _check(_is_int(kernel_size) and kernel_size >= 1 and kernel_size % 2 == 1,
               "kernel_size", kernel_size, "an odd int >= 1")
        _check(pool in POOLS, "pool", pool, "one of: " + ", ".join(POOLS))
        _check(head in HEADS, "head", head, "one of: " + ", ".join(HEADS))
        _check(_is_int(hidden) and hidden >= 0, "hidden", hidden, "an int >= 0 (0 = no hidden layer)")
        _check(isinstance(dropout, (int, float)) and not isinstance(dropout, bool) and 0.0 <= dropout < 1.0,
               "dropout", dropout, "a float in [0, 1)")
        input_shape = tuple(input_shape)
        _check(len(input_shape) == 2 and all(_is_int(s) and s >= 1 for s in input_shape),
               "input_shape", list(input_shape), "two ints >= 1 (n_mels, frames)")

        # Spatial size after every block; a dimension that reaches 0 would crash deep inside
        # forward with an unhelpful message, so it is caught here.
        height, width = input_shape
        for _ in channels:
            height, width = height // 2, width // 2
        min_side = 2 ** len(channels)
        _check(height >= 1 and width >= 1, "input_shape", list(input_shape),
               f"both sides >= {min_side} for {len(channels)} pooling blocks")
        self.input_shape = input_shape
        self.out_hw = (height, width)

        blocks: list[nn.Module] = []
        prev = in_channels
        for out in channels:
            layers: list[nn.Module] = []
            for _ in range(convs_per_block):
                # no conv bias: the BatchNorm right after has its own shift
                layers += [
                    nn.Conv2d(prev, out, kernel_size, padding=kernel_size // 2, bias=False),
                    nn.BatchNorm2d(out),
                    nn.ReLU(inplace=True),
                ]
                prev = out
            layers.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
            blocks.append(nn.Sequential(*layers))
        self.features = nn.Sequential(*blocks)

        head_layers: list[nn.Module] = []
        if head == "gap":
            head_layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            n_in = prev
        else:
            head_layers.append(nn.Flatten())
            n_in = prev * height * width
        if hidden > 0:
            head_layers += [nn.Linear(n_in, hidden), nn.ReLU(inplace=True)]
            n_in = hidden
        head_layers += [nn.Dropout(dropout), nn.Linear(n_in, n_classes)]
        self.classifier = nn.Sequential(*head_layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)  # (B, channels[-1], n_mels // 2**n_blocks, frames // 2**n_blocks)
        return self.classifier(x)  # (B, n_classes)


def build_model(cfg: Mapping[str, Any], n_classes: int, input_shape: tuple[int, int]) -> AudioCNN:
    """Build the model described by a conf/model/*.yaml mapping (DictConfig or dict).

    Keys left out fall back to `AudioCNN`'s defaults; `name` is required.
    """
    keys = [str(k) for k in cfg.keys()]
    for key in keys:
        if key not in MODEL_KEYS:
            raise ValueError(f"model.{key} is not a known key; valid keys: {', '.join(MODEL_KEYS)}")
    name = cfg.get("name")
    if name not in MODEL_NAMES:
        raise ValueError(f"model.name={name!r} is not valid; expected one of: {', '.join(MODEL_NAMES)}")

    kwargs: dict[str, Any] = {}
    for key in MODEL_KEYS[1:]:
        if key in keys:
            value = cfg[key]  # reading a DictConfig value resolves interpolations such as ${dropout}
            if key == "channels":
                # a ListConfig is iterable but not a Sequence; a bare int or string is a mistake
                if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                    raise ValueError(f"model.channels={value!r} is not valid; expected a non-empty list of ints >= 1")
                value = tuple(value)
            kwargs[key] = value
    return AudioCNN(n_classes=n_classes, input_shape=tuple(input_shape), **kwargs)


def l2_penalty(model: nn.Module) -> Tensor:
    """Σ w² over the weights of every Conv2d and Linear (no biases, no BatchNorm).

    This is the Keras-style kernel regulariser: the trainer adds `l2 * l2_penalty(model)` to the
    loss. It is not the optimizer's `weight_decay`, which touches every parameter.
    """
    total: Tensor | None = None
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            term = module.weight.pow(2).sum()
            total = term if total is None else total + term
    if total is None:
        first = next(model.parameters(), None)
        return torch.zeros((), device=first.device if first is not None else None)
    return total


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; BatchNorm running statistics are buffers and not counted)."""
    return sum(p.numel() for p in model.parameters())
