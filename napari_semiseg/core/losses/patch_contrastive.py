"""Boundary-guided patch sampling and a supervised patch contrastive loss (BoCLIS).

Yang, Zhuang, Sun, Wang, Su, IEEE TMI 44(7), 2025. Per image and class, patches are taken from
three regions of the label map: the edge band (max-pool dilation minus erosion: Canny finds
nothing on label maps), the centre (an erosion) and the whole region. Edge patches of the
foreground classes are the anchors; same-class patches from any region and any image are
positives, other classes' patches (background included) negatives.

A patch is encoded as the average of the student's encoder feature map over a small window
around its centre (one forward pass over the batch serves every patch), instead of re-encoding
each crop: the receptive field already covers the window, and it keeps the term cheap on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .segmentation import class_boundary_bands, erode, one_hot_with_ignore

REGIONS = ("edge", "centre", "whole")


def boundary_guided_regions(
    target: torch.Tensor, num_classes: int, band_kernel: int = 3, centre_kernel: int = 7
) -> torch.Tensor:
    """(B, C, 3, H, W) float masks of each class's edge band, centre and whole region.

    The edge is the part of the class's boundary band (dilation minus erosion) inside the
    class, so that every patch is centred on a pixel of its own class. Unknown pixels
    (``IGNORE``) belong to no region.
    """
    one_hot, known = one_hot_with_ignore(target, num_classes)
    edge = class_boundary_bands(target, num_classes, band_kernel) * one_hot
    centre = erode(one_hot, centre_kernel) * known
    return torch.stack([edge, centre, one_hot], dim=2)


@dataclass
class PatchSamples:
    """Sampled patch centres: image index, class, region index (see REGIONS) and pixel (y, x)."""

    image: torch.Tensor
    label: torch.Tensor
    region: torch.Tensor
    y: torch.Tensor
    x: torch.Tensor

    @property
    def anchors(self) -> torch.Tensor:
        """Edge patches of foreground classes."""
        return (self.region == REGIONS.index("edge")) & (self.label > 0)


def sample_patches(regions: torch.Tensor, per_region: int, generator: torch.Generator | None = None) -> PatchSamples:
    """Draw ``per_region`` centres (with replacement) from every non-empty region mask.

    Args:
        regions: (B, C, R, H, W) masks from :func:`boundary_guided_regions`.
    """
    if regions.ndim != 5:
        raise ValueError(f"regions must be (B, C, R, H, W), got shape {tuple(regions.shape)}.")
    batch, classes, count, height, width = regions.shape
    rows = regions.reshape(-1, height * width).float()
    present = torch.nonzero(rows.sum(dim=1) > 0).squeeze(1)
    if len(present) == 0 or per_region < 1:
        empty = torch.zeros(0, dtype=torch.long, device=regions.device)
        return PatchSamples(empty, empty, empty, empty, empty)
    flat = torch.multinomial(rows[present].cpu(), per_region, replacement=True, generator=generator)
    flat = flat.to(regions.device).reshape(-1)
    row = present.repeat_interleave(per_region)
    return PatchSamples(
        image=row // (classes * count), label=(row // count) % classes, region=row % count,
        y=flat // width, x=flat % width,
    )


def patch_embeddings(features: torch.Tensor, samples: PatchSamples, stride: int, window: int = 3) -> torch.Tensor:
    """(N, D) features averaged over a ``window``² neighbourhood of each patch centre.

    Args:
        features: (B, D, h, w) feature map at ``stride`` of the image the samples index.
    """
    pooled = F.avg_pool2d(features, window, stride=1, padding=window // 2, count_include_pad=False)
    ys = (samples.y // stride).clamp_max(pooled.shape[-2] - 1)
    xs = (samples.x // stride).clamp_max(pooled.shape[-1] - 1)
    return pooled[samples.image, :, ys, xs]


def supervised_contrastive_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, anchors: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al., NeurIPS 2020) averaged over the anchors.

    For anchor i with positives P(i) (same label, not i):
    -1/|P(i)| Σ_{p∈P(i)} log[exp(z_i·z_p/τ) / Σ_{a≠i} exp(z_i·z_a/τ)].

    Args:
        embeddings: (N, D), L2-normalised here.
        labels: (N,) class of each embedding.
        anchors: (N,) bool, which embeddings act as anchors.

    Returns:
        The mean over anchors that have at least one positive; zero (with a gradient path)
        when there are none.
    """
    if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1] or anchors.shape != embeddings.shape[:1]:
        raise ValueError(
            f"embeddings must be (N, D) with (N,) labels and anchors, got {tuple(embeddings.shape)}, "
            f"{tuple(labels.shape)} and {tuple(anchors.shape)}."
        )
    z = F.normalize(embeddings.float(), dim=1)
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    similarity = (z @ z.T / temperature).masked_fill(self_mask, float("-inf"))
    log_probability = similarity - torch.logsumexp(similarity, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    counted = anchors & positives.any(dim=1)
    if not bool(counted.any()):
        return embeddings.sum() * 0.0
    per_anchor = -log_probability.masked_fill(~positives, 0.0).sum(dim=1) / positives.sum(dim=1).clamp_min(1)
    return per_anchor[counted].mean()
