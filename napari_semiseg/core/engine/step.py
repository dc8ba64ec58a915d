"""What the loss terms of one training step see: the batch, progress and members' outputs.

Outputs are computed lazily and cached, so each member runs forward at most once per step
whatever the number of terms reading it. When any term of the strategy reads features, every
member's forward is its ``forward_features`` (or ``forward_decoder_features``), which returns
the logits and the multi-scale maps of the same pass. Teachers (EMA members) run without
gradient on the weak view; students on the strong view when the strategy has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .data import Batch
from .members import Member
from .terms import TermContext

FEATURE_METHODS = {"encoder": "forward_features", "decoder": "forward_decoder_features", "heads": "forward_heads"}


@dataclass
class MemberOutput:
    logits: torch.Tensor
    features: list[torch.Tensor] | None = None
    heads: dict | None = None


class Step:
    """One training step as the terms see it.

    Args:
        batch: the batch on the training device; its ``images`` are the weak view.
        progress: fraction of the budget done, in [0, 1].
        context: number of classes, boundary weight, device.
        members: students and teachers.
        feature_kind: ``None``, ``"encoder"``, ``"decoder"`` or ``"heads"``: which multi-scale maps (or,
            for ``"heads"``, the dict of ``forward_heads`` of a multi-head network) the
            forward pass returns with the logits.
        strong_images: the students' view of the batch, or None when it is the weak view.
    """

    def __init__(
        self,
        batch: Batch,
        progress: float,
        context: TermContext,
        members: Sequence[Member],
        feature_kind: str | None = None,
        strong_images: torch.Tensor | None = None,
        callers: dict | None = None,
    ):
        if feature_kind is not None and feature_kind not in FEATURE_METHODS:
            raise ValueError(f"feature_kind must be one of {', '.join(FEATURE_METHODS)} or None.")
        self.batch = batch
        self.progress = progress
        self.context = context
        self.feature_kind = feature_kind
        self.strong_images = strong_images
        self._members = {m.name: m for m in members}
        # name -> call(images, method): a DDP wrapper under torchrun, so every forward syncs gradients
        self._callers = callers or {}
        self._outputs: dict[str, MemberOutput] = {}
        self.cache: dict = {}  # results terms share within this step (pseudo-labels, extra views)

    @property
    def student_names(self) -> list[str]:
        return [name for name, m in self._members.items() if not m.spec.is_teacher]

    @property
    def teacher_names(self) -> list[str]:
        return [name for name, m in self._members.items() if m.spec.is_teacher]

    @property
    def annotated(self) -> int:
        return self.batch.annotated

    def member(self, name: str) -> Member:
        try:
            return self._members[name]
        except KeyError:
            raise KeyError(f"no member '{name}' in this strategy ({', '.join(self._members)})") from None

    def teachers_of(self, student: str) -> list[str]:
        return [name for name, m in self._members.items() if m.spec.ema_of == student]

    def images_for(self, name: str) -> torch.Tensor:
        """The view member ``name`` sees: strong for students when there is one, else weak."""
        if self.strong_images is not None and not self.member(name).spec.is_teacher:
            return self.strong_images
        return self.batch.images

    def output(self, name: str) -> MemberOutput:
        if name not in self._outputs:
            self._outputs[name] = self._forward(self.member(name))
        return self._outputs[name]

    def logits(self, name: str) -> torch.Tensor:
        return self.output(name).logits

    def features(self, name: str) -> list[torch.Tensor]:
        """Multi-scale maps ``[full, 1/4, 1/8]`` of member ``name`` (same forward as its logits)."""
        features = self.output(name).features
        if features is None:
            raise RuntimeError("features were not computed: the term reading them must set feature_kind")
        return features

    def heads(self, name: str) -> dict:
        """All outputs of a multi-head network (``forward_heads``; feature_kind ``"heads"``)."""
        heads = self.output(name).heads
        if heads is None:
            raise RuntimeError("heads were not computed: the term reading them must set feature_kind = 'heads'")
        return heads

    def student_logits(self) -> dict[str, torch.Tensor]:
        return {name: self.logits(name) for name in self.student_names}

    def _forward(self, member: Member) -> MemberOutput:
        images = self.images_for(member.name)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not member.spec.is_teacher):
            if self.feature_kind is None:
                return MemberOutput(self._call(member, images, "forward"))
            if self.feature_kind == "heads":
                heads = self._call(member, images, "forward_heads")
                return MemberOutput(heads["logits"], heads=heads)
            logits, features = self._call(member, images, FEATURE_METHODS[self.feature_kind])
            return MemberOutput(logits, features)

    def _call(self, member: Member, images: torch.Tensor, method: str):
        caller = self._callers.get(member.name)
        if caller is not None:
            return caller(images, method)
        return getattr(member.network, method)(images)
