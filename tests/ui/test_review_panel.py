"""Review panel: fused certainty layer, next-slice list, every acceptance kind with undo, provenance."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from app_model.types import KeyCode, KeyMod
from napari.utils.key_bindings import coerce_keybinding
from qtpy.QtCore import Qt

from napari_semiseg.core.phantoms import paint_slices, ring_phantom
from napari_semiseg.core.provenance import ACCEPTED_MODEL, ACCEPTED_REGISTRATION, EDITED, NONE, PAINTED
from napari_semiseg.core.registration.slices import PropagationResult
from napari_semiseg.core.volume import read_volume
from napari_semiseg.ui.layers import PROVENANCE_LAYER, REGION_LAYER, REVIEW_LAYER
from napari_semiseg.ui.session import Proposal
from napari_semiseg.ui.widget import SemisegWidget

SPACING, ORIGIN = (3.0, 0.8, 0.8), (10.0, -5.0, 2.0)
PAINTED_SLICES = [1, 4, 6]


@pytest.fixture
def scene(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    volume, truth = ring_phantom((8, 40, 40), seed=3)
    image = viewer.add_image(volume.array, name="image", scale=SPACING, translate=ORIGIN)
    labels = viewer.add_labels(paint_slices(truth, PAINTED_SLICES), name="annotations", scale=SPACING,
                               translate=ORIGIN)
    widget = SemisegWidget(viewer, runs_dir=tmp_path / "runs")
    viewer.window.add_dock_widget(widget)
    widget.data.image_combo.setCurrentText(image.name)
    widget.data.labels_combo.setCurrentText(labels.name)
    return viewer, widget, widget.accept, labels, truth


def _propose(widget, labels, certainty, disagreement=None, **facts) -> None:
    """A model's prediction arrives in the session (as at the end of a training)."""
    widget.session.set_proposal(Proposal(labels, certainty, disagreement, facts))


def _press(layer, key) -> None:
    """What napari runs for a shortcut pressed while ``layer`` is active (its own bindings first)."""
    layer.keymap[coerce_keybinding(key)](layer)


def _planted_prediction(truth):
    """The true labels as 'prediction', doubt planted where the answer is known."""
    certainty = np.ones(truth.shape, np.float32)
    disagreement = np.zeros(truth.shape, np.float32)
    certainty[5, :20] = 0.2  # low confidence on half of slice 5
    disagreement[2, :10] = 0.8  # the networks disagree on a quarter of slice 2
    certainty[4] = 0.0  # slice 4 is painted: never suggested however doubtful
    return truth.copy(), certainty, disagreement


def _changed(before, after):
    return before != after


def test_certainty_layer_ranking_and_click_jumps_to_the_slice(scene, qtbot):
    viewer, widget, panel, labels, truth = scene
    _propose(widget, *_planted_prediction(truth), model="runs/x/model.pt")
    fused = viewer.layers[REVIEW_LAYER]
    np.testing.assert_allclose(fused.scale, labels.scale)
    assert fused.data[5, 0, 0] == pytest.approx(0.6) and fused.data[2, 0, 0] == pytest.approx(0.6)
    listed = [widget.review.next_list.item(i).data(Qt.UserRole) for i in range(widget.review.next_list.count())]
    assert listed[:2] == [5, 2] and set(listed) == {0, 2, 3, 5, 7}
    assert "low confidence" in widget.review.next_list.item(0).text()
    assert "network disagreement" in widget.review.next_list.item(1).text()
    assert widget.review.summary_label.text().startswith("5 unpainted slices: mean certainty 0.94, ")

    viewer.dims.set_current_step(0, 0)
    widget.review.next_list.show()
    item = widget.review.next_list.item(1)
    qtbot.mouseClick(widget.review.next_list.viewport(), Qt.LeftButton, pos=widget.review.next_list.visualItemRect(item).center())
    qtbot.waitUntil(lambda: viewer.dims.current_step[0] == 2, timeout=3000)


def _draw_rectangle(panel, viewer, z, low, high):
    shapes = panel.add_region_layer()
    assert viewer.layers.selection.active is shapes and shapes.mode == "add_rectangle"
    (y0, x0), (y1, x1) = low, high
    shapes.add([[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]], shape_type="rectangle")
    return shapes


