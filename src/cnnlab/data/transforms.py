"""Per-batch transforms run on the training device: uint8 -> float, augment, resize, normalise.

They replace torchvision's per-sample ``ToTensor``/``Resize`` with one tensor op per batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pixel_mean_std(images: torch.Tensor) -> tuple[float, float]:
    """Mean and (unbiased) standard deviation of uint8 images, scaled to [0, 1].

    Counted from the 256-bin histogram in float64: exact, and without the 4-bytes-per-pixel float
    copy of the whole split (188 MB for Fashion-MNIST) that ``images.float().std()`` would make.
    """
    counts = torch.bincount(images.reshape(-1), minlength=256).to(torch.float64)
    values = torch.arange(256, dtype=torch.float64) / 255.0
    n = counts.sum()
    mean = (counts * values).sum() / n
    variance = (counts * (values - mean) ** 2).sum() / (n - 1)
    return float(mean), float(variance.sqrt())


def augment_uint8(images: torch.Tensor, params: torch.Tensor, shift: int) -> torch.Tensor:
    """Flip and shift-crop a uint8 batch [N, H, W] with per-sample ``params`` [N, 3] =
    (flip, row offset, column offset), drawn by the loader. Zero padding of ``shift`` pixels."""
    flip = params[:, 0].bool()
    images = torch.where(flip[:, None, None], images.flip(-1), images)
    if shift == 0:
        return images
    n, h, w = images.shape
    padded = F.pad(images, (shift, shift, shift, shift))
    rows = params[:, 1, None] + torch.arange(h, device=images.device)  # [N, H]
    cols = params[:, 2, None] + torch.arange(w, device=images.device)  # [N, W]
    batch = torch.arange(n, device=images.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]]


def to_model_input(
    images: torch.Tensor,
    image_size: int,
    mean: float | None = None,
    std: float | None = None,
    channels: int = 1,
    channels_last: bool = False,
) -> torch.Tensor:
    """uint8 [N, H, W] -> float [N, C, S, S] in [0, 1], resized to ``image_size`` (bilinear, as
    torchvision's Resize), then normalised when ``mean``/``std`` are given."""
    # Resizing is linear, so scaling to [0, 1] and normalising fold into one multiply-add after it.
    x = images.unsqueeze(1).float()
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(
            x,
            size=(image_size, image_size),
            mode="bilinear",
            align_corners=False,
            antialias=image_size < images.shape[-1],
        )
    if mean is not None and std is not None:
        x = x.mul_(1.0 / (255.0 * std)).sub_(mean / std)
    else:
        x = x.mul_(1.0 / 255.0)
    if channels > 1:  # grey images fed to an RGB-configured model
        x = x.expand(-1, channels, -1, -1)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x
