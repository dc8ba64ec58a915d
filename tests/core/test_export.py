"""Export writes masks, certainty and provenance in the source geometry and checks them on disk."""

import json

import numpy as np
import pytest

from napari_semiseg.core import volume as volume_module
from napari_semiseg.core.export import ExportItem, export_maps
from napari_semiseg.core.volume import Geometry, VolumeError, read_volume

GEOMETRY = Geometry((3.0, 0.7, 0.9), (10.0, -4.0, 2.5), (1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0))


def _maps():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(5, 12, 10)).astype(np.int64)
    certainty = rng.random((5, 12, 10)).astype(np.float32)
    provenance = rng.integers(0, 4, size=(5, 12, 10)).astype(np.int32)
    return labels, certainty, provenance


def test_masks_certainty_and_provenance_are_written_in_the_source_geometry(tmp_path):
    labels, certainty, provenance = _maps()
    legend = {"0": "not set", "1": "painted", "2": "accepted prediction", "3": "registration"}
    result = export_maps(tmp_path, "case01", GEOMETRY, [
        ExportItem("seg", labels), ExportItem("certainty", certainty),
        ExportItem("provenance", provenance, {"values": legend, "model": "runs/x/model.pt"})])
    assert [p.name for p in result.files] == ["case01_seg.nii.gz", "case01_certainty.nii.gz",
                                              "case01_provenance.nii.gz", "case01_provenance.json"]
    for name, expected in (("seg", labels), ("certainty", certainty), ("provenance", provenance)):
        back = read_volume(tmp_path / f"case01_{name}.nii.gz")
        assert back.geometry.matches(GEOMETRY)
        np.testing.assert_array_equal(back.array, expected)
    assert read_volume(tmp_path / "case01_seg.nii.gz").array.dtype == np.uint8
    assert json.loads((tmp_path / "case01_provenance.json").read_text())["values"] == legend


def test_an_export_whose_re_read_differs_is_not_reported_done(tmp_path, monkeypatch):
    labels, certainty, _ = _maps()
    real_read = volume_module.read_volume

    def flipped(path):
        volume = real_read(path)
        volume.array = volume.array[::-1].copy()
        return volume

    monkeypatch.setattr(volume_module, "read_volume", flipped)
    with pytest.raises(VolumeError, match="Verification failed: the values read back differ"):
        export_maps(tmp_path, "case01", GEOMETRY, [ExportItem("seg", labels)])
    assert not list(tmp_path.iterdir())


def test_maps_of_different_shapes_are_refused(tmp_path):
    labels, certainty, _ = _maps()
    with pytest.raises(VolumeError, match="export maps of the same image together"):
        export_maps(tmp_path, "case01", GEOMETRY, [ExportItem("seg", labels), ExportItem("certainty", certainty[1:])])
