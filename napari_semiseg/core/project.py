"""A project folder: the images it refers to, the annotations, models and outputs made from them.

Layout (everything but the source images lives inside the folder)::

    project.json                 manifest: volumes (path + content hash), classes, annotation scheme
    annotations/<name>.npz       the labels painted on each volume (compressed); <name>.previous.npz
                                 is the save before it
    runs/<timestamp>/model.pt    trained models (checkpoint.pt while a run is going)
    runs/versions.json           the run registry: every finished model, which one is current
    registration-cache/          registration transforms and scores, reused between runs
    predictions/  provenance/    what the models and registration produced

Every file is written under a temporary name, flushed to disk and renamed into place, so a
crash leaves either the old file or the new one, never half of one. Source images are read,
never written.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from .annotations import AnnotationScheme
from .atomic import atomic_file
from .versions import ModelVersion, VersionError, VersionStore
from .volume import Volume, read_volume

log = logging.getLogger(__name__)

MANIFEST = "project.json"
FORMAT = "napari-semiseg-project"
FORMAT_VERSION = 1
ANNOTATIONS_DIR = "annotations"
RUNS_DIR = "runs"
REGISTRATION_CACHE_DIR = "registration-cache"
PREDICTIONS_DIR = "predictions"
PROVENANCE_DIR = "provenance"
_HASH_CHUNK = 1 << 20


class ProjectError(ValueError):
    """A project folder that cannot be opened or saved; the message says what to do."""


@dataclass(frozen=True)
class VolumeEntry:
    """One source volume: where it is, what it contained when added, where its labels go."""

    name: str
    path: str
    sha256: str
    shape: tuple[int, int, int]
    annotations: str

    def to_dict(self) -> dict:
        return {"name": self.name, "path": self.path, "sha256": self.sha256, "shape": list(self.shape),
                "annotations": self.annotations}

    @classmethod
    def from_dict(cls, data: dict) -> "VolumeEntry":
        return cls(str(data["name"]), str(data["path"]), str(data["sha256"]), tuple(int(s) for s in data["shape"]),
                   str(data["annotations"]))


@dataclass(frozen=True)
class RunEntry:
    """A trained model kept in the project (a view of its entry in the run registry)."""

    path: str
    created: str
    strategy: str
    annotated_slices: int
    iteration: int

    def to_dict(self) -> dict:
        return {"path": self.path, "created": self.created, "strategy": self.strategy,
                "annotated_slices": self.annotated_slices, "iteration": self.iteration}

    @classmethod
    def from_dict(cls, data: dict) -> "RunEntry":
        return cls(str(data["path"]), str(data.get("created", "")), str(data.get("strategy", "")),
                   int(data.get("annotated_slices", 0)), int(data.get("iteration", 0)))


@dataclass(frozen=True)
class LoadedAnnotations:
    """Labels read back from the project; ``note`` says when a backup had to be used."""

    labels: np.ndarray
    saved_at: float
    note: str | None = None
    provenance: dict[str, np.ndarray] | None = None  # Provenance.saved_state() of the same save


# ----- hashing and atomic files ---------------------------------------------------------------


def content_hash(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, or of every file in a folder (a DICOM series) by name."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _write_durably(path: Path, write, keep_previous: Path | None = None) -> None:
    """Write ``path`` through ``write(handle)`` atomically and durably, keeping the old file as ``keep_previous``."""
    with atomic_file(path, durable=True, keep_previous=keep_previous) as temporary:
        with open(temporary, "wb") as stream:
            write(stream)


def _save_failure(what: str, folder: Path, error: OSError) -> ProjectError:
    """A message for a failed save that says why and what to do."""
    if error.errno == errno.ENOSPC:
        reason = "the disk is full"
        action = "Free some disk space; the next autosave will then succeed."
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = f"the project folder '{folder}' is read-only"
        action = "Copy the project to a folder you can write to and open it from there."
    else:
        reason = error.strerror or str(error)
        action = "Check the disk and try again."
    return ProjectError(f"Could not save {what}: {reason}. The previous save is untouched. {action}")


# ----- the project -----------------------------------------------------------------------------


class Project:
    """A project folder and its manifest. Create with :meth:`create`, open with :meth:`open`."""

    def __init__(self, folder: Path, manifest: dict):
        self.folder = folder
        self.volumes = [VolumeEntry.from_dict(v) for v in manifest.get("volumes", [])]
        self.classes = {int(value): str(name) for value, name in (manifest.get("classes") or {}).items()}
        self.scheme = AnnotationScheme.from_dict(manifest.get("annotation") or AnnotationScheme().to_dict())
        self._legacy_runs = [RunEntry.from_dict(r) for r in manifest.get("runs", [])]
        self.created = str(manifest.get("created", ""))
        self.recovery_notes: list[str] = []

    # --- creating and opening
    @classmethod
    def create(cls, folder: str | os.PathLike, images: list[str | os.PathLike] = (),
               classes: dict[int, str] | None = None, scheme: AnnotationScheme | None = None) -> "Project":
        """Make a new project folder (or an empty existing one) referring to ``images``."""
        folder = Path(folder).absolute()
        if (folder / MANIFEST).exists():
            raise ProjectError(f"'{folder}' already holds a project. Open it instead.")
        if folder.exists() and not folder.is_dir():
            raise ProjectError(f"'{folder}' is a file; choose a folder for the project.")
        manifest = {"classes": {str(k): v for k, v in (classes or {}).items()},
                    "annotation": (scheme or AnnotationScheme()).to_dict(), "created": _now_iso()}
        project = cls(folder, manifest)
        try:
            for sub in (ANNOTATIONS_DIR, RUNS_DIR, REGISTRATION_CACHE_DIR, PREDICTIONS_DIR, PROVENANCE_DIR):
                (folder / sub).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise _save_failure("the new project", folder, error) from None
        for image in images:
            project.add_volume(image, save=False)
        project.save_manifest()
        return project

    @classmethod
    def open(cls, folder: str | os.PathLike) -> "Project":
        """Open a project folder, checking its manifest; see :meth:`check_sources` for the images."""
        folder = Path(folder).absolute()
        if folder.name == MANIFEST:
            folder = folder.parent
        manifest_path = folder / MANIFEST
        if not manifest_path.exists():
            raise ProjectError(f"'{folder}' is not a napari-semiseg project (no {MANIFEST}). "
                               "Create one with `napari-semiseg project init`.")
        manifest, note = _read_manifest(manifest_path)
        project = cls(folder, manifest)
        try:
            project._check_owned_paths()
            _move_legacy_runs(project)
        except VersionError as error:
            raise ProjectError(str(error)) from None
        if note:
            project.recovery_notes.append(note)
        return project

    def _check_owned_paths(self) -> None:
        owned = [("annotations of " + v.name, v.annotations) for v in self.volumes]
        owned += [("model " + r.path, r.path) for r in self._legacy_runs + self.runs]
        for what, relative in owned:
            self.owned_path(relative, what)

    def owned_path(self, relative: str, what: str = "a file") -> Path:
        """Resolve a path the project owns; refuse one that leaves the folder."""
        candidate = Path(relative)
        resolved = (candidate if candidate.is_absolute() else self.folder / candidate).resolve()
        if not resolved.is_relative_to(self.folder.resolve()):
            raise ProjectError(
                f"The project manifest points outside its folder for {what} ('{relative}'). Project files must "
                f"stay inside '{self.folder}'; the manifest may have been edited or copied from elsewhere."
            )
        return resolved

    @property
    def read_only(self) -> bool:
        return not os.access(self.folder, os.W_OK)

    # --- manifest
    def to_manifest(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "package_version": __version__,
            "created": self.created,
            "volumes": [v.to_dict() for v in self.volumes],
            "classes": {str(k): v for k, v in sorted(self.classes.items())},
            "annotation": self.scheme.to_dict(),
        }

    def save_manifest(self) -> None:
        text = json.dumps(self.to_manifest(), indent=2).encode()
        try:
            _write_durably(self.folder / MANIFEST, lambda s: s.write(text), self.folder / (MANIFEST + ".previous"))
        except OSError as error:
            raise _save_failure("the project manifest", self.folder, error) from None

    def set_scheme(self, scheme: AnnotationScheme) -> None:
        if scheme != self.scheme:
            self.scheme = scheme
            self.save_manifest()

    def set_classes(self, classes: dict[int, str]) -> None:
        self.classes = {int(k): str(v) for k, v in classes.items()}
        self.save_manifest()

    # --- volumes
    def add_volume(self, path: str | os.PathLike, save: bool = True, sha256: str | None = None) -> VolumeEntry:
        """Refer to a source image (read to check it, hashed, never modified); ``sha256``: its
        :func:`content_hash` when already known."""
        source = Path(path).absolute()
        volume = read_volume(source)
        name = _unique(_safe_name(volume.name), {v.name for v in self.volumes})
        stored = os.path.relpath(source, self.folder) if source.is_relative_to(self.folder) else str(source)
        entry = VolumeEntry(name, stored, sha256 or content_hash(source), volume.shape, f"{ANNOTATIONS_DIR}/{name}.npz")
        self.volumes.append(entry)
        if save:
            self.save_manifest()
        return entry

    def entry(self, name: str) -> VolumeEntry:
        for volume in self.volumes:
            if volume.name == name:
                return volume
        raise ProjectError(f"The project has no volume '{name}'; it has {', '.join(self.volume_names) or 'none'}.")

    @property
    def volume_names(self) -> list[str]:
        return [v.name for v in self.volumes]

    def source_path(self, name: str) -> Path:
        path = Path(self.entry(name).path)
        return path if path.is_absolute() else (self.folder / path)

    def check_source(self, name: str) -> None:
        """Refuse a source image that is missing or changed since it was added."""
        entry = self.entry(name)
        path = self.source_path(name)
        if not path.exists():
            raise ProjectError(
                f"The image of '{name}' is missing: the project expects it at '{path}'. Put it back there "
                "(or relink it to where it is now with `napari-semiseg project relink`)."
            )
        if content_hash(path) != entry.sha256:
            raise ProjectError(
                f"The image of '{name}' at '{path}' changed since it was added to the project (its content "
                "hash differs), so the annotations may no longer line up with it. Restore the original file."
            )

    def read_volume(self, name: str) -> Volume:
        """Read a source image after checking it is the one the annotations were painted on."""
        self.check_source(name)
        volume = read_volume(self.source_path(name))
        volume.name = name
        return volume

    def relink(self, name: str, new_path: str | os.PathLike) -> None:
        """Point a volume at a moved copy of its image (same content hash)."""
        entry = self.entry(name)
        source = Path(new_path).absolute()
        if not source.exists() or content_hash(source) != entry.sha256:
            raise ProjectError(f"'{source}' is not the image '{name}' was painted on (different content).")
        stored = os.path.relpath(source, self.folder) if source.is_relative_to(self.folder) else str(source)
        self.volumes[self.volumes.index(entry)] = VolumeEntry(name, stored, entry.sha256, entry.shape,
                                                              entry.annotations)
        self.save_manifest()

    # --- annotations
    def annotations_path(self, name: str) -> Path:
        entry = self.entry(name)
        return self.owned_path(entry.annotations, f"annotations of {name}")

    @staticmethod
    def previous_path(path: Path) -> Path:
        return path.with_name(path.name[: -len(".npz")] + ".previous.npz")

    def save_annotations(self, name: str, labels: np.ndarray, provenance: dict[str, np.ndarray] | None = None) -> Path:
        """Save labels atomically; the save before this one is kept as ``<name>.previous.npz``.

        ``provenance`` (``Provenance.saved_state()``) is saved in the same file, so labels and
        their provenance never come from different saves.

        Raises:
            ProjectError: the shape does not fit the volume, or the disk refused (full,
                read-only); the files on disk are then unchanged.
        """
        entry = self.entry(name)
        labels = np.asarray(labels)
        if labels.shape != entry.shape:
            raise ProjectError(f"Labels of shape {labels.shape} do not fit '{name}' of shape {entry.shape}.")
        path = self.annotations_path(name)
        try:
            arrays = _npz_arrays(labels, provenance)
            _write_durably(path, lambda stream: _write_npz(stream, arrays), self.previous_path(path))
        except OSError as error:
            raise _save_failure(f"the annotations of '{name}'", self.folder, error) from None
        return path

    def load_annotations(self, name: str) -> LoadedAnnotations | None:
        """The last saved labels of ``name``, falling back to the previous save if the last is damaged.

        A damaged file is renamed ``*.damaged-<time>.npz`` (kept for inspection, never overwritten).
        Returns None when nothing was saved yet.

        Raises:
            ProjectError: every saved copy is unreadable.
        """
        entry = self.entry(name)
        path = self.annotations_path(name)
        previous = self.previous_path(path)
        if not path.exists() and not previous.exists():
            return None
        problems = []
        for candidate in (path, previous):
            if not candidate.exists():
                continue
            try:
                labels, provenance = _read_npz(candidate, entry.shape)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
                problems.append(f"{candidate.name}: {error}")
                continue
            note = None
            if candidate is previous:
                note = (f"The last save of the annotations of '{name}' was damaged; restored the save before it "
                        f"(from {time.strftime('%H:%M:%S', time.localtime(candidate.stat().st_mtime))}).")
                self._set_aside(path)
                log.warning(note)
            return LoadedAnnotations(labels, candidate.stat().st_mtime, note, provenance)
        raise ProjectError(f"The saved annotations of '{name}' are unreadable ({'; '.join(problems)}). "
                           "Restore them from a backup of the project folder.")

    def _set_aside(self, damaged: Path) -> None:
        if damaged.exists():
            aside = damaged.with_name(f"{damaged.name[:-4]}.damaged-{time.strftime('%Y%m%d-%H%M%S')}.npz")
            try:
                os.replace(damaged, aside)
            except OSError:
                log.warning("could not rename damaged %s", damaged)

    # --- runs
    @property
    def runs_dir(self) -> Path:
        return self.folder / RUNS_DIR

    def new_run_dir(self) -> Path:
        """A fresh ``runs/<timestamp>`` folder for a training run."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        candidate, suffix = self.runs_dir / stamp, 1
        while candidate.exists():
            suffix += 1
            candidate = self.runs_dir / f"{stamp}-{suffix}"
        return candidate

    @property
    def versions(self) -> VersionStore:
        """The run registry: every model trained in this project, and the current one."""
        return VersionStore(self.runs_dir)

    @property
    def runs(self) -> list[RunEntry]:
        """The trained models, oldest first."""
        return [_run_entry(self, version) for version in self.versions.versions()]

    def record_run(self, model_path: str | os.PathLike, strategy: str, annotated_slices: int,
                   iteration: int, **details) -> RunEntry:
        """List a trained model in the run registry and make it current (``details``: the other
        arguments of :meth:`VersionStore.add`)."""
        self.owned_path(os.path.relpath(Path(model_path).absolute(), self.folder), "a model")
        details.setdefault("trained_slices", annotated_slices)
        try:
            version = self.versions.add(model_path, strategy=strategy, iterations=iteration,
                                        painted_slices=annotated_slices, **details)
        except OSError as error:
            raise _save_failure("the run registry", self.folder, error) from None
        return _run_entry(self, version)

    def latest_model(self) -> Path | None:
        """The current model (the newest unless rolled back), else the newest still on disk."""
        path = self.versions.latest_on_disk()
        return None if path is None else path.resolve()

    def latest_resumable(self) -> Path | None:
        """The newest model or periodic checkpoint under ``runs/`` (also of interrupted runs)."""
        candidates = [p for name in ("model.pt", "checkpoint.pt") for p in self.runs_dir.glob(f"*/{name}")]
        return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None

    # --- other folders
    @property
    def registration_cache_dir(self) -> Path:
        return self.folder / REGISTRATION_CACHE_DIR

    @property
    def predictions_dir(self) -> Path:
        return self.folder / PREDICTIONS_DIR

    @property
    def provenance_dir(self) -> Path:
        return self.folder / PROVENANCE_DIR


