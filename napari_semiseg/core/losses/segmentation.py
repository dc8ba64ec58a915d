"""Supervised segmentation losses that learn only from known pixels.

The "ignore label" idea of nnU-Net (Isensee et al., Nature Methods 2021, and its sparse
annotation extension): pixels whose class is unknown contribute nothing to Dice or CE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..annotations import IGNORE


def _check_shapes(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.ndim != 4:
        raise ValueError(f"logits must be (B, C, H, W), got shape {tuple(logits.shape)}.")
    if target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"target must be (B, H, W) = {(logits.shape[0], *logits.shape[2:])}, got {tuple(target.shape)}."
        )


def one_hot_with_ignore(target: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot (B, C, H, W) float targets and the (B, 1, H, W) mask of known pixels."""
    known = target != IGNORE
    safe = torch.where(known, target, torch.zeros_like(target))
    if safe.numel() and int(safe.max()) >= num_classes:
        raise ValueError(f"target holds class {int(safe.max())} but there are only {num_classes} classes.")
    one_hot = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).to(torch.float32)
    mask = known.unsqueeze(1).to(torch.float32)
    return one_hot * mask, mask


def masked_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5, include_background: bool = True
) -> torch.Tensor:
    """Soft Dice loss over the batch, restricted to known pixels.

    Computed over the whole batch (not per image), as in SSL4MIS, so that images with few
    known pixels do not get an unstable per-image Dice. Classes absent from both the
    target and the prediction score 1 through the smoothing term.

    Args:
        logits: (B, C, H, W) raw network outputs.
        target: (B, H, W) class indices with ``IGNORE`` for unknown pixels.
    """
    _check_shapes(logits, target)
    probabilities = torch.softmax(logits.float(), dim=1)
    one_hot, mask = one_hot_with_ignore(target, logits.shape[1])
    probabilities = probabilities * mask
    dims = (0, 2, 3)
    intersection = (probabilities * one_hot).sum(dims)
    denominator = probabilities.sum(dims) + one_hot.sum(dims)
    dice = (2 * intersection + smooth) / (denominator + smooth)
    if not include_background:
        dice = dice[1:]
    return 1 - dice.mean()


def masked_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, pixel_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy summed over known pixels, times ``pixel_weight``, divided by their count.

    Dividing by the count (not the weight sum) keeps weights meaningful across batches: a
    batch of low-quality pseudo-labels contributes less, a boundary band more. Zero when no
    pixel is known.
    """
    _check_shapes(logits, target)
    per_pixel = F.cross_entropy(logits.float(), target, ignore_index=IGNORE, reduction="none")
    known = (target != IGNORE).to(per_pixel.dtype)
    weighted = per_pixel * known if pixel_weight is None else per_pixel * known * pixel_weight
    return weighted.sum() / known.sum().clamp_min(1.0)


def class_boundary_bands(target: torch.Tensor, num_classes: int, kernel: int = 3) -> torch.Tensor:
    """(B, C, H, W) float masks: pixels within ``kernel // 2`` of the edge of each class.

    Dilation minus erosion of each one-hot map with max-pooling, in-plane only (never 3D
    from sparse slices). Unknown pixels are never part of a band, and a class meeting only
    unknown pixels (a scribble's edge, padding) has no boundary there: erosion treats them as
    belonging to every class.
    """
    one_hot, mask = one_hot_with_ignore(target, num_classes)
    return (dilate(one_hot, kernel) - erode(one_hot + (1 - mask), kernel)) * mask


def boundary_band(target: torch.Tensor, num_classes: int, kernel: int = 3) -> torch.Tensor:
    """(B, H, W) float mask of pixels within ``kernel // 2`` of a class boundary (any class)."""
    return class_boundary_bands(target, num_classes, kernel).amax(dim=1)


def dilate(masks: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """Max-pooling dilation of (B, C, H, W) float masks with a square ``kernel``."""
    return F.max_pool2d(masks, kernel, stride=1, padding=kernel // 2)


def erode(masks: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """Max-pooling erosion of (B, C, H, W) float masks; outside the image counts as inside."""
    return -F.max_pool2d(-masks, kernel, stride=1, padding=kernel // 2)
