"""Engine parts on tiny hand-computed tensors: steps, EMA teachers, strong views, loss terms, banks."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from napari_semiseg.core.engine.checkpoint import load_checkpoint, save_checkpoint
from napari_semiseg.core.engine.contrastive import CertaintyContrastive, FifoBank, SlicePrototypeBank
from napari_semiseg.core.engine.data import Batch
from napari_semiseg.core.engine.hooks import EmaUpdate, build_hooks, update_ema
from napari_semiseg.core.engine.loop import _optimizer, _restore
from napari_semiseg.core.engine.members import Member
from napari_semiseg.core.engine.presets import MemberSpec, StrategyPreset, TermSpec, options
from napari_semiseg.core.engine.step import Step
from napari_semiseg.core.engine.teacher_terms import ConsistencyTerm, consistency_mse
from napari_semiseg.core.engine.terms import FunctionTerm, TermContext, build_term, supervised_term
from napari_semiseg.core.engine.views import strong_view
from napari_semiseg.core.losses.contrastive import (
    certainty_contrastive_loss,
    class_balanced_contrastive_loss,
    sample_per_class,
)

IGNORE = -1


class TinyNet(nn.Module):
    """A 1x1-conv 'network' with the engine's interface, counting its forward passes."""

    def __init__(self, classes=2, channels=(3, 4, 5)):
        super().__init__()
        self.head = nn.Conv2d(1, classes, 1)
        self.maps = nn.ModuleList(nn.Conv2d(1, c, 1) for c in channels)
        self.feature_channels = tuple(channels)
        self.calls = 0

    def forward(self, x):
        return self.forward_features(x)[0]

    def forward_features(self, x):
        self.calls += 1
        features = [self.maps[0](x), self.maps[1](x[:, :, ::4, ::4]), self.maps[2](x[:, :, ::8, ::8])]
        return self.head(x), features


def _members(*specs, classes=2):
    return [Member(spec, TinyNet(classes), {}) for spec in specs]


def _batch(rows=4, annotated=2, size=8, classes=2):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(rows, 1, size, size, generator=generator)
    targets = torch.full((rows, size, size), IGNORE)
    targets[:annotated] = torch.randint(0, classes, (annotated, size, size), generator=generator)
    return Batch(images, targets, annotated)


# ----------------------------------------------------------------------------- step


def test_step_runs_each_member_once_and_teachers_without_gradient_on_the_weak_view():
    members = _members(MemberSpec("a", "x", 1e-3), MemberSpec("t", "x", 0.0, ema_of="a"))
    batch = _batch()
    strong = batch.images + 1.0
    step = Step(batch, 0.5, TermContext(2), members, feature_kind="encoder", strong_images=strong)
    logits, features = step.logits("a"), step.features("a")
    step.logits("a"), step.features("t"), step.logits("t")
    assert members[0].network.calls == 1 and members[1].network.calls == 1
    assert [f.shape[1] for f in features] == [3, 4, 5] and logits.requires_grad
    assert not step.logits("t").requires_grad
    assert step.images_for("a") is strong and step.images_for("t") is batch.images
    assert step.student_names == ["a"] and step.teachers_of("a") == ["t"]
    with pytest.raises(RuntimeError, match="feature_kind"):
        Step(batch, 0.5, TermContext(2), members).features("a")


def test_function_terms_see_only_the_students():
    members = _members(MemberSpec("a", "x", 1e-3), MemberSpec("t", "x", 0.0, ema_of="a"))
    term = build_term(TermSpec("supervised"), TermContext(2), members)
    assert isinstance(term, FunctionTerm)
    losses = term(Step(_batch(), 0.0, TermContext(2), members))
    assert set(losses) == {"a"}


def test_presets_reject_teachers_of_unknown_students():
    with pytest.raises(ValueError, match="not a trained member"):
        StrategyPreset("x", "", (MemberSpec("t", "unet", 0.0, ema_of="nobody"),), (TermSpec("supervised"),))
    assert TermSpec("k", options=options(bank_size=7)).option("bank_size") == 7


# ----------------------------------------------------------------------------- EMA


def test_ema_update_math_and_warm_up():
    teacher, student = nn.Linear(1, 1), nn.Linear(1, 1)
    for module, value in ((teacher, 0.0), (student, 1.0)):
        nn.init.constant_(module.weight, value)
        nn.init.constant_(module.bias, value)
    update_ema(teacher, student, 0.9)
    assert teacher.weight.item() == pytest.approx(0.1) and teacher.bias.item() == pytest.approx(0.1)

    members = _members(MemberSpec("s", "x", 1e-3), MemberSpec("t", "x", 0.0, ema_of="s", ema_decay=0.99))
    for parameter in members[1].network.parameters():
        nn.init.zeros_(parameter)
    for parameter in members[0].network.parameters():
        nn.init.ones_(parameter)
    hook = EmaUpdate(members[1], members[0])
    hook.after_optimizer_step()  # first update: decay min(0.99, 1 - 1/2) = 0.5
    assert members[1].network.head.weight.flatten()[0].item() == pytest.approx(0.5)
    late = EmaUpdate(members[1], members[0], steps=10_000)
    late.after_optimizer_step()  # decay 0.99: 0.5 -> 0.99 * 0.5 + 0.01
    assert members[1].network.head.weight.flatten()[0].item() == pytest.approx(0.505)


