"""Loss terms: each maps a batch and the members' outputs to a loss per member."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..annotations import IGNORE
from ..losses import boundary_band, masked_cross_entropy, masked_dice_loss


@dataclass
class Batch:
    """A training batch: the first ``annotated`` rows carry targets, the rest do not."""

    images: torch.Tensor
    targets: torch.Tensor
    annotated: int
    pseudo_targets: torch.Tensor | None = None
    pseudo_weights: torch.Tensor | None = None

    @property
    def has_unannotated(self) -> bool:
        return self.images.shape[0] > self.annotated


@dataclass(frozen=True)
class TermContext:
    num_classes: int
    boundary_weight: float = 0.0


TermFunction = Callable[[Batch, dict[str, torch.Tensor], TermContext], dict[str, torch.Tensor]]


def supervised_term(batch: Batch, logits: dict[str, torch.Tensor], context: TermContext) -> dict[str, torch.Tensor]:
    """Masked Dice + CE on annotated pixels, with optional boundary-band weighting of CE."""
    targets = batch.targets[: batch.annotated]
    weight = None
    if context.boundary_weight > 0:
        weight = 1.0 + context.boundary_weight * boundary_band(targets, context.num_classes)
    losses = {}
    for name, member_logits in logits.items():
        annotated_logits = member_logits[: batch.annotated]
        losses[name] = masked_dice_loss(annotated_logits, targets) + masked_cross_entropy(
            annotated_logits, targets, weight
        )
    return losses


def cross_pseudo_term(batch: Batch, logits: dict[str, torch.Tensor], context: TermContext) -> dict[str, torch.Tensor]:
    """Cross pseudo supervision: each member learns the others' hard labels (Dice) on unannotated rows."""
    if not batch.has_unannotated or len(logits) < 2:
        return {name: value.new_zeros(()) for name, value in logits.items()}
    pseudo = {name: value[batch.annotated :].detach().argmax(dim=1) for name, value in logits.items()}
    losses = {}
    for name, member_logits in logits.items():
        teachers = [label for other, label in pseudo.items() if other != name]
        unannotated = member_logits[batch.annotated :]
        losses[name] = sum(masked_dice_loss(unannotated, label) for label in teachers) / len(teachers)
    return losses


def registration_term(batch: Batch, logits: dict[str, torch.Tensor], context: TermContext) -> dict[str, torch.Tensor]:
    """Registration supervision (CCT-R's RSL): Dice + quality-weighted CE against registered
    labels on unannotated rows; pixels without a trustworthy registered label are ignored."""
    if batch.pseudo_targets is None or not batch.has_unannotated:
        return {name: value.new_zeros(()) for name, value in logits.items()}
    targets = batch.pseudo_targets[batch.annotated :]
    weights = batch.pseudo_weights[batch.annotated :]
    if not bool((targets != IGNORE).any()):
        return {name: value.new_zeros(()) for name, value in logits.items()}
    return {
        name: masked_dice_loss(value[batch.annotated :], targets)
        + masked_cross_entropy(value[batch.annotated :], targets, weights)
        for name, value in logits.items()
    }


TERMS: dict[str, TermFunction] = {
    "supervised": supervised_term,
    "cross_pseudo": cross_pseudo_term,
    "registration": registration_term,
}


def get_term(kind: str) -> TermFunction:
    try:
        return TERMS[kind]
    except KeyError:
        raise ValueError(f"Unknown loss term '{kind}'; known terms: {', '.join(TERMS)}.") from None