def test_every_acceptance_kind_is_one_undo_step_and_keeps_painted_voxels(scene):
    viewer, widget, panel, labels, truth = scene
    prediction, certainty, disagreement = _planted_prediction(truth)
    prediction[:, :, :3] = 2  # a wrong strip that also covers painted voxels
    _propose(widget, prediction, certainty, disagreement, model="runs/x/model.pt")
    painted = labels.data.copy()
    unpainted = painted == 0
    fused = widget.session.review.certainty
    slice3 = np.zeros(truth.shape, bool)
    slice3[3] = True
    component = np.zeros(truth.shape, bool)
    component[:, :, :3] = True  # the strip is one 3D component of label 2
    region = np.zeros(truth.shape, bool)
    region[5, 15:26, 10:30] = True  # the rectangle drawn below, on slice 5

    def accept_region():
        viewer.dims.set_current_step(0, 5)
        _draw_rectangle(panel, viewer, 5, (14.5, 9.5), (25.5, 29.5))
        panel.threshold_slider.setValue(70)
        return panel.accept_certain()

    def accept_component():
        viewer.cursor.position = labels.data_to_world((6, 20, 1))
        return panel.accept_component_at_cursor()

    def accept_slice():
        viewer.dims.set_current_step(0, 3)
        return panel.accept_slice()

    cases = {
        "all": (panel.accept_all, prediction != 0),
        "slice": (accept_slice, slice3 & (prediction != 0)),
        "label": (lambda: panel.accept_label(1), prediction == 1),
        "component": (accept_component, component),
        "region": (accept_region, region & (fused >= 0.7) & (prediction != 0)),
    }
    for kind, (accept, expected) in cases.items():
        history = len(labels._undo_history)
        assert accept() > 0, kind
        assert len(labels._undo_history) == history + 1, f"{kind}: not one undo step"
        changed = _changed(painted, labels.data)
        assert np.array_equal(changed, expected & unpainted), kind
        assert np.array_equal(labels.data[changed], prediction[changed]), kind
        assert (widget.session.provenance_of().codes[changed] == ACCEPTED_MODEL).all(), kind
        labels.undo()
        assert np.array_equal(labels.data, painted), f"{kind}: undo did not restore the labels exactly"
        widget.review.sync_provenance()
        assert (widget.session.provenance_of().codes[unpainted] == NONE).all(), kind
    assert np.unique(region[5] & (fused[5] < 0.7)).tolist() == [False, True], "threshold test needs both sides"
    assert viewer.layers[REGION_LAYER].ndim == 3

    panel.overwrite_check.setChecked(True)
    assert panel.accept_all() == int((prediction != painted).sum())
    labels.undo()
    assert np.array_equal(labels.data, painted)


def test_click_mode_accepts_the_component_under_the_click(scene):
    viewer, widget, panel, labels, truth = scene
    _propose(widget, *_planted_prediction(truth))
    painted = labels.data.copy()
    panel.click_check.setChecked(True)
    assert labels.mode == "pan_zoom"
    event = SimpleNamespace(type="mouse_press", button=1, position=labels.data_to_world((2, 20, 20)))
    panel._on_click(viewer, event)
    changed = _changed(painted, labels.data)
    assert changed.any() and (labels.data[changed] == truth[2, 20, 20]).all()
    labels.undo()
    assert np.array_equal(labels.data, painted)
    panel.click_check.setChecked(False)
    panel._on_click(viewer, event)
    assert np.array_equal(labels.data, painted)


