"""Held-out validation, pause/resume in the training loop, the plateau rule and the version store."""

import threading
import time

import numpy as np
import pytest

from napari_semiseg.core.annotations import AnnotationScheme, annotated_slices
from napari_semiseg.core.config import TrainConfig
from napari_semiseg.core.engine import TrainingData, train
from napari_semiseg.core.events import (
    TrainingFinished,
    TrainingPaused,
    TrainingResumed,
    TrainingStarted,
    ValidationScored,
)
from napari_semiseg.core.phantoms import paint_slices, ring_phantom
from napari_semiseg.core.validation import choose_holdout, foreground_dice, hold_out, painting_plateau
from napari_semiseg.core.versions import VersionError, VersionStore


def test_holdout_needs_four_slices_and_rotates_between_runs():
    assert choose_holdout([1, 4, 6]) == []
    painted = [1, 3, 5, 7, 9, 11, 13, 15]
    picks = [choose_holdout(painted, rotation) for rotation in range(4)]
    assert picks[0] == [1, 9] and picks[1] == [3, 11]
    assert sorted(sum(picks, [])) == painted, "over four runs every painted slice is held out once"


def test_hold_out_removes_slices_from_training_and_keeps_every_class():
    volume, truth = ring_phantom((16, 32, 32), seed=0)
    labels = paint_slices(truth, [2, 5, 8, 11, 14])
    training, held = hold_out(labels, AnnotationScheme(), rotation=1)
    assert held.slice_indices == (5,)
    assert list(annotated_slices(training, 0)) == [2, 8, 11, 14]
    assert np.array_equal(held.labels[0], truth[5])
    only_one_ring = labels.copy()
    only_one_ring[only_one_ring == 2] = 1
    only_one_ring[2][truth[2] == 2] = 3  # class 3 painted on slice 2 only: slice 2 must stay in training
    training, held = hold_out(only_one_ring, AnnotationScheme(), rotation=0)
    assert held is not None and 2 not in held.slice_indices


def test_foreground_dice_ignores_unknown_voxels():
    targets = np.array([[0, 1, 1, -1]])
    assert foreground_dice(np.array([[0, 1, 1, 0]]), targets) == pytest.approx(1.0)
    assert foreground_dice(np.array([[1, 1, 0, 1]]), targets) == pytest.approx(0.5)


def test_painting_plateau_rule():
    assert painting_plateau([(4, 0.5), (8, 0.7), (12, 0.8)]) is None
    assert painting_plateau([(4, 0.80), (8, 0.81), (12, 0.815)]) is not None
    assert painting_plateau([(4, 0.80), (8, 0.81)]) is None, "needs three runs"
    # a retrain on the same slices replaces the score; erasing slices restarts the comparison
    assert painting_plateau([(4, 0.8), (8, 0.81), (8, 0.9), (12, 0.905)]) is None
    assert painting_plateau([(4, 0.8), (8, 0.8), (6, 0.7), (10, 0.9)]) is None


def test_pause_stops_the_budget_clock_and_validation_is_scored(tmp_path):
    volume, truth = ring_phantom((16, 48, 48), seed=1)
    scheme = AnnotationScheme()
    training, held = hold_out(paint_slices(truth, [2, 5, 8, 11, 14]), scheme)
    data = TrainingData([volume], [training], scheme)
    config = TrainConfig(strategy="supervised", iterations=20, patch_size=32, batch_size=2, threads=1)
    pause = threading.Event()
    events, wall = [], time.perf_counter()
    for event in train(data, config, tmp_path, pause=pause, validation=held, validation_seconds=0.0):
        events.append(event)
        if isinstance(event, TrainingStarted):
            pause.set()
            threading.Timer(1.5, pause.clear).start()
    wall = time.perf_counter() - wall
    kinds = [type(e) for e in events]
    assert TrainingPaused in kinds and TrainingResumed in kinds
    assert kinds.index(TrainingPaused) < kinds.index(TrainingResumed)
    resumed = next(e for e in events if isinstance(e, TrainingResumed))
    assert resumed.paused_seconds >= 1.4
    finished = events[-1]
    assert isinstance(finished, TrainingFinished) and finished.reason == "budget"
    assert finished.seconds <= wall - 1.4, "paused time must not count against the budget clock"
    scores = [e for e in events if isinstance(e, ValidationScored)]
    assert len(scores) == 21 and scores[-1].final and not scores[0].final
    assert all(0.0 <= s.dice <= 1.0 and s.slices == 2 for s in scores)


def test_version_store_lists_rolls_back_and_survives_reopening(tmp_path):
    store = VersionStore(tmp_path / "runs")
    assert store.versions() == [] and store.current() is None
    for run, dice in enumerate([0.6, 0.75]):
        model = tmp_path / "runs" / f"run{run}" / "model.pt"
        model.parent.mkdir(parents=True)
        model.write_bytes(b"weights")
        store.add(model, strategy="supervised", iterations=40, painted_slices=4 + run, trained_slices=3,
                  held_out_slices=[run], validation_dice=dice)
    reopened = VersionStore(tmp_path / "runs")
    first, second = reopened.versions()
    assert (first.id, second.id, second.parent) == (1, 2, 1)
    assert reopened.current().id == 2 and second.model_path == "run1/model.pt"
    assert reopened.path_of(first) == tmp_path / "runs" / "run0" / "model.pt"
    assert "val Dice 0.750" in second.describe()
    assert reopened.roll_back(1).id == 1 and VersionStore(tmp_path / "runs").current().id == 1
    assert reopened.history() == [(4, 0.6), (5, 0.75)]
    with pytest.raises(VersionError, match="no model version v7"):
        reopened.roll_back(7)
    (tmp_path / "runs" / "versions.json").write_text("{broken")
    with pytest.raises(VersionError, match="cannot be read"):
        reopened.versions()
