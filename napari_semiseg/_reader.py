"""npe2 reader: 3D volumes (NIfTI, MHA/MHD, NRRD, TIFF, .npy, DICOM folders) as napari layers.

Every layer carries ``metadata["semiseg"] = {"geometry", "source", "name"}``: the writer and
the widgets read the geometry from there, whatever transform napari shows.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from napari_semiseg.core.volume import Geometry, Volume, is_readable_path, read_volume

log = logging.getLogger(__name__)

LayerData = tuple  # (data, kwargs, layer_type)
_LABEL_NAME = re.compile(r"(_seg|_gt|label|mask|_scribble)", re.IGNORECASE)


def layer_kwargs(volume: Volume, name: str, source: str) -> dict:
    """Keyword arguments that place ``volume`` in physical space and record its geometry."""
    return geometry_layer_kwargs(volume.geometry, name, source)


def geometry_layer_kwargs(geometry: Geometry, name: str, source: str) -> dict:
    """Layer kwargs for a layer on the voxel grid ``geometry`` describes."""
    semiseg = {"geometry": geometry.to_dict(), "source": source, "name": name}
    return {"name": name, "metadata": {"semiseg": semiseg}, **geometry.napari_transform()}


def looks_like_labels(name: str, volume: Volume) -> bool:
    """Labels when the name says so (``_seg``, ``_gt``, ``label``, ``mask``, ``_scribble``)
    and the values are integers."""
    return bool(_LABEL_NAME.search(name)) and volume.array.dtype.kind in "biu"


def volume_layer_data(volume: Volume) -> LayerData:
    name = volume.name
    layer_type = "labels" if looks_like_labels(name, volume) else "image"
    array = volume.array.astype("uint8") if volume.array.dtype == bool else volume.array
    return (array, layer_kwargs(volume, name, volume.source or name), layer_type)


def get_reader(path: str | Sequence[str]) -> Callable[[str | Sequence[str]], list[LayerData]] | None:
    """Return ``read_volumes`` if every path looks readable, else None (never raises)."""
    try:
        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        if paths and all(Path(p).exists() and is_readable_path(p) for p in paths):
            return read_volumes
    except Exception:  # a reader probe must never raise; napari tries the next reader
        log.debug("cannot probe %r", path, exc_info=True)
    return None


def read_volumes(path: str | Sequence[str]) -> list[LayerData]:
    """Read each path as one layer. Raises VolumeError (napari shows its message)."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    return [volume_layer_data(read_volume(item)) for item in paths]
