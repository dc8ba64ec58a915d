"""Adding many volumes: files and folders (recursive, DICOM series folders), progress, duplicates."""

import threading

import numpy as np
import pytest

from napari_semiseg.cli import main
from napari_semiseg.core.phantoms import write_dicom_series
from napari_semiseg.core.project import Project, ProjectError
from napari_semiseg.core.volume import Geometry, Volume, write_volume
from napari_semiseg.core.volume_sources import (
    VolumeAdded,
    VolumesAdded,
    VolumeSkipped,
    add_volumes,
    find_volume_sources,
)


def _volume(seed, shape=(4, 12, 10), spacing=(2.0, 1.0, 1.0)):
    array = np.random.default_rng(seed).random(shape).astype(np.float32)
    return Volume(array, Geometry(spacing=spacing))


@pytest.fixture
def tree(tmp_path):
    """A folder as annotators get one: volumes of different sizes and spacings, nested, with clutter."""
    root = tmp_path / "data"
    write_volume(_volume(1), root / "site_a" / "case01.nii.gz")
    write_volume(_volume(2, (5, 16, 16), (3.0, 0.7, 0.7)), root / "site_a" / "case02.mha")
    write_volume(_volume(3, (6, 10, 12)), root / "site_b" / "deep" / "case03.nrrd")
    scan = Volume((_volume(4).array * 1000).astype(np.int16), Geometry(spacing=(2.0, 1.0, 1.0)))
    write_dicom_series(scan, root / "site_b" / "case04_dicom", "1.2.826.0.1.3680043.2.1125.9")
    write_volume(_volume(5), root / ".cache" / "hidden.nii.gz")
    (root / "site_b" / "notes.txt").write_text("not a volume")
    (root / "site_a" / "broken.nii.gz").write_bytes(b"not a nifti")
    return root


def test_folders_are_searched_recursively_and_a_dicom_series_folder_is_one_volume(tree):
    found = [path.relative_to(tree).as_posix() for path in find_volume_sources([tree])]
    assert found == ["site_a/broken.nii.gz", "site_a/case01.nii.gz", "site_a/case02.mha",
                     "site_b/case04_dicom", "site_b/deep/case03.nrrd"]
    assert find_volume_sources([tree / "site_a" / "case01.nii.gz", tree / "site_a"])[0].name == "case01.nii.gz"
    with pytest.raises(ProjectError, match="does not exist"):
        find_volume_sources([tree / "missing"])


def test_adding_reports_progress_skips_unreadable_and_duplicate_volumes_and_keeps_the_rest(tree, tmp_path):
    project = Project.create(tmp_path / "proj")
    events = list(add_volumes(project, [tree]))
    assert [(type(e).__name__, e.done, e.total) for e in events[:-1]] == [
        ("VolumeSkipped", 1, 5), ("VolumeAdded", 2, 5), ("VolumeAdded", 3, 5), ("VolumeAdded", 4, 5),
        ("VolumeAdded", 5, 5)]
    assert "broken.nii.gz" in events[0].path and events[0].reason
    summary = events[-1]
    assert isinstance(summary, VolumesAdded) and summary.skipped == 1 and not summary.stopped
    reopened = Project.open(project.folder)
    assert reopened.volume_names == list(summary.names) == ["case01", "case02", "case04_dicom", "case03"]
    assert {tuple(v.shape) for v in reopened.volumes} == {(4, 12, 10), (5, 16, 16), (6, 10, 12)}

    again = list(add_volumes(reopened, [tree / "site_a"]))
    assert all(isinstance(e, VolumeSkipped) for e in again[:-1])
    assert "already in the project as 'case01'" in again[1].reason
    assert Project.open(project.folder).volume_names == reopened.volume_names, "nothing added twice"


def test_a_stop_ends_adding_between_two_volumes(tree, tmp_path):
    project = Project.create(tmp_path / "proj")
    stop = threading.Event()
    events = []
    for event in add_volumes(project, [tree / "site_a" / "case01.nii.gz", tree / "site_a" / "case02.mha"], stop):
        events.append(event)
        if isinstance(event, VolumeAdded):
            stop.set()
    assert isinstance(events[-1], VolumesAdded) and events[-1].stopped and events[-1].names == ("case01",)
    assert Project.open(project.folder).volume_names == ["case01"]


def test_project_add_on_the_command_line(tree, tmp_path, capsys):
    folder = tmp_path / "proj"
    assert main(["project", "init", str(folder)]) == 0
    capsys.readouterr()
    assert main(["project", "add", str(folder), str(tree)]) == 0
    out, err = capsys.readouterr()
    assert "[2/5] added case01" in out and "4 volumes added, 1 skipped" in out and "the project has 4" in out
    assert "skipped" in err and "broken.nii.gz" in err
    assert main(["project", "add", str(folder), str(tree / "site_a" / "broken.nii.gz")]) == 1, \
        "nothing could be added: the command fails"
    assert len(Project.open(folder).volumes) == 4
