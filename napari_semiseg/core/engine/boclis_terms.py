"""BoCLIS terms: uncertainty-weighted pseudo-labels from K EMA teachers and a boundary-guided
patch contrastive loss (Yang, Zhuang, Sun, Wang, Su, IEEE TMI 44(7), 2025; methods.md §6).

The preset's teachers are EMA copies of the student with decays from conservative (0.999) to
radical (0.9); they see the weak view, the student the strong one.
"""

from __future__ import annotations

import torch
from torch import nn

from ..annotations import IGNORE
from ..losses.patch_contrastive import (
    boundary_guided_regions,
    patch_embeddings,
    sample_patches,
    supervised_contrastive_loss,
)
from ..losses.teachers import aggregate_teachers, weighted_pseudo_label_loss
from .step import Step
from .terms import Term, register_term


def ensemble_pseudo_labels(step: Step, student: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Hard pseudo-labels and weights ω of the unannotated rows from the student's teachers.

    None when the student has no teacher or the batch has no unannotated rows. Cached on the
    step, so the pseudo-label and contrastive terms share one aggregation.
    """
    cache = step.cache.setdefault("ensemble_pseudo_labels", {})
    if student not in cache:
        teachers = step.teachers_of(student)
        if not teachers or not step.batch.has_unannotated:
            cache[student] = None
        else:
            start = step.annotated
            probabilities = torch.stack([torch.softmax(step.logits(t)[start:].float(), dim=1) for t in teachers])
            _, labels, weights = aggregate_teachers(probabilities)
            cache[student] = (labels, weights)
    return cache[student]


@register_term("teacher_ensemble")
class TeacherEnsembleTerm(Term):
    """L_u: ω-weighted CE + Dice of the student (strong view) against the argmax of its teachers'
    entropy-weighted mean prediction (weak view), on the unannotated rows."""

    def forward(self, step: Step) -> dict[str, torch.Tensor]:
        losses = {}
        for student in step.student_names:
            logits = step.logits(student)
            pseudo = ensemble_pseudo_labels(step, student)
            if pseudo is None:
                losses[student] = logits.new_zeros((), dtype=torch.float32)
                continue
            labels, weights = pseudo
            losses[student] = weighted_pseudo_label_loss(logits[step.annotated:], labels, weights)
        return losses


@register_term("patch_contrastive")
class PatchContrastiveTerm(Term):
    """Boundary-guided patch contrast on the student's stride-4 encoder map.

    Labels come from the ground truth on annotated rows and from the teachers' aggregated
    pseudo-labels on the rest, where ω ≥ ``min_weight``. Each student owns a projection head
    (two 1-layer MLPs: channels → ``hidden`` → ``dim``), trained with it.

    Options: ``per_region`` patches per image, class and region (8), ``temperature`` (0.1),
    ``min_weight`` (0.5), ``window`` in feature pixels (3), ``hidden`` (128), ``dim`` (64).
    """

    feature_kind = "encoder"
    FEATURE_LEVEL = 1  # [full, 1/4, 1/8]: the 1/4 map

    def __init__(self, spec, context, members):
        super().__init__(spec, context, members)
        hidden, dim = int(spec.option("hidden", 128)), int(spec.option("dim", 64))
        self.per_region = int(spec.option("per_region", 8))
        self.temperature = float(spec.option("temperature", 0.1))
        self.min_weight = float(spec.option("min_weight", 0.5))
        self.window = int(spec.option("window", 3))
        self.strides = {}
        projectors = {}
        for member in members:
            if member.spec.is_teacher:
                continue
            channels = member.network.feature_channels[self.FEATURE_LEVEL]
            self.strides[member.name] = member.network.feature_strides[self.FEATURE_LEVEL]
            projectors[member.name] = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.projectors = nn.ModuleDict(projectors)
        self.generator = torch.Generator().manual_seed(int(spec.option("seed", 0)))

    def forward(self, step: Step) -> dict[str, torch.Tensor]:
        losses = {}
        for student in step.student_names:
            features = step.features(student)[self.FEATURE_LEVEL]
            labels = self._labels(step, student)
            regions = boundary_guided_regions(labels, self.context.num_classes)
            samples = sample_patches(regions, self.per_region, self.generator)
            embedded = self.projectors[student](patch_embeddings(features, samples, self.strides[student], self.window))
            losses[student] = supervised_contrastive_loss(embedded, samples.label, samples.anchors, self.temperature)
        return losses

    def _labels(self, step: Step, student: str) -> torch.Tensor:
        annotated = step.batch.targets[: step.annotated]
        pseudo = ensemble_pseudo_labels(step, student)
        if pseudo is None:
            return annotated
        labels, weights = pseudo
        confident = torch.where(weights >= self.min_weight, labels, torch.full_like(labels, IGNORE))
        return torch.cat([annotated, confident])
