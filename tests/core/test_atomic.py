"""Atomic writes: complete files only, usual permissions, the old copy kept on request."""

import os
import stat

import pytest

from napari_semiseg.core.atomic import atomic_file, write_text_atomic


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_get_the_permissions_a_plain_open_gives(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = write_text_atomic(tmp_path / "sub" / "atomic.txt", "hello", durable=True)
    assert written.read_text() == "hello"
    assert _mode(written) == _mode(plain), "not mkstemp's 0600"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(path) as temporary:
            temporary.write_text("half")
            raise RuntimeError("crash mid-write")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.json"]


def test_keep_previous_holds_the_old_content_and_the_suffix_is_kept(tmp_path):
    path, previous = tmp_path / "a.nii.gz", tmp_path / "a.nii.gz.previous"
    path.write_text("first")
    with atomic_file(path, keep_previous=previous, suffix=".nii.gz") as temporary:
        assert temporary.name.endswith(".nii.gz") and temporary.parent == tmp_path
        temporary.write_text("second")
    assert path.read_text() == "second" and previous.read_text() == "first"
