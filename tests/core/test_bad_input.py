"""Every kind of bad input the program refuses, each with the message the user sees.

One row per case: what is done, which error, and (part of) the message. Successful paths
(reading, training, saving) are tested next to the code that does them.
"""

import json
import logging

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from napari_semiseg.core.annotations import (AnnotationError, AnnotationMode, AnnotationScheme, check_label_array,
                                             check_label_classes, check_trainable)
from napari_semiseg.core.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from napari_semiseg.core.project import MANIFEST, Project, ProjectError
from napari_semiseg.core.volume import (Geometry, Volume, VolumeError, check_image_usable, check_same_grid,
                                        read_volume, write_volume)

SPACING = (3.0, 0.7, 0.9)
SCRIBBLES = AnnotationScheme(AnnotationMode.SCRIBBLES, 0, 9)


def _volume(shape=(4, 5, 6), dtype=np.int16, origin=(0.0, 0.0, 0.0)):
    values = np.arange(np.prod(shape)).reshape(shape) % 251 - 7
    return Volume(values.astype(dtype), Geometry(SPACING, origin), name="case")


def not_an_image(tmp_path):
    (tmp_path / "notes.nii.gz").write_text("these are my notes, not an image\n" * 20)
    read_volume(tmp_path / "notes.nii.gz")


def unsupported_format(tmp_path):
    (tmp_path / "picture.png").write_bytes(b"\x89PNG")
    read_volume(tmp_path / "picture.png")


def unsupported_output_format(tmp_path):
    write_volume(_volume(), tmp_path / "out.png")


def truncated(ext):
    def case(tmp_path):
        values = np.random.default_rng(1).integers(0, 1000, size=(8, 16, 16)).astype(np.int16)
        content = write_volume(Volume(values, Geometry(SPACING)), tmp_path / f"full{ext}").read_bytes()
        (tmp_path / f"cut{ext}").write_bytes(content[: int(len(content) * 0.9)])
        read_volume(tmp_path / f"cut{ext}")
    case.__name__ = "truncated_" + ext.strip(".").replace(".", "_")
    return case


def two_dimensional(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 6), np.float32)), str(tmp_path / "flat.nii.gz"))
    read_volume(tmp_path / "flat.nii.gz")


def four_dimensional(tmp_path):
    np.save(tmp_path / "movie.npy", np.zeros((2, 3, 5, 6), np.float32))
    read_volume(tmp_path / "movie.npy")


def dicom_folder_with_two_series(tmp_path):
    for series, uid in (("a", "1.2.826.0.1.3680043.2.1125.3"), ("b", "1.2.826.0.1.3680043.2.1125.4")):
        image = _volume().to_sitk()
        for z in range(image.GetDepth()):
            plane = image[:, :, z]
            for tag, value in (("0008|0060", "MR"), ("0020|000d", "1.2.826.0.1.3680043.2.1125.1"),
                               ("0020|000e", uid), ("0020|0013", str(z + 1)),
                               ("0020|0032", "\\".join(str(p) for p in image.TransformIndexToPhysicalPoint((0, 0, z))))):
                plane.SetMetaData(tag, value)
            writer = sitk.ImageFileWriter()
            writer.KeepOriginalImageUIDOn()
            writer.SetFileName(str(tmp_path / f"{series}{z:03d}.dcm"))
            writer.Execute(plane)
    read_volume(tmp_path)


def huge_volume(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_SEMISEG_MAX_VOXELS", "1000")
    write_volume(Volume(np.zeros((16, 16, 16), np.uint8), Geometry(SPACING)), tmp_path / "big.nii.gz", verify=False)
    read_volume(tmp_path / "big.nii.gz")


def huge_array_in_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_SEMISEG_MAX_VOXELS", "1000")
    check_image_usable(Volume(np.random.default_rng(0).random((8, 20, 20)), name="layer"))


def nan_image(tmp_path):
    values = np.ones((4, 5, 6), np.float32)
    values[1, 2, 3] = np.nan
    values[0, 0, 0] = 2.0
    check_image_usable(Volume(values, name="scan"))


def constant_image(tmp_path):
    check_image_usable(Volume(np.full((4, 5, 6), 7.0, np.float32), name="scan"))


def label_shape_mismatch(tmp_path):
    check_label_array(np.zeros((2, 3, 4), np.uint8), (2, 3, 5))


def label_geometry_mismatch(tmp_path):
    check_same_grid(_volume(), _volume(dtype=np.uint8, origin=(0.0, 5.0, 0.0)))


def labels_not_integers(tmp_path):
    check_label_array(np.full((2, 3, 4), 0.5), (2, 3, 4))


def labels_negative(tmp_path):
    check_label_array(np.full((2, 3, 4), -1, np.int16), (2, 3, 4))


def labels_exceed_classes(tmp_path):
    labels = np.zeros((2, 3, 4), np.uint8)
    labels[0, 0, :2] = (1, 5)
    check_label_classes(labels, {1: "ventricle", 2: "myocardium"})


def no_annotation(tmp_path):
    check_trainable([np.zeros((3, 4, 4), np.uint8)], AnnotationScheme())


def only_background_annotated(tmp_path):
    check_trainable([np.full((3, 4, 4), 9, np.uint8)], SCRIBBLES)


def only_structure_annotated(tmp_path):
    check_trainable([np.ones((3, 4, 4), np.uint8)], AnnotationScheme())


def scribbles_without_background(tmp_path):
    check_trainable([np.pad(np.ones((1, 2, 2), np.uint8), 1)], SCRIBBLES)


def checkpoint_from_another_format_version(tmp_path):
    torch.save({"format": "napari-semiseg-model", "format_version": 99, "package_version": "9.0"},
               tmp_path / "future.pt")
    load_checkpoint(tmp_path / "future.pt")


def corrupt_checkpoint(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"not a checkpoint at all")
    load_checkpoint(tmp_path / "model.pt")


def truncated_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "model.pt", {"weights": torch.zeros(1000)})
    path.write_bytes(path.read_bytes()[:-300])
    load_checkpoint(path)