def _run_entry(project: Project, version: ModelVersion) -> RunEntry:
    path = os.path.relpath(project.versions.path_of(version).absolute(), project.folder)
    return RunEntry(path, version.created, version.strategy, version.painted_slices, version.iterations)


def _move_legacy_runs(project: Project) -> None:
    """Projects before the run registry listed their models in the manifest: move them over."""
    if not project._legacy_runs or project.read_only:
        return
    store = project.versions
    listed = {store.path_of(v).resolve() for v in store.versions()}
    for run in project._legacy_runs:
        path = project.owned_path(run.path, "a model")
        if path not in listed:
            store.add(path, strategy=run.strategy, iterations=run.iteration, painted_slices=run.annotated_slices,
                      trained_slices=run.annotated_slices)
    project._legacy_runs = []
    project.save_manifest()


def _read_manifest(path: Path) -> tuple[dict, str | None]:
    previous = path.with_name(MANIFEST + ".previous")
    try:
        return _parse_manifest(path), None
    except json.JSONDecodeError as error:
        if previous.exists():
            manifest = _parse_manifest(previous)
            note = f"{MANIFEST} was damaged ({error}); opened the previous copy of the manifest."
            log.warning(note)
            return manifest, note
        raise ProjectError(f"{path} is damaged ({error}) and there is no previous copy to restore.") from None


