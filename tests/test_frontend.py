"""Features and SpecAugment: the report's 224 x 224 input, normalization, and augmentation semantics."""
import torch
from omegaconf import OmegaConf

from conftest import compose
from gridtune.train import frontend


def test_default_features_give_224_by_224_without_empty_mel_bands():
    cfg = compose()
    n = int(cfg.data.sample_rate * cfg.data.clip_seconds)
    assert frontend.input_shape(cfg.features, n) == (224, 224)
    f = frontend.Features(cfg.features, cfg.data.sample_rate)
    assert f(torch.randn(2, n)).shape == (2, 1, 224, 224)
    assert (f.mel.mel_scale.fb.sum(0) > 0).all()          # every mel band sees some FFT bin


def test_fit_normalizes_to_zero_mean_unit_std():
    cfg = compose("features=logmel64")
    f = frontend.Features(cfg.features, 16000)
    x = torch.randn(8, 48000) * torch.linspace(0.01, 1, 8)[:, None]
    f.fit([x[:4], x[4:]])
    y = f(x)
    assert abs(y.mean().item()) < 1e-3 and abs(y.std().item() - 1) < 1e-2


def test_augment_none_is_exactly_the_identity():
    aug = frontend.build_augment(OmegaConf.create({"name": "none"}))
    x = torch.randn(4, 1, 32, 40)
    assert aug(x) is x


def test_specaugment_trains_only_iid_masks_and_seeded():
    aug = frontend.build_augment(compose().augment)
    x = torch.randn(6, 1, 64, 94)
    aug.eval()
    assert torch.equal(aug(x), x)
    aug.train()
    torch.manual_seed(0)
    a = aug(x)
    masked = (a == 0) & (x != 0)
    assert masked.any()
    per_example = [tuple(masked[i].sum(dim=(0, 1)).tolist()) for i in range(6)]
    assert len(set(per_example)) > 1                     # masks differ between examples
    torch.manual_seed(0)
    assert torch.equal(aug(x), a)                        # same seed, same masks


def test_a_clips_features_do_not_depend_on_its_batch():
    # the dB floor (top_db) is relative to each clip's own peak, not the loudest clip of the batch
    cfg = compose("features=logmel64")
    f = frontend.Features(cfg.features, 16000)
    quiet, loud = torch.randn(1, 48000) * 1e-3, torch.randn(1, 48000)
    alone = f(quiet)
    together = f(torch.cat([quiet, loud]))[:1]
    assert torch.allclose(alone, together, atol=1e-5)