class PickledCode:
    """Stands for an arbitrary object that unpickling would execute code to rebuild."""


def checkpoint_with_pickled_code(tmp_path):
    torch.save({"format": "napari-semiseg-model", "code": PickledCode()}, tmp_path / "evil.pt")
    load_checkpoint(tmp_path / "evil.pt")


def not_our_checkpoint(tmp_path):
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    load_checkpoint(tmp_path / "other.pt")


def manifest_pointing_outside_its_folder(tmp_path):
    project = Project.create(tmp_path / "proj")
    manifest = json.loads((project.folder / MANIFEST).read_text())
    manifest["runs"] = [{"path": "/etc/passwd", "strategy": "supervised"}]
    (project.folder / MANIFEST).write_text(json.dumps(manifest))
    Project.open(project.folder)


def manifest_from_a_newer_version(tmp_path):
    project = Project.create(tmp_path / "proj")
    manifest = json.loads((project.folder / MANIFEST).read_text())
    (project.folder / MANIFEST).write_text(json.dumps({**manifest, "format_version": 2, "package_version": "2.0"}))
    Project.open(project.folder)


CASES = [
    (not_an_image, VolumeError, "damaged, truncated or not an image"),
    (unsupported_format, VolumeError, "is not a supported volume. Use NIfTI"),
    (unsupported_output_format, VolumeError, "Cannot write 'out.png': use .nii.gz"),
    *[(truncated(ext), VolumeError, "truncated") for ext in (".nii.gz", ".nii", ".mha", ".nrrd")],
    (two_dimensional, VolumeError, "2 dimension.*stack it as a single-slice volume"),
    (four_dimensional, VolumeError, "4 dimension.*one 3D frame per file"),
    (dicom_folder_with_two_series, VolumeError, "holds 2 DICOM series.*Choose one"),
    (huge_volume, VolumeError, "too large: 16 x 16 x 16 = 4,096 voxels, and at most 1,000 fit "
                               r"\(for example 10 x 10 x 10 at the same proportions\)"),
    (huge_array_in_memory, VolumeError, "too large: 8 x 20 x 20 = 3,200 voxels.*NAPARI_SEMISEG_MAX_VOXELS"),
    (nan_image, VolumeError, "has 1 NaN or infinite voxel"),
    (constant_image, VolumeError, "is constant .*nothing to segment"),
    (label_shape_mismatch, AnnotationError, r"shape \(2, 3, 4\) but the image has shape \(2, 3, 5\)"),
    (label_geometry_mismatch, VolumeError, r"lie on another grid .*origin.*Resample the labels"),
    (labels_not_integers, AnnotationError, "label values must be whole numbers"),
    (labels_negative, AnnotationError, "negative values"),
    (labels_exceed_classes, AnnotationError, r"label value\(s\) \[5\], which exceed the classes of this project"),
    (no_annotation, AnnotationError, "Nothing is annotated yet. Paint a few slices"),
    (only_background_annotated, AnnotationError, "Only background is annotated"),
    (only_structure_annotated, AnnotationError, "No background is annotated: leave some background unpainted"),
    (scribbles_without_background, AnnotationError, "paint some background with label 9"),
    (checkpoint_from_another_format_version, CheckpointError, "written by napari-semiseg 9.0 in model format 99.*"
                                                              "Retrain with this version"),
    (corrupt_checkpoint, CheckpointError, "damaged or is not a model file"),
    (truncated_checkpoint, CheckpointError, "damaged or is not a model file"),
    (checkpoint_with_pickled_code, CheckpointError, "refused for safety"),
    (not_our_checkpoint, CheckpointError, "is not a napari-semiseg model"),
    (manifest_pointing_outside_its_folder, ProjectError, "points outside its folder"),
    (manifest_from_a_newer_version, ProjectError, "saved by a newer napari-semiseg"),
]


@pytest.mark.parametrize("case, error, message", CASES, ids=[case.__name__ for case, *_ in CASES])
def test_bad_input_is_refused_with_a_message_that_says_what_to_do(case, error, message, tmp_path, monkeypatch):
    arguments = (tmp_path, monkeypatch) if case.__code__.co_argcount == 2 else (tmp_path,)
    with pytest.raises(error, match=message):
        case(*arguments)


def test_a_checkpoint_from_another_package_version_loads_with_a_warning(tmp_path, caplog):
    path = save_checkpoint(tmp_path / "model.pt", {"weights": torch.zeros(3)})
    content = torch.load(path, weights_only=True)
    torch.save({**content, "package_version": "0.0.1"}, path)
    with caplog.at_level(logging.WARNING):
        loaded = load_checkpoint(path)
    assert "written by napari-semiseg 0.0.1" in loaded["version_note"] and "retrain if" in caplog.text
    assert "version_note" not in load_checkpoint(save_checkpoint(tmp_path / "same.pt", {}))
