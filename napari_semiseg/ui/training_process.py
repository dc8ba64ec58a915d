"""Training in a separate process, so a crash or a kill cannot take the viewer down.

The child runs the core's training generator (and a final whole-volume prediction) and
sends each event through a queue. It runs at a lower priority with one fewer thread than
there are cores, so painting and scrolling keep a core. Nothing here imports Qt.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import traceback
from dataclasses import dataclass

import numpy as np

from ..core.config import TrainConfig
from ..core.engine import TrainingData
from ..core.events import TrainingFailed, TrainingFinished

log = logging.getLogger(__name__)
CHILD_NICENESS = 10


@dataclass(frozen=True)
class VolumePredicted:
    """The final model's prediction of one training volume."""

    volume_index: int
    labels: np.ndarray
    certainty: np.ndarray
    disagreement: np.ndarray
    model_path: str


@dataclass(frozen=True)
class TrainingJob:
    data: TrainingData
    config: TrainConfig
    out_dir: str
    resume_from: str | None = None
    predict_volume_index: int | None = 0


def background_threads() -> int:
    """Leave one core to the viewer on small machines."""
    return max(1, (os.cpu_count() or 1) - 1)


def _child_main(job: TrainingJob, events, stop, preview_slice) -> None:
    try:
        os.nice(CHILD_NICENESS)
    except OSError:
        pass
    try:
        _run_job(job, events, stop, preview_slice)
    except BaseException as error:  # the parent must hear about every failure
        events.put(TrainingFailed(str(error) or type(error).__name__, traceback.format_exc()))


def _run_job(job: TrainingJob, events, stop, preview_slice) -> None:
    from ..core.engine import train
    from ..core.engine.checkpoint import load_checkpoint
    from ..core.model import load_model
    from ..core.predict import predict_volume

    def requested_slice():
        volume_index, slice_index = preview_slice[0], preview_slice[1]
        return (volume_index, slice_index) if slice_index >= 0 else None

    initial = load_checkpoint(job.resume_from) if job.resume_from else None
    finished = None
    for event in train(job.data, job.config, job.out_dir, stop, requested_slice, initial_checkpoint=initial):
        if isinstance(event, TrainingFinished):
            finished = event
            continue
        events.put(event)
    if finished is not None and job.predict_volume_index is not None:
        model = load_model(finished.model_path, job.config.device)
        volume = job.data.volumes[job.predict_volume_index]
        prediction = predict_volume(model, volume)
        events.put(VolumePredicted(job.predict_volume_index, prediction.labels, prediction.certainty,
                                   prediction.disagreement, finished.model_path))
    if finished is not None:
        events.put(finished)


class TrainingProcess:
    """Runs one :class:`TrainingJob` in a spawned process and relays its events."""

    def __init__(self, job: TrainingJob):
        context = mp.get_context("spawn")
        self._events = context.Queue()
        self._stop = context.Event()
        self._preview_slice = context.Array("i", [0, -1], lock=False)
        self._process = context.Process(
            target=_child_main, args=(job, self._events, self._stop, self._preview_slice), daemon=True
        )
        self._ended = False

    def start(self) -> None:
        self._process.start()

    def request_preview(self, volume_index: int, slice_index: int) -> None:
        """Ask the child to preview this slice (read at its next preview time)."""
        self._preview_slice[0] = volume_index
        self._preview_slice[1] = slice_index

    def stop(self) -> None:
        """Ask the child to finish its current step, save the model and end."""
        self._stop.set()

    def kill(self) -> None:
        """End the child at once (its last checkpoint stays on disk)."""
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout=5)

    @property
    def running(self) -> bool:
        return not self._ended

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def poll(self, limit: int = 50) -> list:
        """Events that arrived since the last call; a vanished child becomes TrainingFailed."""
        events = []
        while len(events) < limit:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                break
        if not events and not self._ended and self._process.exitcode is not None:
            late = self._late_event()
            if late is None:
                self._finish()
                return [TrainingFailed(
                    f"The training process ended unexpectedly (exit code {self._process.exitcode}). Your "
                    "annotations are untouched; the last checkpoint is kept. Start training again to continue."
                )]
            events = [late]
        if any(isinstance(e, (TrainingFinished, TrainingFailed)) for e in events):
            self._finish()
        return events

    def _late_event(self):
        """An event still in the pipe when the child has already exited."""
        try:
            return self._events.get(timeout=0.5)
        except queue.Empty:
            return None

    def _finish(self) -> None:
        self._ended = True
        self._process.join(timeout=2)
