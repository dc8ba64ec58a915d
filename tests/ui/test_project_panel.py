"""Projects in the widget: create, autosave, reopen, survive a killed training process, export."""

import errno
import json
import os
import signal

import numpy as np
import pytest

from napari_semiseg.core import project as project_module
from napari_semiseg.core.autosave import AutosaveClock
from napari_semiseg.core.phantoms import paint_slices, ring_phantom
from napari_semiseg.core.project import Project
from napari_semiseg.core.provenance import ACCEPTED_MODEL, PAINTED
from napari_semiseg.core.volume import Geometry, read_volume
from napari_semiseg.ui.layers import PREVIEW_METADATA_KEY
from napari_semiseg.ui.layers import PROVENANCE_LAYER
from napari_semiseg.ui.session import Proposal
from napari_semiseg.ui.widget import SemisegWidget

TRAINING_TIMEOUT_MS = 180_000
GEOMETRY = Geometry(spacing=(3.0, 0.8, 0.8), origin=(10.0, -5.0, 2.0))


@pytest.fixture
def scene(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    volume, truth = ring_phantom((8, 48, 48), seed=2, spacing=GEOMETRY.spacing)
    viewer.add_image(volume.array, name="image", scale=GEOMETRY.spacing, translate=GEOMETRY.origin)
    labels = viewer.add_labels(paint_slices(truth, [1, 4, 6]), name="annotations", scale=GEOMETRY.spacing,
                               translate=GEOMETRY.origin)
    widget = SemisegWidget(viewer, runs_dir=tmp_path / "elsewhere")
    widget.project.clock = AutosaveClock(quiet_seconds=0.3, max_unsaved_seconds=2.0)
    viewer.window.add_dock_widget(widget)
    widget.data.image_combo.setCurrentText("image")
    widget.data.labels_combo.setCurrentText("annotations")
    return viewer, widget, labels, truth


def _paint(labels, z, value=2):
    index = (np.full(5, z), np.arange(10, 15), np.full(5, 20))
    labels.data_setitem(index, value)


def test_a_project_autosaves_edits_and_reopening_restores_the_session(scene, qtbot, tmp_path, make_napari_viewer):
    viewer, widget, labels, truth = scene
    panel = widget.project
    project = panel.create_project(tmp_path / "proj")
    assert project is not None and widget.session.versions.runs_dir == project.runs_dir
    assert np.array_equal(project.load_annotations("image").labels, labels.data)
    assert read_volume(project.source_path("image")).geometry.matches(GEOMETRY)

    _paint(labels, 3)
    assert panel.saved_label.text() == "unsaved changes"
    qtbot.waitUntil(lambda: panel.saved_label.text().startswith("saved "), timeout=5_000)
    assert np.array_equal(Project.open(project.folder).load_annotations("image").labels, labels.data)

    viewer.dims.order = (1, 0, 2)  # annotate along y from now on
    _paint(labels, 5)
    qtbot.waitUntil(lambda: panel.saved_label.text().startswith("saved "), timeout=5_000)
    edited = labels.data.copy()

    other_viewer = make_napari_viewer()
    other = SemisegWidget(other_viewer, runs_dir=tmp_path / "unused")
    assert other.project.open_project(project.folder) is not None
    image, restored = other_viewer.layers["image"], other_viewer.layers["image annotations"]
    assert np.array_equal(restored.data, edited)
    np.testing.assert_allclose(image.scale, GEOMETRY.spacing)
    np.testing.assert_allclose(restored.translate, GEOMETRY.origin)
    assert other.data.labels_combo.currentText() == "image annotations"
    assert other.session.scheme().axis == 1
    assert other.session.versions.runs_dir == project.runs_dir


def test_sigkill_of_training_is_reported_and_the_next_run_resumes_from_the_checkpoint(scene, qtbot, tmp_path):
    viewer, widget, labels, truth = scene
    panel = widget.project
    project = panel.create_project(tmp_path / "proj")
    widget.session.checkpoint_seconds = 0.5
    widget.training.strategy_combo.setCurrentIndex(widget.training.strategy_combo.findData("supervised"))
    widget.training.budget_unit.setCurrentText("minutes")
    widget.training.budget_spin.setValue(10)
    assert widget.training.start_training()
    qtbot.waitUntil(lambda: widget.session.last_checkpoint is not None, timeout=TRAINING_TIMEOUT_MS)
    os.kill(widget.session.process.pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: not widget.session.process.running, timeout=15_000)
    text = widget.status_label.text()
    assert "ended unexpectedly" in text and "resume from the checkpoint at iteration" in text
    reached = widget.session.last_checkpoint.iteration

    _paint(labels, 2)  # the viewer still works, and the edit is saved
    qtbot.waitUntil(lambda: panel.saved_label.text().startswith("saved "), timeout=5_000)
    assert np.array_equal(project.load_annotations("image").labels, labels.data)

    assert widget.training.continue_check.isChecked()
    widget.training.budget_unit.setCurrentText("iterations")
    widget.training.budget_spin.setValue(3)
    assert widget.training.start_training()
    qtbot.waitUntil(lambda: not widget.session.process.running, timeout=TRAINING_TIMEOUT_MS)
    assert f"after {reached + 3} iterations" in widget.status_label.text(), widget.status_label.text()
    assert Project.open(project.folder).runs[-1].iteration == reached + 3


def test_a_full_disk_is_shown_and_the_last_save_still_loads(scene, qtbot, tmp_path, monkeypatch):
    viewer, widget, labels, truth = scene
    panel = widget.project
    project = panel.create_project(tmp_path / "proj")
    saved = labels.data.copy()

    def disk_full(stream, array):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(project_module, "_write_npz", disk_full)
    _paint(labels, 0)
    qtbot.waitUntil(lambda: panel.saved_label.text().startswith("not saved"), timeout=5_000)
    assert "the disk is full" in panel.saved_label.text() and "Free some disk space" in panel.saved_label.text()
    assert np.array_equal(project.load_annotations("image").labels, saved)
    monkeypatch.undo()
    assert panel.save_now() and np.array_equal(project.load_annotations("image").labels, labels.data)


def test_export_all_writes_labels_certainty_and_provenance_in_the_source_geometry(scene, tmp_path):
    viewer, widget, labels, truth = scene
    certainty = np.random.default_rng(0).random(truth.shape).astype(np.float32)
    viewer.add_image(certainty, name="certainty", scale=GEOMETRY.spacing, translate=GEOMETRY.origin)
    provenance = (labels.data > 0).astype(np.uint8)  # what the review panel tracks: all painted by the user
    files = widget.export.export_all(tmp_path / "out")
    assert [f.name for f in files] == ["annotations_seg.nii.gz", "annotations_certainty.nii.gz",
                                       "annotations_provenance.nii.gz", "annotations_provenance.json"]
    for name, expected in (("seg", labels.data), ("certainty", certainty), ("provenance", provenance)):
        back = read_volume(tmp_path / "out" / f"annotations_{name}.nii.gz")
        assert back.geometry.matches(GEOMETRY)
        np.testing.assert_array_equal(back.array, expected)
    assert json.loads(files[-1].read_text())["codes"]["1"] == "painted by user"
    assert "Exported and verified" in widget.status_label.text()


def test_export_during_training_leaves_out_the_preview_certainty(scene, tmp_path):
    """While a training runs, the certainty layer holds previews (ones off the previewed slices):
    exporting it as the certainty map would mislead, so export leaves it out and says why."""
    viewer, widget, labels, truth = scene
    viewer.add_image(np.ones(truth.shape, np.float32), name="certainty", scale=GEOMETRY.spacing,
                     translate=GEOMETRY.origin, metadata={PREVIEW_METADATA_KEY: True})
    provenance = ["annotations_provenance.nii.gz", "annotations_provenance.json"]  # always tracked, always written
    files = widget.export.export_all(tmp_path / "out")
    assert [f.name for f in files] == ["annotations_seg.nii.gz", *provenance]
    assert "certainty map was left out" in widget.status_label.text()
    viewer.layers["certainty"].metadata[PREVIEW_METADATA_KEY] = False  # the final prediction arrived
    files = widget.export.export_all(tmp_path / "again")
    assert [f.name for f in files] == ["annotations_seg.nii.gz", "annotations_certainty.nii.gz", *provenance]


def _press(layer, key, napari_default) -> None:
    """What napari runs for a shortcut pressed while ``layer`` is active: the layer's own binding
    if it has one, else napari's (``napari_default``)."""
    from napari.utils.key_bindings import coerce_keybinding

    layer.keymap.get(coerce_keybinding(key), napari_default)(layer)


def test_undo_and_redo_are_autosaved_and_the_annotated_summary_follows(scene, qtbot, tmp_path):
    """Defect: autosave listened to paint and data events only, so after Ctrl+Z the file on disk
    kept the undone stroke while the panel said 'saved', and the summary stayed stale."""
    from app_model.types import KeyCode, KeyMod

    viewer, widget, labels, truth = scene
    panel = widget.project
    project = panel.create_project(tmp_path / "proj")
    before = labels.data.copy()
    _paint(labels, 3)
    qtbot.waitUntil(lambda: panel.saved_label.text().startswith("saved "), timeout=5_000)
    qtbot.waitUntil(lambda: widget.data.annotated_label.text().startswith("4 of 8"), timeout=5_000)

    _press(labels, KeyMod.CtrlCmd | KeyCode.KeyZ, type(labels).undo)
    assert np.array_equal(labels.data, before)
    assert panel.saved_label.text() == "unsaved changes"
    qtbot.waitUntil(lambda: panel.saved_label.text().startswith("saved "), timeout=5_000)
    assert np.array_equal(Project.open(project.folder).load_annotations("image").labels, before)
    qtbot.waitUntil(lambda: widget.data.annotated_label.text().startswith("3 of 8"), timeout=5_000)

    _press(labels, KeyMod.CtrlCmd | KeyMod.Shift | KeyCode.KeyZ, type(labels).redo)
    qtbot.waitUntil(lambda: panel.saved_label.text().startswith("saved "), timeout=5_000)
    assert np.array_equal(Project.open(project.folder).load_annotations("image").labels, labels.data)
    assert not np.array_equal(labels.data, before)


def test_closing_the_viewer_saves_and_ends_the_training_process(scene, qtbot, tmp_path):
    """Defects: the widget's close handler did not run when the viewer closed, so the last edit
    was not saved and the training process outlived the viewer."""
    import psutil

    viewer, widget, labels, truth = scene
    panel = widget.project
    project = panel.create_project(tmp_path / "proj")
    panel.clock = AutosaveClock(quiet_seconds=3600, max_unsaved_seconds=3600)  # only the close can save
    widget.training.strategy_combo.setCurrentIndex(widget.training.strategy_combo.findData("supervised"))
    widget.training.budget_unit.setCurrentText("minutes")
    widget.training.budget_spin.setValue(10)
    assert widget.training.start_training()
    child = psutil.Process(widget.session.process.pid)
    _paint(labels, 3)
    edited = labels.data.copy()
    assert panel.saved_label.text() == "unsaved changes"

    viewer.close()
    qtbot.waitUntil(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, timeout=15_000)
    assert np.array_equal(Project.open(project.folder).load_annotations("image").labels, edited)


def test_export_all_writes_the_provenance_the_review_panel_tracked(scene, tmp_path):
    """Defect: Export all read a provenance record from the provenance layer's metadata, which
    nothing sets, and wrote '{}' (reported as verified); it must write what Export labels writes."""
    viewer, widget, labels, truth = scene
    widget.session.set_proposal(Proposal(truth.copy(), np.ones(truth.shape, np.float32), None, {"model": "runs/a/model.pt"}))
    viewer.dims.set_current_step(0, 2)
    assert widget.accept.accept_slice() > 0
    codes = widget.session.provenance_of(labels).codes.copy()
    assert PROVENANCE_LAYER in viewer.layers and (codes == ACCEPTED_MODEL).any() and (codes == PAINTED).any()

    files = widget.export.export_all(tmp_path / "out")
    # the proposal is on screen as after a training, with its certainty map
    assert [f.name for f in files] == ["annotations_seg.nii.gz", "annotations_certainty.nii.gz",
                                       "annotations_provenance.nii.gz", "annotations_provenance.json"]
    back = read_volume(tmp_path / "out" / "annotations_provenance.nii.gz")
    assert back.geometry.matches(GEOMETRY) and np.array_equal(back.array, codes)
    record = json.loads(files[-1].read_text())
    assert [(a["source"], a["scope"], a["slices"]) for a in record["acceptances"]] == [("model", "slice", [2])]
    assert record["acceptances"][0]["model"] == "runs/a/model.pt"
    assert record["counts"]["accepted from model"] == int((codes == ACCEPTED_MODEL).sum())
    assert record["labels_file"] == "annotations_seg.nii.gz"


def test_reopening_a_project_keeps_what_was_accepted_from_the_model(scene, qtbot, tmp_path, make_napari_viewer):
    """Defect: the project kept no provenance, so after reopening the voxels accepted from the
    model counted as painted by the user (and their slices as painted)."""
    viewer, widget, labels, truth = scene
    project = widget.project.create_project(tmp_path / "proj")
    widget.session.set_proposal(Proposal(truth.copy(), np.ones(truth.shape, np.float32), None, {"model": "runs/a/model.pt"}))
    viewer.dims.set_current_step(0, 2)
    assert widget.accept.accept_slice() > 0
    codes = widget.session.provenance_of(labels).codes.copy()
    assert widget.project.save_now()

    other_viewer = make_napari_viewer()
    other = SemisegWidget(other_viewer, runs_dir=tmp_path / "unused")
    assert other.project.open_project(project.folder) is not None
    restored = other.session.provenance_of(other_viewer.layers["image annotations"])
    np.testing.assert_array_equal(restored.codes, codes)
    assert (restored.codes[2][truth[2] != 0] == ACCEPTED_MODEL).all()
    assert [(a["source"], a["slices"]) for a in restored.records] == [("model", [2])]
    assert 2 not in other.review._painted_slices(restored)
