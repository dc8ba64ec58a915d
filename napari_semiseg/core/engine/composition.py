"""Assembling a strategy's terms, and summing their weighted losses for one step."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .members import Member
from .presets import StrategyPreset
from .schedules import get_schedule
from .step import Step
from .terms import Term, TermContext, build_term


def build_terms(preset: StrategyPreset, context: TermContext, members: Sequence[Member],
                device: torch.device) -> nn.ModuleList:
    """One :class:`Term` per ``TermSpec`` of the preset, on ``device``."""
    terms = nn.ModuleList(build_term(spec, context, members) for spec in preset.terms)
    for spec in preset.terms:
        get_schedule(spec.schedule)  # unknown schedule names fail before training starts
    feature_kind(terms)
    return terms.to(device)


def feature_kind(terms: Sequence[Term]) -> str | None:
    """The features the step's forward must return: at most one kind per strategy."""
    kinds = {term.feature_kind for term in terms if term.feature_kind is not None}
    if len(kinds) > 1:
        raise ValueError(f"the terms ask for different feature maps ({', '.join(sorted(kinds))}); use one kind.")
    return next(iter(kinds), None)


def weighted_losses(terms: Sequence[Term], step: Step) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum over terms of weight x schedule(progress) x (sum over students of the term's loss).

    Returns the total (with gradient) and, per term kind, its unweighted mean over students.
    """
    total = step.batch.images.new_zeros((), dtype=torch.float32)
    report: dict[str, float] = {}
    for term in terms:
        weight = term.spec.weight * get_schedule(term.spec.schedule)(step.progress)
        per_member = term(step)
        if not per_member:
            continue
        term_sum = sum(per_member.values())
        report[term.spec.kind] = float(term_sum.detach()) / len(per_member)
        total = total + weight * term_sum
    return total, report


def trainable_groups(terms: Sequence[Term]) -> list[dict]:
    """Optimiser parameter groups for the terms that own trainable parameters."""
    groups = []
    for term in terms:
        parameters = [p for p in term.parameters() if p.requires_grad]
        if parameters:
            groups.append({"params": parameters, "lr": term.learning_rate, "initial_lr": term.learning_rate})
    return groups
