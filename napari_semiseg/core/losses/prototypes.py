"""Class prototypes by masked average pooling, their alignment (BFA) and reliability (PMCM).

BFA (Guo, Wang et al., Pattern Recognition 2025) pulls the boundary prototypes of unannotated
images towards those of annotated ones; PMCM (Lin, Chen, Chen, Digital Signal Processing 2026)
scores a pseudo-label by how well a pixel's feature agrees with the class prototypes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_maps(features: torch.Tensor, masks: torch.Tensor) -> None:
    if features.ndim != 4 or masks.ndim != 4:
        raise ValueError(
            f"features and masks must be (B, D, H, W) and (B, C, H, W), got {tuple(features.shape)} "
            f"and {tuple(masks.shape)}."
        )
    if features.shape[0] != masks.shape[0] or features.shape[2:] != masks.shape[2:]:
        raise ValueError(
            f"features {tuple(features.shape)} and masks {tuple(masks.shape)} must share batch and size."
        )


def masked_average_prototypes(features: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class mean feature over the whole batch.

    Args:
        features: (B, D, H, W) feature maps.
        masks: (B, C, H, W) non-negative pixel weights per class (e.g. one-hot or a band).

    Returns:
        ``(prototypes, present)``: (C, D) means (zero for an empty class) and (C,) bool.
    """
    _check_maps(features, masks)
    masks = masks.to(features.dtype)
    sums = torch.einsum("bdhw,bchw->cd", features, masks)
    counts = masks.sum(dim=(0, 2, 3))
    return sums / counts.clamp_min(1e-6)[:, None], counts > 0


def prototype_alignment_loss(
    moving: torch.Tensor, moving_present: torch.Tensor, reference: torch.Tensor, reference_present: torch.Tensor
) -> torch.Tensor:
    """Mean 1 - cosine between ``moving`` and detached ``reference`` prototypes of each class present in both.

    Zero (with a gradient path) when no class is present in both.
    """
    if moving.shape != reference.shape or moving.ndim != 2:
        raise ValueError(f"prototypes must both be (C, D), got {tuple(moving.shape)} and {tuple(reference.shape)}.")
    both = moving_present & reference_present
    if not bool(both.any()):
        return moving.sum() * 0.0
    cosine = F.cosine_similarity(moving[both], reference[both].detach(), dim=1)
    return (1.0 - cosine).mean()


def blend_prototypes(
    annotated: torch.Tensor, annotated_present: torch.Tensor, unannotated: torch.Tensor,
    unannotated_present: torch.Tensor, unannotated_share: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(1 - s)·annotated + s·unannotated per class, falling back to whichever is present."""
    share = torch.full_like(annotated[:, 0], float(unannotated_share))
    share = torch.where(annotated_present & unannotated_present, share, unannotated_present.to(share.dtype))
    blended = (1 - share[:, None]) * annotated + share[:, None] * unannotated
    return blended, annotated_present | unannotated_present


def ema_update_prototypes(
    bank: torch.Tensor, bank_filled: torch.Tensor, prototypes: torch.Tensor, present: torch.Tensor, momentum: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """EMA of detached prototypes into a (C, D) bank; a class seen for the first time is copied in."""
    prototypes = prototypes.detach()
    updated = torch.where(bank_filled[:, None], momentum * bank + (1 - momentum) * prototypes, prototypes)
    return torch.where(present[:, None], updated, bank), bank_filled | present


def prototype_reliability(features: torch.Tensor, probabilities: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """ρ = 1 - mean_c (cos(f, P_c) - p_c)², clipped to [0, 1], per pixel (PMCM).

    High where the prediction agrees with how similar the pixel's feature is to each class
    prototype; a confident pseudo-label whose feature sits near another class scores low.

    Args:
        features: (B, D, H, W); probabilities: (B, C, H, W); prototypes: (C, D).

    Returns:
        (B, H, W) reliability, without gradient.
    """
    _check_maps(features, probabilities)
    if prototypes.shape != (probabilities.shape[1], features.shape[1]):
        raise ValueError(
            f"prototypes must be (C, D) = {(probabilities.shape[1], features.shape[1])}, got {tuple(prototypes.shape)}."
        )
    with torch.no_grad():
        cosine = torch.einsum(
            "bdhw,cd->bchw", F.normalize(features.float(), dim=1), F.normalize(prototypes.float(), dim=1)
        )
        return (1.0 - ((cosine - probabilities.float()) ** 2).mean(dim=1)).clamp(0.0, 1.0)
