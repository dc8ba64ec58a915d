"""BFA terms: copy-paste mixing, an early boundary head and boundary prototype alignment in a
mean teacher (Guo, Wang et al., Pattern Recognition 2025; methods.md §7).

Annotated and unannotated images of the batch are paired, and a box of each is pasted into
the other. The mixed label maps hold ground truth (from the annotated image) next to the
teacher's confident pseudo-labels (from the unannotated one), so their boundary bands hold
both kinds of boundaries. The student's early boundary head learns those bands, and per class
the boundary prototypes of the pseudo-labelled parts are pulled to those of the ground-truth
parts. Boundaries are in-plane: training batches are 2D slices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..annotations import IGNORE
from ..losses.mixing import bidirectional_copy_paste, random_box_masks
from ..losses.prototypes import masked_average_prototypes, prototype_alignment_loss
from ..losses.segmentation import boundary_band, class_boundary_bands
from .step import Step
from .terms import Term, register_term

BOX_FRACTION = 2 / 3  # of each side, as in bidirectional copy-paste (BCP)
MIN_CONFIDENCE = 0.8


class MixedView:
    """The student's heads on the mixed images, with the mixed labels and their origin."""

    def __init__(self, heads: dict, labels: torch.Tensor, from_annotated: torch.Tensor):
        self.heads = heads
        self.labels = labels
        self.from_annotated = from_annotated


def mixed_view(step: Step, student: str, generator: torch.Generator, min_confidence: float) -> MixedView | None:
    """Mix annotated and unannotated rows both ways and run the student's heads on the result.

    Cached on the step: the boundary-head and alignment terms share one forward pass.
    None when the batch lacks annotated or unannotated rows, or the student has no teacher.
    """
    cache = step.cache.setdefault("bfa_mixed", {})
    if student in cache:
        return cache[student]
    teachers = step.teachers_of(student)
    pairs = min(step.annotated, step.batch.images.shape[0] - step.annotated)
    if not teachers or pairs == 0:
        cache[student] = None
        return None
    start = step.annotated
    images, targets = step.batch.images, step.batch.targets
    with torch.no_grad():
        probabilities = torch.softmax(step.logits(teachers[0])[start:start + pairs].float(), dim=1)
        confidence, pseudo = probabilities.max(dim=1)
        pseudo = torch.where(confidence >= min_confidence, pseudo, torch.full_like(pseudo, IGNORE))
    box = random_box_masks(pairs, *images.shape[-2:], fraction=BOX_FRACTION, generator=generator).to(images.device)
    mixed_images = bidirectional_copy_paste(images[:pairs], images[start:start + pairs], box)
    mixed_labels = bidirectional_copy_paste(targets[:pairs], pseudo, box)
    from_annotated = bidirectional_copy_paste(torch.ones_like(box), torch.zeros_like(box), box)
    network = step.member(student).network
    if images.is_contiguous(memory_format=torch.channels_last):
        mixed_images = mixed_images.contiguous(memory_format=torch.channels_last)
    cache[student] = MixedView(network.forward_heads(mixed_images), mixed_labels, from_annotated)
    return cache[student]


def boundary_head_loss(boundary_logits: torch.Tensor, band: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Masked binary cross-entropy plus soft Dice of (B, 1, H, W) boundary logits against a (B, H, W) band.

    The Dice part keeps the thin band from being drowned by the many non-boundary pixels.
    """
    logits = boundary_logits[:, 0].float()
    known = known.float()
    count = known.sum().clamp_min(1.0)
    bce = (F.binary_cross_entropy_with_logits(logits, band, reduction="none") * known).sum() / count
    probability = torch.sigmoid(logits) * known
    dice = 1 - (2 * (probability * band).sum() + 1e-5) / (probability.sum() + band.sum() + 1e-5)
    return bce + dice


class _MixedTerm(Term):
    feature_kind = "heads"
    supports_ddp = False  # the student runs a second time per step, on the mixed images

    def __init__(self, spec, context, members):
        super().__init__(spec, context, members)
        self.min_confidence = float(spec.option("min_confidence", MIN_CONFIDENCE))
        self.generator = torch.Generator().manual_seed(int(spec.option("seed", 0)))

    def forward(self, step: Step) -> dict[str, torch.Tensor]:
        losses = {}
        for student in step.student_names:
            view = mixed_view(step, student, _shared_generator(step, self.generator), self.min_confidence)
            losses[student] = self.loss(view) if view is not None else step.logits(student).new_zeros(())
        return losses

    def loss(self, view: MixedView) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def _shared_generator(step: Step, generator: torch.Generator) -> torch.Generator:
    """The first mixed term's generator draws the boxes (the view is cached after that)."""
    return step.cache.setdefault("bfa_generator", generator)


@register_term("boundary_head")
class BoundaryHeadTerm(_MixedTerm):
    """The early boundary head learns the boundary band of the mixed label maps (from step 0)."""

    def loss(self, view: MixedView) -> torch.Tensor:
        known = view.labels != IGNORE
        band = boundary_band(view.labels, self.context.num_classes)
        return boundary_head_loss(view.heads["boundary"], band, known)


@register_term("boundary_alignment")
class BoundaryAlignmentTerm(_MixedTerm):
    """Per class, boundary prototypes (masked average pooling of the last decoder map on each
    class's boundary band) of pseudo-labelled pixels are pulled to those of ground-truth pixels:
    1 - cosine, ground-truth side detached."""

    def loss(self, view: MixedView) -> torch.Tensor:
        features = view.heads["decoder"][0].float()
        bands = class_boundary_bands(view.labels, self.context.num_classes)
        origin = view.from_annotated.unsqueeze(1).to(bands.dtype)
        labelled, labelled_present = masked_average_prototypes(features, bands * origin)
        pseudo, pseudo_present = masked_average_prototypes(features, bands * (1 - origin))
        return prototype_alignment_loss(pseudo, pseudo_present, labelled, labelled_present)