def test_teachers_are_not_in_the_optimiser_and_hooks_run_ema_before_terms():
    members = _members(MemberSpec("s", "x", 1e-3), MemberSpec("t", "x", 0.0, ema_of="s"))
    optimizer = _optimizer(members)
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert all(id(p) in optimised for p in members[0].network.parameters())
    assert not any(id(p) in optimised for p in members[1].network.parameters())
    hooks = build_hooks(members, [nn.Identity()])
    assert isinstance(hooks[0], EmaUpdate) and isinstance(hooks[1], nn.Identity)


# ----------------------------------------------------------------------------- strong view


def test_strong_view_changes_only_unannotated_rows_and_is_reproducible():
    images = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    first = strong_view(images, 2, torch.Generator().manual_seed(5))
    again = strong_view(images, 2, torch.Generator().manual_seed(5))
    assert first.shape == images.shape and torch.equal(first, again)
    assert torch.equal(first[:2], images[:2])
    assert (first[2:] - images[2:]).abs().mean() > 0.05
    assert torch.equal(strong_view(images, 4, torch.Generator()), images)
    with pytest.raises(ValueError, match="B, C, H, W"):
        strong_view(images[0], 0, torch.Generator())


# ----------------------------------------------------------------------------- consistency


def test_consistency_mse_values_and_shapes():
    student = torch.zeros(1, 2, 1, 1)  # softmax 0.5, 0.5
    teacher = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    assert consistency_mse(student, teacher).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="same"):
        consistency_mse(student, teacher[:, :1])


def test_consistency_term_teaches_only_unannotated_rows_of_students_with_teachers():
    members = _members(MemberSpec("s", "x", 1e-3), MemberSpec("t", "x", 0.0, ema_of="s"), MemberSpec("u", "x", 1e-3))
    term = ConsistencyTerm(TermSpec("consistency"), TermContext(2), members)
    step = Step(_batch(), 0.5, TermContext(2), members)
    losses = term(step)
    assert losses["u"].item() == 0.0
    student_logits = step.logits("s")
    student_logits.retain_grad()
    losses["s"].backward()
    assert student_logits.grad[:2].abs().sum() == 0 and student_logits.grad[2:].abs().sum() > 0


# ----------------------------------------------------------------------------- MCSC loss


def _reference_class_balanced(embeddings, labels, temperature):
    """Direct transcription of thesis eq. 4.2, loops and all."""
    similarity = embeddings @ embeddings.T / temperature
    classes = sorted(set(labels))
    per_class = {}
    for i, c in enumerate(labels):
        z = sum(np.mean([math.exp(similarity[i, k]) for k, l in enumerate(labels) if l == other])
                for other in classes if other != c)
        positives = [j for j, l in enumerate(labels) if l == c and j != i]
        if not positives or z == 0:
            continue
        value = -np.mean([math.log(math.exp(similarity[i, j]) / (math.exp(similarity[i, j]) + z)) for j in positives])
        per_class.setdefault(c, []).append(value)
    return np.mean([np.mean(v) for v in per_class.values()])


def test_class_balanced_contrastive_loss_by_hand():
    embeddings = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    loss = class_balanced_contrastive_loss(embeddings, torch.tensor([0, 0, 1]), 2, temperature=1.0)
    # anchors of class 0: positive similarity 1, one negative class with mean exp(0) = 1
    assert loss.item() == pytest.approx(-math.log(math.e / (math.e + 1.0)), rel=1e-5)


def test_class_balanced_contrastive_loss_weighs_classes_equally_and_ignores_unknown_pixels():
    def embed(copies):
        rows = [[1.0, 0.0]] * copies + [[0.0, 1.0]] * 2 + [[0.6, 0.8]] * 2
        labels = [0] * copies + [1] * 2 + [2] * 2
        return torch.tensor(rows), torch.tensor(labels)

    few, many = embed(2), embed(12)
    loss_few = class_balanced_contrastive_loss(*few, 3, temperature=0.5)
    loss_many = class_balanced_contrastive_loss(*many, 3, temperature=0.5)
    assert loss_few.item() == pytest.approx(loss_many.item(), rel=1e-5), "background copies must not weigh more"
    assert loss_few.item() == pytest.approx(_reference_class_balanced(few[0].numpy(), few[1].tolist(), 0.5), rel=1e-5)

    with_unknown = torch.cat([few[0], torch.tensor([[0.0, -1.0]])]), torch.cat([few[1], torch.tensor([IGNORE])])
    assert class_balanced_contrastive_loss(*with_unknown, 3, temperature=0.5).item() == pytest.approx(loss_few.item())
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        class_balanced_contrastive_loss(few[0], few[1][:-1], 3)
    with pytest.raises(ValueError, match="only 2 classes"):
        class_balanced_contrastive_loss(*few, 2)


