"""Export results in the source geometry: masks, certainty and provenance, each verified on disk.

Every volume goes through :func:`write_volume`, which writes atomically, re-reads the file and
compares size, spacing, origin, direction and values before the export counts as done. A
provenance map (which source each label came from) may bring a JSON sidecar describing its
values; that is re-read and compared too.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_file
from .volume import Geometry, Volume, VolumeError, volume_stem, write_volume


@dataclass
class ExportItem:
    """One map to export: ``suffix`` names the file (``<stem>_<suffix>.nii.gz``)."""

    suffix: str
    array: np.ndarray
    sidecar: dict | None = None


@dataclass
class ExportResult:
    files: list[Path] = field(default_factory=list)

    def describe(self) -> str:
        return ", ".join(path.name for path in self.files)


def label_array(array: np.ndarray) -> np.ndarray:
    """Labels in the smallest unsigned type that holds them (many tools refuse 64-bit labels)."""
    array = np.asarray(array)
    if array.size and array.dtype.kind in "biu" and array.min() >= 0:
        for dtype in (np.uint8, np.uint16, np.uint32):
            if array.max() <= np.iinfo(dtype).max:
                return array.astype(dtype, copy=False)
    return array


def export_maps(folder: str | os.PathLike, stem: str, geometry: Geometry, items: list[ExportItem],
                extension: str = ".nii.gz") -> ExportResult:
    """Write each item as ``<folder>/<stem>_<suffix><extension>`` in ``geometry``, verified.

    Raises:
        VolumeError: a map has another shape than the first, or writing or verifying failed
            (earlier files of the same export stay written and verified).
    """
    folder = Path(folder)
    result = ExportResult()
    shape = items[0].array.shape if items else None
    for item in items:
        if item.array.shape != shape:
            raise VolumeError(f"The {item.suffix} map has shape {item.array.shape}, the labels {shape}; "
                              "export maps of the same image together.")
        array = item.array if item.array.dtype.kind == "f" else label_array(item.array)
        path = write_volume(Volume(array, geometry, f"{stem}_{item.suffix}"), folder / f"{stem}_{item.suffix}{extension}")
        result.files.append(path)
        if item.sidecar is not None:
            result.files.append(write_json_verified(item.sidecar, folder / f"{stem}_{item.suffix}.json"))
    return result


def provenance_paths(labels_path: str | os.PathLike) -> tuple[Path, Path]:
    """Where the provenance of a labels file goes: ``<stem>_provenance.<ext>`` and ``.json``."""
    path = Path(labels_path)
    stem = volume_stem(path)
    extension = path.name[len(stem):] or ".nii.gz"
    return path.with_name(f"{stem}_provenance{extension}"), path.with_name(f"{stem}_provenance.json")


def export_labels(path: str | os.PathLike, labels: np.ndarray, geometry: Geometry,
                  provenance: tuple[np.ndarray, dict] | None = None) -> ExportResult:
    """Write a labels file at ``path`` and, given ``provenance`` (code map, record), the map and
    its JSON record beside it (:func:`provenance_paths`); each is re-read and checked.

    Raises:
        VolumeError: writing or verifying failed (the message says what to do).
    """
    path = Path(path)
    result = ExportResult([write_volume(Volume(label_array(labels), geometry, volume_stem(path)), path)])
    if provenance is not None:
        result.files += write_provenance_beside(path, *provenance, geometry)
    return result


def write_provenance_beside(labels_path: str | os.PathLike, codes: np.ndarray, record: dict,
                            geometry: Geometry) -> list[Path]:
    """Write a provenance code map and its JSON record beside a labels file (:func:`provenance_paths`),
    each re-read and checked; the record names both files. Raises VolumeError."""
    map_path, json_path = provenance_paths(labels_path)
    written = write_volume(Volume(np.asarray(codes, np.uint8), geometry, map_path.name), map_path)
    record = {**record, "labels_file": Path(labels_path).name, "provenance_map": map_path.name}
    return [written, write_json_verified(record, json_path)]


def write_json_verified(content: dict, path: Path) -> Path:
    """Write JSON atomically and check it reads back equal."""
    text = json.dumps(content, indent=2, sort_keys=True, default=_plain)
    try:
        with atomic_file(path) as temporary:
            temporary.write_text(text, encoding="utf-8")
            if json.loads(temporary.read_text(encoding="utf-8")) != json.loads(text):
                raise VolumeError(f"Verification failed: {path.name} read back differently.")
    except OSError as error:
        raise VolumeError(f"Writing '{path}' failed: {error.strerror or error}. Nothing was overwritten.") from None
    return path


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} cannot be written to JSON")
