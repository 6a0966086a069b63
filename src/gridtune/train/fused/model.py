"""B same-shape `AudioCNN`s computed as one model: one forward pass, per-model everything else.

`FusedCNN(models)` holds no parameters of its own: each member keeps its own tensors (so each has
its own torch optimizer, schedule, state_dict and checkpoint, exactly as when it trains alone), and
the forward pass concatenates them into the fused layers:

- the first conv reads the shared input with the B models' filters stacked, `(B·Cout, Cin, k, k)`;
  later convs are grouped over B (`groups=B`), each model seeing only its own channels;
- BatchNorm runs over B·C channels, so batch statistics and running statistics stay per model;
  the running statistics live in the fused buffers between `pack()` and `unpack()`;
- the head is per model; dropout draws from the same random state for every model (the state is
  rewound before each model's draw and left where one draw leaves it), so every model sees the mask
  it would draw training alone with the same seed, at its own rate.

Output: logits `(N, B, n_classes)`. Members can be dropped between steps (`pack(active)`), e.g. a
diverged or early-stopped model, which then costs nothing more.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gridtune.train.model import AudioCNN


def _rng_get(device: torch.device):
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _rng_set(device: torch.device, state) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


def _check_same_shape(models: list[AudioCNN]) -> None:
    def shapes(m):
        return [(type(x).__name__, tuple(getattr(x, "weight", torch.empty(0)).shape)) for x in m.modules()]
    ref = shapes(models[0])
    for i, m in enumerate(models[1:], 1):
        if shapes(m) != ref:
            raise ValueError(f"fused model {i} does not have the architecture of model 0")


class FusedCNN(nn.Module):
    def __init__(self, models: list[AudioCNN]):
        super().__init__()
        if not models:
            raise ValueError("a fused model needs at least one member")
        _check_same_shape(models)
        self.members = list(models)          # not sub-modules: their state_dicts stay their own
        self.template = models[0]
        self.active: list[int] = []
        self.running: list[tuple[Tensor, Tensor]] = []
        self.steps = 0                       # training forwards since pack(): BatchNorm's batch counter
        self.pack(range(len(models)))

    # -- members in and out ------------------------------------------------------------------
    def _bns(self, m: AudioCNN) -> list[nn.BatchNorm2d]:
        return [x for x in m.features.modules() if isinstance(x, nn.BatchNorm2d)]

    def pack(self, active) -> None:
        """Train/evaluate only the members at these indices; their running statistics move into
        the fused buffers (call unpack() first when members were packed before)."""
        self.active = sorted(set(int(i) for i in active))
        models = [self.members[i] for i in self.active]
        self.layers = [list(m.features.modules()) for m in models]     # walked in step every forward
        self.heads = [list(m.classifier) for m in models]
        self.running = [(torch.cat([b.running_mean for b in bns]), torch.cat([b.running_var for b in bns]))
                        for bns in zip(*(self._bns(m) for m in models))] if models else []
        self.steps = 0

    def unpack(self) -> None:
        """Copy the fused running statistics back into each active member (before its state_dict is read)."""
        models = [self.members[i] for i in self.active]
        for (mean, var), bns in zip(self.running, zip(*(self._bns(m) for m in models))):
            c = bns[0].num_features
            for j, b in enumerate(bns):
                b.running_mean.copy_(mean[j * c:(j + 1) * c])
                b.running_var.copy_(var[j * c:(j + 1) * c])
                b.num_batches_tracked.add_(self.steps)
        self.steps = 0

    def parameters_of(self, position: int):
        """The parameters of the active member at `position` in the output's B axis."""
        return self.members[self.active[position]].parameters()

    # -- forward -----------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:   # (N, Cin, H, W) shared by every model
        n_models, n = len(self.active), x.shape[0]
        if self.training:
            self.steps += 1
        layers = self.layers
        h, first, k = x, True, 0
        for j, mod in enumerate(layers[0]):
            if isinstance(mod, nn.Conv2d):
                w = torch.cat([ls[j].weight for ls in layers])
                if x.is_contiguous(memory_format=torch.channels_last):
                    w = w.contiguous(memory_format=torch.channels_last)
                h = F.conv2d(h, w, None, mod.stride, mod.padding, mod.dilation, 1 if first else n_models)
                first = False
            elif isinstance(mod, nn.BatchNorm2d):
                mean, var = self.running[k]
                k += 1
                h = F.batch_norm(h, mean, var, torch.cat([ls[j].weight for ls in layers]),
                                 torch.cat([ls[j].bias for ls in layers]), self.training, mod.momentum, mod.eps)
            elif isinstance(mod, (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d)):
                h = mod(h)
        return self._head(h, n)

    def _head(self, h: Tensor, n: int) -> Tensor:
        heads, n_models = self.heads, len(self.heads)
        if isinstance(heads[0][0], nn.AdaptiveAvgPool2d):
            z = F.adaptive_avg_pool2d(h, 1).reshape(n, n_models, -1)          # (N, B, C)
        else:
            z = h.reshape(n, n_models, -1)                                      # (N, B, C·h·w): each model's flatten
        state = _rng_get(h.device) if self.training else None
        outs = []
        for b, layer in enumerate(heads):
            zb = z[:, b]
            for mod in layer:
                if isinstance(mod, nn.Linear):
                    zb = F.linear(zb, mod.weight, mod.bias)
                elif isinstance(mod, nn.ReLU):
                    zb = F.relu(zb)
                elif isinstance(mod, nn.Dropout) and self.training and mod.p > 0:
                    _rng_set(h.device, state)                                   # the same draw for every model
                    zb = F.dropout(zb.contiguous(), mod.p, True)
            outs.append(zb)
        return torch.stack(outs, 1)                                             # (N, B, n_classes)
