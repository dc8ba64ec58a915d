"""Each teacher or contrastive strategy trains on a phantom and is compared with supervised-only.

Same phantom, seed, single thread and number of iterations (40 steps of 4 crops at 48²) for
every strategy; Dice on the unpainted slices. Measured (2026-11-22): supervised 0.774, cct_r
0.826, mcsc 0.825, mcsc_v2 0.796, mean_teacher 0.777. MCSC and CCT-R beat supervised-only here
and must keep doing so. MCSCv2 may trail by up to 0.03: after a fresh install of the same code
(2026-12-06) it scored 0.766 against 0.773, and over seeds 1 to 3 it beats supervised-only on two
(0.835 vs 0.801, 0.857 vs 0.838) and trails on one (0.934 vs 0.960); at 40 steps its sign is
within seed noise. The mean teacher only ties:
in 40 steps its consistency weight reaches full strength at step 16 (sigmoid ramp over 40 %
of the budget) and its student sees half as many painted crops as supervised-only, so it may
trail by up to 0.05.
"""

import numpy as np
import pytest

from napari_semiseg.core.annotations import AnnotationScheme
from napari_semiseg.core.config import TrainConfig
from napari_semiseg.core.engine import TrainingData, loop, train
from napari_semiseg.core.engine.checkpoint import load_checkpoint
from napari_semiseg.core.events import StepCompleted
from napari_semiseg.core.model import load_model
from napari_semiseg.core.phantoms import paint_slices, ring_phantom
from napari_semiseg.core.predict import predict_volume

PAINTED = [2, 6, 9]
ITERATIONS = 40

# How far each strategy may trail supervised-only in mean foreground Dice on the unpainted slices.
ALLOWED_GAP = {"mean_teacher": 0.05, "mcsc": 0.0, "mcsc_v2": 0.03, "cct_r": 0.0}


def _dice(prediction, truth, label):
    a, b = prediction == label, truth == label
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


def _train(strategy, out_dir, monkeypatch):
    monkeypatch.setattr(loop, "STEP_EVENT_SECONDS", 0.0)  # an event per step: the loss curve
    volume, truth = ring_phantom((12, 48, 48), seed=2)
    data = TrainingData([volume], [paint_slices(truth, PAINTED)], AnnotationScheme())
    config = TrainConfig(strategy=strategy, iterations=ITERATIONS, batch_size=4, patch_size=48, seed=0, threads=1)
    events = list(train(data, config, out_dir))
    prediction = predict_volume(load_model(out_dir), volume)
    unpainted = [i for i in range(truth.shape[0]) if i not in PAINTED]
    dice = float(np.mean([_dice(prediction.labels[unpainted], truth[unpainted], c) for c in (1, 2)]))
    return [e for e in events if isinstance(e, StepCompleted)], dice


@pytest.fixture(scope="module")
def supervised_dice(tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()
    try:
        return _train("supervised", tmp_path_factory.mktemp("supervised"), monkeypatch)[1]
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("strategy", sorted(ALLOWED_GAP))
def test_strategy_learns_and_stays_within_its_bound_of_supervised(strategy, supervised_dice, tmp_path, monkeypatch):
    steps, dice = _train(strategy, tmp_path, monkeypatch)
    assert len(steps) == ITERATIONS
    supervised = [s.terms["supervised"] for s in steps]
    assert np.mean(supervised[-8:]) < 0.8 * np.mean(supervised[:8]), "the supervised loss must go down"
    extra = {"mean_teacher": "consistency", "mcsc": "mcsc_contrastive", "mcsc_v2": "certainty_contrastive",
             "cct_r": "reps_contrastive"}[strategy]
    assert all(np.isfinite(s.terms[extra]) for s in steps) and any(s.terms[extra] > 0 for s in steps)
    print(f"{strategy}: Dice {dice:.3f}, supervised {supervised_dice:.3f}")
    assert dice >= supervised_dice - ALLOWED_GAP[strategy], (
        f"{strategy} trails supervised by {supervised_dice - dice:.3f} (allowed {ALLOWED_GAP[strategy]})")

    checkpoint = load_checkpoint(tmp_path)
    assert [t["kind"] for t in checkpoint["terms"]][-1] == extra
    if strategy == "mean_teacher":  # the teacher is saved, the student predicts
        members = {m["name"]: m for m in checkpoint["members"]}
        assert members["teacher"]["ema_of"] == "student" and not members["teacher"]["predicts"]
        assert set(load_model(tmp_path).networks) == {"student"}

