"""Truncated, fixed-scale signed distance targets for the SDF heads of PMCM.

The released PMCM/DTC code min-max normalises each volume's distance map, which makes a
target's values depend on the organ's size; here the distance is divided by one fixed scale
``D`` (pixels) and clipped, so ``sdf = clip(d / D, -1, 1)``: negative inside the class, changing
sign at its edge, positive outside, ±1 beyond ``D`` pixels. Distances are in-plane, per annotated
slice, measured only to *known* pixels, so unknown pixels never pose as another class.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from ..annotations import IGNORE

DEFAULT_SDF_SCALE = 15.0
MIN_KNOWN_FRACTION = 0.5


def signed_distance_targets(
    target: torch.Tensor, num_classes: int, scale: float = DEFAULT_SDF_SCALE,
    min_known_fraction: float = MIN_KNOWN_FRACTION,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed distance maps of the foreground classes of a batch of label maps.

    Args:
        target: (B, H, W) class indices, ``IGNORE`` for unknown pixels.
        num_classes: C, background included; maps are made for classes 1..C-1.
        scale: D, the distance in pixels that maps to ±1.
        min_known_fraction: slices with fewer known pixels (scribbles) get no target, since
            the distance to an unpainted edge cannot be known.

    Returns:
        ``(sdf, valid)``: (B, C-1, H, W) float targets in [-1, 1] (negative inside) and the
        (B, 1, H, W) float mask of pixels that carry a target.
    """
    if target.ndim != 3:
        raise ValueError(f"target must be (B, H, W), got shape {tuple(target.shape)}.")
    if num_classes < 2:
        raise ValueError(f"signed distances need at least 2 classes, got {num_classes}.")
    if scale <= 0:
        raise ValueError(f"the distance scale must be positive, got {scale}.")
    labels = target.detach().cpu().numpy()
    known = labels != IGNORE
    if known.any() and int(labels[known].max()) >= num_classes:
        raise ValueError(f"target holds class {int(labels[known].max())} but there are only {num_classes} classes.")
    batch, height, width = labels.shape
    classes = np.arange(1, num_classes)[None, :, None, None]
    inside = labels[:, None] == classes  # (B, C-1, H, W)
    outside = known[:, None] & ~inside
    # distance of every pixel to the nearest known pixel of the class, and to the nearest known
    # pixel of any other class; one transform for the whole stack (slices kept apart by a large
    # spacing between them), clipped at D so that a slice without such pixels reads ±1
    to_class = _stacked_distance(inside.reshape(-1, height, width), scale).reshape(inside.shape)
    to_other = _stacked_distance(outside.reshape(-1, height, width), scale).reshape(inside.shape)
    signed = np.where(inside, -to_other, to_class) / scale
    sdf = np.clip(signed, -1.0, 1.0).astype(np.float32)
    enough = known.reshape(batch, -1).mean(axis=1) >= min_known_fraction
    valid = (known & enough[:, None, None])[:, None].astype(np.float32)
    return (torch.from_numpy(sdf).to(target.device) * torch.from_numpy(valid).to(target.device),
            torch.from_numpy(valid).to(target.device))


def _stacked_distance(features: np.ndarray, scale: float) -> np.ndarray:
    """In-plane Euclidean distance of each pixel to the nearest True pixel of its own slice.

    A slice without True pixels gets distances beyond ``scale``.
    """
    count, height, width = features.shape
    # an all-False slice after the stack guarantees a zero for scipy; the spacing between
    # slices (more than D) keeps neighbouring slices from lending each other distances under D
    padded = np.concatenate([~features, np.zeros((1, height, width), dtype=bool)])
    spacing = float(scale + height + width)
    return ndimage.distance_transform_edt(padded, sampling=(spacing, 1.0, 1.0))[:count]
