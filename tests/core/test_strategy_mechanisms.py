"""Every strategy's terms inside one engine step, on a small built batch: what each term does,
independent of seed noise and of which vector kernels the CPU runs.

Whether a strategy beats supervised-only is a question for the benchmarks (on the phantoms of the
strategy tests the sign of that difference is within seed noise: benchmarks/phantom_seed_spread.py);
here each term must be active, finite, send gradient to the students only, and lower itself when
the students follow its gradient.
"""

import dataclasses

import pytest
import torch

from napari_semiseg.core.annotations import IGNORE
from napari_semiseg.core.engine import get_preset, strategy_names
from napari_semiseg.core.engine.composition import build_terms, feature_kind, trainable_groups, weighted_losses
from napari_semiseg.core.engine.members import build_members
from napari_semiseg.core.engine.presets import options
from napari_semiseg.core.engine.step import Step
from napari_semiseg.core.engine.terms import Batch, TermContext

pytestmark = pytest.mark.float_path

CPU = torch.device("cpu")
CLASSES, SIZE = 3, 32
SUPERVISED_KINDS = {"supervised", "dual_supervised"}
# Untrained networks are certain of no pixel, so these terms, which take anchors only above a
# certainty threshold (0.9), would have nothing to contrast: the built case lowers the threshold
# (and samples fewer anchors and negatives than a real run, to stay cheap).
_CERTAIN_OF_EVERY_PIXEL = {"threshold": 0.0, "anchors": 128, "negatives": 64}
OPTIONS_FOR_AN_UNTRAINED_NETWORK = {"certainty_contrastive": _CERTAIN_OF_EVERY_PIXEL,
                                    "reps_contrastive": _CERTAIN_OF_EVERY_PIXEL}
STEPS, LEARNING_RATE = 5, 0.01


def _disc_batch() -> Batch:
    """Four noisy discs (a ring of class 1 around a core of class 2): rows 0-1 painted, rows 2-3
    unannotated but with registered labels (quality 1) for the registration term."""
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    radius = ((yy - SIZE / 2) ** 2 + (xx - SIZE / 2) ** 2).sqrt()
    truth = torch.zeros(SIZE, SIZE, dtype=torch.long)
    truth[radius < 10] = 1
    truth[radius < 5] = 2
    images = truth.float() / 2 + 0.1 * torch.randn(4, 1, SIZE, SIZE)
    targets = truth.repeat(4, 1, 1)
    targets[2:] = IGNORE
    return Batch(images, targets, annotated=2, pseudo_targets=truth.repeat(4, 1, 1),
                 pseudo_weights=torch.ones(4, SIZE, SIZE))


def _with_options(preset, extra: dict):
    terms = tuple(dataclasses.replace(t, options=options(**{**dict(t.options), **extra[t.kind]}))
                  if t.kind in extra else t for t in preset.terms)
    return dataclasses.replace(preset, terms=terms)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _setup(strategy: str, built_case: bool = False):
    torch.manual_seed(0)
    preset = get_preset(strategy)
    if built_case:
        preset = _with_options(preset, OPTIONS_FOR_AN_UNTRAINED_NETWORK)
    members = build_members(preset, CLASSES, "cpu", CPU, seed=0)
    context = TermContext(CLASSES)
    terms = build_terms(preset, context, members, CPU)
    return members, terms, context, _disc_batch()


def _step(members, terms, context, batch) -> Step:
    return Step(batch, 0.5, context, members, feature_kind(terms), batch.images + 0.1)


def _unsupervised_terms():
    return [(name, term.kind) for name in strategy_names() for term in get_preset(name).terms
            if term.kind not in SUPERVISED_KINDS]


@pytest.mark.parametrize("strategy", strategy_names())
def test_every_term_gives_a_finite_loss_with_gradient_for_the_students_only(strategy):
    members, terms, context, batch = _setup(strategy)
    total, report = weighted_losses(terms, _step(members, terms, context, batch))
    assert set(report) == {t.spec.kind for t in terms} and torch.isfinite(total)
    total.backward()
    for student in (m for m in members if not m.spec.is_teacher):
        assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in student.network.parameters())
    for teacher in (m for m in members if m.spec.is_teacher):
        assert all(p.grad is None for p in teacher.network.parameters())


@pytest.mark.parametrize("strategy, kind", _unsupervised_terms())
def test_each_unsupervised_term_is_active_and_lowers_itself_along_its_own_gradient(strategy, kind):
    """The term alone, a few SGD steps on the students (and the term's own heads): the term is
    non-zero and ends lower. The same crops and samples every time (the generator is re-seeded),
    so the decrease is the gradient's doing, not a new draw's."""
    members, terms, context, batch = _setup(strategy, built_case=True)
    term = next(t for t in terms if t.spec.kind == kind)
    first_step = _step(members, terms, context, batch)
    term(first_step)
    term.after_optimizer_step(first_step)  # memory banks filled once, as after a first training step

    def loss() -> torch.Tensor:
        torch.manual_seed(1)
        return sum(term(_step(members, terms, context, batch)).values())

    students = [m for m in members if not m.spec.is_teacher]
    parameters = [p for m in students for p in m.network.parameters()]
    parameters += [p for group in trainable_groups(terms) for p in group["params"]]
    optimiser = torch.optim.SGD(parameters, lr=LEARNING_RATE)
    first = float(loss().detach())
    for _ in range(STEPS):
        optimiser.zero_grad()
        loss().backward()
        optimiser.step()
    last = float(loss().detach())
    assert first > 0, f"{kind} is zero on a batch built to activate it"
    assert last < first, f"{kind} went from {first:.4g} to {last:.4g} along its own gradient"
