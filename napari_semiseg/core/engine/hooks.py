"""Hooks run after every optimiser step: EMA teachers, then the terms' own state updates."""

from __future__ import annotations

from typing import Protocol, Sequence

import torch
from torch import nn

from .members import Member


class Hook(Protocol):
    def after_optimizer_step(self, step) -> None: ...


class EmaUpdate:
    """Moves a teacher towards its student: t <- d t + (1 - d) s, parameters only.

    As in the mean-teacher reference code (SSL4MIS), the decay is ``min(d, 1 - 1/(n + 1))``
    at the teacher's n-th update, so a new teacher follows its randomly initialised student
    closely at first instead of averaging in its starting weights for hundreds of steps.
    Buffers (BatchNorm statistics) are copied from the student.

    Args:
        steps: updates already made (the iteration when resuming).
    """

    def __init__(self, teacher: Member, student: Member, steps: int = 0):
        self.teacher = teacher
        self.student = student
        self.decay = teacher.spec.ema_decay
        self.steps = steps

    def after_optimizer_step(self, step=None) -> None:
        self.steps += 1
        update_ema(self.teacher.network, self.student.network, min(self.decay, 1.0 - 1.0 / (self.steps + 1)))


@torch.no_grad()
def update_ema(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """In place: teacher parameters = decay * teacher + (1 - decay) * student; buffers copied."""
    teacher_parameters = [p for p in teacher.parameters()]
    student_parameters = [p.detach() for p in student.parameters()]
    torch._foreach_mul_(teacher_parameters, decay)
    torch._foreach_add_(teacher_parameters, student_parameters, alpha=1.0 - decay)
    for teacher_buffer, student_buffer in zip(teacher.buffers(), student.buffers()):
        teacher_buffer.copy_(student_buffer)


def build_hooks(members: Sequence[Member], terms: Sequence[nn.Module], steps: int = 0) -> list[Hook]:
    """EMA updates for every teacher (in member order), then every term's own update."""
    by_name = {m.name: m for m in members}
    hooks: list[Hook] = [EmaUpdate(m, by_name[m.spec.ema_of], steps) for m in members if m.spec.is_teacher]
    return hooks + list(terms)
