"""Training in a separate process, so a crash or a kill cannot take the viewer down.

The child runs the core's training generator (and a final whole-volume prediction, blended with
what was painted, see :func:`~napari_semiseg.core.predict.painted_prior`) and
sends each event through a queue. It runs at the lowest CPU priority (Linux ``SCHED_IDLE``,
elsewhere nice 10) with one fewer thread than there are cores, so painting and scrolling keep a
core and win any core they contend for: an idle-class task gets CPU only when nothing else wants
it. It stays alive between jobs (its start-up, mostly importing torch, takes ~6 s), taking
training and prediction jobs from a queue one at a time. Nothing here imports Qt.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import traceback
from dataclasses import dataclass

import numpy as np

from ..core.annotations import AnnotationScheme
from ..core.config import TrainConfig
from ..core.engine import TrainingData
from ..core.events import TrainingFailed, TrainingFinished
from ..core.validation import HeldOutSlices
from ..core.volume import Volume

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
    tag: str = "training"


@dataclass(frozen=True)
class TrainingJob:
    """Train on ``data``, then predict volume ``predict_volume_index`` (None: no prediction).

    ``painted``: all painted labels of that volume (held-out slices included), blended into the
    final prediction as a :func:`~napari_semiseg.core.predict.painted_prior`; None uses its
    training labels.
    """

    data: TrainingData
    config: TrainConfig
    out_dir: str
    resume_from: str | None = None
    predict_volume_index: int | None = 0
    validation: HeldOutSlices | None = None
    painted: np.ndarray | None = None


@dataclass(frozen=True)
class PredictionJob:
    """Predict a volume with a saved model; the result comes back as :class:`VolumePredicted`.

    With ``painted`` labels (and their ``scheme``) they are blended in (see ``painted_prior``).
    """

    model_path: str
    volume: Volume
    tag: str
    volume_index: int = 0
    device: str = "auto"
    painted: np.ndarray | None = None
    scheme: AnnotationScheme | None = None


@dataclass(frozen=True)
class JobEnded:
    """The child finished a job (after its last event) and waits for the next one."""


def background_threads() -> int:
    """Leave one core to the viewer on small machines."""
    return max(1, (os.cpu_count() or 1) - 1)


def lower_priority() -> str:
    """Give the calling thread (and threads it starts later) the lowest CPU priority available.

    Returns the policy reached: ``"idle"`` (Linux ``SCHED_IDLE``), ``"nice"`` or ``"normal"``.
    """
    try:
        os.nice(CHILD_NICENESS)
        reached = "nice"
    except (AttributeError, OSError):
        reached = "normal"
    if hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            reached = "idle"
        except OSError as error:  # some containers forbid it; nice still applies
            log.debug("SCHED_IDLE not allowed: %s", error)
    return reached


def _child_main(jobs, events, stop, pause, preview_slice) -> None:
    lower_priority()  # before torch starts its threads, so they inherit it
    while True:
        job = jobs.get()
        if job is None:
            return
        try:
            if isinstance(job, PredictionJob):
                _run_prediction(job, events)
            else:
                _run_job(job, events, stop, pause, preview_slice)
        except BaseException as error:  # the parent must hear about every failure
            events.put(TrainingFailed(str(error) or type(error).__name__, traceback.format_exc()))
        events.put(JobEnded())


def _run_prediction(job: PredictionJob, events) -> None:
    from ..core.model import load_model
    from ..core.predict import painted_prior, predict_volume

    model = load_model(job.model_path, job.device)
    prior = painted_prior(job.volume, job.painted, job.scheme or model.scheme)
    prediction = predict_volume(model, job.volume, prior=prior)
    events.put(VolumePredicted(job.volume_index, prediction.labels, prediction.certainty,
                               prediction.disagreement, job.model_path, job.tag))


def _run_job(job: TrainingJob, events, stop, pause, preview_slice) -> None:
    from ..core.engine import train
    from ..core.engine.checkpoint import load_checkpoint
    from ..core.model import load_model
    from ..core.predict import painted_prior, predict_volume

    def requested_slice():
        volume_index, slice_index = preview_slice[0], preview_slice[1]
        return (volume_index, slice_index) if slice_index >= 0 else None

    initial = load_checkpoint(job.resume_from) if job.resume_from else None
    finished = None
    run = train(job.data, job.config, job.out_dir, stop, requested_slice, initial_checkpoint=initial,
                pause=pause, validation=job.validation)
    for event in run:
        if isinstance(event, TrainingFinished):
            finished = event
            continue
        events.put(event)
    if finished is not None and job.predict_volume_index is not None:
        model = load_model(finished.model_path, job.config.device)
        index = job.predict_volume_index
        volume = job.data.volumes[index]
        painted = job.painted if job.painted is not None else job.data.labels[index]
        prior = painted_prior(volume, painted, job.data.scheme)  # also after Stop: the user still wants the best mask
        prediction = predict_volume(model, volume, prior=prior)
        events.put(VolumePredicted(job.predict_volume_index, prediction.labels, prediction.certainty,
                                   prediction.disagreement, finished.model_path))
    if finished is not None:
        events.put(finished)


class TrainingProcess:
    """A spawned worker process that runs jobs one at a time and relays their events.

    ``TrainingProcess(job)`` queues a first job; :meth:`submit` queues more on the same process
    (no new start-up). :attr:`running` is true while a job is queued or running.
    """

    def __init__(self, job: TrainingJob | PredictionJob | None = None):
        context = mp.get_context("spawn")
        self._jobs = context.Queue()
        self._events = context.Queue()
        self._stop = context.Event()
        self._pause = context.Event()
        self._preview_slice = context.Array("i", [0, -1], lock=False)
        self._process = context.Process(
            target=_child_main, args=(self._jobs, self._events, self._stop, self._pause, self._preview_slice),
            daemon=True,
        )
        self._outstanding = 0
        self._dead = False
        if job is not None:
            self.submit(job)

    def start(self) -> None:
        """Start the process (once); jobs queued before or after run in order."""
        if self._process.pid is None:
            self._process.start()

    def submit(self, job: TrainingJob | PredictionJob) -> None:
        """Queue a job; a new job clears the previous one's stop and pause requests."""
        if self._dead:
            raise RuntimeError("The training process has ended; start a new one.")
        if self._outstanding == 0:
            self._stop.clear()
            self._pause.clear()
        self._jobs.put(job)
        self._outstanding += 1

    def request_preview(self, volume_index: int, slice_index: int) -> None:
        """Ask the child to preview this slice (read at its next preview time)."""
        self._preview_slice[0] = volume_index
        self._preview_slice[1] = slice_index

    def stop(self) -> None:
        """Ask the child to finish its current step, save the model and end the job."""
        self._stop.set()

    def pause(self) -> None:
        """Hold training before its next step (the child sleeps; the budget clock stops)."""
        self._pause.set()

    def resume(self) -> None:
        self._pause.clear()

    @property
    def paused(self) -> bool:
        return self._pause.is_set()

    def kill(self) -> None:
        """End the child at once (its last checkpoint stays on disk)."""
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout=5)
        # a job the child never read may still sit half-written in the pipe: without this, the
        # queue's feeder thread blocks on the dead pipe and Python waits for it at exit
        self._jobs.cancel_join_thread()

    def close(self) -> None:
        """Let an idle child exit; a busy one is killed."""
        if self._outstanding or not self._process.is_alive():
            self.kill()
        else:
            self._jobs.put(None)
            self._process.join(timeout=5)
        self._dead = True

    @property
    def running(self) -> bool:
        """A job is queued or running."""
        return self._outstanding > 0 and not self._dead

    @property
    def alive(self) -> bool:
        """The process can take another job."""
        return not self._dead and (self._process.pid is None or self._process.exitcode is None)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def poll(self, limit: int = 50) -> list:
        """Events that arrived since the last call; a vanished child becomes TrainingFailed."""
        events = []
        while len(events) < limit:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if isinstance(event, JobEnded):
                self._outstanding = max(0, self._outstanding - 1)
            else:
                events.append(event)
        if not events and not self._dead and self._process.exitcode is not None:
            late = self._late_event()
            if late is None:
                self._dead = True
                if self._outstanding:
                    self._outstanding = 0
                    return [TrainingFailed(
                        f"The training process ended unexpectedly (exit code {self._process.exitcode}). Your "
                        "annotations are untouched; the last checkpoint is kept. Start training again to continue."
                    )]
                return []
            if isinstance(late, JobEnded):
                self._outstanding = max(0, self._outstanding - 1)
                return []
            events = [late]
        return events

    def _late_event(self):
        """An event still in the pipe when the child has already exited."""
        try:
            return self._events.get(timeout=0.5)
        except queue.Empty:
            return None
