"""Cyclic consistency between a segmentation head and a signed-distance head (PMCM).

Lin, Chen, Chen, Digital Signal Processing 169, 2026. Two small 1×1 networks translate one
task's output into the other's: each translation learns to predict the other head's detached
output, and the round trips seg→SDF→seg and SDF→seg→SDF must give back what they started from.
Multi-class: C class probabilities against C-1 foreground distance maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _mapping(in_channels: int, out_channels: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, kernel_size=1), nn.LeakyReLU(), nn.Conv2d(hidden, out_channels, kernel_size=1)
    )


class TaskMappings(nn.Module):
    """seg→SDF (C → C-1 channels, tanh) and SDF→seg (C-1 → C logits) 1×1 networks."""

    def __init__(self, num_classes: int, hidden: int = 16) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"task mappings need at least 2 classes, got {num_classes}.")
        self.num_classes = num_classes
        self.seg_to_sdf = _mapping(num_classes, num_classes - 1, hidden)
        self.sdf_to_seg = _mapping(num_classes - 1, num_classes, hidden)

    def to_sdf(self, probabilities: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.seg_to_sdf(probabilities))

    def to_seg(self, sdf: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.sdf_to_seg(sdf), dim=1)


def cyclic_task_consistency(
    mappings: TaskMappings, seg_logits: torch.Tensor, sdf: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mapping loss and cycle loss for one decoder's two heads.

    Args:
        seg_logits: (B, C, H, W) segmentation logits.
        sdf: (B, C-1, H, W) signed distances in [-1, 1] (the SDF head after tanh).

    Returns:
        ``(mapping, cycle)``: MSE of each translation against the other head's detached output,
        and MSE of each round trip against its detached starting point.
    """
    if seg_logits.ndim != 4 or sdf.shape != (seg_logits.shape[0], seg_logits.shape[1] - 1, *seg_logits.shape[2:]):
        raise ValueError(
            f"sdf must be (B, C-1, H, W) for logits (B, C, H, W), got {tuple(sdf.shape)} and {tuple(seg_logits.shape)}."
        )
    if seg_logits.shape[1] != mappings.num_classes:
        raise ValueError(f"logits have {seg_logits.shape[1]} classes, the mappings {mappings.num_classes}.")
    probabilities = torch.softmax(seg_logits.float(), dim=1)
    sdf = sdf.float()
    as_sdf = mappings.to_sdf(probabilities)
    as_seg = mappings.to_seg(sdf)
    mapping = F.mse_loss(as_sdf, sdf.detach()) + F.mse_loss(as_seg, probabilities.detach())
    cycle = F.mse_loss(mappings.to_seg(as_sdf), probabilities.detach()) + F.mse_loss(
        mappings.to_sdf(as_seg), sdf.detach()
    )
    return mapping, cycle
