"""Small, picklable events that long-running work yields.

A generator of these is at once the progress feed and the cancellation point: the
caller checks its stop flag between events. Arrays in events are small copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TrainingStarted:
    strategy: str
    device: str
    label_values: tuple[int, ...]
    annotated_slices: int
    unannotated_slices: int
    iterations: int | None
    minutes: float | None


@dataclass(frozen=True)
class PseudoLabelsReady:
    """Registration pseudo-labels for one training volume are computed."""

    volume_index: int
    source: str
    seconds: float
    mean_quality: float


@dataclass(frozen=True)
class PseudoLabelsLimited:
    """Registration stopped at its time limit; some unannotated volumes train without pseudo-labels."""

    registered: int
    skipped: int
    seconds: float


@dataclass(frozen=True)
class StepCompleted:
    iteration: int
    progress: float
    loss: float
    terms: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    slices_per_second: float = 0.0


@dataclass(frozen=True)
class PreviewReady:
    """Prediction of one slice while training runs (labels use the painted values)."""

    iteration: int
    volume_index: int
    axis: int
    slice_index: int
    labels: np.ndarray
    certainty: np.ndarray


@dataclass(frozen=True)
class CheckpointSaved:
    iteration: int
    path: str


@dataclass(frozen=True)
class TrainingFinished:
    """The model is saved. ``member_dice``: each predicting member's Dice on painted slices."""

    iteration: int
    reason: str
    model_path: str
    seconds: float
    member_dice: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingFailed:
    message: str
    details: str = ""


@dataclass(frozen=True)
class PredictionProgress:
    done: int
    total: int


@dataclass(frozen=True)
class TrainingPaused:
    """Training holds before this iteration; the budget clock stops until it resumes."""

    iteration: int


@dataclass(frozen=True)
class TrainingResumed:
    iteration: int
    paused_seconds: float


@dataclass(frozen=True)
class ValidationScored:
    """Foreground Dice on the held-out painted slices; ``final`` for the saved model's score."""

    iteration: int
    dice: float
    slices: int
    seconds: float
    final: bool = False
