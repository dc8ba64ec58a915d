"""Provenance codes follow acceptances, user edits, undo and redo."""

import json

import numpy as np
import pytest

from napari_semiseg.core.accept import accept_slice_edit, acceptance_edit
from napari_semiseg.core.provenance import (
    ACCEPTED_MODEL,
    ACCEPTED_REGISTRATION,
    EDITED,
    NONE,
    PAINTED,
    Provenance,
    slices_touched,
)


def _apply(labels, provenance, edit, source, scope, **details):
    indices, values = edit
    record = provenance.record_acceptance(labels, indices, values, source, scope, **details)
    undo = (indices, labels[indices].copy())
    labels[indices] = values
    return record, undo


def test_codes_after_accepts_and_a_user_edit_and_undo():
    labels = np.zeros((3, 4, 4), np.uint8)
    labels[0, 0, 0] = 2
    provenance = Provenance.for_labels(labels)
    assert provenance.codes[0, 0, 0] == PAINTED and provenance.codes.sum() == PAINTED

    proposal = np.ones_like(labels)
    record, _ = _apply(labels, provenance, accept_slice_edit(labels, proposal, 0, 1), "model", "slice",
                       model="run/model.pt", iteration=np.int64(40))
    assert record["voxels"] == 16 and record["iteration"] == 40 and record["model"] == "run/model.pt"
    registered = np.full_like(labels, 3)
    _, undo_registration = _apply(labels, provenance, acceptance_edit(labels, registered, np.s_[2]), "registration",
                                  "slice", registration_scores={2: np.float32(0.8)})
    assert provenance.update(labels) is False
    assert (provenance.codes[1] == ACCEPTED_MODEL).all() and (provenance.codes[2] == ACCEPTED_REGISTRATION).all()
    assert provenance.codes[0, 0, 0] == PAINTED

    labels[1, 2, 2] = 2  # the user paints over an accepted voxel
    labels[1, 3, 3] = 0  # ... and erases another
    labels[0, 3, 3] = 1  # ... and paints a new one
    assert provenance.update(labels)
    assert provenance.codes[1, 2, 2] == EDITED and provenance.codes[1, 3, 3] == EDITED
    assert provenance.codes[0, 3, 3] == PAINTED
    assert provenance.user_painted().sum() == 4
    labels[1, 2, 2] = 1  # painting the accepted value back is no edit
    provenance.update(labels)
    assert provenance.codes[1, 2, 2] == ACCEPTED_MODEL

    labels[undo_registration[0]] = undo_registration[1]  # undo the registration acceptance
    provenance.update(labels)
    assert (provenance.codes[2] == NONE).all() and len(provenance.records) == 1
    labels[undo_registration[0]] = 3  # redo
    provenance.update(labels)
    assert (provenance.codes[2] == ACCEPTED_REGISTRATION).all() and len(provenance.records) == 2

    sidecar = json.loads(json.dumps(provenance.to_json(labels_file="mask.nii.gz")))
    assert sidecar["codes"]["4"] == "edited after acceptance"
    assert [r["source"] for r in sidecar["acceptances"]] == ["model", "registration"]
    assert sidecar["acceptances"][1]["registration_scores"] == {"2": pytest.approx(0.8)}
    assert sidecar["counts"]["edited after acceptance"] == 1 and sidecar["labels_file"] == "mask.nii.gz"


def test_bad_source_and_shape_are_refused():
    provenance = Provenance.for_labels(np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="source"):
        provenance.record_acceptance(np.zeros((1, 2, 2)), (np.array([0]),) * 3, [1], "guess", "all")
    with pytest.raises(ValueError, match="shape"):
        provenance.update(np.zeros((2, 2, 2), np.uint8))


def test_slices_touched():
    assert slices_touched((np.array([3, 1, 3]), np.array([0, 0, 1]), np.array([0, 0, 0])), 0) == [1, 3]


def test_sidecar_is_written_beside_the_labels_in_their_geometry(tmp_path):
    from napari_semiseg._writer import provenance_paths, write_provenance
    from napari_semiseg.core.volume import Geometry, read_volume

    assert provenance_paths(str(tmp_path / "case1_seg.nrrd")) == (
        str(tmp_path / "case1_seg_provenance.nrrd"), str(tmp_path / "case1_seg_provenance.json"))
    labels = np.zeros((3, 4, 5), np.uint8)
    labels[1] = 2
    provenance = Provenance.for_labels(labels)
    indices = np.nonzero(np.ones((3, 4, 5), bool) & (labels == 0))
    provenance.record_acceptance(labels, indices, 1, "model", "all", model="m.pt", iteration=7)
    geometry = Geometry(spacing=(2.0, 0.5, 0.7), origin=(1.0, 2.0, 3.0))
    meta = {"metadata": {"semiseg": {"geometry": geometry.to_dict()}}, "name": "mask"}
    written = write_provenance(str(tmp_path / "mask.mha"), provenance.codes, provenance.to_json(), meta)
    assert [p.split("/")[-1] for p in written] == ["mask_provenance.mha", "mask_provenance.json"]
    reread = read_volume(written[0])
    assert np.array_equal(reread.array, provenance.codes) and reread.array.dtype == np.uint8
    np.testing.assert_allclose(reread.geometry.spacing, geometry.spacing)
    record = json.loads((tmp_path / "mask_provenance.json").read_text())
    assert record["acceptances"][0]["iteration"] == 7 and record["provenance_map"] == "mask_provenance.mha"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_provenance_saved_with_the_labels_comes_back_the_same(tmp_path):
    """Defect: the project kept no provenance, so after reopening accepted voxels counted as
    painted by the user."""
    from napari_semiseg.core.project import Project
    from napari_semiseg.core.volume import Volume, write_volume

    labels = np.zeros((3, 4, 4), np.uint8)
    labels[0, 0, :2] = 1  # painted
    provenance = Provenance.for_labels(labels)
    _apply(labels, provenance, acceptance_edit(labels, np.full_like(labels, 2), None), "model", "all",
           model="runs/a/model.pt", iteration=40)
    labels[2, 3, 3] = 5  # an accepted voxel the user corrects
    provenance.update(labels)

    image = write_volume(Volume(np.zeros(labels.shape, np.float32)), tmp_path / "image.nii.gz")
    project = Project.create(tmp_path / "proj")
    name = project.add_volume(str(image)).name
    project.save_annotations(name, labels, provenance.saved_state())
    saved = Project.open(tmp_path / "proj").load_annotations(name)
    restored = Provenance.from_saved(saved.labels, saved.provenance)
    np.testing.assert_array_equal(restored.codes, provenance.codes)
    assert (restored.codes == ACCEPTED_MODEL).sum() == labels.size - 3 and (restored.codes == EDITED).sum() == 1
    assert restored.records == provenance.records and restored.records[0]["iteration"] == 40
    assert restored.to_json()["counts"] == provenance.to_json()["counts"]

    project.save_annotations(name, labels)  # a save without provenance reads back as none
    assert Project.open(tmp_path / "proj").load_annotations(name).provenance is None
