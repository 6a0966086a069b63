"""The spectrogram CNN and the numbers derived from it: builder, L2 penalty, parameter and FLOP counts.

`AudioCNN` is a VGG-style stack of conv blocks (`features`) followed by a small head
(`classifier`). The two sub-modules are kept separate on purpose: `gridtune.train.optim` gives each its
own learning rate. `build_model` turns a `conf/model/*.yaml` mapping into an `AudioCNN` and
rejects unknown or out-of-range values with a one-line `ValueError`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from gridtune.config import rules, schema
from gridtune.config.rules import HEADS, MODEL_KEYS, POOLS  # noqa: F401  (the rules' own lists, named here too)

MODEL_NAMES = tuple(schema.MODELS)


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
        channels, input_shape = tuple(channels), tuple(input_shape)
        rules.raise_first(rules.cnn(n_classes, in_channels, channels, convs_per_block, kernel_size,
                                                    pool, head, hidden, dropout, input_shape))
        height, width = input_shape[0] >> len(channels), input_shape[1] >> len(channels)   # after every block
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
    rules.raise_first(rules.model_keys(cfg))
    keys = [str(k) for k in cfg.keys()]
    kwargs: dict[str, Any] = {}
    for key in MODEL_KEYS[1:]:
        if key in keys:
            value = cfg[key]  # reading a DictConfig value resolves interpolations such as ${dropout}
            if key == "channels":     # a ListConfig is iterable but not a Sequence
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
