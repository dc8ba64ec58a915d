"""PMCM terms: a dual-decoder network with segmentation and signed-distance heads, prototypical
mutual learning between the decoders, and cyclic task consistency (Lin, Chen, Chen, Digital
Signal Processing 169, 2026; methods.md §8). Multi-class throughout.

The student is ``unet_dual_sdf``: one encoder, decoders ``a`` (transposed convolution) and ``b``
(bilinear), each with a segmentation head and a signed-distance head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses import boundary_band, masked_cross_entropy, masked_dice_loss, one_hot_with_ignore
from ..losses.distance import DEFAULT_SDF_SCALE, signed_distance_targets
from ..losses.prototypes import (
    blend_prototypes,
    ema_update_prototypes,
    masked_average_prototypes,
    prototype_reliability,
)
from ..losses.task_consistency import TaskMappings, cyclic_task_consistency
from ..losses.teachers import normalised_entropy
from .schedules import sigmoid_rampup
from .step import Step
from .terms import Term, register_term

SDF_LOSS_WEIGHT = 0.3  # relative to Dice + CE, as in DTC (Luo et al., AAAI 2021), whose SDF head PMCM builds on


def _decoders(step: Step, student: str) -> list[dict]:
    heads = step.heads(student)
    if "decoders" not in heads:
        raise ValueError(f"member '{student}' has no decoders with SDF heads: PMCM needs the 'unet_dual_sdf' network.")
    return heads["decoders"]


@register_term("dual_supervised")
class DualSupervisedTerm(Term):
    """Each decoder's segmentation (masked Dice + CE, optional boundary weighting) and signed
    distance (MSE of tanh(head) against clip(d/D, -1, 1), per annotated slice) on annotated rows.

    Options: ``sdf_scale`` D in pixels (15), ``sdf_weight`` (0.3).
    """

    feature_kind = "heads"

    def __init__(self, spec, context, members):
        super().__init__(spec, context, members)
        self.sdf_scale = float(spec.option("sdf_scale", DEFAULT_SDF_SCALE))
        self.sdf_weight = float(spec.option("sdf_weight", SDF_LOSS_WEIGHT))

    def forward(self, step: Step) -> dict[str, torch.Tensor]:
        targets = step.batch.targets[: step.annotated]
        weight = None
        if self.context.boundary_weight > 0:
            weight = 1.0 + self.context.boundary_weight * boundary_band(targets, self.context.num_classes)
        sdf_target, valid = signed_distance_targets(targets, self.context.num_classes, self.sdf_scale)
        losses = {}
        for student in step.student_names:
            total = 0.0
            for decoder in _decoders(step, student):
                logits = decoder["logits"][: step.annotated]
                sdf = torch.tanh(decoder["sdf"][: step.annotated].float())
                squared = (sdf - sdf_target) ** 2 * valid
                sdf_loss = squared.sum() / (valid.sum() * sdf.shape[1]).clamp_min(1.0)
                total = total + masked_dice_loss(logits, targets) + masked_cross_entropy(logits, targets, weight)
                total = total + self.sdf_weight * sdf_loss
            losses[student] = total / 2
        return losses


@register_term("prototype_mutual")
class PrototypeMutualTerm(Term):
    """Prototypical mutual learning between the two decoders on the unannotated rows.

    For each decoder j, class prototypes are the masked average of its last feature map over
    the ground truth (annotated rows) and over its own argmax (unannotated rows), blended with
    an unannotated share growing from 0 to ``max_share`` on the sigmoid ramp, and kept in an EMA
    bank (``momentum``) saved with the checkpoint. Decoder i learns j's argmax (CE on logits)
    where j's entropy is lower than its own, weighted by j's reliability
    ρ = 1 - mean_c (cos(f, P_c) - p_c)².

    Options: ``momentum`` (0.9), ``max_share`` (0.5).
    """

    feature_kind = "heads"

    def __init__(self, spec, context, members):
        super().__init__(spec, context, members)
        self.momentum = float(spec.option("momentum", 0.9))
        self.max_share = float(spec.option("max_share", 0.5))
        students = [m for m in members if not m.spec.is_teacher]
        channels = students[0].network.feature_channels[0] if students else 1
        self.register_buffer("banks", torch.zeros(2, context.num_classes, channels))
        self.register_buffer("bank_filled", torch.zeros(2, context.num_classes, dtype=torch.bool))

    def forward(self, step: Step) -> dict[str, torch.Tensor]:
        losses = {}
        for student in step.student_names:
            decoders = _decoders(step, student)
            if not step.batch.has_unannotated:
                losses[student] = decoders[0]["logits"].new_zeros((), dtype=torch.float32)
                continue
            start = step.annotated
            probabilities = [torch.softmax(d["logits"].detach().float(), dim=1) for d in decoders]
            reliability = [self._reliability(j, decoders[j]["features"].detach(), probabilities[j], step)
                           for j in range(2)]
            entropy = [normalised_entropy(p[start:]) for p in probabilities]
            total = 0.0
            for i, j in ((0, 1), (1, 0)):
                teacher_labels = probabilities[j][start:].argmax(dim=1)
                weight = reliability[j] * (entropy[j] < entropy[i]).float()
                total = total + masked_cross_entropy(decoders[i]["logits"][start:], teacher_labels, weight)
            losses[student] = total / 2
        return losses

    def _reliability(self, decoder: int, features: torch.Tensor, probabilities: torch.Tensor, step: Step):
        """Update decoder ``decoder``'s bank with this batch's prototypes; ρ of its unannotated rows."""
        start = step.annotated
        features = features.float()
        masks_l, _ = one_hot_with_ignore(step.batch.targets[:start], self.context.num_classes)
        labelled, labelled_present = masked_average_prototypes(features[:start], masks_l)
        argmax = probabilities[start:].argmax(dim=1)
        masks_u = F.one_hot(argmax, self.context.num_classes).permute(0, 3, 1, 2).float()
        unlabelled, unlabelled_present = masked_average_prototypes(features[start:], masks_u)
        share = self.max_share * sigmoid_rampup(step.progress)
        blended, present = blend_prototypes(labelled, labelled_present, unlabelled, unlabelled_present, share)
        bank, filled = ema_update_prototypes(self.banks[decoder], self.bank_filled[decoder], blended, present,
                                             self.momentum)
        self.banks[decoder] = bank
        self.bank_filled[decoder] = filled
        return prototype_reliability(features[start:], probabilities[start:], bank)


@register_term("task_consistency")
class TaskConsistencyTerm(Term):
    """Cyclic consistency between each decoder's segmentation and SDF heads through two small
    1×1 mapping networks (owned by the term, trained with the student), on every row.

    ``mapping_weight`` · (each translation matches the other head's detached output) +
    ``cycle_weight`` · (round trips give back their start). Options: ``mapping_weight`` (0.05),
    ``cycle_weight`` (0.005), ``hidden`` (16).
    """

    feature_kind = "heads"

    def __init__(self, spec, context, members):
        super().__init__(spec, context, members)
        self.mapping_weight = float(spec.option("mapping_weight", 0.05))
        self.cycle_weight = float(spec.option("cycle_weight", 0.005))
        self.mappings = TaskMappings(context.num_classes, int(spec.option("hidden", 16)))

    def forward(self, step: Step) -> dict[str, torch.Tensor]:
        losses = {}
        for student in step.student_names:
            total = 0.0
            for decoder in _decoders(step, student):
                mapping, cycle = cyclic_task_consistency(self.mappings, decoder["logits"],
                                                         torch.tanh(decoder["sdf"].float()))
                total = total + self.mapping_weight * mapping + self.cycle_weight * cycle
            losses[student] = total / 2
        return losses
