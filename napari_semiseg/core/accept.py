"""Which voxels an acceptance changes: never the ones the user painted, unless asked."""

from __future__ import annotations

import numpy as np


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
