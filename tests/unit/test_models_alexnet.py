"""AlexNet: the lecture's net, its LRN placement, the small and 28-px presets, and the knobs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from cnnlab.models.alexnet import AlexNet
from cnnlab.models.layers import InterChannelLRN, IntraChannelLRN

CONF = Path(__file__).resolve().parents[2] / "conf"


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def from_preset(name: str, image_size: int | None = None) -> nn.Module:
    """Instantiate conf/model/<name>.yaml at its course image size (line 2 of the file)."""
    path = CONF / "model" / f"{name}.yaml"
    size_line = path.read_text().splitlines()[1]
    assert size_line.startswith("# course image size: ")
    size = image_size or int(size_line.rsplit(":", 1)[1])
    dataset = {"in_channels": 1, "num_classes": 10, "image_size": size}
    cfg = OmegaConf.merge({"dataset": dataset}, {"model": OmegaConf.load(path)})
    return instantiate(cfg.model)


def forward_backward(model: nn.Module, size: int) -> torch.Tensor:
    torch.manual_seed(0)
    model.train()
    out = model(torch.randn(2, 1, size, size))
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad(set_to_none=True)
    return out


@pytest.fixture(scope="module")
def alexnet() -> AlexNet:
    return AlexNet()


def test_lecture_alexnet_parameter_count(alexnet: AlexNet) -> None:
    # conv1    96*1*11*11 + 96    =     11,712
    # conv2   256*96*5*5  + 256   =    614,656
    # conv3   384*256*3*3 + 384   =    885,120
    # conv4   384*384*3*3 + 384   =  1,327,488
    # conv5   256*384*3*3 + 256   =    884,992
    # fc1    6400*4096    + 4096  = 26,218,496   (6400 = 256 channels * 5 * 5)
    # fc2    4096*4096    + 4096  = 16,781,312
    # fc3    4096*10      + 10    =     40,970
    assert n_params(alexnet) == 46_764_746


def test_lecture_alexnet_layers_follow_the_lecture(alexnet: AlexNet) -> None:
    convs = [m for m in alexnet.features if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs] == [
        (96, 11, 4, 1),
        (256, 5, 1, 2),
        (384, 3, 1, 1),
        (384, 3, 1, 1),
        (256, 3, 1, 1),
    ]
    pools = [m for m in alexnet.features if isinstance(m, nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride) for p in pools] == [(3, 2)] * 3
    assert sum(isinstance(m, nn.ReLU) for m in alexnet.modules()) == 7
    assert [m.p for m in alexnet.classifier if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    linears = [m for m in alexnet.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (6400, 4096),
        (4096, 4096),
        (4096, 10),
    ]
    # No LRN in the lecture's code.
    assert not any(isinstance(m, InterChannelLRN | IntraChannelLRN) for m in alexnet.modules())


def test_lecture_alexnet_forward_backward_at_224(alexnet: AlexNet) -> None:
    out = forward_backward(alexnet, 224)
    assert out.shape == (2, 10)
    # 224 -> conv1 54 -> pool 26 -> conv2 26 -> pool 12 -> conv3..5 12 -> pool 5.
    assert alexnet.features(torch.zeros(1, 1, 224, 224)).shape == (1, 256, 5, 5)


def test_eval_is_deterministic_and_training_uses_dropout(alexnet: AlexNet) -> None:
    x = torch.randn(2, 1, 224, 224)
    alexnet.eval()
    with torch.no_grad():
        torch.testing.assert_close(alexnet(x), alexnet(x))
        alexnet.train()
        torch.manual_seed(1)
        a = alexnet(x)
        torch.manual_seed(2)
        assert not torch.allclose(a, alexnet(x))


def test_xavier_init_like_the_lecture(alexnet: AlexNet) -> None:
    conv1 = alexnet.features[0]
    bound = (6 / (1 * 121 + 96 * 121)) ** 0.5  # xavier_uniform: sqrt(6 / (fan_in + fan_out))
    assert conv1.weight.abs().max() <= bound
    assert conv1.weight.abs().max() > 0.9 * bound
    assert torch.count_nonzero(conv1.bias) == 0


@pytest.mark.parametrize(("lrn", "cls"), [("inter", InterChannelLRN), ("intra", IntraChannelLRN)])
def test_lrn_follows_the_pools_of_stages_one_and_two(lrn: str, cls: type[nn.Module]) -> None:
    model = AlexNet(lrn=lrn, lrn_size=3, lrn_k=1.0, lrn_alpha=1e-3, lrn_beta=0.5)
    layers = list(model.features)
    norms = [i for i, m in enumerate(layers) if isinstance(m, cls)]
    assert len(norms) == 2
    # CONV-POOL-NORM: each LRN comes right after the max-pool of stage 1 and stage 2.
    assert all(isinstance(layers[i - 1], nn.MaxPool2d) for i in norms)
    convs_before = [sum(isinstance(m, nn.Conv2d) for m in layers[:i]) for i in norms]
    assert convs_before == [1, 2]
    norm = layers[norms[0]]
    assert (norm.size, norm.k, norm.alpha, norm.beta) == (3, 1.0, 1e-3, 0.5)
    # LRN has no parameters: same count as the lecture's net.
    assert n_params(model) == 46_764_746


def test_paper_lrn_defaults() -> None:
    norm = next(m for m in AlexNet(lrn="inter").modules() if isinstance(m, InterChannelLRN))
    assert (norm.size, norm.k, norm.alpha, norm.beta) == (5, 2.0, 1e-4, 0.75)


def test_lrn_model_trains_at_the_small_size() -> None:
    model = AlexNet(width_multiplier=0.25, fc_width=64, input_size=96, lrn="inter")
    assert forward_backward(model, 96).shape == (2, 10)


def test_alexnet_small_preset() -> None:
    model = from_preset("alexnet_small")
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [24, 64, 96, 96, 64]
    # conv: 24*121+24 + 64*24*25+64 + 96*64*9+96 + 96*96*9+96 + 64*96*9+64 = 233,306
    # fc:   (64*25)*1024+1024 + 1024*1024+1024 + 1024*10+10              = 2,701,152
    assert n_params(model) == 2_934_458
    assert forward_backward(model, 224).shape == (2, 10)


def test_alexnet28_preset() -> None:
    model = from_preset("alexnet28")
    # 28 -> 3x3 stem 28 -> pool(3/2, pad 1) 14 -> conv2 14 -> pool 7 -> conv3..5 7 -> pool 4.
    assert model.features(torch.zeros(1, 1, 28, 28)).shape == (1, 128, 4, 4)
    convs = [
        (m.out_channels, m.kernel_size[0]) for m in model.modules() if isinstance(m, nn.Conv2d)
    ]
    assert convs == [(48, 3), (128, 5), (192, 3), (192, 3), (128, 3)]
    # conv: 48*9+48 + 128*48*25+128 + 192*128*9+192 + 192*192*9+192 + 128*192*9+128 = 1,018,256
    # fc:   (128*16)*1024+1024 + 1024*1024+1024 + 1024*10+10                       = 3,068,938
    assert n_params(model) == 4_086_890
    assert forward_backward(model, 28).shape == (2, 10)


def test_lecture_preset_is_the_default_class() -> None:
    model = from_preset("alexnet")
    assert n_params(model) == 46_764_746
    assert str(model) == str(AlexNet())


@pytest.mark.parametrize("name", ["lrn_inter", "lrn_intra", "lrn_none"])
def test_lrn_ablations_set_a_valid_lrn(name: str) -> None:
    path = CONF / "ablation" / f"{name}.yaml"
    assert path.read_text().startswith("# @package _global_\n# ")
    cfg = OmegaConf.load(path)
    assert cfg.model.lrn == name.removeprefix("lrn_")
    model = AlexNet(width_multiplier=0.125, fc_width=16, input_size=96, lrn=cfg.model.lrn)
    assert model(torch.randn(1, 1, 96, 96)).shape == (1, 10)


def test_flatten_width_follows_input_size() -> None:
    # 96 -> conv1 22 -> pool 10 -> pool 4 -> pool 1: a 256-wide flatten.
    model = AlexNet(input_size=96, fc_width=32)
    assert model.classifier[1].in_features == 256
    assert model(torch.randn(1, 1, 96, 96)).shape == (1, 10)


def test_width_multiplier_and_fc_width() -> None:
    model = AlexNet(width_multiplier=0.5, fc_width=100, num_classes=7, in_channels=3)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [48, 128, 192, 192, 128]
    assert convs[0].in_channels == 3
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (128 * 25, 100),
        (100, 100),
        (100, 7),
    ]


def test_batch_norm_avg_pool_activation_and_no_dropout() -> None:
    model = AlexNet(
        width_multiplier=0.125,
        fc_width=32,
        input_size=96,
        batch_norm=True,
        pool="avg",
        activation="tanh",
        dropout=0.0,
    )
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 5
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == 2
    assert sum(isinstance(m, nn.AvgPool2d) for m in model.modules()) == 3
    assert not any(isinstance(m, nn.ReLU | nn.Dropout | nn.MaxPool2d) for m in model.modules())
    assert forward_backward(model, 96).shape == (2, 10)


def test_too_small_input_names_the_minimum() -> None:
    # Needs a 3x3 map before the last pool, hence 7 before pool 2, 15 after conv1: 65 px.
    with pytest.raises(ValueError, match="image_size >= 65"):
        AlexNet(input_size=64)
    AlexNet(input_size=65, fc_width=8)
    with pytest.raises(ValueError, match="image_size >= 3 "):
        AlexNet(input_size=2, stem_kernel=3, stem_stride=1, stem_padding=0, pool_padding=1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lrn": "local"}, "lrn must be one of none, inter, intra"),
        ({"width_multiplier": 0}, "width_multiplier"),
        ({"fc_width": 0}, "fc_width"),
        ({"dropout": 1.0}, "dropout"),
        ({"stem_stride": 0}, "stem_stride"),
        ({"pool_padding": 2}, "pool_padding"),
        ({"activation": "swish"}, "activation"),
        ({"pool": "lp"}, "pool"),
        ({"init": "orthogonal"}, "init"),
    ],
)
def test_bad_knobs_raise_clear_errors(kwargs: dict, match: str) -> None:
    small = {"input_size": 96, "fc_width": 8, "width_multiplier": 0.125}
    with pytest.raises(ValueError, match=match):
        AlexNet(**(small | kwargs))
