"""The BoCLIS, BFA and PMCM terms inside one engine step, on tiny random batches (the finite
loss and gradient of every preset's terms: test_strategy_mechanisms.py)."""

import pytest
import torch

from napari_semiseg.core.annotations import IGNORE
from napari_semiseg.core.engine import get_preset
from napari_semiseg.core.engine.bfa_terms import mixed_view
from napari_semiseg.core.engine.boclis_terms import ensemble_pseudo_labels
from napari_semiseg.core.engine.composition import build_terms, feature_kind
from napari_semiseg.core.engine.members import build_members
from napari_semiseg.core.engine.step import Step
from napari_semiseg.core.engine.terms import Batch, TermContext

CPU = torch.device("cpu")


def _setup(strategy, classes=3, size=32):
    torch.manual_seed(0)
    preset = get_preset(strategy)
    members = build_members(preset, classes, "cpu", CPU, seed=0)
    context = TermContext(classes)
    terms = build_terms(preset, context, members, CPU)
    targets = torch.randint(0, classes, (4, size, size))
    targets[2:] = IGNORE  # rows 2, 3 are unannotated
    targets[0, :8] = torch.randint(1, classes, (1,))  # a painted stripe so every class appears
    batch = Batch(torch.randn(4, 1, size, size), targets, annotated=2)
    step = Step(batch, 0.5, context, members, feature_kind(terms), batch.images + 0.1)
    return preset, members, terms, step


def test_heads_come_from_one_forward_and_logits_match():
    _, _, _, step = _setup("pmcm")
    heads = step.heads("student")
    assert step.logits("student") is heads["logits"]
    assert len(heads["decoders"]) == 2 and heads["decoders"][0]["sdf"].shape == (4, 2, 32, 32)


def test_boclis_pseudo_labels_come_from_the_three_teachers_on_unannotated_rows():
    _, _, _, step = _setup("boclis")
    assert step.teachers_of("student") == ["teacher_999", "teacher_99", "teacher_9"]
    labels, weights = ensemble_pseudo_labels(step, "student")
    assert labels.shape == weights.shape == (2, 32, 32)
    assert 0.0 <= float(weights.min()) and float(weights.max()) <= 1.0
    assert ensemble_pseudo_labels(step, "student") is step.cache["ensemble_pseudo_labels"]["student"]


def test_bfa_mixes_painted_and_pseudo_labels_both_ways():
    _, _, _, step = _setup("bfa")
    view = mixed_view(step, "student", torch.Generator().manual_seed(0), min_confidence=0.0)
    assert view.labels.shape == (4, 32, 32) and view.heads["boundary"].shape == (4, 1, 32, 32)
    targets = step.batch.targets
    # rows 0-1: painted box pasted into unannotated images; rows 2-3: the reverse
    assert torch.equal(view.labels[:2][view.from_annotated[:2]], targets[:2][view.from_annotated[:2]])
    assert torch.equal(view.labels[2:][view.from_annotated[2:]], targets[:2][view.from_annotated[2:]])
    assert torch.equal(view.from_annotated[2:], ~view.from_annotated[:2])
    assert not view.from_annotated[:2].all() and view.from_annotated[:2].any()


def test_pmcm_banks_fill_and_travel_in_the_term_state():
    _, _, terms, step = _setup("pmcm")
    mutual = next(t for t in terms if t.spec.kind == "prototype_mutual")
    assert not mutual.bank_filled.any()
    mutual(step)
    assert mutual.bank_filled.all() and mutual.banks.abs().sum() > 0
    assert {"banks", "bank_filled"} <= set(mutual.state_dict())
    consistency = next(t for t in terms if t.spec.kind == "task_consistency")
    assert sum(p.numel() for p in consistency.parameters()) > 0  # its mapping nets train with the student


def test_pmcm_needs_the_dual_decoder_network():
    _, _, terms, step = _setup("bfa")
    from napari_semiseg.core.engine.pmcm_terms import DualSupervisedTerm

    term = DualSupervisedTerm(get_preset("pmcm").terms[0], step.context, [step.member("student")])
    with pytest.raises(ValueError, match="unet_dual_sdf"):
        term(step)
