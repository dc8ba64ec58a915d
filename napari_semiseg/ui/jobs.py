"""Jobs for the worker process, built from the chosen layers: a snapshot, never the live arrays."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.annotations import AnnotationScheme, annotated_slices
from ..core.config import TrainConfig
from ..core.engine.data import TrainingData
from ..core.validation import hold_out
from .layers import volume_from_layer
from .training_process import PredictionJob, TrainingJob


@dataclass
class RunRecord:
    """What the run registry keeps about a training job besides its model."""

    strategy: str
    painted: int
    held_out: tuple[int, ...]
    axis: int = 0  # the painting axis: previews are slices along it
    validation_dice: float | None = None

    @property
    def trained(self) -> int:
        return self.painted - len(self.held_out)


def training_job(image, labels, scheme: AnnotationScheme, config: TrainConfig, run_dir: Path,
                 resume_from: str | None, rotation: int) -> tuple[TrainingJob, RunRecord]:
    """Train on the image and its painted slices, a few of them held out to validate on.

    ``rotation`` (the number of earlier runs) makes the held-out slices change between runs.

    Raises:
        AnnotationError, VolumeError, ValueError: the input cannot be trained on (the message says why).
    """
    volume = volume_from_layer(image)
    painted = np.array(labels.data, copy=True)
    TrainingData([volume], [painted], scheme).check()
    training, held_out = hold_out(painted, scheme, rotation=rotation)
    held = tuple(held_out.slice_indices) if held_out is not None else ()
    record = RunRecord(config.strategy, len(annotated_slices(painted, scheme.axis)), held, scheme.axis)
    job = TrainingJob(TrainingData([volume], [training], scheme), config, str(run_dir), resume_from=resume_from,
                      validation=held_out, painted=painted)
    return job, record


def prediction_job(model_path: str | Path, image, labels, scheme: AnnotationScheme, tag: str,
                   device: str = "auto") -> PredictionJob:
    """Predict the image with a saved model, blended with the painted slices of ``labels`` if given
    (and on the image's grid)."""
    volume = volume_from_layer(image)
    blend = {}
    if labels is not None and labels.data.shape == volume.array.shape:
        blend = {"painted": np.array(labels.data, copy=True), "scheme": scheme}
    return PredictionJob(str(model_path), volume, tag, device=device, **blend)
