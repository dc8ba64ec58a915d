"""Sparse annotations: which voxels are known, and what class they are.

Two modes, as the annotator paints them:

* **slice mode**: a slice (along the annotation axis) with any painted voxel is fully
  annotated; its unpainted voxels are background.
* **scribble mode**: only painted voxels are known; background is painted with its own
  label value (``background_label``) and becomes class 0.

Training targets use class indices ``0..C-1`` with :data:`IGNORE` for unknown voxels.
``label_values[c]`` is the label value class ``c`` is written back as (class 0 is 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

IGNORE = -1


class AnnotationError(ValueError):
    """Annotations that cannot be trained from; the message says what to paint."""


class AnnotationMode(str, Enum):
    SLICES = "slices"
    SCRIBBLES = "scribbles"


@dataclass(frozen=True)
class AnnotationScheme:
    """How painted label values become training classes."""

    mode: AnnotationMode = AnnotationMode.SLICES
    axis: int = 0
    background_label: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", AnnotationMode(self.mode))
        if self.axis not in (0, 1, 2):
            raise AnnotationError(f"The annotation axis must be 0, 1 or 2 (z, y, x), got {self.axis}.")
        if self.mode is AnnotationMode.SCRIBBLES and not self.background_label:
            raise AnnotationError(
                "Scribble mode needs the label value you paint background with "
                "(a positive label, for example the highest one)."
            )

    def to_dict(self) -> dict:
        return {"mode": self.mode.value, "axis": self.axis, "background_label": self.background_label}

    @classmethod
    def from_dict(cls, data: dict) -> "AnnotationScheme":
        return cls(AnnotationMode(data["mode"]), int(data["axis"]), data.get("background_label"))


def check_label_array(labels: np.ndarray, image_shape: tuple[int, ...], name: str = "labels") -> None:
    """Refuse label arrays that cannot belong to the image, with a message that says why."""
    if labels.shape != tuple(image_shape):
        raise AnnotationError(
            f"The {name} have shape {labels.shape} but the image has shape {tuple(image_shape)}. "
            "Pick the labels painted on this image, or create a new labels layer for it."
        )
    if labels.dtype.kind not in "biu":
        if labels.dtype.kind == "f" and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)):
            return
        raise AnnotationError(f"The {name} hold {labels.dtype} values; label values must be whole numbers.")
    if labels.size and labels.min() < 0:
        raise AnnotationError(f"The {name} contain negative values ({labels.min()}); labels must be 0 or positive.")


def check_label_classes(labels: np.ndarray, classes, scheme: AnnotationScheme | None = None,
                        name: str = "labels") -> None:
    """Refuse label values that are not among the project's classes (``classes``: value -> name)."""
    allowed = {0, *(int(value) for value in classes)}
    if scheme is not None and scheme.background_label is not None:
        allowed.add(int(scheme.background_label))
    extra = sorted(int(v) for v in np.unique(labels) if int(v) not in allowed)
    if extra:
        known = ", ".join(f"{value} {classes[value]}" if isinstance(classes, dict) else str(value)
                          for value in sorted(classes)) or "none"
        raise AnnotationError(
            f"The {name} hold label value(s) {extra}, which exceed the classes of this project ({known}). "
            "Repaint those voxels with a listed class, or add the class first."
        )


def annotated_slices(labels: np.ndarray, axis: int) -> np.ndarray:
    """Indices of the slices along ``axis`` that hold at least one painted voxel."""
    other_axes = tuple(a for a in range(labels.ndim) if a != axis)
    return np.flatnonzero(np.any(labels != 0, axis=other_axes))


def painted_label_values(labels: np.ndarray, scheme: AnnotationScheme) -> list[int]:
    """Foreground label values the user painted (background label excluded), sorted."""
    values = np.unique(labels)
    return [int(v) for v in values if v != 0 and v != scheme.background_label]


def class_label_values(label_arrays: list[np.ndarray], scheme: AnnotationScheme) -> tuple[int, ...]:
    """Label value of every class, class 0 first (background, written as 0)."""
    values: set[int] = set()
    for labels in label_arrays:
        values.update(painted_label_values(labels, scheme))
    return (0, *sorted(values))


def known_mask(labels: np.ndarray, scheme: AnnotationScheme) -> np.ndarray:
    """Boolean mask of voxels whose class is known."""
    if scheme.mode is AnnotationMode.SCRIBBLES:
        return labels != 0
    mask = np.zeros(labels.shape, dtype=bool)
    index = [slice(None)] * labels.ndim
    index[scheme.axis] = annotated_slices(labels, scheme.axis)
    mask[tuple(index)] = True
    return mask


def class_indices(labels: np.ndarray, label_values: tuple[int, ...]) -> np.ndarray:
    """Class index (int64) of each label value in ``label_values``, :data:`IGNORE` for any other value."""
    classes = np.full(labels.shape, IGNORE, dtype=np.int64)
    for index, value in enumerate(label_values):
        classes[labels == value] = index
    return classes


def to_targets(labels: np.ndarray, scheme: AnnotationScheme, label_values: tuple[int, ...]) -> np.ndarray:
    """Class indices (int64) with :data:`IGNORE` where nothing is known.

    Painted values not in ``label_values`` raise, so a class never silently disappears.
    """
    lookup = {value: index for index, value in enumerate(label_values)}
    if scheme.background_label is not None:
        lookup[scheme.background_label] = 0
    targets = np.full(labels.shape, IGNORE, dtype=np.int64)
    known = known_mask(labels, scheme)
    painted_values = np.unique(labels[known])
    for value in painted_values:
        if int(value) not in lookup:
            raise AnnotationError(
                f"Label value {int(value)} is painted but the model knows only {list(label_values)}. "
                "Retrain so the new class is learnt."
            )
        targets[known & (labels == value)] = lookup[int(value)]
    return targets


def check_trainable(label_arrays: list[np.ndarray], scheme: AnnotationScheme) -> tuple[int, ...]:
    """Check that the annotations can train a model and return the class label values.

    Raises:
        AnnotationError: when nothing is painted, or when fewer than two classes are known.
    """
    if not any(np.any(labels != 0) for labels in label_arrays):
        where = "slices" if scheme.mode is AnnotationMode.SLICES else "scribbles"
        raise AnnotationError(
            f"Nothing is annotated yet. Paint a few {where} in the labels layer (any value above 0), "
            "then start training."
        )
    label_values = class_label_values(label_arrays, scheme)
    if len(label_values) < 2:
        raise AnnotationError(
            "Only background is annotated. Paint at least one structure (a label other than "
            "background) so there are two classes to tell apart."
        )
    if not any(_background_known(labels, scheme) for labels in label_arrays):
        if scheme.mode is AnnotationMode.SCRIBBLES:
            hint = f"paint some background with label {scheme.background_label}"
        else:
            hint = "leave some background unpainted in the slices you paint"
        raise AnnotationError(f"No background is annotated: {hint}, so the model learns what is not a structure.")
    return label_values


def _background_known(labels: np.ndarray, scheme: AnnotationScheme) -> bool:
    if scheme.mode is AnnotationMode.SCRIBBLES:
        return bool(np.any(labels == scheme.background_label))
    return bool(np.any(labels[known_mask(labels, scheme)] == 0))
