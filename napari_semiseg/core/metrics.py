"""Overlap metrics that say so when a class is absent, instead of scoring it as perfect."""

from __future__ import annotations

import math

import numpy as np


def dice(prediction: np.ndarray, truth: np.ndarray, label: int, mask: np.ndarray | None = None) -> float:
    """Dice of one label; NaN when the label is absent from both (nothing to score).

    Args:
        mask: restrict the comparison to these voxels (e.g. the slices nobody painted).
    """
    predicted, expected = prediction == label, truth == label
    if mask is not None:
        predicted, expected = predicted & mask, expected & mask
    total = int(predicted.sum()) + int(expected.sum())
    if total == 0:
        return math.nan
    return 2.0 * int((predicted & expected).sum()) / total


def dice_per_class(
    prediction: np.ndarray, truth: np.ndarray, labels: list[int], mask: np.ndarray | None = None
) -> dict[int, float]:
    """Dice of each label (NaN where the label is absent from both)."""
    return {label: dice(prediction, truth, label, mask) for label in labels}


def mean_ignoring_absent(values) -> float:
    """Mean over the classes that are present (NaN if none is)."""
    present = [v for v in values if not math.isnan(v)]
    return float(np.mean(present)) if present else math.nan


def slice_mask(shape: tuple[int, ...], axis: int, excluded: list[int]) -> np.ndarray:
    """Boolean mask of every slice along ``axis`` except ``excluded`` (the painted ones)."""
    keep = np.ones(shape[axis], dtype=bool)
    keep[list(excluded)] = False
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return np.broadcast_to(keep.reshape(view), shape)
