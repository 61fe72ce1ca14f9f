"""What a trained CNN looks at: intermediate activation maps, vanilla saliency and Grad-CAM.

- Saliency (Simonyan et al. 2014): ``|d score_c / d input|``, the largest over the channels;
  which pixels would change the class score most.
- Grad-CAM (Selvaraju et al. 2017): weight each channel of a late conv feature map by the mean
  gradient of the class score over that map, sum, keep the positive part and upsample to the
  input; where in the image the evidence for class ``c`` sits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.layers import CONV_TYPES


def conv_layer_names(model: nn.Module) -> list[str]:
    """Convolution-like layers in definition order (the forward order for these models)."""
    return [name for name, m in model.named_modules() if isinstance(m, CONV_TYPES)]


def module_by_name(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        convs = ", ".join(conv_layer_names(model)) or "none"
        raise KeyError(f"the model has no layer {name!r}; its conv layers are: {convs}")
    return modules[name]


def capture_outputs(
    model: nn.Module, x: torch.Tensor, names: list[str]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eval-mode forward pass; returns the logits and the outputs of the named modules (a copy:
    a later in-place ReLU must not change what was captured)."""
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for name in names:

        def hook(_m: nn.Module, _i: tuple, out: torch.Tensor, name: str = name) -> None:
            captured[name] = out.detach().clone()

        handles.append(module_by_name(model, name).register_forward_hook(hook))
    model.eval()
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return logits, captured


def last_spatial_module(model: nn.Module, x: torch.Tensor) -> str:
    """The module that finishes last with a 4-D output larger than 1x1 (e.g. GoogLeNet's 5b,
    ResNet's last stage, LeNet's last pool): Grad-CAM's default layer."""
    finished: list[tuple[str, tuple[int, ...]]] = []
    names = {m: n for n, m in model.named_modules() if n}

    def record(module: nn.Module, _inputs: tuple, out: object) -> None:
        if isinstance(out, torch.Tensor):
            finished.append((names[module], tuple(out.shape)))

    handles = [m.register_forward_hook(record) for m in names]
    model.eval()
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    spatial = [(n, s) for n, s in finished if len(s) == 4]
    if not spatial:
        raise ValueError("the model has no layer with a 2-D feature map for Grad-CAM")
    larger = [n for n, s in spatial if s[2] * s[3] > 1]
    return larger[-1] if larger else spatial[-1][0]


@dataclass
class Attribution:
    logits: torch.Tensor  # [N, classes]
    targets: torch.Tensor  # [N] the class each map explains
    saliency: torch.Tensor  # [N, H, W], each in [0, 1]
    cam: torch.Tensor  # [N, H, W] upsampled to the input, each in [0, 1]


def _unit_range(maps: torch.Tensor) -> torch.Tensor:
    peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12)
    return maps / peak[:, None, None]


def attribute(
    model: nn.Module, x: torch.Tensor, layer: str, targets: torch.Tensor | None = None
) -> Attribution:
    """Saliency and Grad-CAM of ``targets`` (default: the predicted classes) for a batch ``x``.
    Eval mode, so every image's score depends on that image only and one backward pass serves
    the whole batch."""
    model.eval()
    feature: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: tuple, out: torch.Tensor) -> None:
        feature.append(out)

    handle = module_by_name(model, layer).register_forward_hook(keep)
    x = x.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            logits = model(x)
            if targets is None:
                targets = logits.argmax(dim=1)
            score = logits.gather(1, targets[:, None]).sum()
            grad_x, grad_a = torch.autograd.grad(score, [x, feature[0]])
    finally:
        handle.remove()
    activation = feature[0].detach()
    saliency = _unit_range(grad_x.abs().amax(dim=1))
    weights = grad_a.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return Attribution(logits.detach(), targets, saliency, _unit_range(cam))
