"""Cycle-consistency scores, overlap measures and per-voxel quality maps.

Quality map design (1 = trustworthy, 0 = do not trust), computed on the fixed grid from a
forward-then-back cycle:

* **label agreement** ``A``: the pseudo-label ``r`` and its own forward-then-back warp ``r~``
  are compared voxel by voxel; the agreement is smoothed in-plane (Gaussian, ``sigma``
  voxels) so a voxel near a disagreeing boundary is less trusted than one deep inside a
  region that survives the cycle.
* **intensity agreement** ``B = exp(-e / tau)``: ``e`` is the locally averaged absolute
  difference between the image and its cycled copy, ``tau`` a tenth of the image's robust
  intensity range, so badly aligned neighbourhoods lose trust.

The map is ``A * B``, in [0, 1].
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..metrics import dice


def normalise(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Robustly rescale to about [0, 1] (1st and 99th percentiles, inside ``mask``)."""
    values = image[mask] if mask is not None and mask.any() else image
    low, high = np.percentile(values, [1, 99]) if values.size else (0.0, 1.0)
    scale = high - low if high > low else 1.0
    return ((image - low) / scale).astype(np.float32)


def rmse(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Root-mean-square difference, optionally inside a mask."""
    diff = (np.asarray(a, float) - np.asarray(b, float)) ** 2
    return float(np.sqrt(diff[mask].mean() if mask is not None and mask.any() else diff.mean()))


def mutual_information(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, bins: int = 32) -> float:
    """Mutual information (nats) of two images from a joint histogram."""
    if mask is not None and mask.any():
        a, b = a[mask], b[mask]
    joint, _, _ = np.histogram2d(np.ravel(a), np.ravel(b), bins=bins)
    total = joint.sum()
    if total == 0:
        return 0.0
    pxy = joint / total
    px, py = pxy.sum(1, keepdims=True), pxy.sum(0, keepdims=True)
    nonzero = pxy > 0
    return float(np.sum(pxy[nonzero] * np.log(pxy[nonzero] / (px @ py)[nonzero])))


def cycle_score(original: np.ndarray, cycled: np.ndarray, mask: np.ndarray | None = None,
                w_rmse: float = 1.0, w_mi: float = 1.0) -> dict[str, float]:
    """S = w_rmse * RMSE(v, v~) + w_mi * (-MI(v, v~)); lower is better.

    Both images are rescaled with the original's robust range first, so RMSE is comparable
    between volumes with different intensity scales.
    """
    low, high = np.percentile(original, [1, 99])
    scale = high - low if high > low else 1.0
    a, b = (original - low) / scale, (cycled - low) / scale
    error, information = rmse(a, b, mask), mutual_information(a, b, mask)
    return {"score": w_rmse * error - w_mi * information, "rmse": error, "mi": information}


def dice_per_class(prediction: np.ndarray, truth: np.ndarray, classes: tuple[int, ...] | None = None) -> dict[int, float]:
    """Dice of each foreground class (1.0 when a class is absent from both: nothing to disagree on)."""
    if classes is None:
        classes = tuple(int(c) for c in np.union1d(np.unique(prediction), np.unique(truth)) if c != 0)
    scores = {int(value): dice(prediction, truth, int(value)) for value in classes}
    return {value: 1.0 if math.isnan(score) else score for value, score in scores.items()}


def mean_dice(prediction: np.ndarray, truth: np.ndarray, classes: tuple[int, ...] | None = None) -> float:
    """Mean foreground Dice over ``classes`` (default: all labels present in either)."""
    scores = dice_per_class(prediction, truth, classes)
    return float(np.mean(list(scores.values()))) if scores else 1.0


def quality_map(labels: np.ndarray, cycled_labels: np.ndarray, image: np.ndarray, cycled_image: np.ndarray,
                sigma: float = 1.5) -> np.ndarray:
    """Per-voxel trust in [0, 1] from label and intensity cycle agreement (see module doc)."""
    in_plane = (0.0, sigma, sigma)
    agreement = ndimage.gaussian_filter((labels == cycled_labels).astype(np.float32), in_plane)
    low, high = np.percentile(image, [1, 99])
    tau = 0.1 * (high - low if high > low else 1.0)
    error = ndimage.gaussian_filter(np.abs(image.astype(np.float32) - cycled_image), in_plane)
    return np.clip(agreement * np.exp(-error / tau), 0.0, 1.0).astype(np.float32)


def foreground_box(labels: np.ndarray, margin: float = 0.25, minimum: int = 4) -> tuple[slice, ...] | None:
    """Bounding box of the non-zero labels, widened by ``margin`` of its extent per axis."""
    where = np.argwhere(labels > 0)
    if where.size == 0:
        return None
    low, high = where.min(0), where.max(0) + 1
    pad = np.maximum((margin * (high - low)).astype(int), minimum)
    low, high = np.maximum(low - pad, 0), np.minimum(high + pad, labels.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))


def box_mask(shape: tuple[int, ...], box: tuple[slice, ...] | None) -> np.ndarray:
    """Boolean mask of a box (all True when ``box`` is None)."""
    mask = np.zeros(shape, bool)
    mask[box if box is not None else tuple(slice(None) for _ in shape)] = True
    return mask
