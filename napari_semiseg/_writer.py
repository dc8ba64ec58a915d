"""npe2 writers: one labels (or image) layer to NIfTI, MHA or NRRD with its geometry.

The geometry comes from ``meta["metadata"]["semiseg"]["geometry"]`` when the layer was made
by this plugin; otherwise it is derived from the layer's transform (scale, translate, rotate,
shear and affine), which must not shear.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_semiseg.core import export
from napari_semiseg.core.volume import Geometry, Volume, VolumeError, volume_stem, write_volume


def layer_geometry(meta: dict) -> Geometry:
    """The geometry recorded by this plugin, else the one napari's transform implies."""
    recorded = ((meta.get("metadata") or {}).get("semiseg") or {}).get("geometry")
    if recorded is not None:
        return Geometry.from_dict(recorded)
    return geometry_from_transform(meta)


def geometry_from_transform(meta: dict) -> Geometry:
    from napari.utils.transforms import CompositeAffine

    ndim = 3
    composite = CompositeAffine(
        scale=meta.get("scale", (1.0,) * ndim),
        translate=meta.get("translate", (0.0,) * ndim),
        rotate=meta.get("rotate"),
        shear=meta.get("shear"),
        ndim=ndim,
    ).affine_matrix
    affine = np.asarray(meta.get("affine", np.eye(ndim + 1)), dtype=float)
    if affine.shape != (ndim + 1, ndim + 1):
        raise VolumeError(f"The layer's affine has shape {affine.shape}; a 3D layer is needed.")
    matrix = affine @ composite
    linear = matrix[:ndim, :ndim]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing <= 0):
        raise VolumeError("The layer's transform collapses an axis (zero scale); it cannot be saved.")
    direction = linear / spacing
    if not np.allclose(direction.T @ direction, np.eye(ndim), atol=1e-6):
        raise VolumeError(
            "The layer's transform shears the volume, which NIfTI, MHA and NRRD cannot store. "
            "Reset its shear (and affine) before saving."
        )
    return Geometry(tuple(spacing), tuple(matrix[:ndim, ndim]), tuple(direction.ravel()))


def _layer_array(data: Any, meta: dict) -> np.ndarray:
    if meta.get("multiscale"):
        data = data[0]
    return np.asarray(data)


def _smallest_label_dtype(array: np.ndarray) -> np.ndarray:
    """Store labels as uint8/uint16 when they fit; many tools refuse 64-bit label files."""
    if array.size == 0 or array.dtype.kind not in "biu":
        return array
    low, high = int(array.min()), int(array.max())
    for dtype in (np.uint8, np.uint16):
        if low >= 0 and high <= np.iinfo(dtype).max:
            return array.astype(dtype, copy=False)
    return array


class LayerWriteError(RuntimeError):
    """Why a layer could not be saved.

    Not a ValueError on purpose: napari treats a ValueError from a writer as "no writer
    found" and would show that instead of this message.
    """


def _write(path: str, array: np.ndarray, meta: dict) -> list[str]:
    try:
        volume = Volume(array, layer_geometry(meta), name=meta.get("name") or volume_stem(path))
        return [str(write_volume(volume, path))]
    except VolumeError as error:
        raise LayerWriteError(str(error)) from error


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """Write one labels layer; returns ``[path]``. Raises LayerWriteError with the reason."""
    return _write(path, _smallest_label_dtype(_layer_array(data, meta)), meta)


def write_image(path: str, data: Any, meta: dict) -> list[str]:
    """Write one greyscale image layer; returns ``[path]``. Raises LayerWriteError."""
    if meta.get("rgb"):
        raise LayerWriteError("RGB layers cannot be saved as a medical volume; convert to greyscale.")
    return _write(path, _layer_array(data, meta), meta)


def provenance_paths(labels_path: str) -> tuple[str, str]:
    """Where the provenance sidecar of a labels file goes: ``<stem>_provenance.<ext>`` and ``.json``."""
    return tuple(str(path) for path in export.provenance_paths(labels_path))


def write_provenance(labels_path: str, codes: np.ndarray, record: dict, meta: dict) -> list[str]:
    """Write the provenance code map (labels geometry) and its JSON record beside a labels file.

    Both are written atomically and re-read before they are reported; raises LayerWriteError.
    """
    try:
        written = export.write_provenance_beside(labels_path, codes, record, layer_geometry(meta))
    except VolumeError as error:
        raise LayerWriteError(str(error)) from None
    return [str(path) for path in written]