# ----------------------------------------------------------------------------- MCSCv2 loss and sampling


def test_certainty_contrastive_loss_by_hand():
    anchors = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # one anchor per class
    anchor_valid = torch.tensor([[True], [False]])  # class 1 has no anchor
    positives = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    negatives = torch.tensor([[[0.0, 1.0], [0.6, 0.8], [5.0, 5.0]], [[1.0, 0.0]] * 3])
    negative_labels = torch.tensor([[1, 1, IGNORE], [0, 0, 0]])  # the IGNORE slot is an empty bank slot
    loss = certainty_contrastive_loss(anchors, anchor_valid, positives, torch.tensor([True, True]),
                                      negatives, negative_labels, 2, temperature=1.0)
    z = (1.0 + math.exp(0.6)) / 2  # mean within negative class 1, empty slot left out
    assert loss.item() == pytest.approx(-math.log(math.e / (math.e + z)), rel=1e-5)
    with pytest.raises(ValueError, match="do not fit"):
        certainty_contrastive_loss(anchors, anchor_valid, positives[:1], torch.tensor([True]),
                                   negatives, negative_labels, 2)


def test_sampling_per_class_stays_in_the_mask_without_repeats():
    mask = torch.zeros(3, 50, dtype=torch.bool)
    mask[0, [3, 7, 9]] = True
    mask[1, :40] = True
    indices, valid = sample_per_class(mask, 10)
    assert indices.shape == (3, 10)
    assert set(indices[0][valid[0]].tolist()) == {3, 7, 9} and valid[0].sum() == 3
    assert valid[1].all() and len(set(indices[1].tolist())) == 10 and (indices[1] < 40).all()
    assert not valid[2].any()


def test_mcsc_v2_anchors_and_negatives_follow_rank_and_certainty():
    """Four pixels, three classes: the rules of methods.md section 4."""
    members = _members(MemberSpec("a", "x", 1e-3), classes=3)
    term = CertaintyContrastive(TermSpec("certainty_contrastive", options=options(anchors=4,
                                                                                   bank_size=16)),
                                TermContext(3), members)
    probabilities = torch.tensor([
        [0.95, 0.03, 0.02],  # annotated, y = 0, confident: anchor of 0
        [0.60, 0.30, 0.10],  # annotated, y = 1, predicted 0: hard negative for class 0 (rank 0 < r_l)
        [0.02, 0.96, 0.02],  # unannotated, certain, pseudo 1: anchor of 1; negative for 0 and 2
        [0.40, 0.35, 0.25],  # unannotated, uncertain: negative only where rank >= r_h = 2 (class 2)
    ]).T.reshape(1, 3, 1, 4)
    targets = torch.tensor([[[0, 1, IGNORE, IGNORE]]])
    sampled = term._sample(probabilities, targets, progress=0.0)

    def chosen(kind, c):
        valid = {"anchors": "anchor_valid", "keys": "key_valid"}[kind]
        return set(sampled[kind][c][sampled[valid][c]].tolist())

    assert chosen("anchors", 0) == {0} and chosen("anchors", 1) == {2} and chosen("anchors", 2) == set()
    assert chosen("keys", 0) == {1, 2} and chosen("keys", 1) == set() and chosen("keys", 2) == {2, 3}
    assert sampled["label"].tolist() == [0, 1, 1, 0]


# ----------------------------------------------------------------------------- banks


def test_fifo_bank_keeps_the_newest_keys_and_samples_only_filled_slots():
    bank = FifoBank(num_classes=2, size=4, dim=1)
    bank.push(0, torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([1, 1, 1]))
    bank.push(0, torch.tensor([[4.0], [5.0], [6.0]]), torch.tensor([1, 1, 1]))
    assert sorted(bank.keys[0, :, 0].tolist()) == [3.0, 4.0, 5.0, 6.0] and int(bank.pointer[0]) == 2
    bank.push(0, torch.arange(10.0)[:, None], torch.ones(10, dtype=torch.long))  # more than fits: newest 4
    assert sorted(bank.keys[0, :, 0].tolist()) == [6.0, 7.0, 8.0, 9.0]
    keys, labels = bank.sample(20)
    assert set(keys[0, :, 0].tolist()) <= {6.0, 7.0, 8.0, 9.0} and (labels[0] == 1).all()
    assert (labels[1] == IGNORE).all(), "an empty queue yields only empty slots"


