"""Box copy-paste mixing of images and label maps (BFA; the bidirectional copy-paste of BCP).

A box of one image is pasted into another, and the other way round; the mixed label maps
hold ground-truth and pseudo-label regions side by side, so their boundary maps hold both
kinds of boundaries.
"""

from __future__ import annotations

import torch


def random_box_masks(count: int, height: int, width: int, fraction: float = 2 / 3,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """(count, H, W) bool masks, each a box of ``fraction`` of the height and width at a random place."""
    if not 0 < fraction <= 1:
        raise ValueError(f"the box fraction must be in (0, 1], got {fraction}.")
    box_h, box_w = max(1, round(fraction * height)), max(1, round(fraction * width))
    top = torch.randint(0, height - box_h + 1, (count,), generator=generator)
    left = torch.randint(0, width - box_w + 1, (count,), generator=generator)
    rows = torch.arange(height)[None, :, None]
    cols = torch.arange(width)[None, None, :]
    inside_y = (rows >= top[:, None, None]) & (rows < (top + box_h)[:, None, None])
    inside_x = (cols >= left[:, None, None]) & (cols < (left + box_w)[:, None, None])
    return inside_y & inside_x


def copy_paste(inner: torch.Tensor, outer: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """``inner`` inside the box, ``outer`` outside it.

    Args:
        inner, outer: (B, ...) tensors of the same shape ending in (H, W): images (B, 1, H, W),
            label maps (B, H, W) or weights.
        box: (B, H, W) bool masks.
    """
    if inner.shape != outer.shape:
        raise ValueError(f"can only mix tensors of one shape, got {tuple(inner.shape)} and {tuple(outer.shape)}.")
    if box.shape != (inner.shape[0], *inner.shape[-2:]):
        raise ValueError(f"box must be (B, H, W) = {(inner.shape[0], *inner.shape[-2:])}, got {tuple(box.shape)}.")
    box = box.to(inner.device).reshape(box.shape[0], *([1] * (inner.ndim - 3)), *box.shape[1:])
    return torch.where(box, inner, outer)


def bidirectional_copy_paste(annotated: torch.Tensor, unannotated: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """[annotated box into unannotated ; unannotated box into annotated], stacked on the batch axis."""
    return torch.cat([copy_paste(annotated, unannotated, box), copy_paste(unannotated, annotated, box)])
