"""Loss terms: each maps one training step to a loss per member.

A term is an ``nn.Module`` (:class:`Term`), so it can own trainable parameters (projection
heads, mapping networks: the optimiser trains them) and state kept as buffers (memory banks,
prototype banks: saved in checkpoints, restored on resume). Simple terms stay plain functions
``term(batch, logits_by_student, context) -> {student: loss}``, wrapped by :class:`FunctionTerm`.

Writing a new term::

    @register_term("my_term")
    class MyTerm(Term):
        feature_kind = "encoder"            # or None / "decoder": features come from the same forward
        def forward(self, step):            # step: engine.step.Step
            return {name: f(step.features(name)) for name in step.student_names}

and put its module in :data:`TERM_MODULES` so the registry finds it. A term that needs more of
the loop declares it with class attributes (:data:`CAPABILITIES`); a term function with
:func:`term_capabilities`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import nn

from ..annotations import IGNORE
from ..losses import boundary_band, masked_cross_entropy, masked_dice_loss
from .data import Batch  # re-exported: terms are written against engine.terms.Batch


@dataclass(frozen=True)
class TermContext:
    """What every term may need to know about the run.

    Args:
        num_classes: classes, background included.
        boundary_weight: extra CE weight on label boundaries for supervised terms.
        device: ``cpu``, ``cuda`` or ``mps``; terms size their banks by it.
        slice_count: training slices in the run (some banks are sized from it).
    """

    num_classes: int
    boundary_weight: float = 0.0
    device: str = "cpu"
    slice_count: int = 0


TermFunction = Callable[[Batch, dict[str, torch.Tensor], TermContext], dict[str, torch.Tensor]]

# What a term tells the loop about itself, with the default of a term that declares nothing.
CAPABILITIES = {"supports_ddp": True, "needs_registration_targets": False}


def term_capabilities(**flags: bool):
    """Function decorator declaring :data:`CAPABILITIES` of a plain term function."""
    unknown = sorted(set(flags) - set(CAPABILITIES))
    if unknown:
        raise ValueError(f"unknown term capabilities {', '.join(unknown)}; known: {', '.join(CAPABILITIES)}.")

    def declare(function: TermFunction) -> TermFunction:
        for name, value in flags.items():
            setattr(function, name, bool(value))
        return function

    return declare


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


@term_capabilities(needs_registration_targets=True)
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


if TYPE_CHECKING:
    from .members import Member
    from .presets import TermSpec
    from .step import Step


class Term(nn.Module):
    """A loss term built from its :class:`TermSpec`, the run's context and the members.

    Subclasses implement :meth:`forward` (``step -> {student name: loss}``) and may override
    :meth:`after_optimizer_step` to update state (banks) once the weights have moved.

    Attributes:
        feature_kind: ``"encoder"`` or ``"decoder"`` if the term reads multi-scale features
            (``step.features(name)``); the step then runs each member's ``forward_features``
            (or ``forward_decoder_features``) once instead of its plain forward.
        learning_rate: for the term's own parameters, if any (default: the first student's).
        supports_ddp: False if the term cannot run under distributed data-parallel training
            (it runs a network a second time per step); the loop then refuses to start under
            torchrun.
        needs_registration_targets: True if the term reads ``batch.pseudo_targets`` and
            ``batch.pseudo_weights``: the loop then computes registration pseudo-labels first.
    """

    feature_kind: str | None = None
    supports_ddp: bool = CAPABILITIES["supports_ddp"]
    needs_registration_targets: bool = CAPABILITIES["needs_registration_targets"]

    def __init__(self, spec: "TermSpec", context: TermContext, members: Sequence["Member"]):
        super().__init__()
        self.spec = spec
        self.context = context
        students = [m for m in members if not m.spec.is_teacher]
        self.learning_rate = float(spec.option("learning_rate", students[0].spec.learning_rate if students else 1e-3))

    def forward(self, step: "Step") -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def after_optimizer_step(self, step: "Step") -> None:
        """Called after every optimiser step (bank updates); nothing by default."""


class FunctionTerm(Term):
    """A plain term function over the students' logits, as a :class:`Term`, with the capabilities
    the function declares (:func:`term_capabilities`)."""

    def __init__(self, function: TermFunction, spec: "TermSpec", context: TermContext, members: Sequence["Member"]):
        super().__init__(spec, context, members)
        self.function = function
        for name in CAPABILITIES:
            setattr(self, name, capability(function, name))

    def forward(self, step: "Step") -> dict[str, torch.Tensor]:
        return self.function(step.batch, step.student_logits(), step.context)


TERMS: dict[str, TermFunction | type[Term]] = {
    "supervised": supervised_term,
    "cross_pseudo": cross_pseudo_term,
    "registration": registration_term,
}

# Modules that register further terms with @register_term; imported on first look-up.
TERM_MODULES = ("teacher_terms", "contrastive", "boclis_terms", "bfa_terms", "pmcm_terms")


def register_term(kind: str):
    """Class decorator (or function wrapper) adding a term kind to :data:`TERMS`."""

    def add(term):
        TERMS[kind] = term
        return term

    return add


def _load_term_modules() -> None:
    for module in TERM_MODULES:
        importlib.import_module(f"{__package__}.{module}")


def get_term(kind: str) -> TermFunction | type[Term]:
    _load_term_modules()
    try:
        return TERMS[kind]
    except KeyError:
        raise ValueError(f"Unknown loss term '{kind}'; known terms: {', '.join(TERMS)}.") from None


def capability(term: TermFunction | type[Term] | Term, name: str) -> bool:
    """A capability flag (see :data:`CAPABILITIES`) of a term class, instance or function."""
    return bool(getattr(term, name, CAPABILITIES[name]))


def kind_capability(kind: str, name: str) -> bool:
    """A capability flag of the registered term ``kind``, known before any term is built."""
    return capability(get_term(kind), name)


def build_term(spec: "TermSpec", context: TermContext, members: Sequence["Member"]) -> Term:
    """The :class:`Term` for ``spec``: a class is instantiated, a function wrapped."""
    kind = get_term(spec.kind)
    reader = _OptionReader(spec)
    term = kind(reader, context, members) if isinstance(kind, type) and issubclass(kind, Term) \
        else FunctionTerm(kind, reader, context, members)
    term.spec = spec
    unknown = sorted(set(dict(spec.options)) - reader.read)
    if unknown:  # a misspelt option would otherwise leave the term on its default, silently
        raise ValueError(f"term '{spec.kind}' has no option {', '.join(map(repr, unknown))}; "
                         f"its options: {', '.join(sorted(reader.read))}.")
    return term


class _OptionReader:
    """A term spec that notes which options the term reads while it is built (terms read all
    their options in their constructor)."""

    def __init__(self, spec: "TermSpec"):
        self._spec = spec
        self.read: set[str] = set()

    def option(self, name: str, default=None):
        self.read.add(name)
        return self._spec.option(name, default)

    def __getattr__(self, name: str):
        return getattr(self._spec, name)