def test_slice_prototype_bank_averages_present_classes():
    bank = SlicePrototypeBank(slices=2, num_classes=2, dim=2)
    bank.push(torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [9.0, 9.0]]]),
              torch.tensor([[True, True], [True, False]]))
    means, available = bank.class_means()
    assert available.tolist() == [True, True]
    assert means[0].tolist() == pytest.approx([math.sqrt(0.5), math.sqrt(0.5)])
    assert means[1].tolist() == pytest.approx([0.0, 1.0])


def test_term_state_survives_a_checkpoint_round_trip(tmp_path):
    members = _members(MemberSpec("a", "x", 1e-3), classes=3)
    spec = TermSpec("certainty_contrastive", options=options(bank_size=8))
    term = CertaintyContrastive(spec, TermContext(3), members)
    term.banks["a_scale1"].push(2, torch.randn(5, 128), torch.tensor([0, 1, 0, 1, 1]))
    payload = {"label_values": [0, 1, 2], "members": [], "iteration": 4,
               "terms": [{"kind": spec.kind, "state_dict": term.state_dict()}]}
    loaded = load_checkpoint(save_checkpoint(tmp_path / "model.pt", payload))
    fresh = CertaintyContrastive(spec, TermContext(3), members)
    assert _restore(loaded, members, _optimizer(members, [fresh]), (0, 1, 2), [fresh]) == 4
    for name, value in term.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name


def test_supervised_term_function_is_unchanged():
    logits = {"a": torch.zeros(1, 2, 1, 2)}
    batch = Batch(torch.zeros(1, 1, 1, 2), torch.tensor([[[0, IGNORE]]]), 1)
    assert supervised_term(batch, logits, TermContext(2))["a"].item() > 0


def test_resume_restores_teachers_and_banks_and_keeps_filling_them(tmp_path):
    from napari_semiseg.core.annotations import AnnotationScheme
    from napari_semiseg.core.config import TrainConfig
    from napari_semiseg.core.engine import TrainingData, train
    from napari_semiseg.core.phantoms import paint_slices, ring_phantom

    volume, truth = ring_phantom((8, 32, 32), seed=0)
    data = TrainingData([volume], [paint_slices(truth, [2, 5])], AnnotationScheme())
    settings = dict(batch_size=4, patch_size=32, threads=1, network_size="cpu")
    list(train(data, TrainConfig(strategy="mcsc_v2", iterations=2, **settings), tmp_path / "a"))
    first = load_checkpoint(tmp_path / "a")
    bank = {k: v for k, v in first["terms"][-1]["state_dict"].items() if k.endswith("labels")}
    assert any((labels != IGNORE).any() for labels in bank.values()), "two steps put keys in the banks"
    list(train(data, TrainConfig(strategy="mcsc_v2", iterations=1, **settings), tmp_path / "b",
               initial_checkpoint=first))
    second = load_checkpoint(tmp_path / "b")
    for name, labels in bank.items():
        filled_before = int((labels != IGNORE).sum())
        filled_after = int((second["terms"][-1]["state_dict"][name] != IGNORE).sum())
        assert filled_after >= filled_before, f"{name}: the resumed bank started empty"

    list(train(data, TrainConfig(strategy="mean_teacher", iterations=2, **settings), tmp_path / "c"))
    teacher_state = {m["name"]: m for m in load_checkpoint(tmp_path / "c")["members"]}["teacher"]["state_dict"]
    list(train(data, TrainConfig(strategy="mean_teacher", iterations=1, **settings), tmp_path / "d",
               initial_checkpoint=load_checkpoint(tmp_path / "c")))
    members = {m["name"]: m for m in load_checkpoint(tmp_path / "d")["members"]}
    key = next(k for k in teacher_state if k.endswith("conv.0.weight") or k.endswith(".weight"))
    # the resumed teacher made its third EMA update from the stored one: decay min(0.99, 1 - 1/4)
    expected = 0.75 * teacher_state[key] + 0.25 * members["student"]["state_dict"][key]
    assert torch.allclose(members["teacher"]["state_dict"][key], expected, atol=1e-6)


def test_a_misspelt_term_option_is_refused_with_the_options_the_term_reads():
    members = _members(MemberSpec("a", "x", 1e-3), classes=3)
    with pytest.raises(ValueError, match=r"no option 'bank_sise'.*bank_size"):
        build_term(TermSpec("certainty_contrastive", options=options(bank_sise=16)), TermContext(3), members)
    term = build_term(TermSpec("certainty_contrastive", options=options(bank_size=16)), TermContext(3), members)
    assert term.bank_size == 16 and isinstance(term.spec, TermSpec)
