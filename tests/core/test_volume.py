"""Round trips and error messages of napari_semiseg.core.volume (no Qt, no napari)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_semiseg.core import volume as volume_module
from napari_semiseg.core.phantoms import write_dicom_series
from napari_semiseg.core.volume import Geometry, Volume, VolumeError, read_volume, write_volume

SPACING = (3.0, 0.7, 0.9)  # z, y, x
ORIGIN = (12.5, -30.0, 7.25)


def rotation_about_z(degrees: float) -> np.ndarray:
    """A rotation in the y-x plane, written as a (z, y, x) direction matrix."""
    angle = np.deg2rad(degrees)
    return np.array(
        [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    )


DIRECTIONS = {
    "identity": np.eye(3),
    "rotated": rotation_about_z(30.0),
    "flipped": np.diag([1.0, -1.0, 1.0]),
    "rotated_flipped": rotation_about_z(-20.0) @ np.diag([-1.0, 1.0, 1.0]),
}


def make_volume(direction: np.ndarray = np.eye(3), dtype=np.int16, shape=(4, 5, 6)) -> Volume:
    values = np.arange(np.prod(shape)).reshape(shape) % 251 - 7
    geometry = Geometry(SPACING, ORIGIN, tuple(np.asarray(direction).ravel()))
    return Volume(values.astype(dtype), geometry, name="case")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("direction", list(DIRECTIONS))
@pytest.mark.parametrize("ext", [".nii.gz", ".mha", ".nrrd"])
def test_round_trip_keeps_array_and_geometry(tmp_path, ext, direction):
    volume = make_volume(DIRECTIONS[direction])
    path = write_volume(volume, tmp_path / f"case{ext}")
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.array.dtype == volume.array.dtype
    np.testing.assert_allclose(back.geometry.spacing, SPACING, atol=1e-5)
    np.testing.assert_allclose(back.geometry.origin, ORIGIN, atol=1e-4)
    np.testing.assert_allclose(back.geometry.direction_matrix, DIRECTIONS[direction], atol=1e-5)
    assert back.geometry.known and back.name == "case" and back.source == str(path)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32, bool])
def test_round_trip_dtypes(tmp_path, dtype):
    volume = make_volume(dtype=dtype)
    back = read_volume(write_volume(volume, tmp_path / "case.nii.gz"))
    expected = volume.array.astype(np.uint8) if dtype is bool else volume.array
    np.testing.assert_array_equal(back.array, expected)


def test_arrays_are_zyx_against_simpleitk_xyz(tmp_path):
    values = np.random.default_rng(0).integers(0, 1000, size=(4, 5, 6)).astype(np.int16)
    image = sitk.GetImageFromArray(values)  # SimpleITK size is (x=6, y=5, z=4)
    image.SetSpacing((0.9, 0.7, 3.0))
    image.SetOrigin((7.25, -30.0, 12.5))
    sitk.WriteImage(image, str(tmp_path / "direct.nii.gz"))

    back = read_volume(tmp_path / "direct.nii.gz")
    assert back.shape == (4, 5, 6)
    np.testing.assert_allclose(back.geometry.spacing, (3.0, 0.7, 0.9), atol=1e-6)
    np.testing.assert_allclose(back.geometry.origin, (12.5, -30.0, 7.25), atol=1e-6)
    assert back.array[3, 1, 5] == image.GetPixel(5, 1, 3)


@pytest.mark.parametrize("direction", ["identity", "rotated_flipped"])
def test_index_to_physical_agrees_with_simpleitk(direction):
    volume = make_volume(DIRECTIONS[direction])
    image = volume.to_sitk()
    indices_zyx = np.array([[0, 0, 0], [3, 4, 5], [1, 2, 3], [2, 0, 5]])
    ours = volume.geometry.index_to_physical(indices_zyx)
    for index, point in zip(indices_zyx, ours):
        expected_xyz = image.TransformIndexToPhysicalPoint([int(i) for i in index[::-1]])
        np.testing.assert_allclose(point, expected_xyz[::-1], atol=1e-9)
    assert Geometry.from_sitk(image).matches(volume.geometry)


def test_napari_transform_and_dict_round_trip():
    aligned = make_volume().geometry
    assert aligned.napari_transform() == {"scale": SPACING, "translate": ORIGIN}
    rotated = make_volume(DIRECTIONS["rotated"]).geometry
    affine = rotated.napari_transform()["affine"]
    point = affine @ np.array([1.0, 2.0, 3.0, 1.0])
    np.testing.assert_allclose(point[:3], rotated.index_to_physical([1, 2, 3])[0])
    assert Geometry.from_dict(rotated.to_dict()) == rotated


# --- DICOM -------------------------------------------------------------------------------


def test_dicom_series_folder_reads_with_spacing(tmp_path):
    volume = make_volume()
    write_dicom_series(volume, tmp_path / "series", "1.2.826.0.1.3680043.2.1125.2")
    back = read_volume(tmp_path / "series")
    assert back.shape == volume.shape
    np.testing.assert_allclose(back.geometry.spacing, SPACING, atol=1e-4)
    np.testing.assert_allclose(back.geometry.origin, ORIGIN, atol=1e-4)
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.name == "series"


def test_folder_with_two_dicom_series_reads_the_chosen_one(tmp_path):
    """Without a choice it is refused (tests/core/test_bad_input.py)."""
    write_dicom_series(make_volume(), tmp_path, "1.2.826.0.1.3680043.2.1125.3", prefix="a")
    write_dicom_series(make_volume(), tmp_path, "1.2.826.0.1.3680043.2.1125.4", prefix="b")
    chosen = read_volume(tmp_path, series_id="1.2.826.0.1.3680043.2.1125.4")
    assert chosen.shape == (4, 5, 6)


def test_folder_without_dicom_says_so(tmp_path):
    with pytest.raises(VolumeError, match="holds no DICOM series"):
        read_volume(tmp_path)


# --- files without geometry --------------------------------------------------------------


def test_npy_has_unknown_geometry(tmp_path):
    values = make_volume().array
    np.save(tmp_path / "plain.npy", values)
    back = read_volume(tmp_path / "plain.npy")
    np.testing.assert_array_equal(back.array, values)
    assert back.geometry.known is False and back.name == "plain"


def test_tiff_stack_has_unknown_geometry(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    values = make_volume(dtype=np.uint16).array
    tifffile.imwrite(tmp_path / "stack.tif", values, photometric="minisblack")
    back = read_volume(tmp_path / "stack.tif")
    np.testing.assert_array_equal(back.array, values)
    assert back.geometry.known is False


# --- bad input ---------------------------------------------------------------------------


def test_single_frame_four_dimensional_file_keeps_geometry(tmp_path):
    frame = make_volume().to_sitk()
    sitk.WriteImage(sitk.JoinSeries([frame]), str(tmp_path / "frame.mha"))
    back = read_volume(tmp_path / "frame.mha")
    assert back.shape == (4, 5, 6)
    np.testing.assert_allclose(back.geometry.spacing, SPACING, atol=1e-6)


def test_colour_image_is_refused(tmp_path):
    rgb = sitk.GetImageFromArray(np.zeros((5, 6, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "photo.mha"))
    with pytest.raises(VolumeError, match="greyscale"):
        read_volume(tmp_path / "photo.mha")


def test_missing_path(tmp_path):
    with pytest.raises(VolumeError, match="does not exist"):
        read_volume(tmp_path / "nowhere.nii.gz")


# --- atomic writes -----------------------------------------------------------------------


def test_write_leaves_no_temporary_files(tmp_path):
    for ext in (".nii.gz", ".mha", ".nrrd", ".npy"):
        write_volume(make_volume(), tmp_path / f"out{ext}")
    assert leftovers(tmp_path) == []


def test_write_into_a_path_under_a_file_fails_cleanly(tmp_path):
    (tmp_path / "not_a_folder").write_text("a file where a folder should be")
    with pytest.raises(VolumeError, match="Cannot write into"):
        write_volume(make_volume(), tmp_path / "not_a_folder" / "out.nii.gz")


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = write_volume(make_volume(), tmp_path / "labels.nii.gz")
    before = target.read_bytes()

    def crash_midway(volume, path, suffix):
        path.write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(volume_module, "_write_file", crash_midway)
    with pytest.raises(VolumeError, match="No space left on device.*Nothing was overwritten"):
        write_volume(make_volume(dtype=np.uint8), target)
    assert target.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_failed_verification_keeps_the_old_file(tmp_path, monkeypatch):
    target = write_volume(make_volume(), tmp_path / "labels.mha")
    before = target.read_bytes()
    shifted = make_volume()
    shifted.geometry = Geometry(SPACING, (0.0, 0.0, 0.0))
    monkeypatch.setattr(volume_module, "read_volume", lambda path: shifted)
    with pytest.raises(VolumeError, match="Verification failed: geometry changed"):
        write_volume(make_volume(), target)
    assert target.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_read_only_folder(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    target = write_volume(make_volume(), folder / "labels.nii.gz")
    before = target.read_bytes()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: chmod does not stop root from writing")
        with pytest.raises(VolumeError, match="Cannot write into"):
            write_volume(make_volume(dtype=np.uint8), target)
        assert target.read_bytes() == before
    finally:
        folder.chmod(stat.S_IRWXU)


def test_written_file_has_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = write_volume(make_volume(), tmp_path / "shared.nii.gz")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_multi_file_formats_are_refused_for_writing(tmp_path):
    with pytest.raises(VolumeError, match="single-file format"):
        write_volume(make_volume(), tmp_path / "out.mhd")
    assert leftovers(tmp_path) == []
