"""Segmentation metrics that say so when a class is absent or missed, instead of scoring it as perfect.

Overlap: Dice, and Dice of a boundary band. Surface: 95% Hausdorff distance (HD95), average
symmetric surface distance (ASD) and normalised surface Dice (NSD) at a tolerance, from MONAI's
surface-distance code (``monai.metrics.utils.get_edge_surface_distance``; surfaces are the voxels
removed by one binary erosion, distances are Euclidean between voxel centres, scaled by the
spacing). Distances are in millimetres when the spacing is known and in voxels otherwise.

Definitions, for one class with prediction surface ``P`` and truth surface ``G`` and the
directed distances ``d(P->G)``, ``d(G->P)``:

* HD95 = max(95th percentile of d(P->G), 95th percentile of d(G->P)) (MONAI's definition;
  MedPy, used by the SSL4MIS code, takes the 95th percentile of both sets pooled instead).
* ASD = mean of d(P->G) and d(G->P) pooled (symmetric).
* NSD(tau) = (#{d(P->G) <= tau} + #{d(G->P) <= tau}) / (|P| + |G|).
* Boundary Dice(w) = Dice of the inner bands ``{x in M : distance(x, outside M) <= w}`` of the
  prediction and the truth (the "boundary IoU" idea of Cheng et al. 2021, as a Dice).

Rules for empty masks (after restriction to ``mask``), recorded in ``ClassScores.status``:

* ``absent``: the class is in neither: every metric is NaN (nothing to score; left out of means).
* ``missed``: in the truth, not predicted: Dice, NSD and boundary Dice are 0; HD95 and ASD are inf.
* ``spurious``: predicted, not in the truth: Dice, NSD and boundary Dice are 0; HD95 and ASD are inf.
* ``scored``: in both: every metric is computed.

Means over classes ignore NaN; a mean over values that contain inf is inf (a missed class is
never averaged away). :func:`summarise` reports finite means together with the count of
infinite values for tables over many volumes.

Restriction to a ``mask`` (for example the slices nobody painted): overlap metrics count only
voxels inside it; surface metrics keep only surface voxels inside it, and distances are measured
to the other surface inside it (MONAI's ``mask`` argument).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

STATUSES = ("scored", "absent", "missed", "spurious")
SURFACE_METRICS = ("hd95", "asd")
METRICS = ("dice", "hd95", "asd", "nsd", "boundary_dice")


def dice(prediction: np.ndarray, truth: np.ndarray, label: int, mask: np.ndarray | None = None) -> float:
    """Dice of one label; NaN when the label is absent from both (nothing to score).

    Args:
        mask: restrict the comparison to these voxels (e.g. the slices nobody painted).
    """
    predicted, expected = prediction == label, truth == label
    if mask is not None:
        predicted, expected = predicted & mask, expected & mask
    return _binary_dice(predicted, expected)


def _binary_dice(predicted: np.ndarray, expected: np.ndarray) -> float:
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
    """Mean over the classes that are present (NaN if none is; inf if any value is inf)."""
    present = [float(v) for v in values if not math.isnan(v)]
    return float(np.mean(present)) if present else math.nan


def slice_mask(shape: tuple[int, ...], axis: int, excluded: list[int]) -> np.ndarray:
    """Boolean mask of every slice along ``axis`` except ``excluded`` (the painted ones)."""
    keep = np.ones(shape[axis], dtype=bool)
    keep[list(excluded)] = False
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return np.broadcast_to(keep.reshape(view), shape)


@dataclass(frozen=True)
class ClassScores:
    """All metrics of one class in one volume (see the module doc for definitions and rules)."""

    label: int
    status: str
    dice: float
    hd95: float
    asd: float
    nsd: float
    boundary_dice: float
    truth_voxels: int
    predicted_voxels: int

    def to_dict(self) -> dict:
        """JSON-safe: NaN and inf become None (the status says which)."""
        return {key: _json_number(value) for key, value in asdict(self).items()}


@dataclass(frozen=True)
class VolumeScores:
    """Per-class scores of one volume, their means, and the settings they were computed with."""

    classes: dict[int, ClassScores]
    unit: str
    tolerance: float
    band_width: float
    masked: bool
    means: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"unit": self.unit, "tolerance": self.tolerance, "band_width": self.band_width,
                "restricted_to_mask": self.masked,
                "means": {key: _json_number(value) for key, value in self.means.items()},
                "classes": {str(label): scores.to_dict() for label, scores in self.classes.items()}}


def evaluate_volume(prediction: np.ndarray, truth: np.ndarray, labels: Sequence[int],
                    spacing: Sequence[float] | None = None, mask: np.ndarray | None = None,
                    tolerance: float = 2.0, band_width: float = 2.0) -> VolumeScores:
    """Score every label of one volume.

    Args:
        prediction, truth: label arrays of the same shape.
        labels: the label values to score (background is usually left out).
        spacing: voxel size per axis (mm); None scores in voxel units.
        mask: only voxels where this is True count (e.g. :func:`slice_mask` of the unpainted slices).
        tolerance: NSD tolerance, in the distance unit.
        band_width: width of the boundary band for boundary Dice, in the distance unit.
    """
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from truth shape {truth.shape}")
    if mask is not None and mask.shape != truth.shape:
        raise ValueError(f"mask shape {mask.shape} differs from truth shape {truth.shape}")
    unit = "mm" if spacing is not None else "voxels"
    spacing = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * truth.ndim
    classes = {int(label): class_scores(prediction == label, truth == label, int(label), spacing, mask,
                                        tolerance, band_width) for label in labels}
    means = {name: mean_ignoring_absent(getattr(scores, name) for scores in classes.values()) for name in METRICS}
    return VolumeScores(classes, unit, float(tolerance), float(band_width),
                        mask is not None, means)


def class_scores(predicted: np.ndarray, expected: np.ndarray, label: int, spacing: Sequence[float],
                 mask: np.ndarray | None = None, tolerance: float = 2.0, band_width: float = 2.0) -> ClassScores:
    """All metrics of one binary prediction against one binary truth (see the module doc)."""
    inside = np.ones(expected.shape, bool) if mask is None else np.asarray(mask, bool)
    in_prediction, in_truth = int((predicted & inside).sum()), int((expected & inside).sum())
    counts = {"truth_voxels": in_truth, "predicted_voxels": in_prediction}
    if in_prediction == 0 and in_truth == 0:
        return ClassScores(label, "absent", *(math.nan,) * 5, **counts)
    if in_prediction == 0 or in_truth == 0:
        status = "missed" if in_prediction == 0 else "spurious"
        return ClassScores(label, status, 0.0, math.inf, math.inf, 0.0, 0.0, **counts)
    to_truth, to_prediction = surface_distances(predicted, expected, spacing, None if mask is None else inside)
    if to_truth.size == 0 or to_prediction.size == 0:  # voxels inside the mask, but no surface voxel there
        return ClassScores(label, "scored", _binary_dice(predicted & inside, expected & inside), math.inf,
                           math.inf, 0.0, boundary_dice(predicted, expected, spacing, band_width, inside), **counts)
    pooled = np.concatenate([to_truth, to_prediction])
    hd95 = max(float(np.percentile(to_truth, 95)), float(np.percentile(to_prediction, 95)))
    nsd = float((pooled <= tolerance).sum()) / pooled.size
    return ClassScores(label, "scored", _binary_dice(predicted & inside, expected & inside), hd95,
                       float(pooled.mean()), nsd, boundary_dice(predicted, expected, spacing, band_width, inside),
                       **counts)


def surface_distances(predicted: np.ndarray, expected: np.ndarray, spacing: Sequence[float],
                      mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances (prediction -> truth, truth -> prediction) via MONAI.

    Both masks are cropped to the box around their union first (with a one-voxel margin), which
    changes no distance and keeps the distance transforms small.
    """
    import torch
    from monai.metrics.utils import get_edge_surface_distance

    box = _union_box(predicted | expected, margin=1)
    region = np.ones(expected.shape, bool) if mask is None else mask
    pieces = [torch.from_numpy(np.ascontiguousarray(array[box])) for array in (predicted, expected, region)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty surfaces are handled by the caller
        _, distances, _ = get_edge_surface_distance(pieces[0], pieces[1], spacing=list(spacing), symmetric=True,
                                                    mask=pieces[2], warn_empty=False)
    return tuple(np.asarray(d.cpu().numpy(), dtype=float).ravel() for d in distances)


def _union_box(union: np.ndarray, margin: int) -> tuple[slice, ...]:
    where = np.argwhere(union)
    low = np.maximum(where.min(0) - margin, 0)
    high = np.minimum(where.max(0) + 1 + margin, union.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))


