"""Held-out validation on annotated slices, and when more painting stops paying off.

Once the user has painted :data:`MIN_ANNOTATED_FOR_HOLDOUT` slices of a volume, about one in
:data:`HOLDOUT_EVERY` of them is held out of training and scored while training runs. The held-out
slices rotate between runs (``rotation``, usually the run number) so that every painted slice
trains most models and each run is scored on different ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .annotations import IGNORE, AnnotationScheme, annotated_slices, painted_label_values, to_targets
from .metrics import dice, mean_ignoring_absent

MIN_ANNOTATED_FOR_HOLDOUT = 4
HOLDOUT_EVERY = 4
# Painting plateau: over the last PLATEAU_RUNS runs that each saw more painted slices than the one
# before, every step gained less than PLATEAU_GAIN_PER_SLICE validation Dice per added slice.
PLATEAU_RUNS = 3
PLATEAU_GAIN_PER_SLICE = 0.005


@dataclass(frozen=True)
class HeldOutSlices:
    """Painted slices of one volume kept out of training, with their labels (N, H, W)."""

    volume_index: int
    axis: int
    slice_indices: tuple[int, ...]
    labels: np.ndarray


def choose_holdout(annotated: Sequence[int], rotation: int = 0) -> list[int]:
    """Every HOLDOUT_EVERY-th annotated slice, starting at ``rotation`` (none below the minimum)."""
    annotated = sorted(int(i) for i in annotated)
    if len(annotated) < MIN_ANNOTATED_FOR_HOLDOUT:
        return []
    offset = rotation % HOLDOUT_EVERY
    return annotated[offset::HOLDOUT_EVERY] or [annotated[offset % len(annotated)]]


def hold_out(
    labels: np.ndarray, scheme: AnnotationScheme, volume_index: int = 0, rotation: int = 0
) -> tuple[np.ndarray, HeldOutSlices | None]:
    """Split painted labels into training labels and held-out slices.

    The split is skipped (``None``) when the volume has too few painted slices, or when the
    held-out slices are the only ones holding some class (training must still see every class);
    other rotations are tried first.
    """
    axis = scheme.axis
    painted = annotated_slices(labels, axis)
    all_values = painted_label_values(labels, scheme)
    for attempt in range(HOLDOUT_EVERY):
        chosen = choose_holdout(painted, rotation + attempt)
        if not chosen:
            return labels, None
        training = labels.copy()
        index = [slice(None)] * labels.ndim
        index[axis] = chosen
        training[tuple(index)] = 0
        if painted_label_values(training, scheme) == all_values:
            held = np.moveaxis(np.take(labels, chosen, axis=axis), axis, 0).copy()
            return training, HeldOutSlices(volume_index, axis, tuple(chosen), held)
    return labels, None


class ValidationScorer:
    """Scores a model's foreground Dice on held-out slices (a few 2D predictions: cheap)."""

    def __init__(self, held_out: HeldOutSlices, normalised_volume: np.ndarray, scheme: AnnotationScheme,
                 label_values: tuple[int, ...]):
        self.held_out = held_out
        self.images = np.stack(
            [np.take(normalised_volume, i, axis=held_out.axis) for i in held_out.slice_indices]
        ).astype(np.float32)
        self.targets = to_targets(held_out.labels, _per_slice_scheme(scheme), label_values)

    def score(self, model) -> float:
        """Mean foreground Dice over classes on all held-out slices together."""
        from .predict import predict_slices  # torch stays out of this module's import time

        predicted, _, _ = predict_slices(model, self.images)
        return foreground_dice(predicted, self.targets)


def _per_slice_scheme(scheme: AnnotationScheme) -> AnnotationScheme:
    """The held-out labels are stacked along axis 0, so their scheme paints axis 0."""
    return AnnotationScheme(scheme.mode, 0, scheme.background_label)


def foreground_dice(predicted: np.ndarray, targets: np.ndarray) -> float:
    """Mean Dice over the foreground classes present in ``targets`` (IGNORE voxels skipped)."""
    known = targets != IGNORE
    classes = [int(c) for c in np.unique(targets[known]) if c > 0]
    if not classes:
        return float("nan")
    return mean_ignoring_absent([dice(predicted, targets, c, known) for c in classes])


def painting_plateau(history: Sequence[tuple[int, float]]) -> str | None:
    """Say when more painting stops paying off, from (painted slices, validation Dice) per run.

    Rule: take, in run order, the runs that each saw more painted slices than the one before
    (a retrain on the same slices replaces the earlier score); if the last :data:`PLATEAU_RUNS` of them each gained less than
    :data:`PLATEAU_GAIN_PER_SLICE` Dice per added slice, painting has plateaued.
    Returns a message, or ``None`` while painting still pays off (or too few runs are scored).
    """
    growing: list[tuple[int, float]] = []
    for painted, score in history:
        if score is None or not np.isfinite(score):
            continue
        if growing and painted == growing[-1][0]:
            growing[-1] = (painted, float(score))  # retrained on the same slices: the later score counts
        elif growing and painted < growing[-1][0]:
            growing = [(painted, float(score))]  # slices were erased: start the comparison again
        else:
            growing.append((painted, float(score)))
    if len(growing) < PLATEAU_RUNS:
        return None
    recent = growing[-PLATEAU_RUNS:]
    gains = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(recent, recent[1:])]
    if all(gain < PLATEAU_GAIN_PER_SLICE for gain in gains):
        added = recent[-1][0] - recent[0][0]
        change = recent[-1][1] - recent[0][1]
        return (f"More painting has stopped paying off: validation Dice changed {change:+.3f} over the last "
                f"{added} painted slices. Review and accept predictions instead, or correct the worst slices.")
    return None
