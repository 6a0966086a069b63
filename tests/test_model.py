"""Tests for gridtune.train.model: shapes of the yaml variants, head/feature split, L2 penalty, counts."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from conftest import load_option
from gridtune.train.model import AudioCNN, build_model, count_params, l2_penalty

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
VARIANTS = ("cnn256", "cnn256_dense", "cnn256_deep")


def load_model_cfg(variant: str, dropout: float = 0.4):
    # the model yaml interpolates the top-level grid knob ${dropout}; supply it from a parent
    root = OmegaConf.create({"dropout": dropout, "model": load_option(CONF / f"{variant}.yaml")})
    return root.model


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape", [(224, 224), (64, 94)])
def test_yaml_variants_forward(variant, shape):
    model = build_model(load_model_cfg(variant), n_classes=11, input_shape=shape)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, *shape))
    assert out.shape == (2, 11)
    assert torch.isfinite(out).all()


def test_yaml_variants_differ_as_described():
    base = build_model(load_model_cfg("cnn256"), 11, (224, 224))
    dense = build_model(load_model_cfg("cnn256_dense"), 11, (224, 224))
    deep = build_model(load_model_cfg("cnn256_deep"), 11, (224, 224))
    n_convs = lambda m: sum(isinstance(x, nn.Conv2d) for x in m.modules())  # noqa: E731
    assert n_convs(base) == 4 and n_convs(dense) == 4 and n_convs(deep) == 8
    linears = [x for x in dense.classifier if isinstance(x, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(256 * 14 * 14, 256), (256, 11)]
    assert isinstance(base.classifier[0], nn.AdaptiveAvgPool2d)


def test_dropout_interpolation_reaches_model():
    model = build_model(load_model_cfg("cnn256", dropout=0.25), 11, (64, 94))
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.25]


def test_features_and_classifier_partition_parameters():
    model = AudioCNN(head="flatten", hidden=16, input_shape=(64, 94))
    assert isinstance(model.features, nn.Module) and isinstance(model.classifier, nn.Module)
    split = count_params(model.features) + count_params(model.classifier)
    assert split == count_params(model)
    assert not any(isinstance(m, nn.Linear) for m in model.features.modules())
    assert not any(isinstance(m, nn.Conv2d) for m in model.classifier.modules())


def test_l2_penalty_is_conv_and_linear_weights_only():
    model = AudioCNN(channels=(4, 8), hidden=5, input_shape=(16, 16))
    # make biases and BatchNorm parameters large so that including them would show
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 7.0)
            nn.init.constant_(m.bias, 7.0)
        if isinstance(m, nn.Linear):
            nn.init.constant_(m.bias, 7.0)
    expected = 0.0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            expected += float((m.weight.detach() ** 2).sum())
    got = l2_penalty(model)
    assert got.ndim == 0
    assert float(got.detach()) == pytest.approx(expected, rel=1e-6)
    got.backward()  # differentiable, so the trainer can add it to the loss
    conv = model.features[0][0]
    assert torch.allclose(conv.weight.grad, 2 * conv.weight.detach())


def test_param_count_formula_tiny_config():
    c1, c2, k, hidden, n_cls = 3, 5, 3, 7, 4
    model = AudioCNN(n_classes=n_cls, channels=(c1, c2), convs_per_block=2, kernel_size=k,
                     head="flatten", hidden=hidden, input_shape=(12, 20))
    convs = (1 * c1 + c1 * c1 + c1 * c2 + c2 * c2) * k * k  # no conv biases
    bns = 2 * (c1 + c1 + c2 + c2)  # weight + bias per BatchNorm channel
    flat = c2 * (12 // 4) * (20 // 4)
    head = flat * hidden + hidden + hidden * n_cls + n_cls
    assert count_params(model) == convs + bns + head


def forward_flops(model, input_shape) -> int:
    """FLOPs of one forward pass of one sample by torch's own counter (conv and matmul: 2 x MACs)."""
    from torch.utils.flop_counter import FlopCounterMode
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 1, *input_shape))
    return counter.get_total_flops()


def test_forward_flops_tiny_config():
    model = AudioCNN(n_classes=3, channels=(2, 4), kernel_size=3, head="gap", input_shape=(8, 8))
    # conv1: 8x8 outputs x 2 channels x (1*3*3); conv2 at 4x4: 16 x 4 x (2*3*3); linear 4 -> 3
    macs = 64 * 2 * 9 + 16 * 4 * 18 + 4 * 3
    assert forward_flops(model, (8, 8)) == 2 * macs


def test_dropout_has_no_effect_in_eval():
    with_dropout = AudioCNN(dropout=0.5, hidden=8, input_shape=(32, 32))
    without = AudioCNN(dropout=0.0, hidden=8, input_shape=(32, 32))
    without.load_state_dict(with_dropout.state_dict())
    x = torch.randn(3, 1, 32, 32)
    with_dropout.eval()
    without.eval()
    with torch.no_grad():
        assert torch.equal(with_dropout(x), without(x))


@pytest.mark.parametrize("key, value, fragment", [
    ("name", "resnet", "model.name='resnet'"),
    ("head", "attention", "model.head='attention'"),
    ("pool", "mean", "model.pool='mean'"),
    ("kernel_size", 4, "model.kernel_size=4"),
    ("dropout", 1.0, "model.dropout=1.0"),
    ("dropuot", 0.1, "model.dropuot"),
])
def test_build_model_rejects_bad_values(key, value, fragment):
    cfg = OmegaConf.to_container(load_model_cfg("cnn256"), resolve=True)
    cfg[key] = value
    with pytest.raises(ValueError) as err:
        build_model(cfg, 11, (224, 224))
    message = str(err.value)
    assert fragment in message and "\n" not in message
    if key in ("name", "head", "pool"):
        valid = {"name": "cnn", "head": "gap, flatten", "pool": "max, avg"}[key]
        assert valid in message


def test_input_too_small_for_the_poolings():
    with pytest.raises(ValueError, match="input_shape"):
        AudioCNN(input_shape=(8, 224))
