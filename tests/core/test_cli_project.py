"""The command line works on the same project folder as the widget."""

import numpy as np
import pytest

from napari_semiseg.cli import main
from napari_semiseg.core.phantoms import paint_slices, ring_phantom
from napari_semiseg.core.project import Project
from napari_semiseg.core.volume import Geometry, Volume, read_volume, write_volume


@pytest.fixture
def files(tmp_path):
    volume, truth = ring_phantom((8, 48, 48), seed=5)
    geometry = Geometry(spacing=(4.0, 0.9, 0.8), origin=(-3.0, 12.5, 7.0))
    image = write_volume(Volume(volume.array, geometry), tmp_path / "case01.nii.gz")
    labels = write_volume(Volume(paint_slices(truth, [2, 5]), geometry), tmp_path / "case01_sparse.nii.gz")
    return tmp_path, image, labels, truth


def test_init_train_predict_and_show_share_the_project_folder(files, capsys):
    tmp_path, image, labels, truth = files
    folder = tmp_path / "proj"
    assert main(["project", "init", str(folder), str(image), "--labels", str(labels),
                 "--classes", "1=ring", "2=core"]) == 0
    project = Project.open(folder)
    assert np.array_equal(project.load_annotations("case01").labels, read_volume(labels).array)

    assert main(["train", "--project", str(folder), "--strategy", "supervised", "--iterations", "3",
                 "--patch-size", "32", "--batch-size", "2"]) == 0
    project = Project.open(folder)
    assert len(project.runs) == 1 and project.runs[0].annotated_slices == 2 and project.runs[0].iteration == 3
    assert project.latest_model().parent.parent == (folder / "runs").resolve()

    assert main(["train", "--project", str(folder), "--strategy", "supervised", "--iterations", "2",
                 "--patch-size", "32", "--batch-size", "2", "--resume", "last"]) == 0
    assert Project.open(folder).runs[-1].iteration == 5, "resuming continues the iteration count"

    capsys.readouterr()
    assert main(["predict", "--project", str(folder)]) == 0
    assert "painted slices blended in" in capsys.readouterr().err
    mask = read_volume(folder / "predictions" / "case01_seg.nii.gz")
    assert mask.shape == truth.shape and mask.geometry.matches(read_volume(image).geometry)
    assert np.array_equal(mask.array[[2, 5]], truth[[2, 5]]), "the saved annotations come back as painted"

    capsys.readouterr()
    assert main(["project", "show", str(folder)]) == 0
    shown = capsys.readouterr().out
    assert "volume case01" in shown and "classes: 1 ring, 2 core" in shown and "supervised, 5 iterations" in shown


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["train", "--iterations", "1"], "or --project DIR"),
        (["predict", "--out", "o"], "or --project DIR"),
        (["train", "--project", "nowhere"], "is not a napari-semiseg project"),
        (["project", "init", "p2", "IMAGE", "--labels", "LABELS", "--classes", "1=ring"],
         "exceed the classes of this project (1 ring)"),
        (["project", "init", "p2", "IMAGE", "--labels", "SHIFTED"], "lie on another grid than the image"),
        (["project", "init", "p2", "IMAGE", "--classes", "ring"], "is not VALUE=NAME"),
        (["predict", "--project", "EMPTY"], "has no trained model yet"),
    ],
)
def test_project_command_mistakes_exit_2_with_a_reason(files, capsys, arguments, message):
    tmp_path, image, labels, truth = files
    shifted = write_volume(Volume(read_volume(labels).array, Geometry((4.0, 0.9, 0.8), (0.0, 0.0, 0.0))),
                           tmp_path / "shifted_seg.nii.gz")
    Project.create(tmp_path / "empty", [image])
    names = {"IMAGE": str(image), "LABELS": str(labels), "SHIFTED": str(shifted), "EMPTY": str(tmp_path / "empty")}
    arguments = [names.get(a, str(tmp_path / a) if a in ("nowhere", "p2", "o") else a) for a in arguments]
    assert main(arguments) == 2
    assert message in capsys.readouterr().err
