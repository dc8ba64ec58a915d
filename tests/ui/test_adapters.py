"""The npe2 adapters: reader, writer, sample data and the manifest."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_semiseg import _reader, _sample_data, _writer
from napari_semiseg.core.volume import Geometry, Volume, VolumeError, read_volume, write_volume

ROOT = Path(__file__).resolve().parents[2]
MNI152 = ROOT.parent / "shared" / "data" / "mni152"
SPACING = (3.0, 0.7, 0.9)
ORIGIN = (12.5, -30.0, 7.25)


def rotated_direction(degrees: float = 25.0) -> tuple[float, ...]:
    angle = np.deg2rad(degrees)
    matrix = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    return tuple(matrix.ravel())


def save(folder: Path, name: str, dtype=np.int16, direction=None) -> Path:
    values = (np.arange(4 * 5 * 6).reshape(4, 5, 6) % 7).astype(dtype)
    geometry = Geometry(SPACING, ORIGIN, direction or Geometry().direction)
    return write_volume(Volume(values, geometry), folder / name)


# --- reader ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["notes.txt", "missing.nii.gz", "empty_folder", "picture.png"])
def test_reader_declines_what_it_cannot_read(tmp_path, name):
    if name == "empty_folder":
        (tmp_path / name).mkdir()
    elif name != "missing.nii.gz":
        (tmp_path / name).write_text("not a volume")
    assert _reader.get_reader(str(tmp_path / name)) is None
    assert _reader.get_reader([str(tmp_path / name)]) is None


def test_reader_never_raises_on_odd_input():
    assert _reader.get_reader([]) is None
    assert _reader.get_reader("\0bad") is None
    assert _reader.get_reader(None) is None


def test_reader_gives_scale_translate_and_geometry_metadata(tmp_path):
    path = save(tmp_path, "case01.nii.gz")
    reader = _reader.get_reader(str(path))
    [(data, kwargs, layer_type)] = reader(str(path))
    assert layer_type == "image" and data.shape == (4, 5, 6)
    np.testing.assert_allclose(kwargs["scale"], SPACING, atol=1e-5)
    np.testing.assert_allclose(kwargs["translate"], ORIGIN, atol=1e-4)
    assert "affine" not in kwargs and kwargs["name"] == "case01"
    semiseg = kwargs["metadata"]["semiseg"]
    assert Geometry.from_dict(semiseg["geometry"]).matches(Geometry(SPACING, ORIGIN))
    assert semiseg["source"] == str(path) and semiseg["name"] == "case01"


def test_reader_gives_an_affine_for_rotated_volumes(tmp_path):
    path = save(tmp_path, "oblique.mha", direction=rotated_direction())
    [(_, kwargs, _)] = _reader.get_reader(str(path))(str(path))
    geometry = Geometry.from_dict(kwargs["metadata"]["semiseg"]["geometry"])
    np.testing.assert_allclose(kwargs["affine"], geometry.affine())
    assert "scale" not in kwargs


@pytest.mark.parametrize(
    ("name", "dtype", "expected"),
    [
        ("case01_gt.nii.gz", np.uint8, "labels"),
        ("case01_seg.nrrd", np.int16, "labels"),
        ("case01_scribble.nii.gz", np.uint8, "labels"),
        ("brain_mask.mha", np.uint8, "labels"),
        ("Labels.npy", np.int32, "labels"),
        ("case01_gt.nii.gz", np.float32, "image"),  # a probability map, not labels
        ("case01.nii.gz", np.uint8, "image"),
    ],
)
def test_labels_need_a_labels_name_and_integer_values(tmp_path, name, dtype, expected):
    if name.endswith(".npy"):
        np.save(tmp_path / name, np.zeros((2, 3, 4), dtype))
        path = tmp_path / name
    else:
        path = save(tmp_path, name, dtype=dtype)
    [(_, _, layer_type)] = _reader.get_reader(str(path))(str(path))
    assert layer_type == expected


def test_reader_reads_several_paths(tmp_path):
    paths = [str(save(tmp_path, "a.nii.gz")), str(save(tmp_path, "a_gt.nii.gz", dtype=np.uint8))]
    layers = _reader.get_reader(paths)(paths)
    assert [layer_type for _, _, layer_type in layers] == ["image", "labels"]


def test_damaged_file_raises_the_volume_error_when_read(tmp_path):
    path = tmp_path / "damaged.nii.gz"
    path.write_text("not really NIfTI")
    reader = _reader.get_reader(str(path))
    assert reader is not None  # the name matches; the content is only seen when reading
    with pytest.raises(VolumeError, match="damaged, truncated or not an image"):
        reader(str(path))


# --- writer ------------------------------------------------------------------------------


def labels_layer(data, **kwargs):
    from napari.layers import Labels

    return Labels(data, **kwargs)


def test_writer_round_trip_uses_recorded_geometry(tmp_path):
    source = save(tmp_path, "oblique_gt.nii.gz", dtype=np.uint8, direction=rotated_direction())
    [(data, kwargs, layer_type)] = _reader.read_volumes(str(source))
    layer = labels_layer(data.astype(np.int32), **kwargs)
    layer.data[1, 2, 3] = 5
    out_data, meta, _ = layer.as_layer_data_tuple()

    written = _writer.write_labels(str(tmp_path / "edited.nii.gz"), out_data, meta)

    back = read_volume(written[0])
    assert written == [str(tmp_path / "edited.nii.gz")]
    assert back.geometry.matches(read_volume(source).geometry)
    assert back.array.dtype == np.uint8 and back.array[1, 2, 3] == 5
    np.testing.assert_array_equal(back.array, layer.data)


@pytest.mark.parametrize("rotate", [0.0, 30.0])
def test_writer_derives_geometry_from_the_layer_transform(tmp_path, rotate):
    data = np.zeros((4, 5, 6), np.uint16)
    data[2, 3, 4] = 300
    layer = labels_layer(data, scale=SPACING, translate=ORIGIN, rotate=rotate)
    written = _writer.write_labels(str(tmp_path / "painted.mha"), *layer.as_layer_data_tuple()[:2])

    back = read_volume(written[0])
    assert back.array.dtype == np.uint16 and back.array[2, 3, 4] == 300
    indices = np.array([[0, 0, 0], [3, 4, 5], [1, 2, 3]])
    expected = np.array([layer.data_to_world(index) for index in indices])
    np.testing.assert_allclose(back.geometry.index_to_physical(indices), expected, atol=1e-4)


def test_writer_refuses_sheared_layers(tmp_path):
    layer = labels_layer(np.zeros((4, 5, 6), np.uint8), shear=[0.3, 0.0, 0.0])
    with pytest.raises(_writer.LayerWriteError, match="shears"):
        _writer.write_labels(str(tmp_path / "sheared.nii.gz"), *layer.as_layer_data_tuple()[:2])
    assert not (tmp_path / "sheared.nii.gz").exists()


def test_image_writer_keeps_float_values(tmp_path):
    values = np.linspace(0, 1, 4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    meta = {"name": "prob", "scale": SPACING, "translate": ORIGIN}
    [path] = _writer.write_image(str(tmp_path / "prob.nrrd"), values, meta)
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, values)
    assert back.geometry.matches(Geometry(SPACING, ORIGIN))


def test_writer_reports_a_2d_layer(tmp_path):
    with pytest.raises(_writer.LayerWriteError, match="3D volume"):
        _writer.write_labels(str(tmp_path / "flat.nii.gz"), np.zeros((5, 6), np.uint8), {})


# --- sample data -------------------------------------------------------------------------


def test_sample_volumes_load_without_napari():
    image, tissue = _sample_data.load_sample_volumes()
    assert image.shape == tissue.shape and image.array.dtype == tissue.array.dtype == np.uint8
    assert image.geometry.spacing == (2.0, 2.0, 2.0) and image.geometry.is_axis_aligned
    assert image.geometry.matches(tissue.geometry)
    assert set(np.unique(tissue.array)) == {0, 1, 2, 3}
    assert image.array[tissue.array == 2].mean() > image.array[tissue.array == 1].mean()


def test_bundled_sample_is_small_and_carries_its_notice():
    files = list(_sample_data.DATA_DIR.iterdir())
    assert sum(f.stat().st_size for f in files) < 1_000_000
    notice = (_sample_data.DATA_DIR / "NOTICE").read_text()
    assert "McConnell Brain Imaging Centre" in notice and "make_sample_data.py" in notice


def test_sample_layer_data_follows_the_contract():
    [image, annotations] = _sample_data.mni152_sample()
    assert (image[2], annotations[2]) == ("image", "labels")
    assert annotations[1]["name"] == "annotations" and not annotations[0].any()
    assert annotations[0].shape == image[0].shape
    for _, kwargs, _ in (image, annotations):
        assert kwargs["scale"] == (2.0, 2.0, 2.0)
        assert kwargs["metadata"]["semiseg"]["source"] == "sample"
        assert Geometry.from_dict(kwargs["metadata"]["semiseg"]["geometry"]).spacing == (2.0, 2.0, 2.0)


@pytest.mark.real_data
@pytest.mark.skipif(not MNI152.is_dir(), reason="needs ../shared/data/mni152")
def test_bundled_sample_is_reproducible_from_the_template():
    spec = importlib.util.spec_from_file_location("make_sample_data", ROOT / "benchmarks" / "make_sample_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    image, tissue = module.make_sample(MNI152)
    bundled_image, bundled_tissue = _sample_data.load_sample_volumes()
    # block means may round differently on another CPU: allow 1 grey level, a few label voxels
    assert np.abs(image.array.astype(int) - bundled_image.array).max() <= 1
    assert np.mean(tissue.array != bundled_tissue.array) < 1e-3
    assert image.geometry.matches(bundled_image.geometry)


@pytest.mark.gui
def test_samples_and_reader_through_the_viewer(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-semiseg", "mni152")
    assert [layer.name for layer in viewer.layers] == ["MNI152 T1", "annotations"]
    image, annotations = viewer.layers
    assert type(annotations).__name__ == "Labels" and not annotations.data.any()
    np.testing.assert_allclose(image.scale, (2, 2, 2))
    np.testing.assert_allclose(annotations.translate, image.translate)

    viewer.layers.clear()
    viewer.open_sample("napari-semiseg", "mni152_tissue")
    image, tissue = viewer.layers
    assert type(tissue).__name__ == "Labels" and tissue.data.max() == 3
    np.testing.assert_allclose(tissue.scale, (2, 2, 2))

    viewer.layers.clear()
    path = save(tmp_path, "case07_gt.nii.gz", dtype=np.uint8, direction=rotated_direction())
    [opened] = viewer.open(str(path), plugin="napari-semiseg")
    assert type(opened).__name__ == "Labels"
    np.testing.assert_allclose(opened.affine.affine_matrix, read_volume(path).geometry.affine(), atol=1e-5)

    saved = viewer.layers.save(str(tmp_path / "saved.nii.gz"), selected=False, plugin="napari-semiseg")
    assert saved == [str(tmp_path / "saved.nii.gz")]  # napari picked the writer by extension
    assert read_volume(saved[0]).geometry.matches(read_volume(path).geometry)

    viewer.layers.clear()
    viewer.add_labels(np.zeros((4, 5, 6), np.uint8), shear=[0.3, 0.0, 0.0])
    with pytest.raises(_writer.LayerWriteError, match="shears"):  # not hidden as "no writer"
        viewer.layers.save(str(tmp_path / "sheared.nii.gz"), selected=False, plugin="napari-semiseg")


# --- manifest ----------------------------------------------------------------------------


def test_manifest_validates_with_imports():
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-semiseg", "--imports"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
