"""Pixel contrastive losses of MCSC and MCSCv2, and the vectorised sampling they use.

Liu, "Transformers and contrastive semi-supervised learning for medical image segmentation"
(PhD thesis, University of Glasgow, 2025): the class-balanced supervised contrastive loss of
MCSC (eq. 4.2) and the certainty-guided loss of MCSCv2 (eq. 5.7). Pure tensor functions: the
terms that sample pixels, project them and keep memory banks are in ``engine/contrastive.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..annotations import IGNORE


def flat_pixels(feature_map: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) -> (B*h*w, D), row-major over (b, y, x)."""
    return feature_map.permute(0, 2, 3, 1).reshape(-1, feature_map.shape[1])


def labels_at(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resampling of (B, H, W) class indices (``IGNORE`` kept) to ``size``."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


def probabilities_at(probabilities: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area-averaged (B, C, H, W) probabilities at ``size``."""
    if tuple(probabilities.shape[-2:]) == tuple(size):
        return probabilities
    return F.interpolate(probabilities, size=size, mode="area")


def sample_per_class(candidates: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``count`` random candidate positions per row of a (C, P) mask, without replacement.

    Returns:
        ``(indices, valid)``, both (C, min(count, P)): positions and whether each is a candidate
        (rows with fewer candidates are padded with invalid positions).
    """
    count = min(count, candidates.shape[1])
    scores = torch.rand(candidates.shape, device=candidates.device).masked_fill_(~candidates, -1.0)
    values, indices = scores.topk(count, dim=1)
    return indices, values >= 0


def class_ranks(class_probabilities: torch.Tensor) -> torch.Tensor:
    """(C, P) probabilities -> (C, P) rank of each class at each pixel (0 = most probable): the
    number of classes more probable there. Pairwise comparisons along P are several times
    faster than sorting P rows of C values on a CPU; tied classes share a rank."""
    rank = torch.zeros(class_probabilities.shape, dtype=torch.uint8, device=class_probabilities.device)
    for other in class_probabilities:
        rank += other[None, :] > class_probabilities
    return rank


def entropy_percentile(values: torch.Tensor, fraction: float) -> torch.Tensor:
    """The ``fraction`` quantile of a 1-D tensor (lower neighbour, no interpolation): a selection
    in linear time where ``torch.quantile`` sorts."""
    position = min(max(int(fraction * (len(values) - 1)), 0), len(values) - 1)
    return values.kthvalue(position + 1).values


def class_balanced_contrastive_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int, temperature: float = 0.1
) -> torch.Tensor:
    """Class-balanced supervised contrastive loss (MCSC, thesis eq. 4.2).

    For anchor i of class c and each positive j of class c (j != i):
    ``l_ij = log[exp(s_ij/τ) / (exp(s_ij/τ) + Z_i)]`` with
    ``Z_i = Σ_{c' != c} mean_{k in class c'} exp(s_ik/τ)`` (negatives averaged within each class,
    summed over classes). The loss is ``-mean_c mean_{i in c} mean_j l_ij``: per-class means, so
    background pixels do not dominate. Anchors without positives or without negatives are skipped.

    Args:
        embeddings: (N, D) L2-normalised.
        labels: (N,) class indices; ``IGNORE`` rows are left out.
    """
    if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(f"need (N, D) embeddings and (N,) labels, got {tuple(embeddings.shape)} and "
                         f"{tuple(labels.shape)}.")
    keep = labels != IGNORE
    embeddings, labels = embeddings[keep], labels[keep]
    if labels.numel() and int(labels.max()) >= num_classes:
        raise ValueError(f"labels hold class {int(labels.max())} but there are only {num_classes} classes.")
    zero = embeddings.sum() * 0.0
    if labels.numel() < 2:
        return zero
    scaled = embeddings.float() @ embeddings.float().T / temperature - 1.0 / temperature  # <= 0: stable exp
    exp = scaled.exp()
    one_hot = F.one_hot(labels, num_classes).float()
    counts = one_hot.sum(0)
    class_mean_exp = (exp @ one_hot) / counts.clamp_min(1.0)  # (N, C)
    other_class = (1.0 - one_hot) * (counts > 0).float()
    negatives = (class_mean_exp * other_class).sum(1, keepdim=True)  # (N, 1)
    log_ratio = scaled - torch.log(exp + negatives)  # (N, N)
    # sum over same-class j != i without an (N, N) mask: per-class sums, own column, minus j = i
    same_class_sum = ((log_ratio @ one_hot) * one_hot).sum(1) - log_ratio.diagonal()
    positives_per_anchor = counts[labels] - 1
    valid = (positives_per_anchor > 0) & (negatives[:, 0] > 0)
    if not bool(valid.any()):
        return zero
    anchor_loss = -same_class_sum / positives_per_anchor.clamp_min(1)
    return _mean_of_class_means(anchor_loss, labels, valid, num_classes)


def _mean_of_class_means(values: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, num_classes: int):
    one_hot = F.one_hot(labels, num_classes).float() * valid[:, None].float()
    per_class_count = one_hot.sum(0)
    per_class = (values[:, None] * one_hot).sum(0) / per_class_count.clamp_min(1.0)
    present = per_class_count > 0
    return per_class[present].mean()


def certainty_contrastive_loss(
    anchors: torch.Tensor,
    anchor_valid: torch.Tensor,
    positives: torch.Tensor,
    positive_valid: torch.Tensor,
    negatives: torch.Tensor,
    negative_labels: torch.Tensor,
    num_classes: int,
    temperature: float = 0.1,
) -> torch.Tensor:
    """MCSCv2's loss (thesis eq. 5.7), all classes at once.

    ``-(1/|C|) Σ_c mean_{a of c} log[exp(a·a_p/τ) / (exp(a·a_p/τ) + Z)]`` where
    ``Z = Σ_{c'} mean_{k in negatives of c, class c'} exp(a·k/τ)``.

    Args:
        anchors: (C, N, D) unit vectors, ``anchor_valid`` (C, N) marks real ones.
        positives: (C, D), one per class; ``positive_valid`` (C,).
        negatives: (C, M, D) drawn from class c's bank; ``negative_labels`` (C, M) their classes,
            ``IGNORE`` for empty slots.
    """
    if anchors.ndim != 3 or positives.shape != (anchors.shape[0], anchors.shape[2]):
        raise ValueError(f"anchors (C, N, D) and positives (C, D) do not fit: {tuple(anchors.shape)}, "
                         f"{tuple(positives.shape)}.")
    if negatives.shape[0] != anchors.shape[0] or negative_labels.shape != negatives.shape[:2]:
        raise ValueError(f"negatives (C, M, D) and their labels (C, M) do not fit: {tuple(negatives.shape)}, "
                         f"{tuple(negative_labels.shape)}.")
    # Log domain: Z = Σ_k w_k exp(a·k/τ) with w_k = 1 / (bank keys of k's class), so log Z is one
    # logsumexp over logits shifted by log w_k, and the loss per anchor is softplus(log Z - a·a_p/τ).
    # Same value as the ratio of exponentials, without the (C, N, M) passes of dividing and summing.
    known = negative_labels != IGNORE
    counts = F.one_hot(negative_labels.clamp_min(0), num_classes).mul_(known[..., None]).sum(1)  # (C, classes)
    per_key_count = torch.gather(counts, 1, negative_labels.clamp_min(0)).clamp_min(1)  # (C, M)
    log_weight = torch.where(known, -per_key_count.float().log(), torch.full_like(known, -1e4, dtype=anchors.dtype))
    logits = torch.baddbmm(log_weight[:, None, :], anchors, negatives.transpose(1, 2), alpha=1.0 / temperature)
    log_z = torch.logsumexp(logits, dim=-1)  # (C, N)
    positive_logit = (anchors * positives[:, None, :]).sum(-1) / temperature  # (C, N)
    per_anchor = F.softplus(log_z - positive_logit)
    has_negatives = known.any(1)
    valid = anchor_valid & (positive_valid & has_negatives)[:, None]
    zero = anchors.sum() * 0.0
    if not bool(valid.any()):
        return zero
    per_class = (per_anchor * valid).sum(1) / valid.sum(1).clamp_min(1)
    return per_class[valid.any(1)].mean()
