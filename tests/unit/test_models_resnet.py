"""ResNet: Table 1 of He et al., torchvision's parameter counts and outputs, the knobs, the
plain nets (residual=false) and the Inception-to-residual blocks of exercise I."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from cnnlab.analysis import inception_residual
from cnnlab.models import resnet
from cnnlab.models.googlenet import Inception
from cnnlab.models.resnet import (
    INCEPTION_PATHS,
    RESNET_TABLE,
    Bottleneck,
    MultiPath,
    MultiPathNet,
    Residual,
    ResNet,
    path_widths,
)
from cnnlab.resolvers import project_root
from conftest import compose_config, randomise_batch_norm

ROOT = project_root()

IMAGENET = {"in_channels": 3, "num_classes": 1000}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def torchvision_to_ours(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision ResNet state dict to our module names.

        conv1.*, bn1.*                ->  stem.conv.*, stem.bn.*
        layer{i}.{j}.conv{k}/bn{k}.*  ->  stages.{i-1}.{j}.conv{k}/bn{k}.*  (same block layout)
        layer{i}.{j}.downsample.*     ->  stages.{i-1}.{j}.shortcut.*       (1x1 conv, BN)
        fc.*                          ->  head.fc.*

    Loading the result with ``strict=True`` then checks that no tensor is missing, left over or
    of another shape.
    """
    renamed = {}
    for key, value in state_dict.items():
        key = re.sub(r"^conv1\.", "stem.conv.", key)
        key = re.sub(r"^bn1\.", "stem.bn.", key)
        key = re.sub(r"^layer(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.", key)
        key = key.replace(".downsample.", ".shortcut.")
        key = re.sub(r"^fc\.", "head.fc.", key)
        renamed[key] = value.clone()
    return renamed


def _forward_backward(model: nn.Module, size: int, batch: int = 2) -> torch.Tensor:
    model.train()
    out = model(torch.randn(batch, 1, size, size))
    assert out.shape == (batch, 10)
    loss = nn.functional.cross_entropy(out, torch.arange(batch) % 10)
    model.zero_grad()
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.stem.conv.weight.grad.abs().sum() > 0  # the gradient reaches the first layer
    return out


# --- Table 1 and torchvision ------------------------------------------------------------------


@pytest.mark.parametrize(
    "depth, count",
    [(18, 11_689_512), (34, 21_797_672), (50, 25_557_032), (101, 44_549_160),
     (152, 60_192_808)],
)
def test_parameter_count_equals_torchvision(depth: int, count: int) -> None:
    with torch.device("meta"):  # shapes only: no initialisation, no forward
        ours = getattr(resnet, f"resnet{depth}")(**IMAGENET)
        theirs = getattr(torchvision.models, f"resnet{depth}")()
    assert n_params(ours) == n_params(theirs) == count


@pytest.mark.parametrize("depth", list(RESNET_TABLE))
def test_depth_counts_weight_layers(depth: int) -> None:
    block, layers = RESNET_TABLE[depth]
    convs_per_block = 2 if block is Residual else 3
    # The depth counts the stem conv, the convs on the residual paths and the FC layer.
    assert 1 + convs_per_block * sum(layers) + 1 == depth


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_outputs_equal_torchvision(name: str) -> None:
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, name)()
    randomise_batch_norm(theirs)
    theirs.double().eval()
    with torch.device("meta"):  # every tensor comes from theirs, so skip initialising ours
        ours = getattr(resnet, name)(**IMAGENET)
    ours.load_state_dict(torchvision_to_ours(theirs.state_dict()), strict=True, assign=True)
    ours.eval()
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    # A real check: BN is not the identity and the logits are far from zero and from each
    # other, so a mis-copied tensor could not hide under the tolerance.
    assert expected.std() > 0.01 and (expected[0] - expected[1]).abs().max() > 1e-3
    assert (got - expected).abs().max() <= 1e-5


