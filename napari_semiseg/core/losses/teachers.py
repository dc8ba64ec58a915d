"""Uncertainty-weighted aggregation of several teachers (BoCLIS, Yang et al., IEEE TMI 2025).

Conservative-to-radical EMA teachers disagree most where the student is unsure; each pixel
trusts the teachers with the lowest entropy there, and the aggregate's own entropy says how
much the resulting pseudo-label is worth.
"""

from __future__ import annotations

import math

import torch

from .segmentation import masked_cross_entropy, masked_dice_loss


def normalised_entropy(probabilities: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """H(p) / log C along ``dim``: 0 for a one-hot, 1 for a uniform distribution."""
    num_classes = probabilities.shape[dim]
    if num_classes < 2:
        raise ValueError("entropy needs at least 2 classes.")
    entropy = -(probabilities * torch.log(probabilities.clamp_min(1e-8))).sum(dim=dim)
    return entropy / math.log(num_classes)


def aggregate_teachers(teacher_probabilities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pixel entropy-weighted mean of K teachers' class probabilities.

    w_k = softmax_k(-H_k) with H_k the normalised entropy of teacher k; p̄ = Σ_k w_k p_k;
    the pseudo-label is argmax p̄ and its weight ω = 1 - H(p̄) / log C.

    Args:
        teacher_probabilities: (K, B, C, H, W) softmax outputs.

    Returns:
        ``(p̄, labels, ω)`` of shapes (B, C, H, W), (B, H, W) and (B, H, W).
    """
    if teacher_probabilities.ndim != 5:
        raise ValueError(
            f"teacher probabilities must be (K, B, C, H, W), got shape {tuple(teacher_probabilities.shape)}."
        )
    probabilities = teacher_probabilities.float()
    weights = torch.softmax(-normalised_entropy(probabilities, dim=2), dim=0)  # (K, B, H, W)
    mean = (weights.unsqueeze(2) * probabilities).sum(dim=0)
    return mean, mean.argmax(dim=1), 1.0 - normalised_entropy(mean, dim=1)


def weighted_pseudo_label_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """ω-weighted cross-entropy plus Dice of ``logits`` against hard pseudo-labels (BoCLIS's L_u)."""
    return masked_cross_entropy(logits, labels, weights) + masked_dice_loss(logits, labels)
