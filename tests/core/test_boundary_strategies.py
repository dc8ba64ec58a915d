"""BoCLIS, BFA and PMCM on a synthetic phantom: they train, lower their supervised losses,
and are compared with supervised-only on the same data and iteration budget."""

import math

import numpy as np
import pytest

from napari_semiseg.core.annotations import AnnotationScheme
from napari_semiseg.core.config import TrainConfig
import napari_semiseg.core.engine.loop as loop
from napari_semiseg.core.engine import TrainingData, get_preset, strategy_names, train
from napari_semiseg.core.engine.checkpoint import load_checkpoint
from napari_semiseg.core.events import StepCompleted, TrainingFinished
from napari_semiseg.core.model import load_model
from napari_semiseg.core.phantoms import paint_slices, ring_phantom
from napari_semiseg.core.predict import predict_volume

SHAPE = (12, 48, 48)
PAINTED = [2, 6, 9]
ITERATIONS = 60
SUPERVISED_TERM = {"boclis": "supervised", "bfa": "supervised", "pmcm": "dual_supervised"}

# How far each strategy may land below supervised-only after ITERATIONS steps on the phantom
# (measured on one thread, 2026-11-22: supervised 0.885, boclis 0.903, bfa 0.924, pmcm 0.924).
# - bfa and pmcm must beat supervised: their extra supervision (the boundary head on mixed
#   crops from step 0; a second decoder and distance heads on the same painted pixels) acts
#   from the first step.
# - boclis may trail by up to 0.02: its pseudo-label and contrastive terms ramp up over 40 % of
#   the budget and its teachers lag the student by design (decays up to 0.999), so in 60 steps
#   its lead over supervised (0.018 here) is within what another CPU's arithmetic can move.
# A strategy that breaks training falls far below these bounds.
MARGIN = {"boclis": 0.02, "bfa": 0.0, "pmcm": 0.0}


def _dice(prediction, truth, label):
    a, b = prediction == label, truth == label
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


@pytest.fixture(scope="module")
def phantom():
    volume, truth = ring_phantom(SHAPE, seed=1)
    return volume, truth, TrainingData([volume], [paint_slices(truth, PAINTED)], AnnotationScheme())


def _train(strategy, phantom, path):
    volume, truth, data = phantom
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "STEP_EVENT_SECONDS", 0.0)  # one event per step
        # one thread: two collapse when another process holds a core of this 2-core machine
        config = TrainConfig(strategy=strategy, iterations=ITERATIONS, batch_size=4, patch_size=48, seed=0,
                             device="cpu", threads=1)
        events = list(train(data, config, path))
    prediction = predict_volume(load_model(path, device="cpu"), volume)
    unpainted = [i for i in range(SHAPE[0]) if i not in PAINTED]
    dice = float(np.mean([_dice(prediction.labels[unpainted], truth[unpainted], c) for c in (1, 2)]))
    return events, dice


@pytest.fixture(scope="module")
def supervised_dice(phantom, tmp_path_factory):
    return _train("supervised", phantom, tmp_path_factory.mktemp("supervised"))[1]


@pytest.mark.parametrize("strategy", ["boclis", "bfa", "pmcm"])
def test_strategy_trains_and_is_compared_with_supervised(strategy, phantom, supervised_dice, tmp_path):
    """Trains, lowers its supervised loss, saves students and teachers, and beats supervised-only
    (bfa, pmcm) or trails it by at most MARGIN (boclis), for the reasons given at MARGIN."""
    assert strategy in strategy_names()
    events, dice = _train(strategy, phantom, tmp_path)
    steps = [e for e in events if isinstance(e, StepCompleted)]
    assert len(steps) == ITERATIONS and isinstance(events[-1], TrainingFinished)
    preset_terms = {term.kind for term in get_preset(strategy).terms}
    assert preset_terms <= set(steps[-1].terms)
    assert all(math.isfinite(value) for step in steps for value in step.terms.values())
    supervised = [step.terms[SUPERVISED_TERM[strategy]] for step in steps]
    assert np.mean(supervised[-10:]) < 0.5 * np.mean(supervised[:5])
    assert set(events[-1].member_dice) == {"student"}  # teachers never predict
    stored = load_checkpoint(tmp_path)
    assert {m["name"] for m in stored["members"]} == {m.name for m in get_preset(strategy).members}
    print(f"{strategy}: Dice {dice:.3f} on unpainted slices, supervised-only {supervised_dice:.3f}")
    assert dice > supervised_dice - MARGIN[strategy], f"{strategy} {dice:.3f} vs supervised {supervised_dice:.3f}"
