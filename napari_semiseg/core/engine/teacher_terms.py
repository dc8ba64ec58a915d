"""Terms between students and their EMA teachers (the mean-teacher family)."""

from __future__ import annotations

import torch

from .step import Step
from .terms import Term, register_term


def consistency_mse(student_logits: torch.Tensor, teacher_probabilities: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of softmax probabilities (Tarvainen & Valpola, NeurIPS 2017).

    Args:
        student_logits: (B, C, H, W) with gradient.
        teacher_probabilities: (B, C, H, W) target probabilities (no gradient).
    """
    if student_logits.shape != teacher_probabilities.shape or student_logits.ndim != 4:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher probabilities "
            f"{tuple(teacher_probabilities.shape)} must be the same (B, C, H, W) shape."
        )
    return ((torch.softmax(student_logits.float(), dim=1) - teacher_probabilities.float()) ** 2).mean()


@register_term("consistency")
class ConsistencyTerm(Term):
    """Mean-teacher consistency: each student's softmax on the unannotated rows (strong view
    when the strategy has one) is pulled towards the mean softmax of its EMA teachers (weak view).
    Students without a teacher get no loss from this term."""

    def forward(self, step: Step) -> dict[str, torch.Tensor]:
        losses = {}
        start = step.annotated
        for student in step.student_names:
            teachers = step.teachers_of(student)
            logits = step.logits(student)
            if not teachers or not step.batch.has_unannotated:
                losses[student] = logits.new_zeros((), dtype=torch.float32)
                continue
            target = torch.stack([torch.softmax(step.logits(t)[start:].float(), dim=1) for t in teachers]).mean(0)
            losses[student] = consistency_mse(logits[start:], target)
        return losses