@pytest.mark.parametrize(
    "stem, size, expected",
    [("imagenet", 224, [56, 56, 28, 14, 7]), ("imagenet", 96, [24, 24, 12, 6, 3]),
     ("small", 28, [28, 28, 14, 7, 4])],
)
def test_stage_output_sizes(stem: str, size: int, expected: list[int]) -> None:
    # Table 1's "output size" column: conv1 + pool to 1/4, then each later stage halves.
    model = resnet.resnet18(stem=stem, width=8).eval()
    x = model.stem(torch.zeros(1, 1, size, size))
    sizes = [x.shape[-1]]
    for stage in model.stages:
        x = stage(x)
        sizes.append(x.shape[-1])
    assert sizes == expected
    assert x.shape[1] == 8 * 8


def test_projection_shortcuts_only_where_shape_changes() -> None:
    with torch.device("meta"):
        r18, r50 = resnet.resnet18(), resnet.resnet50()
    projections = [
        [i for i, b in enumerate(s) if not isinstance(b.shortcut, nn.Identity)] for s in r18.stages
    ]
    assert projections == [[], [0], [0], [0]]  # stage 1 keeps 64 channels and the size
    # Bottlenecks widen 64 -> 256 already in stage 1.
    assert [isinstance(s[0].shortcut, nn.Identity) for s in r50.stages] == [False] * 4
    assert all(isinstance(b.shortcut, nn.Identity) for s in r50.stages for b in s[1:])


def test_bottleneck_strides_in_its_3x3_conv() -> None:
    block = Bottleneck(256, 128, stride=2)
    assert block.conv1.stride == (1, 1) and block.conv1.kernel_size == (1, 1)
    assert block.conv2.stride == (2, 2) and block.conv2.kernel_size == (3, 3)
    assert block.conv3.out_channels == 512
    assert block(torch.randn(2, 256, 8, 8)).shape == (2, 512, 4, 4)


# --- the course settings ----------------------------------------------------------------------


def test_resnet18_96_forward_backward() -> None:
    torch.manual_seed(0)
    _forward_backward(resnet.resnet18(), 96)


def test_preact_resnet18_96_forward_backward() -> None:
    torch.manual_seed(0)
    _forward_backward(resnet.resnet18(preact=True), 96)


@pytest.mark.parametrize("preact", [False, True])
def test_small_stem_resnet18_28_forward_backward(preact: bool) -> None:
    torch.manual_seed(0)
    _forward_backward(resnet.resnet18(stem="small", preact=preact), 28)


def test_resnet50_96_forward_backward() -> None:
    torch.manual_seed(0)
    _forward_backward(resnet.resnet50(), 96)


def test_preact_bottleneck_forward_backward() -> None:
    torch.manual_seed(0)
    _forward_backward(resnet.resnet50(preact=True, width=16), 64)


def test_custom_layers_and_width_from_strings() -> None:
    # What a YAML can say: block by name, layers as a list.
    model = ResNet(block="bottleneck", layers=[1, 1], width=8, stem="small")
    assert len(model.stages) == 2 and model.head.fc.in_features == 16 * 4
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 10)


# --- pre-activation ---------------------------------------------------------------------------


def _first_leaf(module: nn.Module) -> nn.Module:
    return next(m for m in module.modules() if not list(m.children()))


def test_preact_puts_batch_norm_before_each_conv() -> None:
    with torch.device("meta"):
        plain, pre = resnet.resnet18(), resnet.resnet18(preact=True)
        pre50 = resnet.resnet50(preact=True)
    for stage in plain.stages:
        assert all(isinstance(_first_leaf(b), nn.Conv2d) for b in stage)
    for stage in [*pre.stages, *pre50.stages]:
        assert all(isinstance(_first_leaf(b), nn.BatchNorm2d) for b in stage)
    block = pre.stages[1][0]
    # Pre-activation BNs normalise the conv's *input*; post-activation ones its output.
    assert block.bn1.num_features == block.conv1.in_channels == 64
    assert plain.stages[1][0].bn1.num_features == plain.stages[1][0].conv1.out_channels == 128
    # The stem is the bare conv (the first block activates it); the head activates the last sum.
    assert not any(isinstance(m, nn.BatchNorm2d) for m in pre.stem)
    assert [type(m) for m in pre.head][:3] == [nn.BatchNorm2d, nn.ReLU, nn.AdaptiveAvgPool2d]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.head)


