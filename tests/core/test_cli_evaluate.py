"""``napari-semiseg evaluate`` end to end on tiny volumes with anisotropic spacing."""

import json

import numpy as np
import pytest

from napari_semiseg.cli import main
from napari_semiseg.core.phantoms import paint_slices
from napari_semiseg.core.volume import Geometry, Volume, write_volume

GEOMETRY = Geometry(spacing=(3.0, 0.5, 0.5), origin=(1.0, 2.0, 3.0))


@pytest.fixture
def files(tmp_path):
    truth = np.zeros((8, 24, 24), np.uint8)
    truth[1:7, 4:14, 4:14] = 1
    truth[2:6, 14:20, 6:12] = 2
    prediction = truth.copy()
    prediction[3, 14:20, 6:12] = 0  # class 2 lost on slice 3 only
    paths = {
        "truth": write_volume(Volume(truth, GEOMETRY), tmp_path / "case_gt.nii.gz"),
        "prediction": write_volume(Volume(prediction, GEOMETRY), tmp_path / "case_seg.nii.gz"),
        "painted": write_volume(Volume(paint_slices(truth, [3]), GEOMETRY), tmp_path / "case_sparse.nii.gz"),
        "moved": write_volume(Volume(prediction, Geometry(spacing=(3.0, 0.5, 0.5))), tmp_path / "moved.nii.gz"),
    }
    return tmp_path, paths


def test_evaluate_prints_the_table_and_writes_json(files, capsys):
    tmp_path, paths = files
    out = tmp_path / "scores.json"
    code = main(["evaluate", str(paths["prediction"]), "--gt", str(paths["truth"]), "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "distances in mm" in printed and "case_seg.nii.gz" in printed
    report = json.loads(out.read_text())
    classes = report["volumes"][0]["classes"]
    assert classes["1"]["dice"] == 1.0 and classes["1"]["hd95"] == 0.0
    assert 0.0 < classes["2"]["dice"] < 1.0
    assert classes["2"]["hd95"] == pytest.approx(3.0)  # the lost slice is one 3 mm slice away from the truth
    assert report["summary_over_volumes"]["1"]["dice"]["mean"] == 1.0


def test_painted_slices_are_left_out(files, capsys):
    tmp_path, paths = files
    out = tmp_path / "scores.json"
    assert main(["evaluate", str(paths["prediction"]), "--gt", str(paths["truth"]), "--exclude-slices-from",
                 str(paths["painted"]), "--classes", "1", "2", "3", "--json", str(out)]) == 0
    volume = json.loads(out.read_text())["volumes"][0]
    assert volume["excluded_slices"] == [3]
    assert volume["classes"]["2"]["dice"] == 1.0
    assert volume["classes"]["3"]["status"] == "absent" and volume["classes"]["3"]["dice"] is None


def test_voxel_units(files, capsys):
    tmp_path, paths = files
    out = tmp_path / "scores.json"
    assert main(["evaluate", str(paths["prediction"]), "--gt", str(paths["truth"]), "--voxel-units",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["volumes"][0]["classes"]["2"]["hd95"] == pytest.approx(1.0)
    assert "distances in voxels" in capsys.readouterr().out


@pytest.mark.parametrize("which, message", [("moved", "different places"), ("count", "one --gt file")])
def test_mismatches_are_one_line_errors(files, capsys, which, message):
    tmp_path, paths = files
    predictions = [str(paths["moved"])] if which == "moved" else [str(paths["prediction"])] * 2
    assert main(["evaluate", *predictions, "--gt", str(paths["truth"])]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
