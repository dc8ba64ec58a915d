"""The dock widget end to end: train in a separate process, preview, accept, undo, export."""

import os

import numpy as np
import pytest

from napari_semiseg.core.phantoms import paint_slices, ring_phantom
from napari_semiseg.core.volume import Geometry, read_volume
from napari_semiseg.ui.layers import is_preview
from napari_semiseg.ui.widget import SemisegWidget

TRAINING_TIMEOUT_MS = 180_000


@pytest.fixture
def scene(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    volume, truth = ring_phantom((8, 48, 48), seed=2, spacing=(3.0, 0.8, 0.8))
    geometry = Geometry(spacing=(3.0, 0.8, 0.8), origin=(10.0, -5.0, 2.0))
    image = viewer.add_image(volume.array, name="image", scale=geometry.spacing, translate=geometry.origin)
    labels = viewer.add_labels(paint_slices(truth, [1, 4, 6]), name="annotations",
                               scale=geometry.spacing, translate=geometry.origin)
    widget = SemisegWidget(viewer, runs_dir=tmp_path / "runs")
    viewer.window.add_dock_widget(widget)
    widget.data.image_combo.setCurrentText(image.name)
    widget.data.labels_combo.setCurrentText(labels.name)
    return viewer, widget, labels, truth


def _train(qtbot, widget, iterations=40, strategy="supervised", wait=True):
    widget.training.strategy_combo.setCurrentIndex(widget.training.strategy_combo.findData(strategy))
    widget.training.budget_unit.setCurrentText("iterations")
    widget.training.budget_spin.setValue(iterations)
    assert widget.training.start_training(), widget.status_label.text()
    if wait:
        qtbot.waitUntil(lambda: not widget.session.process.running, timeout=TRAINING_TIMEOUT_MS)


def test_widget_lists_annotated_slices(scene):
    viewer, widget, labels, truth = scene
    assert widget.data.annotated_label.text().startswith("3 of 8 slices along z: 1, 4, 6")


def test_training_shows_prediction_and_acceptance_is_one_undo_step(scene, qtbot, tmp_path):
    viewer, widget, labels, truth = scene
    assert "prediction" not in viewer.layers
    _train(qtbot, widget, wait=False)
    assert {"prediction", "certainty"} <= {layer.name for layer in viewer.layers}, \
        "the preview layers exist from the click on, so previews only write slices"
    assert is_preview(viewer.layers["certainty"]) and is_preview(viewer.layers["prediction"])
    qtbot.waitUntil(lambda: not widget.session.process.running, timeout=TRAINING_TIMEOUT_MS)
    assert "Finished after 40 iterations" in widget.status_label.text()
    prediction, certainty = viewer.layers["prediction"], viewer.layers["certainty"]
    assert not is_preview(certainty) and not is_preview(prediction), "the final prediction replaced the previews"
    assert prediction.data.shape == truth.shape
    np.testing.assert_allclose(prediction.scale, labels.scale)
    np.testing.assert_allclose(prediction.translate, labels.translate)
    assert 0.0 <= certainty.data.min() and certainty.data.max() <= 1.0

    painted = labels.data.copy()
    viewer.dims.set_current_step(0, 3)
    changed = widget.accept.accept_slice()
    assert changed > 0
    assert np.array_equal(labels.data[[0, 1, 2, 4, 5, 6, 7]], painted[[0, 1, 2, 4, 5, 6, 7]])
    accepted = widget.session.provenance_of(labels).records[-1]
    assert accepted["version"] == "v1" and accepted["iteration"] == 40, "the record names the model it came from"
    labels.undo()
    assert np.array_equal(labels.data, painted)

    changed = widget.accept.accept_all()
    assert changed > 0
    assert np.array_equal(labels.data[painted != 0], painted[painted != 0]), "painted voxels were overwritten"
    labels.undo()
    assert np.array_equal(labels.data, painted)

    written = widget.export.export_labels(str(tmp_path / "mask.nii.gz"))
    reread = read_volume(written)
    assert np.array_equal(reread.array, painted)
    np.testing.assert_allclose(reread.geometry.spacing, (3.0, 0.8, 0.8))
    np.testing.assert_allclose(reread.geometry.origin, (10.0, -5.0, 2.0))


def test_empty_annotation_gives_a_clear_message(scene):
    viewer, widget, labels, truth = scene
    labels.data = np.zeros_like(labels.data)
    assert not widget.training.start_training()
    assert "Nothing is annotated yet" in widget.status_label.text()


def test_propagating_with_nothing_painted_says_what_to_do_without_a_traceback(scene, qtbot, monkeypatch):
    """Defect: the check ran in the worker thread, so the user got a traceback and three error
    notifications (one of them napari's TypeError from its worker) instead of one message."""
    from napari_semiseg.ui import propagation_panel

    viewer, widget, labels, truth = scene
    labels.data = np.zeros_like(labels.data)
    errors, warnings = [], []
    monkeypatch.setattr(propagation_panel, "show_error", errors.append)
    monkeypatch.setattr(propagation_panel, "show_warning", warnings.append)
    assert not widget.registration.start()
    qtbot.wait(200)
    assert errors == [] and warnings == ["No painted slice: paint at least one slice before propagating."]
    assert "paint at least one slice" in widget.status_label.text()
    assert widget.registration.propagate_button.isEnabled()


def test_killed_training_process_is_reported_and_viewer_keeps_working(scene, qtbot):
    viewer, widget, labels, truth = scene
    widget.training.budget_unit.setCurrentText("minutes")
    widget.training.budget_spin.setValue(10)
    assert widget.training.start_training()
    qtbot.waitUntil(lambda: "Iteration" in widget.status_label.text(), timeout=TRAINING_TIMEOUT_MS)
    if hasattr(os, "SCHED_IDLE"):  # training yields every contended core to the viewer
        assert os.sched_getscheduler(widget.session.process.pid) == os.SCHED_IDLE
    widget.session.process.kill()
    qtbot.waitUntil(lambda: not widget.session.process.running, timeout=10_000)
    assert "ended unexpectedly" in widget.status_label.text()
    before = labels.data.copy()
    labels.data_setitem((np.array([0]), np.array([0]), np.array([0])), 2)
    assert labels.data[0, 0, 0] == 2 and widget.training.start_button.isEnabled()
    assert np.array_equal(np.delete(labels.data.ravel(), 0), np.delete(before.ravel(), 0))


def test_propagation_fills_slices_with_scores_and_threshold_acceptance_is_one_undo_step(scene, qtbot):
    viewer, widget, labels, truth = scene
    panel = widget.registration
    assert panel.start()
    qtbot.waitUntil(lambda: panel.result is not None, timeout=120_000)
    registered = viewer.layers["registered pseudo-labels"]
    assert registered.data.shape == truth.shape
    np.testing.assert_allclose(registered.scale, labels.scale)
    unpainted = [0, 2, 3, 5, 7]
    agreement = np.mean(registered.data[unpainted] == truth[unpainted])
    assert agreement > 0.9, f"propagated labels agree with the truth on {agreement:.2%} of voxels"
    assert panel.slice_list.count() == len(unpainted)
    assert set(panel.result.slice_scores) == set(unpainted)

    painted = labels.data.copy()
    accept = widget.accept  # the one set of accept controls, now taking the registered labels
    assert accept.source_combo.currentData() == "registration" and accept.accept_certain_button.isEnabled()
    accept.threshold_slider.setValue(50)
    changed = accept.accept_certain()
    assert changed > 0
    assert np.array_equal(labels.data[painted != 0], painted[painted != 0])
    labels.undo()
    assert np.array_equal(labels.data, painted)

    panel.slice_list.setCurrentRow(0)
    panel._go_to_slice(panel.slice_list.item(0))
    target = panel.slice_list.item(0).text().split(":")[0].split()[1]
    assert widget.viewer.dims.current_step[0] == int(target)


def test_dock_scrolls_instead_of_stretching_the_window_past_a_laptop_screen(scene, qtbot):
    viewer, widget, labels, truth = scene
    window = viewer.window._qt_window
    window.show()
    window.resize(1280, 720)
    qtbot.waitUntil(lambda: widget.isVisible())
    assert widget.scroll_area.widget().minimumSizeHint().height() > 720, "the panels stacked are taller than the screen"
    qtbot.waitUntil(lambda: window.height() <= 720)
    assert widget.scroll_area.verticalScrollBar().maximum() > 0, "the rest of the panels are a scroll away"
    # the dock settles its width a few event-loop turns after the window does
    qtbot.waitUntil(lambda: widget.scroll_area.horizontalScrollBar().maximum() == 0, timeout=3000)


def _propose(widget, truth):
    from napari_semiseg.ui.session import Proposal

    widget.session.set_proposal(Proposal(truth.copy(), np.ones(truth.shape, np.float32), None, {"model": "m.pt"}))


def test_one_set_of_accept_controls_enabled_only_with_something_to_accept(scene):
    """Defect: three 'Accept slice' and two 'Accept all' buttons in three boxes, enabled before
    any prediction existed."""
    from qtpy.QtWidgets import QPushButton

    viewer, widget, labels, truth = scene
    buttons = [b for b in widget.findChildren(QPushButton) if b.text().startswith("Accept")]
    assert sorted(b.text() for b in buttons) == ["Accept all", "Accept certain", "Accept component at cursor",
                                                 "Accept label", "Accept slice"]
    assert not any(b.isEnabled() for b in buttons), "nothing to accept yet"
    _propose(widget, truth)
    assert all(b.isEnabled() for b in buttons)
    source = widget.accept.source_combo
    source.setCurrentIndex(source.findData("registration"))
    assert not any(b.isEnabled() for b in buttons), "no registered labels yet"


def test_one_overlay_at_a_time_the_others_a_click_away_with_a_legend(scene):
    viewer, widget, labels, truth = scene
    overlays = widget.overlays
    assert all(button.isHidden() for name, button in overlays.buttons.items() if name != "none")
    _propose(widget, truth)
    assert overlays.visible_overlays() == ["prediction"] and overlays.buttons["prediction"].isChecked()
    shown = [name for name, legend in overlays.legends.items() if not legend.isHidden()]
    assert shown == ["prediction", "certainty", "review certainty", "provenance"], "a legend for each overlay there is"
    overlays.buttons["review certainty"].setChecked(True)
    assert overlays.visible_overlays() == ["review certainty"]
    viewer.layers["certainty"].visible = True  # switched on in napari's layer list: the box follows
    assert overlays.title() == "Overlays (2 on)" and not any(b.isChecked() for b in overlays.buttons.values())
    overlays.buttons["none"].setChecked(True)
    assert overlays.visible_overlays() == [] and viewer.layers["image"].visible
