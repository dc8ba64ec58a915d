"""Training panel: device message, pause/resume, validation curve, model versions (load, compare, roll back)."""

from dataclasses import replace

import numpy as np
import psutil
import pytest
from qtpy.QtWidgets import QApplication, QProgressBar

from napari_semiseg.core.events import StepCompleted, ValidationScored
from napari_semiseg.core.phantoms import paint_slices, ring_phantom
from napari_semiseg.core.versions import VersionStore
from napari_semiseg.ui.curves import QuietProgressBar
from napari_semiseg.ui.widget import SemisegWidget

TIMEOUT_MS = 240_000
PAINTED = [1, 3, 5, 7, 9]


@pytest.fixture
def scene(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    volume, truth = ring_phantom((10, 48, 48), seed=4)
    viewer.add_image(volume.array, name="image")
    labels = viewer.add_labels(paint_slices(truth, PAINTED), name="annotations")
    widget = SemisegWidget(viewer, runs_dir=tmp_path / "runs")
    viewer.window.add_dock_widget(widget)
    widget.data.image_combo.setCurrentText("image")
    widget.data.labels_combo.setCurrentText("annotations")
    widget.training.strategy_combo.setCurrentIndex(widget.training.strategy_combo.findData("supervised"))
    full_config = widget.training.config
    widget.training.config = lambda: replace(full_config(), patch_size=48, batch_size=2)  # small steps: a fast test
    yield viewer, widget, labels
    widget.close()


def _status(widget):
    return widget.status_label.text()


def test_device_message_says_what_was_found_and_refuses_a_missing_gpu(scene):
    viewer, widget, labels = scene
    widget.training.device_combo.setCurrentText("auto")
    assert "No GPU found" in widget.training.device_label.text() and "CPU" in widget.training.device_label.text()
    widget.training.device_combo.setCurrentText("cuda")
    assert "CUDA was requested but no usable GPU was found" in widget.training.device_label.text()
    assert not widget.training.start_training()
    assert "Choose 'auto' or 'cpu'" in _status(widget)


def _counting(base):
    class Counting(base):
        paints = 0

        def paintEvent(self, event):  # noqa: N802 (Qt naming)
            self.paints += 1
            super().paintEvent(event)

    return Counting()


def test_progress_bar_paints_with_the_next_frame_not_inside_set_value(qtbot):
    """QProgressBar repaints at once when its text changes (70-90 ms beside napari's canvas with
    software OpenGL); the quiet bar only schedules an ordinary paint."""
    quiet, plain = _counting(QuietProgressBar), _counting(QProgressBar)
    for bar in (quiet, plain):
        qtbot.addWidget(bar)
        bar.setRange(0, 1000)
        bar.show()
        qtbot.waitExposed(bar)
    QApplication.processEvents()
    for bar in (quiet, plain):
        bar.paints = 0
        bar.setValue(500)
    assert plain.paints == 1, "the plain bar paints inside setValue (the check can fail)"
    assert quiet.paints == 0 and quiet.value() == 500
    qtbot.waitUntil(lambda: quiet.paints >= 1, timeout=2_000)


def test_step_events_update_the_dock_at_most_once_a_second(scene, monkeypatch):
    viewer, widget, labels = scene
    assert isinstance(widget.training.progress_bar, QuietProgressBar)
    clock = iter([100.0, 100.4, 101.2])
    monkeypatch.setattr("napari_semiseg.ui.training_panel.time.monotonic", lambda: next(clock))
    widget.session.handle(StepCompleted(10, 0.10, 0.9, {}, 2.0, 4.0))
    assert widget.training.progress_bar.value() == 100 and "Iteration 10" in _status(widget)
    widget.session.handle(StepCompleted(20, 0.20, 0.8, {}, 2.4, 4.0))  # 0.4 s later: recorded, not shown
    assert widget.training.progress_bar.value() == 100 and "Iteration 10" in _status(widget)
    assert widget.training.curves.loss_points[-1] == (2.4, 0.8)
    widget.session.handle(StepCompleted(30, 0.30, 0.7, {}, 3.2, 4.0))
    assert widget.training.progress_bar.value() == 300 and "Iteration 30" in _status(widget)


def test_curve_follows_loss_and_validation_events(scene, qtbot):
    viewer, widget, labels = scene
    widget.session.handle(StepCompleted(10, 0.1, 0.9, {}, 2.0, 4.0))
    widget.session.handle(StepCompleted(20, 0.2, 0.7, {}, 4.0, 4.0))
    widget.session.handle(ValidationScored(20, 0.62, 2, 4.5))
    assert widget.training.curves.loss_points == [(2.0, 0.9), (4.0, 0.7)]
    assert widget.training.curves.dice_points == [(4.5, 0.62)]
    qtbot.waitUntil(lambda: widget.training.curves.dice_curve.getData()[1] is not None
                    and len(widget.training.curves.dice_curve.getData()[1]) == 1, timeout=5_000)  # redraws are coalesced
    assert np.allclose(widget.training.curves.loss_curve.getData()[1], [0.9, 0.7])
    assert np.allclose(widget.training.curves.dice_curve.getData()[1], [0.62])
    assert "Validation Dice 0.620 on 2 held-out slices" in widget.training.validation_label.text()


def test_pause_resume_stop_then_versions_load_compare_and_roll_back(scene, qtbot):
    viewer, widget, labels = scene
    widget.training.budget_unit.setCurrentText("minutes")
    widget.training.budget_spin.setValue(10)
    assert widget.training.start_training(), _status(widget)
    assert "held-out painted slices 1, 9" in widget.training.validation_label.text()
    qtbot.waitUntil(lambda: "Iteration" in _status(widget), timeout=TIMEOUT_MS)
    widget.training.toggle_pause()
    qtbot.waitUntil(lambda: "Paused at iteration" in _status(widget), timeout=60_000)
    child = psutil.Process(widget.session.process.pid)
    before = sum(child.cpu_times()[:2])
    qtbot.wait(1500)
    assert sum(child.cpu_times()[:2]) - before < 0.3, "a paused training must idle"
    assert widget.training.pause_button.text() == "Resume"
    widget.training.toggle_pause()
    qtbot.waitUntil(lambda: "Resumed after" in _status(widget) or "Iteration" in _status(widget), timeout=60_000)
    widget.session.stop_training()
    qtbot.waitUntil(lambda: not widget.session.process.running, timeout=TIMEOUT_MS)
    assert "Stopped after" in _status(widget)
    assert widget.training.curves.loss_points and widget.training.curves.dice_points, "the curve shows loss and validation Dice"
    store = VersionStore(widget.session.versions.runs_dir)
    (first,) = store.versions()
    assert first.held_out_slices == (1, 9) and first.trained_slices == 3 and first.painted_slices == 5
    assert first.validation_dice is not None and first.reason == "stopped"

    worker = widget.session.process.pid
    widget.training.budget_unit.setCurrentText("iterations")
    widget.training.budget_spin.setValue(10)
    assert widget.training.continue_check.isChecked(), "a retrain continues from the current model"
    assert widget.training.start_training(), _status(widget)
    assert widget.session.process.pid == worker, "the worker process is kept between runs"
    qtbot.waitUntil(lambda: not widget.session.process.running, timeout=TIMEOUT_MS)
    first, second = store.versions()
    assert second.parent == first.id and second.held_out_slices == (3,)  # rotated
    assert widget.versions.version_list.count() == 2
    assert widget.versions.version_list.item(0).text().startswith("● v2")

    widget.versions.select(first.id, second.id)
    widget.versions.compare_selected()
    qtbot.waitUntil(lambda: "version v2" in viewer.layers and "version v1" in viewer.layers, timeout=TIMEOUT_MS)
    assert viewer.layers["version v1"].data.shape == labels.data.shape
    assert "Predicting" not in _status(widget), "the status must not stay on 'Predicting' once it is shown"

    widget.session.set_proposal(None)
    widget.versions.select(first.id)
    widget.versions.load_selected()
    qtbot.waitUntil(lambda: widget.session.proposal is not None, timeout=TIMEOUT_MS)
    prediction = widget.session.proposal.labels
    assert viewer.layers["prediction"].data is prediction
    assert _status(widget).startswith("Showing the prediction of v1"), _status(widget)
    assert np.array_equal(prediction[PAINTED], labels.data[PAINTED]), \
        "a loaded version is blended with the painted slices (a comparison shows the networks alone)"

    widget.versions.roll_back_selected()
    assert store.current().id == first.id
    assert widget.versions.version_list.item(1).text().startswith("● v1")
    assert widget.session.current_model == str(store.path_of(first)), "the next training resumes from v1"