def boundary_band(region: np.ndarray, spacing: Sequence[float], width: float) -> np.ndarray:
    """Voxels of ``region`` whose centre lies within ``width`` of a voxel outside it.

    Outside the array counts as outside the region, so a region touching the edge has a band there.
    """
    padded = np.pad(region, 1)
    distance = ndimage.distance_transform_edt(padded, sampling=list(spacing))
    core = tuple(slice(1, -1) for _ in region.shape)
    return region & (distance[core] <= width)


def boundary_dice(predicted: np.ndarray, expected: np.ndarray, spacing: Sequence[float], width: float,
                  mask: np.ndarray | None = None) -> float:
    """Dice of the inner boundary bands of width ``width`` (NaN if both bands are empty)."""
    bands = [boundary_band(region, spacing, width) for region in (predicted, expected)]
    if mask is not None:
        bands = [band & mask for band in bands]
    return _binary_dice(*bands)


def summarise(values: Iterable[float]) -> dict[str, float | int]:
    """Mean of the finite values, how many were infinite (missed or spurious) and how many NaN (absent)."""
    values = [float(v) for v in values]
    finite = [v for v in values if math.isfinite(v)]
    return {"mean": float(np.mean(finite)) if finite else math.nan,
            "infinite": sum(1 for v in values if math.isinf(v)),
            "absent": sum(1 for v in values if math.isnan(v)), "count": len(values)}


def _json_number(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