def test_provenance_follows_registration_and_model_acceptance_user_edits_and_exports(scene, qtbot, tmp_path):
    viewer, widget, panel, labels, truth = scene
    quality = np.ones(truth.shape, np.float32)
    quality[2] = 0.3
    filled = [0, 2, 3, 5, 7]
    result = PropagationResult(truth.copy(), quality, {i: 0.9 - 0.1 * i for i in filled}, tuple(PAINTED_SLICES), 0)
    widget.registration._show(result, 1.0)  # as when propagation finishes
    assert panel.source_combo.currentData() == "registration"
    assert widget.review.next_list.item(0).data(Qt.UserRole) == 2
    assert "low registration consistency" in widget.review.next_list.item(0).text()
    assert "registration score 0.70" in widget.review.next_list.item(0).text()

    viewer.dims.set_current_step(0, 2)
    assert panel.accept_slice() > 0
    viewer.dims.set_current_step(0, 3)
    panel.accept_slice()  # still from the registered labels
    _propose(widget, truth.copy(), np.ones(truth.shape, np.float32), None, model="runs/a/model.pt", iteration=40)
    assert panel.source_combo.currentData() == "model", "a new prediction is what the accept buttons take"
    viewer.dims.set_current_step(0, 5)
    assert widget.accept.accept_slice() > 0

    codes = widget.session.provenance_of().codes
    assert (codes[2][truth[2] != 0] == ACCEPTED_REGISTRATION).all()
    assert (codes[3][truth[3] != 0] == ACCEPTED_REGISTRATION).all()
    assert (codes[5][truth[5] != 0] == ACCEPTED_MODEL).all()
    assert (codes[1][truth[1] != 0] == PAINTED).all() and (codes[0] == NONE).all()

    y, x = np.argwhere(truth[5] != 0)[0]
    labels.selected_label = 7
    labels.brush_size = 1
    labels.paint((5, y, x), 7)  # the user corrects an accepted voxel
    widget.review.sync_provenance()
    codes = viewer.layers[PROVENANCE_LAYER].data
    assert codes[5, y, x] == EDITED and (codes == EDITED).sum() == 1
    _press(labels, KeyMod.CtrlCmd | KeyCode.KeyZ)  # Ctrl+Z on the layer undoes the correction ...
    qtbot.waitUntil(lambda: viewer.layers[PROVENANCE_LAYER].data[5, y, x] == ACCEPTED_MODEL, timeout=3000)
    _press(labels, KeyMod.CtrlCmd | KeyMod.Shift | KeyCode.KeyZ)  # ... and Ctrl+Shift+Z redoes it
    qtbot.waitUntil(lambda: viewer.layers[PROVENANCE_LAYER].data[5, y, x] == EDITED, timeout=3000)
    codes = viewer.layers[PROVENANCE_LAYER].data

    written = widget.export.export_labels(str(tmp_path / "mask.nii.gz"))
    assert written and "Exported and verified" in widget.status_label.text()
    sidecar = read_volume(tmp_path / "mask_provenance.nii.gz")
    assert np.array_equal(sidecar.array, codes)
    np.testing.assert_allclose(sidecar.geometry.spacing, SPACING)
    np.testing.assert_allclose(sidecar.geometry.origin, ORIGIN)
    record = json.loads((tmp_path / "mask_provenance.json").read_text())
    sources = [(a["source"], a["scope"], a["slices"]) for a in record["acceptances"]]
    assert sources == [("registration", "slice", [2]), ("registration", "slice", [3]), ("model", "slice", [5])]
    assert record["acceptances"][0]["registration_scores"] == {"2": pytest.approx(0.7)}
    assert record["acceptances"][2]["model"] == "runs/a/model.pt" and record["acceptances"][2]["iteration"] == 40
    assert record["counts"]["edited after acceptance"] == 1 and record["labels_file"] == "mask.nii.gz"


def test_provenance_works_through_the_plugin_dock_widget(make_napari_viewer):
    """napari gives plugin widgets a viewer proxy that wraps layers anew on each access."""
    viewer = make_napari_viewer()
    volume, truth = ring_phantom((6, 32, 32), seed=1)
    viewer.add_image(volume.array, name="image")
    viewer.add_labels(paint_slices(truth, [2]), name="annotations")
    _, widget = viewer.window.add_plugin_dock_widget("napari-semiseg", "Semi-supervised segmentation")
    widget.data.image_combo.setCurrentText("image")
    widget.data.labels_combo.setCurrentText("annotations")
    _propose(widget, truth.copy(), np.ones(truth.shape, np.float32), None)
    viewer.dims.set_current_step(0, 4)
    assert widget.accept.accept_slice() > 0
    codes = viewer.layers[PROVENANCE_LAYER].data
    assert (codes[4][truth[4] != 0] == ACCEPTED_MODEL).all() and (codes[2][truth[2] != 0] == PAINTED).all()
    assert "accepted from model" in widget.review.provenance_label.text()
