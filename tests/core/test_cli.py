"""The command-line contract end to end on tiny volumes."""

import json

import numpy as np
import pytest

from napari_semiseg.cli import main
from napari_semiseg.core.phantoms import paint_slices, ring_phantom
from napari_semiseg.core.volume import Geometry, Volume, read_volume, write_volume

DIRECTION = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0)


@pytest.fixture
def files(tmp_path):
    volume, truth = ring_phantom((10, 48, 48), seed=5)
    geometry = Geometry(spacing=(4.0, 0.9, 0.8), origin=(-3.0, 12.5, 7.0), direction=DIRECTION)
    image = write_volume(Volume(volume.array, geometry), tmp_path / "case01.nii.gz")
    labels = write_volume(Volume(paint_slices(truth, [2, 7]) * 2, geometry), tmp_path / "case01_sparse.nii.gz")
    other = write_volume(Volume(ring_phantom((10, 48, 48), seed=6)[0].array, geometry), tmp_path / "case02.mha")
    return tmp_path, image, labels, other


def test_strategies_lists_every_preset(capsys):
    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    assert "supervised" in out and "cross_teaching" in out


def test_train_then_predict_writes_masks_in_the_input_geometry(files, capsys):
    tmp_path, image, labels, other = files
    model_dir = tmp_path / "model"
    code = main(["train", str(image), str(other), "--labels", str(labels), "--strategy", "cross_teaching",
                 "--iterations", "4", "--batch-size", "4", "--patch-size", "48", "--device", "cpu",
                 "--out", str(model_dir)])
    assert code == 0
    assert (model_dir / "model.pt").exists()
    assert json.loads((model_dir / "config.json").read_text())["config"]["strategy"] == "cross_teaching"
    assert "2 annotated and 18 unannotated slices" in capsys.readouterr().err

    out_dir = tmp_path / "out"
    assert main(["predict", str(model_dir), str(image), str(other), "--out", str(out_dir)]) == 0
    for name in ("case01", "case02"):
        seg = read_volume(out_dir / f"{name}_seg.nii.gz")
        certainty = read_volume(out_dir / f"{name}_certainty.nii.gz")
        assert seg.shape == (10, 48, 48) and seg.geometry.matches(read_volume(image).geometry)
        assert set(np.unique(seg.array)) <= {0, 2, 4}, "labels keep the painted values"
        assert certainty.array.dtype == np.float32 and certainty.array.max() <= 1.0 + 1e-6


def test_predict_blends_the_painted_slices_given_with_labels(files, capsys):
    tmp_path, image, labels, other = files
    model_dir = tmp_path / "model"
    assert main(["train", str(image), "--labels", str(labels), "--strategy", "supervised", "--iterations", "2",
                 "--batch-size", "2", "--patch-size", "48", "--out", str(model_dir)]) == 0
    painted = read_volume(labels).array
    capsys.readouterr()
    assert main(["predict", str(model_dir), str(image), "--labels", str(labels), "--out", str(tmp_path / "b")]) == 0
    assert "painted slices blended in" in capsys.readouterr().err
    blended = read_volume(tmp_path / "b" / "case01_seg.nii.gz").array
    assert np.array_equal(blended[[2, 7]], painted[[2, 7]]), "after 2 steps only the blend can give these back"

    assert main(["predict", str(model_dir), str(image), "--labels", str(labels), "--network-only",
                 "--out", str(tmp_path / "n")]) == 0
    assert "blended" not in capsys.readouterr().err
    network = read_volume(tmp_path / "n" / "case01_seg.nii.gz").array
    assert not np.array_equal(network, blended)

    assert main(["predict", str(model_dir), str(image), str(other), "--labels", str(labels),
                 "--out", str(tmp_path / "x")]) == 2
    assert "--labels needs one file per IMAGE" in capsys.readouterr().err


def test_scribble_training_from_the_command_line(files, capsys):
    tmp_path, image, labels, other = files
    scribbles = read_volume(labels).array.copy()
    scribbles[scribbles == 0] = 0
    scribbles[2, :4, :4] = 7
    scribble_path = write_volume(Volume(scribbles, read_volume(image).geometry), tmp_path / "scribbles.nii.gz")
    code = main(["train", str(image), "--labels", str(scribble_path), "--scribbles", "--background-label", "7",
                 "--strategy", "supervised", "--iterations", "2", "--patch-size", "48", "--out", str(tmp_path / "m")])
    assert code == 0
    assert main(["predict", str(tmp_path / "m"), str(image), "--labels", str(scribble_path),
                 "--out", str(tmp_path / "p")]) == 0
    assert "scribbles blended in" in capsys.readouterr().err
    predicted = read_volume(tmp_path / "p" / f"{read_volume(image).name}_seg.nii.gz").array
    scribbled = (scribbles > 0) & (scribbles != 7)
    np.testing.assert_array_equal(predicted[scribbled], scribbles[scribbled])
    assert np.all(predicted[2, :4, :4] == 0)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["train", "missing.nii.gz", "--iterations", "1", "--out", "m"], "does not exist"),
        (["train", "IMAGE", "--labels", "LABELS", "--strategy", "magic", "--iterations", "1", "--out", "m"],
         "Unknown strategy"),
        (["train", "IMAGE", "--labels", "IMAGE", "--iterations", "1", "--out", "m"], "whole numbers"),
        (["predict", "nowhere", "IMAGE", "--out", "o"], "No model"),
    ],
)
def test_bad_input_exits_2_with_a_one_line_reason(files, capsys, arguments, message):
    tmp_path, image, labels, other = files
    arguments = [str(image) if a == "IMAGE" else str(labels) if a == "LABELS" else a for a in arguments]
    arguments = [str(tmp_path / a) if a in ("m", "o", "nowhere", "missing.nii.gz") else a for a in arguments]
    assert main(arguments) == 2
    assert message in capsys.readouterr().err