def _parse_manifest(path: Path) -> dict:
    manifest = json.loads(path.read_text())
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ProjectError(f"'{path}' is not a napari-semiseg project manifest.")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ProjectError(
            f"This project was saved by a newer napari-semiseg ({manifest.get('package_version', '?')}, project "
            f"format {version}); this is {__version__}, which reads format {FORMAT_VERSION}. Update napari-semiseg "
            "to open it (pip install -U napari-semiseg)."
        )
    return manifest


PROVENANCE_PREFIX = "provenance_"


def _npz_arrays(labels: np.ndarray, provenance: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    return {"labels": labels, **{PROVENANCE_PREFIX + key: value for key, value in (provenance or {}).items()}}


def _write_npz(stream, arrays: dict[str, np.ndarray]) -> None:
    np.savez_compressed(stream, **arrays)


def _read_npz(path: Path, shape: tuple[int, ...]) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    with np.load(path, allow_pickle=False) as content:
        labels = np.array(content["labels"])
        provenance = {key[len(PROVENANCE_PREFIX):]: np.array(content[key]) for key in content.files
                      if key.startswith(PROVENANCE_PREFIX)}
    if labels.shape != tuple(shape):
        raise ValueError(f"holds shape {labels.shape}, the volume has {tuple(shape)}")
    return labels, provenance or None


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "volume"


def _unique(name: str, taken: set[str]) -> str:
    candidate, suffix = name, 1
    while candidate in taken:
        suffix += 1
        candidate = f"{name}-{suffix}"
    return candidate