def test_preact_identity_path_is_clean() -> None:
    # He et al. 2016b: with the residual branch silenced, a pre-activation unit passes its input
    # through unchanged (negative values included); the original unit clips it with a ReLU.
    x = torch.randn(2, 8, 6, 6)
    pre, plain = Residual(8, 8, preact=True).eval(), Residual(8, 8).eval()
    with torch.no_grad():
        pre.conv2.weight.zero_()
        plain.bn2.weight.zero_()
        plain.bn2.bias.zero_()
    assert torch.equal(pre(x), x)
    assert torch.equal(plain(x), torch.relu(x))


def test_preact_changes_the_function_not_the_conv_weights() -> None:
    with torch.device("meta"):
        plain, pre = resnet.resnet18(), resnet.resnet18(preact=True)
    conv_shapes = [m.weight.shape for m in plain.modules() if isinstance(m, nn.Conv2d)]
    pre_shapes = [m.weight.shape for m in pre.modules() if isinstance(m, nn.Conv2d)]
    assert conv_shapes == pre_shapes


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"block": "wide"}, "unknown block"),
        ({"layers": [2, 0, 2, 2]}, "each >= 1"),
        ({"layers": []}, "each >= 1"),
        ({"stem": "cifar"}, "unknown stem"),
        ({"width": 0}, "width"),
    ],
)
def test_bad_knobs_raise(kwargs: dict, message: str) -> None:
    with torch.device("meta"), pytest.raises(ValueError, match=message):
        ResNet(**kwargs)


# --- plain nets (residual=false), ResNet exercise V ------------------------------------------


def _projections(model: nn.Module) -> list[nn.Module]:
    return [
        m.shortcut
        for m in model.modules()
        if isinstance(m, Residual | Bottleneck)
        and m.shortcut is not None  # a plain block has none
        and not isinstance(m.shortcut, nn.Identity)
    ]


