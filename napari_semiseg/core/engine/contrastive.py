"""Contrastive terms on multi-scale features: MCSC, MCSCv2 and CCT-R's REPS.

All from Liu, "Transformers and contrastive semi-supervised learning for medical image
segmentation" (PhD thesis, University of Glasgow, 2025): MCSC (ch. 4, BMVC 2023), MCSCv2
(ch. 5), registration-enhanced positive sampling (ch. 6). See ``docs/methods.md`` sections 3-5.

Pixels are sampled before projection (the projector is a per-pixel MLP, so projecting only
the sampled pixels gives the same embeddings as projecting the whole map and then sampling),
and every sampling step is a vectorised top-k over random scores: no Python loop over pixels.
The losses and the sampling functions are engine-free tensor math in ``core/losses/contrastive.py``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..annotations import IGNORE
from ..losses.contrastive import (
    certainty_contrastive_loss,
    class_balanced_contrastive_loss,
    class_ranks,
    entropy_percentile,
    flat_pixels,
    labels_at,
    probabilities_at,
    sample_per_class,
)
from .step import Step
from .terms import Term, register_term

PROJECTION_HIDDEN = 256
PROJECTION_DIM = 128


# ----------------------------------------------------------------------------- building blocks


class MultiScaleProjector(nn.Module):
    """Per scale: a member-specific linear layer (channels -> 256), ReLU, then a linear layer
    (256 -> 128) shared by all members (MCSC's projector H); outputs are L2-normalised."""

    def __init__(self, channels_by_member: dict[str, Sequence[int]]):
        super().__init__()
        scales = {len(c) for c in channels_by_member.values()}
        if len(scales) != 1:
            raise ValueError(f"members expose different numbers of feature scales: {channels_by_member}")
        self.scales = scales.pop()
        self.first = nn.ModuleDict({
            name: nn.ModuleList(nn.Linear(c, PROJECTION_HIDDEN) for c in channels)
            for name, channels in channels_by_member.items()
        })
        self.shared = nn.ModuleList(nn.Linear(PROJECTION_HIDDEN, PROJECTION_DIM) for _ in range(self.scales))

    def forward(self, member: str, scale: int, pixels: torch.Tensor) -> torch.Tensor:
        """(P, channels) features of ``member`` at ``scale`` -> (P, 128) unit vectors."""
        hidden = F.relu(self.first[member][scale](pixels.float()))
        return F.normalize(self.shared[scale](hidden), dim=1)


def crossed_probabilities(step: Step, student: str) -> torch.Tensor:
    """The other students' mean softmax (detached): MCSC samples a member's features with the
    other member's pseudo-labels. A lone student uses its own prediction."""
    others = [name for name in step.student_names if name != student] or [student]
    return torch.stack([torch.softmax(step.logits(name).detach().float(), dim=1) for name in others]).mean(0)


def known_targets(step: Step) -> torch.Tensor:
    """(B, H, W) ground truth where known, ``IGNORE`` elsewhere (unannotated rows included)."""
    return step.batch.targets


class FifoBank(nn.Module):
    """Per-class FIFO queues of keys with their classes, as buffers (checkpointed).

    Args:
        num_classes: queues, one per class.
        size: keys per queue (K).
        dim: key length.
    """

    def __init__(self, num_classes: int, size: int, dim: int):
        super().__init__()
        self.size = size
        self.register_buffer("keys", torch.zeros(num_classes, size, dim))
        self.register_buffer("labels", torch.full((num_classes, size), IGNORE, dtype=torch.long))
        self.register_buffer("pointer", torch.zeros(num_classes, dtype=torch.long))

    @torch.no_grad()
    def push(self, queue: int, keys: torch.Tensor, labels: torch.Tensor) -> None:
        """Append keys to queue ``queue``, overwriting the oldest ones once full."""
        count = min(len(keys), self.size)
        if count == 0:
            return
        keys, labels = keys[-count:], labels[-count:]
        start = int(self.pointer[queue])
        positions = (start + torch.arange(count, device=self.keys.device)) % self.size
        self.keys[queue, positions] = keys.to(self.keys.dtype)
        self.labels[queue, positions] = labels.to(self.labels.device)
        self.pointer[queue] = (start + count) % self.size

    def sample(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` random slots of every queue (with replacement, filled slots only):
        (C, count, D) keys and (C, count) labels (``IGNORE`` where a queue is empty)."""
        filled = self.labels != IGNORE  # (C, K)
        weights = filled.float() + (~filled.any(1, keepdim=True)).float()  # empty queue: any slot
        slots = torch.multinomial(weights, count, replacement=True)  # (C, count)
        keys = torch.gather(self.keys, 1, slots[..., None].expand(-1, -1, self.keys.shape[2]))
        return keys, torch.gather(self.labels, 1, slots)


# ----------------------------------------------------------------------------- MCSC


def _projector_for(members, term: Term) -> MultiScaleProjector:
    channels = {m.name: tuple(m.network.feature_channels) for m in members if not m.spec.is_teacher}
    return MultiScaleProjector(channels)


@register_term("mcsc_contrastive")
class MultiScaleCrossContrastive(Term):
    """MCSC: class-balanced supervised contrastive loss on three feature scales per student.

    Labels are crossed (a student's pixels take the other student's pseudo-labels; annotated
    pixels take the ground truth). For memory, each scale contributes a random ``patch``×``patch``
    window of every image (the whole map if smaller), at most ``max_pixels`` pixels.

    Options: ``temperature`` (0.1), ``patch`` (16), ``max_pixels`` (1024; the loss costs
    O(max_pixels²) per scale and student).
    """

    feature_kind = "encoder"

    def __init__(self, spec, context, members):
        super().__init__(spec, context, members)
        self.projector = _projector_for(members, self)
        self.temperature = float(spec.option("temperature", 0.1))
        self.patch = int(spec.option("patch", 16))
        self.max_pixels = int(spec.option("max_pixels", 1024))

    def forward(self, step: Step) -> dict[str, torch.Tensor]:
        losses = {}
        for student in step.student_names:
            labels = _crossed_labels(step, student)
            total = 0.0
            for scale, feature_map in enumerate(step.features(student)):
                window_features, window_labels = self._window(feature_map, labels_at(labels, feature_map.shape[-2:]))
                embeddings = self.projector(student, scale, window_features)
                total = total + class_balanced_contrastive_loss(
                    embeddings, window_labels, self.context.num_classes, self.temperature)
            losses[student] = total
        return losses

    def _window(self, feature_map: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = feature_map.shape[-2:]
        side_y, side_x = min(self.patch, height), min(self.patch, width)
        top = int(torch.randint(0, height - side_y + 1, ()))
        left = int(torch.randint(0, width - side_x + 1, ()))
        features = flat_pixels(feature_map[:, :, top:top + side_y, left:left + side_x])
        flat_labels = labels[:, top:top + side_y, left:left + side_x].reshape(-1)
        if len(flat_labels) > self.max_pixels:
            chosen = torch.randperm(len(flat_labels), device=flat_labels.device)[: self.max_pixels]
            features, flat_labels = features[chosen], flat_labels[chosen]
        return features, flat_labels


def _crossed_labels(step: Step, student: str) -> torch.Tensor:
    targets = known_targets(step)
    pseudo = crossed_probabilities(step, student).argmax(1)
    return torch.where(targets != IGNORE, targets, pseudo)


# ----------------------------------------------------------------------------- MCSCv2


@register_term("certainty_contrastive")
class CertaintyContrastive(Term):
    """MCSCv2: certainty-guided contrastive learning with per-class FIFO memory banks.

    Per student and feature scale, with p the other students' softmax (crossed, as in MCSC)
    area-averaged to the scale, entropy H(p) and β = β0 (1 - t/T):

    - uncertain: the top β fraction of unannotated pixels by entropy (γ_t is that percentile);
    - anchors of class c: annotated pixels with y = c and top-1 p > h, unannotated pixels with
      argmax p = c, top-1 p > h and H ≤ γ_t; ``anchors`` of them sampled per class;
    - positive of class c: the mean embedding of the anchors of class c (detached), estimated
      from the sampled anchors (a uniform random sample of them, so an unbiased estimate of the
      mean over all anchors, and no second projection);
    - bank B_c receives up to a quarter of its size per step: annotated pixels with y ≠ c and
      rank of c < r_l, certain unannotated pixels with rank of c ≥ r_l, uncertain ones with
      rank of c ≥ r_h (ranks from 0 = top-1), keyed by their class (y or argmax p);
    - ``negatives`` keys sampled from B_c; loss of :func:`certainty_contrastive_loss`.

    Losses are summed over scales. Keys are embedded with the step's weights and enter the banks
    after the optimiser step. One bank per student and scale.

    Options: ``bank_size`` (60000 on a GPU, 1024 on a CPU), ``anchors`` (1000), ``negatives``
    (500), ``threshold`` h (0.9), ``beta0`` (0.2), ``temperature`` (0.1), ``rank_low`` r_l (1),
    ``rank_high`` r_h (max(2, C // 2)).
    """

    feature_kind = "encoder"

    def __init__(self, spec, context, members):
        super().__init__(spec, context, members)
        self.projector = _projector_for(members, self)
        default_bank = 60000 if context.device == "cuda" else 1024
        self.bank_size = int(spec.option("bank_size", default_bank))
        self.anchor_count = int(spec.option("anchors", 1000))
        self.negative_count = int(spec.option("negatives", 500))
        self.threshold = float(spec.option("threshold", 0.9))
        self.beta0 = float(spec.option("beta0", 0.2))
        self.temperature = float(spec.option("temperature", 0.1))
        self.rank_low = int(spec.option("rank_low", 1))
        self.rank_high = int(spec.option("rank_high", max(2, context.num_classes // 2)))
        self.banks = nn.ModuleDict({
            _bank_name(m.name, scale): FifoBank(context.num_classes, self.bank_size, PROJECTION_DIM)
            for m in members if not m.spec.is_teacher
            for scale in range(self.projector.scales)
        })
        self._pending: list[tuple[str, int, torch.Tensor, torch.Tensor]] = []

    def beta(self, progress: float) -> float:
        return self.beta0 * (1.0 - min(max(progress, 0.0), 1.0))

    def forward(self, step: Step) -> dict[str, torch.Tensor]:
        self._pending = []
        losses = {}
        targets = known_targets(step)
        for student in step.student_names:
            probabilities = crossed_probabilities(step, student)
            total = 0.0
            for scale, feature_map in enumerate(step.features(student)):
                size = feature_map.shape[-2:]
                sampled = self._sample(probabilities_at(probabilities, size), labels_at(targets, size), step.progress)
                total = total + self._scale_loss(student, scale, flat_pixels(feature_map), sampled, step)
            losses[student] = total
        return losses

    def _sample(self, probabilities: torch.Tensor, targets: torch.Tensor, progress: float) -> dict:
        """Flat masks and sampled positions of anchors and bank keys at one scale."""
        classes = self.context.num_classes
        # Class-major (C, P): reductions and comparisons over a few classes run along long rows.
        class_probabilities = probabilities.transpose(0, 1).reshape(classes, -1)
        flat_targets = targets.reshape(-1)
        known = flat_targets != IGNORE
        confidence, pseudo = class_probabilities.max(0)
        entropy = -(class_probabilities * class_probabilities.clamp_min(1e-8).log()).sum(0)
        uncertain = torch.zeros_like(known)
        beta = self.beta(progress)
        if beta > 0 and bool((~known).any()):
            uncertain = ~known & (entropy > entropy_percentile(entropy[~known], 1.0 - beta))
        label = torch.where(known, flat_targets, pseudo)
        confident = confidence > self.threshold
        class_ids = torch.arange(classes, device=label.device)[:, None]
        is_class = label[None, :] == class_ids  # (C, P)
        anchor_mask = is_class & confident[None, :] & (known | ~uncertain)[None, :]
        rank = class_ranks(class_probabilities)  # (C, P): rank of class c, 0 = top-1
        negative_mask = ~is_class & (
            (known[None, :] & (rank < self.rank_low))
            | ((~known & ~uncertain)[None, :] & (rank >= self.rank_low))
            | (uncertain[None, :] & (rank >= self.rank_high))
        )
        anchors, anchor_valid = sample_per_class(anchor_mask, self.anchor_count)
        keys, key_valid = sample_per_class(negative_mask, max(1, self.bank_size // 4))
        return {"anchors": anchors, "anchor_valid": anchor_valid, "keys": keys, "key_valid": key_valid,
                "label": label}

    def _positive(self, student: str, scale: int, anchors: torch.Tensor, anchor_valid: torch.Tensor, step: Step):
        """(C, D) unit positive per class (mean of its anchors, detached) and (C,) availability."""
        weights = anchor_valid[..., None].float()
        mean = (anchors.detach() * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return F.normalize(mean, dim=1), anchor_valid.any(1)

    def _scale_loss(self, student: str, scale: int, pixels: torch.Tensor, sampled: dict, step: Step):
        anchors = self.projector(student, scale, pixels[sampled["anchors"].reshape(-1)])
        anchors = anchors.view(*sampled["anchors"].shape, -1)
        positive, positive_valid = self._positive(student, scale, anchors, sampled["anchor_valid"], step)
        bank = self.banks[_bank_name(student, scale)]
        negatives, negative_labels = bank.sample(self.negative_count)
        with torch.no_grad():
            keys = self.projector(student, scale, pixels[sampled["keys"].reshape(-1)].detach())
        self._pending.append((student, scale, keys.view(*sampled["keys"].shape, -1), sampled))
        return certainty_contrastive_loss(anchors, sampled["anchor_valid"], positive, positive_valid,
                                          negatives, negative_labels, self.context.num_classes, self.temperature)

    @torch.no_grad()
    def after_optimizer_step(self, step: Step) -> None:
        for student, scale, keys, sampled in self._pending:
            bank = self.banks[_bank_name(student, scale)]
            key_labels = sampled["label"][sampled["keys"]]  # (C, n)
            for queue in range(keys.shape[0]):  # one push per class, not per pixel
                valid = sampled["key_valid"][queue]
                bank.push(queue, keys[queue][valid], key_labels[queue][valid])
        self._pending = []


def _bank_name(student: str, scale: int) -> str:
    return f"{student}_scale{scale}"


# ----------------------------------------------------------------------------- REPS (CCT-R)


@register_term("reps_contrastive")
class RegistrationEnhancedContrastive(CertaintyContrastive):
    """MCSCv2 with registration-enhanced positive sampling (REPS, CCT-R; thesis ch. 6).

    The thesis maps an anchor at point p of volume q through the registration transforms to
    points T_qj(p) of other volumes and takes their features (from a FIFO bank of slice
    feature maps) as extra positives a_p^r. The registration module gives this engine
    registered *label maps* per slice (the registration pseudo-labels of the ``registration``
    term: labels warped from painted slices of the same volume, or from the best-registered
    annotated volume), not per-pixel point correspondences through the transforms. So the
    registered positive of class c is the mean embedding of the pixels that registration labels
    c in the banked slices: a class-consistent positive drawn from other slices and volumes,
    the same role as a_p^r, without per-point correspondence.

    The slice bank (buffers, checkpointed) keeps per slice and class the mean embedding of up
    to ``slice_pixels`` registered pixels, for ``slice_bank`` slices (default: a fifth of the
    training slices, at least 4), fed from the unannotated rows after each optimiser step.
    Final positive: normalise(w1·a_p^l + w2·a_p^r) (``local_weight`` and ``registered_weight``,
    0.5 each), or a_p^l alone for classes absent from the bank.
    """

    def __init__(self, spec, context, members):
        super().__init__(spec, context, members)
        self.slice_pixels = int(spec.option("slice_pixels", 64))
        self.local_weight = float(spec.option("local_weight", 0.5))
        self.registered_weight = float(spec.option("registered_weight", 0.5))
        slices = int(spec.option("slice_bank", max(4, math.ceil(context.slice_count / 5))))
        self.slice_banks = nn.ModuleDict({
            name: SlicePrototypeBank(slices, context.num_classes, PROJECTION_DIM) for name in self.banks
        })

    def _positive(self, student: str, scale: int, anchors: torch.Tensor, anchor_valid: torch.Tensor, step: Step):
        local, local_valid = super()._positive(student, scale, anchors, anchor_valid, step)
        registered, registered_valid = self.slice_banks[_bank_name(student, scale)].class_means()
        mixed = torch.where(registered_valid[:, None],
                            self.local_weight * local + self.registered_weight * registered, local)
        return F.normalize(mixed, dim=1), local_valid

    def _scale_loss(self, student: str, scale: int, pixels: torch.Tensor, sampled: dict, step: Step):
        loss = super()._scale_loss(student, scale, pixels, sampled, step)
        registered = self._registered_prototypes(student, scale, pixels, step)
        if registered is not None:
            self._pending[-1] = (*self._pending[-1], registered)
        return loss

    @torch.no_grad()
    def _registered_prototypes(self, student: str, scale: int, pixels: torch.Tensor, step: Step):
        """Per unannotated row and class, the mean embedding of sampled registered pixels."""
        batch = step.batch
        if batch.pseudo_targets is None or not batch.has_unannotated:
            return None
        rows = batch.images.shape[0]
        height, width = step.features(student)[scale].shape[-2:]
        registered = labels_at(batch.pseudo_targets, (height, width))[batch.annotated:]
        count = rows - batch.annotated
        per_row = height * width
        flat = registered.reshape(count, per_row)
        classes = self.context.num_classes
        candidates = flat[:, None, :] == torch.arange(classes, device=flat.device)[None, :, None]  # (R, C, P)
        positions, valid = sample_per_class(candidates.reshape(count * classes, per_row), self.slice_pixels)
        offsets = (batch.annotated + torch.arange(count, device=flat.device)).repeat_interleave(classes) * per_row
        embedded = self.projector(student, scale, pixels[(positions + offsets[:, None]).reshape(-1)].detach())
        embedded = embedded.view(count * classes, -1, PROJECTION_DIM) * valid[..., None]
        means = F.normalize(embedded.sum(1) / valid.sum(1, keepdim=True).clamp_min(1), dim=1)
        return means.view(count, classes, -1), valid.any(1).view(count, classes)

    @torch.no_grad()
    def after_optimizer_step(self, step: Step) -> None:
        for entry in self._pending:
            if len(entry) == 5:
                student, scale, _, _, (means, present) = entry
                self.slice_banks[_bank_name(student, scale)].push(means, present)
        self._pending = [entry[:4] for entry in self._pending]
        super().after_optimizer_step(step)


class SlicePrototypeBank(nn.Module):
    """FIFO of per-slice class prototypes: (slices, C, D) means and (slices, C) presence."""

    def __init__(self, slices: int, num_classes: int, dim: int):
        super().__init__()
        self.register_buffer("prototypes", torch.zeros(slices, num_classes, dim))
        self.register_buffer("present", torch.zeros(slices, num_classes, dtype=torch.bool))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, prototypes: torch.Tensor, present: torch.Tensor) -> None:
        keep = present.any(1)
        prototypes, present = prototypes[keep], present[keep]
        slots = len(self.prototypes)
        count = min(len(prototypes), slots)
        if count == 0:
            return
        positions = (int(self.pointer) + torch.arange(count, device=self.prototypes.device)) % slots
        self.prototypes[positions] = prototypes[-count:]
        self.present[positions] = present[-count:]
        self.pointer.fill_((int(self.pointer) + count) % slots)

    def class_means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(C, D) unit mean prototype per class over the banked slices, and (C,) availability."""
        weights = self.present.float()[..., None]
        total = (self.prototypes * weights).sum(0)
        available = self.present.any(0)
        return F.normalize(total / weights.sum(0).clamp_min(1.0), dim=1), available
