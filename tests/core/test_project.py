"""Project folders: manifest, annotations that survive crashes, full disks and read-only folders."""

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from napari_semiseg.core import atomic as atomic_module
from napari_semiseg.core import project as project_module
from napari_semiseg.core.annotations import AnnotationMode, AnnotationScheme
from napari_semiseg.core.autosave import AutosaveClock, Autosaver
from napari_semiseg.core.project import MANIFEST, Project, ProjectError, content_hash
from napari_semiseg.core.volume import Geometry, Volume, write_volume

SHAPE = (6, 16, 16)


@pytest.fixture
def image(tmp_path):
    values = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    return write_volume(Volume(values, Geometry((2.0, 1.0, 1.0), (5.0, 0.0, -3.0))), tmp_path / "case01.nii.gz")


@pytest.fixture
def project(tmp_path, image):
    return Project.create(tmp_path / "proj", [image], classes={1: "ventricle", 2: "myocardium"},
                          scheme=AnnotationScheme(AnnotationMode.SLICES, 1))


def _labels(seed=0):
    labels = np.zeros(SHAPE, np.uint8)
    labels[seed % SHAPE[0], 4:10, 4:10] = 1 + seed % 2
    return labels


def test_a_created_project_reopens_with_volumes_classes_scheme_and_runs(project, image, tmp_path):
    source_bytes = image.read_bytes()
    project.save_annotations("case01", _labels(1))
    run_dir = project.new_run_dir()
    run_dir.mkdir(parents=True)
    (run_dir / "model.pt").write_bytes(b"stand-in for a model")
    project.record_run(run_dir / "model.pt", "supervised", annotated_slices=3, iteration=40)

    reopened = Project.open(tmp_path / "proj")
    assert reopened.volume_names == ["case01"]
    assert reopened.classes == {1: "ventricle", 2: "myocardium"}
    assert reopened.scheme == AnnotationScheme(AnnotationMode.SLICES, 1)
    assert np.array_equal(reopened.load_annotations("case01").labels, _labels(1))
    assert reopened.latest_model() == (run_dir / "model.pt").resolve()
    assert reopened.runs[0].strategy == "supervised" and reopened.runs[0].annotated_slices == 3
    volume = reopened.read_volume("case01")
    assert volume.shape == SHAPE and volume.geometry.spacing == (2.0, 1.0, 1.0)
    manifest = json.loads((tmp_path / "proj" / MANIFEST).read_text())
    assert manifest["volumes"][0]["sha256"] == content_hash(image)
    assert image.read_bytes() == source_bytes, "the source image was modified"
    for sub in ("annotations", "runs", "registration-cache", "predictions", "provenance"):
        assert (tmp_path / "proj" / sub).is_dir()


def test_models_listed_in_an_older_manifest_move_into_the_run_registry(project, tmp_path):
    """Projects made before the one run registry listed their models in project.json."""
    run_dir = project.new_run_dir()
    run_dir.mkdir(parents=True)
    (run_dir / "model.pt").write_bytes(b"stand-in for a model")
    manifest_path = tmp_path / "proj" / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["runs"] = [{"path": f"runs/{run_dir.name}/model.pt", "created": "2026-01-01T10:00:00",
                         "strategy": "supervised", "annotated_slices": 3, "iteration": 40}]
    manifest_path.write_text(json.dumps(manifest))

    reopened = Project.open(tmp_path / "proj")
    assert [(r.strategy, r.annotated_slices, r.iteration) for r in reopened.runs] == [("supervised", 3, 40)]
    assert reopened.latest_model() == (run_dir / "model.pt").resolve()
    assert "runs" not in json.loads(manifest_path.read_text()), "one list of runs: the registry"
    assert len(Project.open(tmp_path / "proj").runs) == 1, "moved once, not on every opening"



def test_volumes_inside_the_folder_are_stored_by_relative_path(tmp_path, image):
    folder = tmp_path / "moving"
    folder.mkdir()
    inside = folder / "images" / "scan.nii.gz"
    inside.parent.mkdir()
    inside.write_bytes(image.read_bytes())
    Project.create(folder, [inside])
    moved = tmp_path / "moved"
    folder.rename(moved)
    reopened = Project.open(moved)
    assert reopened.volumes[0].path == os.path.join("images", "scan.nii.gz")
    assert reopened.read_volume("scan").shape == SHAPE


def test_each_save_keeps_the_previous_copy_and_a_damaged_last_save_is_recovered(project):
    project.save_annotations("case01", _labels(1))
    project.save_annotations("case01", _labels(2))
    path = project.annotations_path("case01")
    assert np.array_equal(np.load(project.previous_path(path))["labels"], _labels(1))
    path.write_bytes(path.read_bytes()[:40])  # a half-written file, as a crash mid-copy would leave

    loaded = project.load_annotations("case01")
    assert np.array_equal(loaded.labels, _labels(1))
    assert "was damaged; restored the save before it" in loaded.note
    assert list(path.parent.glob("case01.damaged-*.npz")), "the damaged file should be kept aside"
    project.save_annotations("case01", _labels(3))
    assert np.array_equal(np.load(project.previous_path(path))["labels"], _labels(1))