@pytest.mark.parametrize(
    "depth, plain_count",
    # ResNet-18/34 lose three projections (1x1 convs 64->128, 128->256, 256->512 and their BNs):
    # 172,032 + 1,792 = 173,824 parameters; ResNet-50 loses four, wider ones.
    [(18, 11_515_688), (34, 21_623_848), (50, 22_780_456)],
)
def test_plain_parameters_are_residual_minus_projections(depth: int, plain_count: int) -> None:
    with torch.device("meta"):
        res = getattr(resnet, f"resnet{depth}")(**IMAGENET)
        plain = getattr(resnet, f"resnet{depth}")(**IMAGENET, residual=False)
    projection_params = sum(n_params(s) for s in _projections(res))
    assert n_params(plain) == n_params(res) - projection_params == plain_count
    # Everything else is the same tensor for tensor: same names, same shapes.
    res_shapes = {k: v.shape for k, v in res.state_dict().items() if ".shortcut." not in k}
    assert {k: v.shape for k, v in plain.state_dict().items()} == res_shapes


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_plain_net_has_no_shortcut_at_all(depth: int) -> None:
    with torch.device("meta"):
        plain = getattr(resnet, f"resnet{depth}")(residual=False)
    blocks = [b for stage in plain.stages for b in stage]
    assert blocks and all(b.shortcut is None and not b.residual for b in blocks)
    assert not any("shortcut" in name for name, _ in plain.named_modules())
    # The paper's depth counts weight layers, which the plain net keeps: conv stem, the convs of
    # every block, FC.
    layers = [m for m in plain.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(layers) == depth
    # BN after every conv, as in the paper's plain nets.
    assert sum(isinstance(m, nn.BatchNorm2d) for m in plain.modules()) == depth - 1


def _last_of_residual_path(block: Residual | Bottleneck) -> nn.Module:
    """The module whose output is F(X), the residual path's result before the addition."""
    last = 2 if isinstance(block, Residual) else 3
    return getattr(block, f"conv{last}" if block.preact else f"bn{last}")


@pytest.mark.parametrize("preact", [False, True], ids=["post", "pre"])
@pytest.mark.parametrize(
    "block_type, in_channels, channels, stride",
    [
        (Residual, 16, 16, 1),  # identity shortcut
        (Residual, 8, 16, 2),  # projection shortcut
        (Bottleneck, 32, 8, 1),  # identity (in = 4 x 8)
        (Bottleneck, 16, 8, 2),  # projection
    ],
    ids=["basic-identity", "basic-projection", "bottleneck-identity", "bottleneck-projection"],
)
def test_plain_block_is_residual_block_without_its_shortcut(
    block_type: type, in_channels: int, channels: int, stride: int, preact: bool
) -> None:
    """With equal weights, the residual block computes ReLU(F(X) + S(X)) (pre-activated:
    F(X) + S(X)) and the plain block the same without S(X): F(X) is the same tensor."""
    torch.manual_seed(0)
    res = block_type(in_channels, channels, stride, preact=preact)
    plain = block_type(in_channels, channels, stride, preact=preact, residual=False)
    randomise_batch_norm(res)
    missing, unexpected = plain.load_state_dict(res.state_dict(), strict=False)
    assert not missing and all(k.startswith("shortcut.") for k in unexpected)
    assert bool(unexpected) == (stride != 1)  # only a projection has weights to leave out
    res.eval()
    plain.eval()

    captured: list[torch.Tensor] = []
    hook = _last_of_residual_path(res).register_forward_hook(lambda m, i, o: captured.append(o))
    x = torch.randn(2, in_channels, 8, 8)
    with torch.no_grad():
        y_res, y_plain = res(x), plain(x)
        f = captured[0]
        if isinstance(res.shortcut, nn.Identity):
            s = x
        else:  # a pre-activated projection reads the block's first BN-ReLU, as in the forward
            s = res.shortcut(F.relu(res.bn1(x)) if preact else x)
    hook.remove()
    finish = (lambda t: t) if preact else F.relu
    assert torch.allclose(y_res, finish(f + s), atol=1e-6)
    assert torch.allclose(y_plain, finish(f), atol=1e-6)
    assert not torch.allclose(y_res, y_plain)  # the shortcut did change the result


@pytest.mark.parametrize("preact", [False, True])
def test_plain_resnet18_28_forward_backward(preact: bool) -> None:
    torch.manual_seed(0)
    _forward_backward(resnet.resnet18(stem="small", width=8, preact=preact, residual=False), 28)


@pytest.mark.parametrize("model", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
def test_every_resnet_config_has_the_residual_knob_on(model: str) -> None:
    cfg = compose_config([f"model={model}"])
    assert cfg.model.residual is True
    with torch.device("meta"):
        plain = instantiate(compose_config([f"model={model}", "model.residual=false"]).model)
    assert not _projections(plain) and all(b.shortcut is None for s in plain.stages for b in s)


def test_resnet_plain_experiment_is_plain_and_residual_18_and_34() -> None:
    """experiments/resnet_plain.yaml sweeps plain-18/34 and ResNet-18/34 on the ResNet-18
    recipe, logging often enough for early-training curves; every job builds at the recipe's
    96 px and at the 32 px of the Makefile's QUICK_RESNET."""
    sweep = OmegaConf.load(ROOT / "experiments" / "resnet_plain.yaml").hydra.sweeper.params
    assert (sweep["model"], sweep["model.residual"]) == ("resnet18,resnet34", "false,true")
    counts = {}
    for model in ("resnet18", "resnet34"):
        for residual in (False, True):
            job = ["experiment=resnet_plain", f"model={model}", f"model.residual={residual}"]
            cfg = compose_config(job)
            assert (cfg.optimizer.lr, cfg.dataset.batch_size, cfg.dataset.image_size) == (
                0.05,
                256,
                96,
            )
            assert cfg.trainer.max_epochs == 10 and cfg.trainer.log_every_n_steps <= 10
            for size in (96, 32):
                with torch.device("meta"):
                    net = instantiate(cfg.model).eval()
                    assert net(torch.zeros(2, 1, size, size)).shape == (2, 10)
            counts[model, residual] = n_params(net)
    # The plain nets lose the projections and nothing else (at 1 channel and 10 classes).
    assert counts["resnet18", True] - counts["resnet18", False] == 173_824
    assert counts["resnet34", True] - counts["resnet34", False] == 173_824


# --- from the Inception block to the residual block, ResNet exercise I ------------------------


def test_all_four_paths_without_identity_are_googlenets_inception_block() -> None:
    """Without BN, 256 channels wide, MultiPath is Inception block 3a's widths on a 256-wide
    input; given googlenet.Inception's weights it computes exactly what that block computes."""
    assert path_widths(256, INCEPTION_PATHS) == {
        "1x1": (0, 64), "3x3": (96, 128), "5x5": (16, 32), "pool": (0, 32)
    }  # fmt: skip
    torch.manual_seed(0)
    ours = MultiPath(256, batch_norm=False)
    theirs = Inception(256, 64, (96, 128), (16, 32), 32)
    assert n_params(ours) == n_params(theirs)
    with torch.no_grad():
        for mine, other in zip(ours.parameters(), theirs.parameters(), strict=True):
            assert mine.shape == other.shape
            mine.copy_(other)
    x = torch.randn(2, 256, 7, 7)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-6)


def test_one_path_plus_identity_is_the_residual_block() -> None:
    """Y = ReLU(f(X) + X) with f the one path left; without the identity Y = ReLU(f(X)); with
    four paths and the identity Y = ReLU(concat(...) + X)."""
    torch.manual_seed(0)
    residual = MultiPath(16, ["3x3"], identity=True)
    randomise_batch_norm(residual)
    plain = MultiPath(16, ["3x3"], identity=False)
    plain.load_state_dict(residual.state_dict())  # the identity path has no weights: same keys
    residual.eval()
    plain.eval()
    assert list(residual.paths) == ["3x3"]
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        f = residual.paths["3x3"](x)
        assert torch.equal(residual(x), F.relu(f + x))
        assert torch.equal(plain(x), F.relu(f))
        # The path silenced (its last BN set to 0): the residual block passes a non-negative X,
        # a ReLU's output, on as it is. That is the identity a deeper net can fall back to.
        residual.paths["3x3"][-1].weight.zero_()
        residual.paths["3x3"][-1].bias.zero_()
        assert torch.equal(residual(x.relu()), x.relu())
    four = MultiPath(16, INCEPTION_PATHS, identity=True).eval()
    with torch.no_grad():
        branches = torch.cat([p(x) for p in four.paths.values()], dim=1)
        assert torch.equal(four(x), F.relu(branches + x))


@pytest.mark.parametrize("channels", [16, 64, 100])
@pytest.mark.parametrize(
    "paths", [INCEPTION_PATHS, ("1x1", "3x3", "5x5"), ("1x1", "3x3"), ("3x3",), ("pool", "1x1")]
)
def test_kept_paths_fill_the_block_width(channels: int, paths: tuple[str, ...]) -> None:
    widths = path_widths(channels, paths)
    assert list(widths) == [p for p in INCEPTION_PATHS if p in paths]  # GoogLeNet's order
    assert sum(out for _, out in widths.values()) == channels
    block = MultiPath(channels, paths, identity=True)
    assert block(torch.randn(2, channels, 5, 5)).shape == (2, channels, 5, 5)


def test_identity_path_adds_no_parameters() -> None:
    for paths in (INCEPTION_PATHS, ("3x3",)):
        with_x, without = MultiPathNet(paths=paths, identity=True), MultiPathNet(paths=paths)
        assert n_params(with_x) == n_params(without)
    # Parameters of the one path: 1x1 64->48, 3x3 48->64 (no bias, BN after each).
    one_path = MultiPath(64, ["3x3"])
    assert n_params(one_path) == 64 * 48 + 2 * 48 + 9 * 48 * 64 + 2 * 64 == 30_944


@pytest.mark.parametrize("identity", [False, True])
@pytest.mark.parametrize("paths", [INCEPTION_PATHS, ("3x3",)])
def test_multipath_net_forward_backward_28(paths: tuple[str, ...], identity: bool) -> None:
    torch.manual_seed(0)
    model = MultiPathNet(paths=paths, identity=identity, width=16).train()
    out = model(torch.randn(4, 1, 28, 28))
    assert out.shape == (4, 10)
    F.cross_entropy(out, torch.arange(4)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.stem[0].weight.grad.abs().sum() > 0
    # Nine blocks: three stages of three, at 14, 7 and 4 px.
    assert [len([b for b in s if isinstance(b, MultiPath)]) for s in model.stages] == [3, 3, 3]


def test_resnet_inception_experiment_composes_each_variant() -> None:
    """experiments/resnet_inception.yaml: four paths or one, without and with the identity, on
    the ResNet-18 recipe at 28 px; each builds at 28 px and at QUICK_RESNET's 32 px."""
    sweep = OmegaConf.load(ROOT / "experiments" / "resnet_inception.yaml").hydra.sweeper.params
    assert sweep["model.identity"] == "false,true"
    params = {}
    for paths in ("[1x1,3x3,5x5,pool]", "[3x3]"):
        assert paths in sweep["model.paths"]
        for identity in (False, True):
            job = [f"model.paths={paths}", f"model.identity={identity}"]
            cfg = compose_config(["experiment=resnet_inception", *job])
            assert (cfg.optimizer.lr, cfg.dataset.batch_size, cfg.dataset.image_size) == (
                0.05,
                256,
                28,
            )
            with torch.device("meta"):  # shapes only
                net = instantiate(cfg.model).eval()
                assert isinstance(net, MultiPathNet)
                for size in (28, 32):
                    assert net(torch.zeros(2, 1, size, size)).shape == (2, 10)
            params[paths, identity] = n_params(net)
    assert params["[3x3]", True] == params["[3x3]", False]
    assert params["[1x1,3x3,5x5,pool]", True] == params["[1x1,3x3,5x5,pool]", False]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"paths": []}, "non-empty"),
        ({"paths": ["7x7"]}, "paths of the Inception block"),
        ({"paths": ["3x3", "3x3"]}, "distinct"),
        ({"width": 3}, "too few"),
        ({"layers": [3, 0]}, "each >= 1"),
    ],
)
def test_bad_multipath_knobs_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MultiPathNet(**kwargs)


