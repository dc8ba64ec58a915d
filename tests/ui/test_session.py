"""The session model on its own: no panel, no window, only napari's viewer model and the session."""

import json

import numpy as np
import pytest
from napari.components import ViewerModel

from napari_semiseg.core.events import TrainingFinished
from napari_semiseg.core.phantoms import paint_slices, ring_phantom
from napari_semiseg.core.project import Project
from napari_semiseg.core.provenance import ACCEPTED_MODEL
from napari_semiseg.ui.session import Session
from napari_semiseg.ui.training_process import VolumePredicted


@pytest.fixture
def session(qapp, tmp_path):
    viewer = ViewerModel()
    volume, truth = ring_phantom((6, 32, 32), seed=1)
    viewer.add_image(volume.array, name="image")
    viewer.add_labels(paint_slices(truth, [1, 4]), name="annotations")
    session = Session(viewer, runs_dir=tmp_path / "runs")
    session.choose_layers("image", "annotations")
    return session, truth


def _finish_a_run(session, truth, model_path):
    """What the worker process sends at the end of a training: the prediction, then the model."""
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model_path.write_bytes(b"a model")
    certainty = np.ones(truth.shape, np.float32)
    session.handle(VolumePredicted(0, truth.copy(), certainty, np.zeros_like(certainty), str(model_path)))
    session.handle(TrainingFinished(12, "budget", str(model_path), 3.0))


def test_the_session_owns_layers_and_scheme_and_says_when_they_change(session):
    session, truth = session
    heard = []
    session.layers_changed.connect(lambda: heard.append("layers"))
    session.scheme_changed.connect(lambda: heard.append("scheme"))
    assert session.image_layer.name == "image" and session.labels_layer.name == "annotations"
    session.choose_layers(labels="annotations")  # no change, no signal
    layer = session.add_annotation_layer()
    assert session.labels_layer is layer and layer.data.shape == truth.shape
    from napari_semiseg.core.annotations import AnnotationMode

    session.set_annotation(AnnotationMode.SCRIBBLES, 7)
    assert session.scheme().background_label == 7 and session.scheme().axis == 0
    assert heard == ["layers", "scheme"]


def test_a_finished_run_becomes_the_proposal_the_current_model_and_one_registry_entry(session, tmp_path):
    session, truth = session
    proposals, models = [], []
    session.proposal_changed.connect(proposals.append)
    session.model_changed.connect(models.append)
    _finish_a_run(session, truth, tmp_path / "runs" / "a" / "model.pt")
    assert len(proposals) == 1 and np.array_equal(proposals[0].labels, truth)
    (version,) = session.versions.versions()
    assert session.current_model == str(tmp_path / "runs" / "a" / "model.pt") == models[-1]
    assert session.proposal.facts == {"model": str(tmp_path / "runs" / "a" / "model.pt"), "iteration": 12,
                                      "version": f"v{version.id}"}


def test_in_a_project_the_run_registry_is_the_projects_and_the_manifest_keeps_no_second_list(session, tmp_path):
    """Defect: the widget listed runs in versions.json of a home folder, the project in its manifest."""
    session, truth = session
    project = Project.create(tmp_path / "proj")
    session.set_project(project, "image")
    _finish_a_run(session, truth, project.new_run_dir() / "model.pt")
    reopened = Project.open(project.folder)
    assert len(reopened.runs) == 1 and reopened.runs[0].iteration == 12
    assert reopened.latest_model() == (project.folder / reopened.runs[0].path).resolve()
    assert [v.iterations for v in reopened.versions.versions()] == [12]
    assert "runs" not in json.loads((project.folder / "project.json").read_text())


def test_an_acceptance_is_one_undo_step_noted_in_the_provenance(session):
    session, truth = session
    labels = session.labels_layer
    before = labels.data.copy()
    accepted = []
    session.accepted.connect(lambda: accepted.append(True))
    indices = np.nonzero((truth != 0) & (before == 0))
    written = session.accept(indices, truth[indices], "model", "all", model="m.pt")
    assert written == len(indices[0]) and accepted == [True]
    assert (session.provenance_of().codes[indices] == ACCEPTED_MODEL).all()
    assert session.provenance_of().records[-1]["model"] == "m.pt"
    labels.undo()
    assert np.array_equal(labels.data, before)