def test_disk_full_gives_a_clear_message_and_the_previous_save_still_loads(project, monkeypatch):
    project.save_annotations("case01", _labels(1))

    def disk_full(stream, labels):
        stream.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(project_module, "_write_npz", disk_full)
    with pytest.raises(ProjectError, match="the disk is full. The previous save is untouched. Free some disk space"):
        project.save_annotations("case01", _labels(2))
    monkeypatch.undo()
    assert np.array_equal(project.load_annotations("case01").labels, _labels(1))
    assert not [p for p in project.annotations_path("case01").parent.iterdir() if p.name.startswith(".tmp")]


def test_read_only_project_gives_a_clear_message_and_nothing_changes(project, monkeypatch):
    project.save_annotations("case01", _labels(1))
    before = project.annotations_path("case01").read_bytes()

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(atomic_module.tempfile, "mkstemp", refuse)
    with pytest.raises(ProjectError, match="is read-only.*Copy the project to a folder you can write to"):
        project.save_annotations("case01", _labels(2))
    assert project.annotations_path("case01").read_bytes() == before


def test_read_only_folder_for_real(project):
    project.save_annotations("case01", _labels(1))
    folder = project.annotations_path("case01").parent
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: chmod does not stop root from writing")
        with pytest.raises(ProjectError, match="read-only"):
            project.save_annotations("case01", _labels(2))
    finally:
        folder.chmod(stat.S_IRWXU)
    assert np.array_equal(project.load_annotations("case01").labels, _labels(1))


def test_missing_and_changed_source_images_are_named(project, image):
    original = image.read_bytes()
    image.write_bytes(original[:-10] + b"0123456789")
    with pytest.raises(ProjectError, match="changed since it was added.*Restore the original file"):
        project.read_volume("case01")
    image.unlink()
    with pytest.raises(ProjectError, match="is missing: the project expects it at"):
        project.read_volume("case01")
    moved = image.with_name("elsewhere.nii.gz")
    moved.write_bytes(original)
    project.relink("case01", moved)
    assert project.read_volume("case01").shape == SHAPE


def test_manifest_pointing_outside_the_folder_is_refused(project, tmp_path):
    manifest_path = project.folder / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["volumes"][0]["annotations"] = "../../home/someone/.bashrc.npz"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ProjectError, match="points outside its folder.*must stay inside"):
        Project.open(project.folder)


def test_manifest_from_a_newer_version_asks_to_update(project):
    manifest_path = project.folder / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest.update(format_version=99, package_version="9.0")
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ProjectError, match="saved by a newer napari-semiseg.*Update napari-semiseg"):
        Project.open(project.folder)


def test_a_damaged_manifest_opens_from_its_previous_copy(project):
    project.set_classes({1: "ventricle"})  # a second save, so a previous copy exists
    (project.folder / MANIFEST).write_text('{"format": "napari-semiseg-pro')
    reopened = Project.open(project.folder)
    assert reopened.volume_names == ["case01"]
    assert "damaged" in reopened.recovery_notes[0]


def test_not_a_project_and_existing_project_messages(tmp_path, project):
    with pytest.raises(ProjectError, match="is not a napari-semiseg project"):
        Project.open(tmp_path)
    with pytest.raises(ProjectError, match="already holds a project"):
        Project.create(project.folder)


def test_autosave_clock_waits_for_a_pause_but_not_forever():
    now = [0.0]
    clock = AutosaveClock(quiet_seconds=2.0, max_unsaved_seconds=5.0, clock=lambda: now[0])
    assert not clock.due()
    for step in range(8):  # painting without a pause, an edit every second
        now[0] = float(step)
        clock.edited()
        assert clock.due() == (step >= 5)
    clock.saved()
    assert not clock.dirty
    clock.edited()
    now[0] += 1.9
    assert not clock.due()
    now[0] += 0.2
    assert clock.due()


SESSION = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from napari_semiseg.core.autosave import AutosaveClock, Autosaver
    from napari_semiseg.core.project import Project

    project = Project.open(sys.argv[1])
    labels = np.zeros(project.volumes[0].shape, np.uint8)
    saver = Autosaver(project, "case01", lambda: labels.copy(), AutosaveClock(0.3, 1.0), poll_seconds=0.05).start()
    for index in range(labels.shape[0] * 100):
        z = index % labels.shape[0]
        labels[z, index // labels.shape[0], :] = 1   # one painted row every 0.1 s, like a brush stroke
        saver.edited()
        print(f"painted {index}", flush=True)
        time.sleep(0.1)
    """
)


def test_killing_the_whole_program_loses_at_most_the_last_seconds(project):
    """A headless session autosaves while painting; SIGKILL; reopening restores all but ~1 s of work."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", SESSION, str(project.folder)], stdout=subprocess.PIPE, text=True,
                             env=env)
    painted = -1
    try:
        deadline = time.monotonic() + 60
        while painted < 40 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if line.startswith("painted"):
                painted = int(line.split()[1])
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL and painted >= 40
    restored = Project.open(project.folder).load_annotations("case01").labels
    painted_rows = int(restored.any(axis=2).sum())
    # the autosave is at most 1 s (10 edits) behind, plus the time SIGKILL takes to arrive
    assert painted_rows >= painted + 1 - 15, f"restored {painted_rows} rows of {painted + 1} painted"
    assert restored.max() == 1


def test_autosaver_close_saves_the_last_edits(project):
    labels = _labels(1)
    saver = Autosaver(project, "case01", lambda: labels.copy(), AutosaveClock(60, 60)).start()
    saver.edited()
    saver.close()
    assert np.array_equal(project.load_annotations("case01").labels, labels)
