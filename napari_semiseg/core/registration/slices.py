"""Within one volume: carry painted slices to their unpainted neighbours by 2D registration.

Slice mode: a slice with any painted voxel is fully annotated (unpainted = background).
Each painted slice is propagated outwards slice by slice (chaining), by a 2D affine
(SimpleITK) followed by in-plane demons, inside a region of interest around the painted
labels. Per-class probabilities are warped (linear), so chaining does not erode thin parts.

Scores and fusion:

* each step k-1 -> k is also registered backwards (k -> k-1); the step's consistency is the
  mean foreground Dice between the labels at k-1 and their forward-then-back warp;
* a chain's score at slice k is the product of its step consistencies (decays with distance);
* a slice reached from both sides fuses the two probability maps with weights
  ``score / distance``; its slice score is the weighted mean of the chain scores;
* the per-voxel quality is ``slice score * fused top-class probability`` (low where the two
  sides disagree), 1 on painted slices, 0 on slices not reached.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..volume import Volume
from .events import PropagationFinished, SlicePropagated
from .scores import foreground_box, mean_dice
from .settings import PropagationSettings, RegistrationError
from .sitk_tools import RegistrationCancelled, StopFlag, affine_2d, check_stop, displacement_2d
from .stack import stack_demons

log = logging.getLogger(__name__)

WORKING_SIZE = 80


@dataclass(frozen=True)
class PropagationResult:
    """Dense labels from a few painted slices.

    Attributes:
        labels: (z, y, x) labels in the input's axis order, painted slices unchanged.
        quality: (z, y, x) float32 trust in [0, 1].
        slice_scores: forward-backward consistency score per filled slice index (along ``axis``).
        annotated: indices of the painted slices.
        axis: the slice axis.
    """

    labels: np.ndarray
    quality: np.ndarray
    slice_scores: dict = field(default_factory=dict)
    annotated: tuple[int, ...] = ()
    axis: int = 0


@dataclass
class _Reached:
    """What one chain delivered to one slice."""

    probabilities: np.ndarray
    score: float
    distance: int
    source: int


def annotated_slice_indices(labels: np.ndarray, axis: int = 0) -> tuple[int, ...]:
    """Indices along ``axis`` of slices with any non-zero label."""
    other = tuple(a for a in range(labels.ndim) if a != axis)
    return tuple(int(i) for i in np.flatnonzero(np.any(labels != 0, axis=other)))


def propagate_slices(image: Volume | np.ndarray, labels: np.ndarray, axis: int = 0,
                     settings: PropagationSettings | None = None,
                     stop: StopFlag | None = None) -> Iterator[object]:
    """Propagate painted slices to the others; yield events, ending with :class:`PropagationFinished`.

    Args:
        image: the volume (array or Volume), (z, y, x).
        labels: sparse labels of the same shape; painted slices are fully annotated.
        axis: slice axis (0, 1 or 2).
        settings: propagation settings.
        stop: cooperative stop flag; when set the last event has ``cancelled=True``.

    Raises:
        RegistrationError: shape mismatch, bad axis or no painted slice.
    """
    settings = settings or PropagationSettings()
    array = np.asarray(image.array if isinstance(image, Volume) else image, dtype=np.float32)
    labels = np.asarray(labels.array if isinstance(labels, Volume) else labels)
    check_propagation_inputs(array, labels, axis)
    start = time.perf_counter()
    stack, sparse = np.moveaxis(array, axis, 0), np.moveaxis(labels, axis, 0)
    annotated = annotated_slice_indices(sparse, 0)
    try:
        chains = yield from _run_chains(stack, sparse, annotated, settings, stop)
    except RegistrationCancelled:
        yield PropagationFinished(None, True, time.perf_counter() - start)
        return
    dense, quality, scores = _fuse(sparse, annotated, chains)
    result = PropagationResult(np.moveaxis(dense, 0, axis).copy(), np.moveaxis(quality, 0, axis).copy(),
                               scores, annotated, axis)
    yield PropagationFinished(result, False, time.perf_counter() - start)


def propagate_labels(image: Volume | np.ndarray, labels: np.ndarray, axis: int = 0,
                     settings: PropagationSettings | None = None,
                     stop: StopFlag | None = None) -> PropagationResult | None:
    """Drain :func:`propagate_slices`: dense labels and quality, or None if cancelled."""
    result = None
    for event in propagate_slices(image, labels, axis, settings, stop):
        if isinstance(event, PropagationFinished):
            result = event.result
    return result


def check_propagation_inputs(array: np.ndarray, labels: np.ndarray, axis: int) -> None:
    """Raise :class:`RegistrationError` with what to do, before any work, if propagation cannot run."""
    if array.ndim != 3:
        raise RegistrationError(f"A 3D image is needed, got shape {array.shape}.")
    if labels.shape != array.shape:
        raise RegistrationError(f"Labels have shape {labels.shape} but the image has {array.shape}.")
    if axis not in (0, 1, 2):
        raise RegistrationError(f"Axis must be 0, 1 or 2, got {axis}.")
    if not np.any(labels):
        raise RegistrationError("No painted slice: paint at least one slice before propagating.")


def _run_chains(stack: np.ndarray, sparse: np.ndarray, annotated: tuple[int, ...], settings: PropagationSettings,
                stop: StopFlag | None):
    """Walk from every painted slice in both directions; returns {slice: [_Reached, ...]}."""
    classes = np.unique(sparse[list(annotated)])
    box = _roi(sparse, annotated, settings.margin)
    crop = stack[(slice(None),) + box]
    targets = _targets(len(stack), annotated, settings)
    reached: dict[int, list[_Reached]] = {k: [] for k in targets}
    done, total = 0, sum(len(v) for v in _plan(len(stack), annotated, settings).values())
    for source, walk in _plan(len(stack), annotated, settings).items():
        for direction_slices in walk:
            probabilities = _one_hot(sparse[source][box], classes)
            score, previous = 1.0, source
            for distance, k in enumerate(direction_slices, start=1):
                check_stop(stop)
                probabilities, step = _step(crop[k], crop[previous], probabilities, classes, settings)
                score *= step
                reached[k].append(_Reached(probabilities, score, distance, source))
                done += 1
                preview = np.zeros(stack.shape[1:], sparse.dtype)
                preview[box] = classes[np.argmax(probabilities, 0)]
                yield SlicePropagated(k, (source,), float(score), preview, done, total)
                previous = k
    return {k: v for k, v in reached.items() if v}, classes, box


def _plan(n: int, annotated: tuple[int, ...], settings: PropagationSettings) -> dict[int, list[list[int]]]:
    """Per painted slice, the slices each of its two walks visits (stopping at painted slices)."""
    plan = {}
    painted = set(annotated)
    limit = settings.max_distance or n
    for index, source in enumerate(annotated):
        walks = []
        for direction in (-1, 1):
            neighbour_exists = 0 <= index + direction < len(annotated)
            if not neighbour_exists and not settings.extrapolate:
                continue
            walk, k = [], source + direction
            while 0 <= k < n and k not in painted and len(walk) < limit:
                walk.append(k)
                k += direction
            if walk:
                walks.append(walk)
        plan[source] = walks
    return plan


def _targets(n: int, annotated: tuple[int, ...], settings: PropagationSettings) -> set[int]:
    return {k for walks in _plan(n, annotated, settings).values() for walk in walks for k in walk}


def _roi(sparse: np.ndarray, annotated: tuple[int, ...], margin: float) -> tuple[slice, slice]:
    """In-plane box around all painted foreground, widened by ``margin`` of its size (>= 32 px)."""
    painted = np.any(sparse[list(annotated)] != 0, axis=0)
    box = foreground_box(painted.astype(np.uint8), margin=margin, minimum=16)
    return box if box is not None else (slice(None), slice(None))


def _one_hot(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return np.stack([(labels == c).astype(np.float32) for c in classes])


def _step(fixed: np.ndarray, moving: np.ndarray, probabilities: np.ndarray, classes: np.ndarray,
          settings: PropagationSettings) -> tuple[np.ndarray, float]:
    """Warp ``probabilities`` from the moving slice to the fixed one; score by forward-backward Dice."""
    forward = slice_coordinates(fixed, moving, settings)
    warped = _warp_probabilities(probabilities, forward)
    backward = slice_coordinates(moving, fixed, settings)
    back = _warp_probabilities(warped, backward)
    before, after = classes[np.argmax(probabilities, 0)], classes[np.argmax(back, 0)]
    foreground = tuple(int(c) for c in classes if c != 0 and np.any(before == c))
    consistency = mean_dice(after, before, foreground) if foreground else 1.0
    return warped, float(consistency)


def _warp_probabilities(probabilities: np.ndarray, coordinates: np.ndarray) -> np.ndarray:
    warped = np.stack([ndimage.map_coordinates(p, coordinates, order=1, mode="nearest") for p in probabilities])
    return warped / np.maximum(warped.sum(0, keepdims=True), 1e-6)


def slice_coordinates(fixed: np.ndarray, moving: np.ndarray, settings: PropagationSettings) -> np.ndarray:
    """For each fixed pixel, where it lies in ``moving``: (2, y, x), by 2D affine then demons."""
    factor = max(max(fixed.shape) / WORKING_SIZE, 1.0)
    small_fixed, small_moving = _shrink(fixed, factor), _shrink(moving, factor)
    transform = affine_2d(small_fixed, small_moving, iterations=settings.iterations)
    affine_displacement = np.moveaxis(displacement_2d(transform, small_fixed.shape), -1, 0)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in small_fixed.shape], indexing="ij")).astype(np.float32)
    mapped = grid + affine_displacement
    if settings.deformable:
        aligned = ndimage.map_coordinates(small_moving, mapped, order=1, mode="nearest")
        demons = np.moveaxis(stack_demons(small_fixed[None], aligned[None], 60, 1.5)[0], -1, 0)
        mapped = np.stack([ndimage.map_coordinates(m, grid + demons, order=1, mode="nearest") for m in mapped])
    full = np.stack(np.meshgrid(*[np.arange(n) for n in fixed.shape], indexing="ij")).astype(np.float32)
    at = (full - (factor - 1) / 2) / factor
    return np.stack([ndimage.map_coordinates(m, at, order=1, mode="nearest") for m in mapped]) * factor + (factor - 1) / 2


def _shrink(array: np.ndarray, factor: float) -> np.ndarray:
    if factor <= 1.0:
        return array.astype(np.float32)
    shape = [max(int(round(n / factor)), 8) for n in array.shape]
    coordinates = np.meshgrid(*[np.arange(n) * factor + (factor - 1) / 2 for n in shape], indexing="ij")
    smooth = ndimage.gaussian_filter(array.astype(np.float32), 0.4 * factor)
    return ndimage.map_coordinates(smooth, coordinates, order=1, mode="nearest")


def _fuse(sparse: np.ndarray, annotated: tuple[int, ...], chains) -> tuple[np.ndarray, np.ndarray, dict]:
    """Combine what reached each slice (weights score / distance) into labels, quality, scores."""
    reached, classes, box = chains
    dense = sparse.copy()
    quality = np.zeros(sparse.shape, np.float32)
    quality[list(annotated)] = 1.0
    scores: dict[int, float] = {}
    for k, arrivals in reached.items():
        weights = np.array([max(a.score, 1e-3) / a.distance for a in arrivals])
        fused = sum(w * a.probabilities for w, a in zip(weights, arrivals)) / weights.sum()
        slice_score = float(np.sum(weights * [a.score for a in arrivals]) / weights.sum())
        dense[k] = 0
        dense[k][box] = classes[np.argmax(fused, 0)]
        quality[k] = slice_score
        quality[k][box] = slice_score * fused.max(0)
        scores[int(k)] = slice_score
    return dense, np.clip(quality, 0.0, 1.0), scores
