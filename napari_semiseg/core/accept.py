"""Which voxels an acceptance changes: never the ones the user painted, unless asked.

Every function returns ``(indices, values)`` for one ``Labels.data_setitem`` (one undo step):
the whole proposal, one slice, one label, one connected component, or the confident voxels
inside a drawn region.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def acceptance_edit(
    labels: np.ndarray,
    proposal: np.ndarray,
    region: np.ndarray | tuple | None = None,
    overwrite_painted: bool = False,
) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """The indices and new values that accepting ``proposal`` into ``labels`` writes.

    Only foreground proposal voxels are written (accepting background changes nothing),
    only where the labels are still unpainted unless ``overwrite_painted``, and only
    inside ``region`` (a boolean mask or an index such as ``np.s_[4]`` for one slice).

    Returns:
        A tuple of index arrays and the values to write there, suitable for
        ``napari.layers.Labels.data_setitem`` (one undo step).
    """
    if labels.shape != proposal.shape:
        raise ValueError(f"Proposal shape {proposal.shape} differs from labels shape {labels.shape}.")
    selected = proposal != 0
    if not overwrite_painted:
        selected &= labels == 0
    selected &= proposal != labels
    if region is not None:
        inside = np.zeros(labels.shape, dtype=bool)
        inside[region] = True
        selected &= inside
    indices = np.nonzero(selected)
    return indices, proposal[indices].astype(labels.dtype, copy=False)


Edit = tuple[tuple[np.ndarray, ...], np.ndarray]


def slice_region(shape: tuple[int, ...], axis: int, index: int) -> tuple:
    """The index expression of slice ``index`` along ``axis`` (a region for :func:`acceptance_edit`)."""
    if not 0 <= index < shape[axis]:
        raise ValueError(f"Slice {index} is outside the volume (0 to {shape[axis] - 1} along axis {axis}).")
    region: list = [slice(None)] * len(shape)
    region[axis] = int(index)
    return tuple(region)


def accept_slice_edit(labels, proposal, axis: int, index: int, overwrite_painted: bool = False) -> Edit:
    """Accept the proposal on one slice."""
    return acceptance_edit(labels, proposal, slice_region(labels.shape, axis, index), overwrite_painted)


def accept_label_edit(labels, proposal, label: int, region=None, overwrite_painted: bool = False) -> Edit:
    """Accept the voxels the proposal gives one label value (optionally inside ``region``)."""
    if label == 0:
        raise ValueError("Pick a foreground label to accept (0 is background).")
    only_label = np.where(proposal == label, proposal, 0)
    return acceptance_edit(labels, only_label, region, overwrite_painted)


def component_mask(proposal: np.ndarray, point) -> np.ndarray:
    """The 3D connected component (faces touching) of the proposal's label under ``point``.

    Raises:
        ValueError: if the point is outside the volume or on background.
    """
    voxel = tuple(int(round(float(c))) for c in point)
    if len(voxel) != proposal.ndim or any(not 0 <= c < n for c, n in zip(voxel, proposal.shape)):
        raise ValueError("The cursor is outside the volume; point at a predicted structure.")
    label = proposal[voxel]
    if label == 0:
        raise ValueError("There is no predicted label under the cursor; point at a predicted structure.")
    components, _ = ndimage.label(proposal == label)
    return components == components[voxel]


def accept_component_edit(labels, proposal, point, overwrite_painted: bool = False) -> Edit:
    """Accept the connected component of the proposal under ``point`` (voxel coordinates)."""
    return acceptance_edit(labels, proposal, component_mask(proposal, point), overwrite_painted)


def accept_confident_edit(
    labels, proposal, certainty: np.ndarray, threshold: float, region=None, overwrite_painted: bool = False
) -> Edit:
    """Accept every proposal voxel whose certainty reaches ``threshold`` inside ``region``."""
    if certainty.shape != proposal.shape:
        raise ValueError(f"Certainty shape {certainty.shape} differs from proposal shape {proposal.shape}.")
    confident = certainty >= threshold
    if region is not None:
        inside = np.zeros(proposal.shape, dtype=bool)
        inside[region] = True
        confident &= inside
    return acceptance_edit(labels, proposal, confident, overwrite_painted)


def polygon_mask(shape: tuple[int, int], vertices: np.ndarray) -> np.ndarray:
    """Pixels of a 2D grid whose centres lie inside a polygon (even-odd rule).

    Args:
        shape: (rows, columns) of the slice.
        vertices: (N, 2) polygon vertices as (row, column) in pixel coordinates (a rectangle
            is a 4-vertex polygon).
    """
    vertices = np.asarray(vertices, dtype=float)
    if vertices.ndim != 2 or vertices.shape[1] != 2 or len(vertices) < 3:
        raise ValueError("A region needs at least three (row, column) vertices.")
    rows, columns = np.mgrid[: shape[0], : shape[1]]
    inside = np.zeros(shape, dtype=bool)
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    box = (rows >= low[0]) & (rows <= high[0]) & (columns >= low[1]) & (columns <= high[1])
    r, c = rows[box].astype(float), columns[box].astype(float)
    crossings = np.zeros(r.shape, dtype=bool)
    for (r0, c0), (r1, c1) in zip(vertices, np.roll(vertices, -1, axis=0)):
        spans = (r0 > r) != (r1 > r)
        with np.errstate(divide="ignore", invalid="ignore"):
            crossing_column = c0 + (r - r0) * (c1 - c0) / (r1 - r0)
        crossings ^= spans & (c < crossing_column)
    inside[box] = crossings
    return inside


def prism_mask(shape: tuple[int, int, int], axis: int, vertices: np.ndarray, first: int, last: int) -> np.ndarray:
    """A polygon drawn in the plane across ``axis``, extruded over slices ``first..last``.

    ``vertices`` are (N, 2) in the in-plane axes' order; ``first == last`` is one slice, and a
    rectangle extruded over several slices is a 3D box.
    """
    in_plane = tuple(n for a, n in enumerate(shape) if a != axis)
    first, last = sorted((max(int(first), 0), min(int(last), shape[axis] - 1)))
    flat = polygon_mask(in_plane, vertices)
    mask = np.zeros(shape, dtype=bool)
    index: list = [slice(None)] * 3
    index[axis] = slice(first, last + 1)
    mask[tuple(index)] = np.expand_dims(flat, axis)
    return mask


def box_mask(shape: tuple[int, ...], low, high) -> np.ndarray:
    """A box between two opposite corners (voxel coordinates, both inclusive)."""
    low, high = np.minimum(low, high), np.maximum(low, high)
    start = np.clip(np.ceil(np.asarray(low, float) - 1e-6).astype(int), 0, shape)
    stop = np.clip(np.floor(np.asarray(high, float) + 1e-6).astype(int) + 1, 0, shape)
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(a, b) for a, b in zip(start, stop))] = True
    return mask