def _multipath_run(run_dir: Path, width: object, image_size: object = 28) -> None:
    run_dir.mkdir(parents=True)
    config = {
        "model": {"_target_": "cnnlab.models.resnet.MultiPathNet", "width": width},
        "dataset": {"image_size": image_size},
    }
    (run_dir / "results.json").write_text(json.dumps({"status": "ok", "config": config}))


def test_inception_residual_tables_take_the_runs_width(tmp_path: Path) -> None:
    # A laptop-scale sweep trains width 16: its table must not describe the width-64 nets.
    for job in ("0", "1"):
        _multipath_run(tmp_path / job, 16)
    assert inception_residual.sweep_size(tmp_path) == (16, 28)
    inception_residual.main([str(tmp_path)])
    data = json.loads((tmp_path / inception_residual.JSON_FILE).read_text())
    assert data["channels"] == 16
    assert data["nets"][0]["params"] == n_params(MultiPathNet(width=16))
    assert "width 16" in (tmp_path / inception_residual.MARKDOWN_FILE).read_text()
    inception_residual.main([str(tmp_path), "--width", "32"])  # the option wins
    assert json.loads((tmp_path / inception_residual.JSON_FILE).read_text())["channels"] == 32


@pytest.mark.parametrize("widths", [[16, 32], ["16", "16"], [True, True], [-1, -1]])
def test_inception_residual_ignores_runs_that_state_no_single_width(
    tmp_path: Path, widths: list[object]
) -> None:
    for job, width in enumerate(widths):
        _multipath_run(tmp_path / str(job), width)
    assert inception_residual.sweep_size(tmp_path)[0] is None
    assert inception_residual.sweep_size(tmp_path / "nothing") == (None, None)


def test_inception_residual_tables() -> None:
    blocks = inception_residual.block_rows(64, 14)
    by_step = {r.step: r for r in blocks}
    inception, one, res = blocks[0], blocks[3], blocks[4]
    assert inception.formula.startswith("Y = ReLU(concat(f_1x1(X), f_3x3(X), f_5x5(X), f_pool")
    assert (one.formula, res.formula) == ("Y = ReLU(f_3x3(X))", "Y = ReLU(f_3x3(X) + X)")
    # The identity path costs nothing, and every step's count is the block's own.
    assert (res.params, res.flops_per_image) == (one.params, one.flops_per_image)
    assert one.params == n_params(MultiPath(64, ["3x3"])) == 30_944
    assert inception.params == n_params(MultiPath(64))
    assert len(by_step) == len(blocks) == 6
    nets = inception_residual.net_rows(64, 28)
    assert [r.params for r in nets] == [
        n_params(MultiPathNet(paths=p, identity=i)) for p, i in inception_residual.NET_VARIANTS
    ]
