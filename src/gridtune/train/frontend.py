"""Features and augmentation as modules on the trial's device: log-mel, normalization, SpecAugment.

`Features` turns a batch of waveforms (B, L) into normalized log-mel (B, 1, n_mels, frames) with
torchaudio's MelSpectrogram; `fit()` sets the normalization from training clips, so 0 means "the
dataset's mean level". `SpecAugment` masks frequency bands and time spans with iid masks per
example, only in training mode, filling them with 0, which after normalization is that mean level
rather than a loud 0 dB. `augment=none` is exactly the identity.
"""
from __future__ import annotations

import torch
from torch import nn

from gridtune.config import rules, schema
from gridtune.config.rules import input_shape  # noqa: F401  ((n_mels, frames) of a clip: the rules need it too)


class Features(nn.Module):
    def __init__(self, cfg, sample_rate: int):
        super().__init__()
        self.kind = cfg.name
        if self.kind in ("logmel", "image"):
            rules.raise_first(rules.features(cfg, sample_rate))
        if self.kind == "logmel":
            import torchaudio
            self.mel = torchaudio.transforms.MelSpectrogram(
                sample_rate=sample_rate, n_fft=int(cfg.n_fft), win_length=cfg.win_length,
                hop_length=int(cfg.hop_length), f_min=float(cfg.f_min), f_max=cfg.f_max,
                n_mels=int(cfg.n_mels), power=2.0, norm="slaney", mel_scale="slaney")
            self.to_db = torchaudio.transforms.AmplitudeToDB("power", top_db=float(cfg.top_db))
        elif self.kind != "image":
            raise ValueError(f"features.name={self.kind!r}: must be {'|'.join(schema.FEATURES)}")
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("std", torch.ones(()))

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "image":
            return x.unsqueeze(1)                            # (B, 1, H, W)
        with torch.autocast(x.device.type, enabled=False):   # STFT and log in float32
            # AmplitudeToDB takes its top_db floor over the last three dims: with the channel dim
            # added first that is each clip's own peak, not the loudest clip of the batch
            return self.to_db(self.mel(x.float()).unsqueeze(1))   # (B, 1, n_mels, frames)

    @torch.no_grad()
    def fit(self, batches) -> None:
        """Set mean/std from an iterable of waveform batches (training clips)."""
        total, sq, n = 0.0, 0.0, 0
        for x in batches:
            f = self.raw(x).double()
            total += f.sum().item()
            sq += (f * f).sum().item()
            n += f.numel()
        mean = total / max(n, 1)
        self.mean.fill_(mean)
        self.std.fill_(max((sq / max(n, 1) - mean * mean) ** 0.5, 1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.raw(x) - self.mean) / self.std


class Normalized(nn.Module):
    """`features`' normalization alone, for inputs that are already `features.raw(...)` (precomputed)."""

    def __init__(self, features: Features):
        super().__init__()
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.features.mean) / self.features.std


class SpecAugment(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        rules.raise_first(rules.augment(cfg))
        import torchaudio
        self.freq = torchaudio.transforms.FrequencyMasking(int(cfg.freq_mask_param), iid_masks=True)
        self.time = torchaudio.transforms.TimeMasking(int(cfg.time_mask_param), iid_masks=True)
        self.n_freq, self.n_time = int(cfg.n_freq_masks), int(cfg.n_time_masks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # (B, 1, n_mels, frames), normalized
        if not self.training:
            return x
        for _ in range(self.n_freq):
            x = self.freq(x, mask_value=0.0)
        for _ in range(self.n_time):
            x = self.time(x, mask_value=0.0)
        return x


def build_augment(cfg) -> nn.Module:
    if cfg.name == "none":
        return nn.Identity()
    if cfg.name == "specaugment":
        return SpecAugment(cfg)
    raise ValueError(f"augment.name={cfg.name!r}: must be {'|'.join(schema.AUGMENTS)}")

