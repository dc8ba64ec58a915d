"""Adding many volumes to a project: find them in files and folders, then add them one by one.

:func:`find_volume_sources` walks folders recursively and returns every medical volume in them
(NIfTI, MHA/MHD, NRRD files, and each folder holding a DICOM series). :func:`add_volumes` is a
generator of small events, like training, so a command line prints them and a widget shows a
progress bar; ``stop`` ends it between two volumes. A volume already in the project (same
content) is skipped, and so is one that cannot be read, with the reason; the others are added.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .project import Project, ProjectError, content_hash
from .volume import GEOMETRY_EXTENSIONS, VolumeError, is_readable_path

# files a DICOM series is made of: ".dcm", ".ima", or no extension at all (as many scanners write)
DICOM_SUFFIXES = (".dcm", ".ima", "")


@dataclass(frozen=True)
class VolumeAdded:
    done: int
    total: int
    name: str
    path: str


@dataclass(frozen=True)
class VolumeSkipped:
    done: int
    total: int
    path: str
    reason: str


@dataclass(frozen=True)
class VolumesAdded:
    """The end: what was added, how many were skipped, and whether ``stop`` cut it short."""

    names: tuple[str, ...]
    skipped: int
    seconds: float
    stopped: bool = False


def find_volume_sources(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The volumes named by ``paths``: files as given, folders searched recursively (hidden ones
    left out), a DICOM series folder as one volume. Sorted within each folder, duplicates removed.

    Raises:
        ProjectError: a path does not exist.
    """
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if not path.exists():
            raise ProjectError(f"'{path}' does not exist; check the path.")
        for source in ([path] if path.is_file() else _volumes_in(path)):
            found.setdefault(source.absolute(), None)
    return list(found)


def _volumes_in(folder: Path) -> Iterator[Path]:
    for root, folders, files in os.walk(folder):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        files = sorted(f for f in files if not f.startswith("."))
        here = Path(root)
        if any(_may_be_dicom(name) for name in files) and is_readable_path(here):
            yield here
        yield from (here / name for name in files if name.lower().endswith(GEOMETRY_EXTENSIONS))


def _may_be_dicom(name: str) -> bool:
    return Path(name).suffix.lower() in DICOM_SUFFIXES


def add_volumes(project: Project, paths: Iterable[str | os.PathLike],
                stop: threading.Event | None = None) -> Iterator[VolumeAdded | VolumeSkipped | VolumesAdded]:
    """Add every volume found under ``paths`` to ``project`` (the manifest is saved after each)."""
    started = time.monotonic()
    sources = find_volume_sources(paths)
    known = {entry.sha256: entry.name for entry in project.volumes}
    added: list[str] = []
    skipped = 0
    for done, source in enumerate(sources, start=1):
        if stop is not None and stop.is_set():
            yield VolumesAdded(tuple(added), skipped, time.monotonic() - started, stopped=True)
            return
        try:
            digest = content_hash(source)
            if digest in known:
                raise ProjectError(f"already in the project as '{known[digest]}'")
            entry = project.add_volume(source, sha256=digest)
        except (ProjectError, VolumeError, OSError) as error:
            skipped += 1
            yield VolumeSkipped(done, len(sources), str(source), str(error))
            continue
        known[digest] = entry.name
        added.append(entry.name)
        yield VolumeAdded(done, len(sources), entry.name, str(source))
    yield VolumesAdded(tuple(added), skipped, time.monotonic() - started)
