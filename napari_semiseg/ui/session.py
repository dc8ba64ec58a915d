"""The session: the one owner of what the dock's panels show and change.

It holds the project (or none), the chosen image and labels layers, the annotation scheme, the
current model, the proposals (the model's prediction and the registration result), the provenance
of each labels layer and the training process with its polling. Panels read it, change it through
its methods and listen to its signals (psygnal, as napari's own events); they never reach into one
another. Nothing here builds a widget.

The one way data flows: a painted voxel is in the labels layer the session names; Start snapshots
it into a :class:`~.training_process.TrainingJob` (:mod:`.jobs`) for the worker process; the
process's events come back through :meth:`Session.poll`, the finished model is recorded once in
the run registry (:class:`~napari_semiseg.core.versions.VersionStore`, the project's when one is
open), its prediction becomes :attr:`Session.proposal`, and an acceptance writes the proposal back
into the labels layer with :meth:`Session.accept` (one undo step, noted in the provenance).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from napari.utils.notifications import show_error
from psygnal import Signal
from qtpy.QtCore import QTimer

from ..core.annotations import AnnotationError, AnnotationMode, AnnotationScheme
from ..core.config import TrainConfig
from ..core.device import device_status
from ..core.events import CheckpointSaved, TrainingFailed, TrainingFinished, TrainingStarted, ValidationScored
from ..core.project import Project
from ..core.provenance import Provenance
from ..core.versions import ModelVersion, VersionError, VersionStore
from ..core.volume import VolumeError
from .jobs import RunRecord, prediction_job, training_job
from .layers import COMPARE_LAYER_PREFIX, geometry_kwargs, painting_axis, write_acceptance
from .provenance_tracker import ProvenanceTracker
from .training_process import TrainingProcess, VolumePredicted

log = logging.getLogger(__name__)
POLL_MS = 100
DEFAULT_RUNS_DIR = Path.home() / ".napari-semiseg" / "runs"


@dataclass
class Proposal:
    """A model's prediction of the chosen image, with what is known about the model behind it."""

    labels: np.ndarray
    certainty: np.ndarray
    disagreement: np.ndarray | None = None
    facts: dict = field(default_factory=dict)  # model path, version, iteration: for the provenance


class Session:
    """State and signals shared by every panel of one dock widget."""

    layers_changed = Signal()  # another image or labels layer is chosen
    scheme_changed = Signal()  # annotation mode or background label
    project_changed = Signal(object)  # the Project, or None
    model_changed = Signal(object)  # path of the model a retrain continues from, or None
    versions_changed = Signal()  # the run registry changed
    proposal_changed = Signal(object)  # the model's Proposal
    registration_changed = Signal(object)  # the PropagationResult
    accepted = Signal()  # an acceptance was written into the labels layer
    comparison_ready = Signal(str, object)  # layer name, labels predicted by another version
    training_submitted = Signal()  # a training job was sent to the worker process
    training_event = Signal(object)  # every event from the worker process, after the session's own handling
    training_ended = Signal()  # the worker process has no job running any more
    message = Signal(str)  # one line for the status label

    def __init__(self, viewer, runs_dir: str | Path | None = None):
        self.viewer = viewer
        self.versions = VersionStore(Path(runs_dir) if runs_dir else DEFAULT_RUNS_DIR)
        self.project: Project | None = None
        self.volume_name: str | None = None
        self.image_name: str | None = None
        self.labels_name: str | None = None
        self.mode = AnnotationMode.SLICES
        self.background_label = 9
        self.current_model: str | None = None
        self.device = "auto"  # where predictions run (the training panel's choice)
        self.proposal: Proposal | None = None
        self.registration = None  # core.registration PropagationResult
        self.review = None  # core.certainty ReviewMap: certainty fused from the proposals
        self.provenance = ProvenanceTracker()
        self.process: TrainingProcess | None = None
        self.run: RunRecord | None = None  # the training job last started
        self.last_checkpoint: CheckpointSaved | None = None
        self.checkpoint_seconds = 20.0  # a killed training process loses at most this much work
        self._timer = QTimer()
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self.poll)
        self.continue_from(self._current_version())

    # ----- layers and scheme ------------------------------------------------------------
    @property
    def image_layer(self):
        return self._layer(self.image_name)

    @property
    def labels_layer(self):
        return self._layer(self.labels_name)

    def _layer(self, name: str | None):
        return self.viewer.layers[name] if name is not None and name in self.viewer.layers else None

    def choose_layers(self, image: str | None = None, labels: str | None = None) -> None:
        """Choose the image and labels layers by name (None keeps the current choice)."""
        new = (image if image is not None else self.image_name, labels if labels is not None else self.labels_name)
        if new != (self.image_name, self.labels_name):
            self.image_name, self.labels_name = new
            self.layers_changed.emit()

    def set_annotation(self, mode: AnnotationMode, background_label: int | None = None) -> None:
        if background_label is not None:
            self.background_label = int(background_label)
        self.mode = AnnotationMode(mode)
        self.scheme_changed.emit()

    def scheme(self) -> AnnotationScheme:
        """How the chosen labels are annotated, along the axis the viewer scrolls through."""
        background = self.background_label if self.mode is AnnotationMode.SCRIBBLES else None
        return AnnotationScheme(self.mode, painting_axis(self.viewer), background)

    def add_annotation_layer(self):
        """An empty labels layer on the image's grid, chosen for painting (None without an image)."""
        image = self.image_layer
        if image is None:
            self.say("Open an image first.")
            return None
        layer = self.viewer.add_labels(np.zeros(image.data.shape, dtype=np.uint8),
                                       **geometry_kwargs(image, "annotations"))
        self.choose_layers(labels=layer.name)
        return layer

    def provenance_of(self, layer=None) -> Provenance | None:
        """The provenance of a labels layer (the chosen one by default)."""
        return self.provenance.of(layer if layer is not None else self.labels_layer)

    # ----- project and models -----------------------------------------------------------
    def set_project(self, project: Project | None, volume_name: str | None = None) -> None:
        """Work in ``project`` (its runs folder is the run registry) on its volume ``volume_name``."""
        self.project, self.volume_name = project, volume_name
        if project is not None:
            self.versions = project.versions
            self.versions_changed.emit()
            model = self._current_version() or project.latest_resumable()
            if model is not None:  # a new project keeps the model trained before it
                self.continue_from(model)
        self.project_changed.emit(project)

    def use_runs_dir(self, runs_dir: str | Path) -> None:
        """Keep the run registry in ``runs_dir`` (without a project; a project brings its own)."""
        self.versions = VersionStore(runs_dir)
        self.versions_changed.emit()

    def _current_version(self) -> ModelVersion | None:
        try:
            current = self.versions.current()
        except VersionError as error:
            log.warning("%s", error)
            return None
        return current if current is not None and self.versions.path_of(current).exists() else None

    def continue_from(self, model: ModelVersion | str | Path | None) -> None:
        """Make ``model`` (a version or a model file) the one the next training continues from."""
        if isinstance(model, ModelVersion):
            model = self.versions.path_of(model)
        self.current_model = None if model is None else str(model)
        self.model_changed.emit(self.current_model)

    def roll_back(self, version: ModelVersion) -> None:
        self.continue_from(version)
        self.say(f"v{version.id} is the current model: the next training continues from it.")

    def load_version(self, version: ModelVersion) -> bool:
        """Predict the image with a saved version; the result becomes the proposal."""
        return self._predict_with(version, f"load:v{version.id}", blend=True)

    def compare_versions(self, first: ModelVersion, second: ModelVersion) -> bool:
        """Predict with two versions into two labels layers, 'version vN', to compare as overlays."""
        return self._predict_with(first, f"compare:{COMPARE_LAYER_PREFIX}{first.id}", blend=False) and \
            self._predict_with(second, f"compare:{COMPARE_LAYER_PREFIX}{second.id}", blend=False)

    def _predict_with(self, version: ModelVersion, tag: str, blend: bool) -> bool:
        """``blend``: with the painted slices (a comparison shows what each network learned, unblended)."""
        if self.image_layer is None:
            self.say("Choose the image to predict first.")
            return False
        labels = self.labels_layer if blend else None
        self._submit(prediction_job(self.versions.path_of(version), self.image_layer, labels, self.scheme(), tag,
                                    self.device))
        self.say(f"Predicting with v{version.id}...")
        return True

    # ----- proposals and acceptance -----------------------------------------------------
    def set_proposal(self, proposal: Proposal | None) -> None:
        self.proposal = proposal
        self.proposal_changed.emit(proposal)

    def set_registration(self, result) -> None:
        self.registration = result
        self.registration_changed.emit(result)

    def accept(self, indices, values, source: str, scope: str, **facts) -> int:
        """Write an acceptance into the chosen labels layer (one undo step), noted in its provenance."""
        layer = self.labels_layer
        if layer is None:
            return 0
        written = write_acceptance(layer, indices, values, self.provenance.recorder(layer, source, scope, **facts))
        if written:
            self.accepted.emit()
        return written

    # ----- training -----------------------------------------------------------------------
    @property
    def training(self) -> bool:
        return self.process is not None and self.process.running

    def start_training(self, config: TrainConfig, continue_training: bool) -> bool:
        """Snapshot the chosen image and labels and train on them in the worker process."""
        if self.training:
            self.say("Training is already running.")
            return False
        ok, message = device_status(config.device)
        if not ok:
            return self._refuse(message)
        image, labels = self.image_layer, self.labels_layer
        if image is None or labels is None:
            return self._refuse("Choose an image layer and a labels layer (or create one with New).")
        resume = self.current_model if continue_training else None
        try:
            job, self.run = training_job(image, labels, self.scheme(), config, self._new_run_dir(), resume,
                                         rotation=len(self.versions.versions()))
        except (AnnotationError, VolumeError, ValueError, VersionError) as error:
            return self._refuse(str(error))
        self.last_checkpoint = None
        self._submit(job)
        self.training_submitted.emit()
        self.say("Starting the training process...")
        return True

    def _refuse(self, message: str) -> bool:
        self.say(message, error=True)
        return False

    def _new_run_dir(self) -> Path:
        if self.project is not None:
            return self.project.new_run_dir()
        return self.versions.runs_dir / time.strftime("%Y%m%d-%H%M%S")

    def _submit(self, job) -> None:
        """Run a job on the worker process, starting one if none is alive (start-up ~6 s)."""
        if self.process is None or not self.process.alive:
            self.process = TrainingProcess()
            self.process.start()
        self.process.submit(job)
        self._timer.start()

    def stop_training(self) -> None:
        """Ask training to stop after its current step; the model so far is kept."""
        if self.training:
            self.process.stop()
            self.say("Stopping after the current step...")

    def toggle_pause(self) -> None:
        """Pause a running training (it idles, its budget clock stops) or resume it."""
        if not self.training:
            return
        if self.process.paused:
            self.process.resume()
            self.say("Resuming...")
        else:
            self.process.pause()
            self.say("Pausing after the current step...")

    def request_preview(self, slice_index: int) -> None:
        if self.training:
            self.process.request_preview(0, slice_index)

    def poll(self) -> None:
        """Take the worker's events: the session's state first, then every listener."""
        if self.process is None:
            return
        for event in self.process.poll():
            self.handle(event)
        if not self.process.running:
            self._timer.stop()
            self.training_ended.emit()

    def handle(self, event) -> None:
        """One event of the worker process: the session's state first, then every listener."""
        self._note(event)
        self.training_event.emit(event)

    def _note(self, event) -> None:
        if isinstance(event, TrainingStarted | CheckpointSaved) and self.run is not None:
            self.last_checkpoint = event if isinstance(event, CheckpointSaved) else None
        elif isinstance(event, ValidationScored) and self.run is not None:
            self.run.validation_dice = event.dice
        elif isinstance(event, VolumePredicted):
            self._take_prediction(event)
        elif isinstance(event, TrainingFinished):
            self._record(event)
        elif isinstance(event, TrainingFailed):
            log.error("training failed: %s\n%s", event.message, event.details)
            if self.last_checkpoint is not None:
                self.continue_from(self.last_checkpoint.path)

    def _take_prediction(self, event: VolumePredicted) -> None:
        kind, _, name = event.tag.partition(":")
        if kind == "compare":
            self.comparison_ready.emit(name, event.labels)
            return
        facts = {"model": event.model_path, **({"version": name} if kind == "load" else {})}
        self.set_proposal(Proposal(event.labels, event.certainty, event.disagreement, facts))
        if kind == "load":
            self.say(f"Showing the prediction of {name}: review it and accept what you trust.")

    def _record(self, event: TrainingFinished) -> None:
        """The one place a finished run enters the run registry."""
        run = self.run or RunRecord("?", 0, ())
        try:
            version = self.versions.add(event.model_path, strategy=run.strategy, iterations=event.iteration,
                                        painted_slices=run.painted, trained_slices=run.trained,
                                        held_out_slices=run.held_out, validation_dice=run.validation_dice,
                                        reason=event.reason)
        except (VersionError, OSError) as error:
            self.say(f"The model was saved ({event.model_path}) but not listed: {error}", error=True)
            self.continue_from(event.model_path)
            return
        self.versions_changed.emit()
        self.continue_from(version)
        if self.proposal is not None and self.proposal.facts.get("model") == event.model_path:
            self.proposal.facts.update(iteration=event.iteration, version=f"v{version.id}")

    # ----- messages and ending ----------------------------------------------------------
    def say(self, text: str, error: bool = False) -> None:
        """Show ``text`` on the status line (and as a notification when it is an error)."""
        if error:
            log.error(text)
        self.message.emit(text)
        if error:
            show_error(text)

    def shut_down(self) -> None:
        """End the worker process (the viewer is closing)."""
        self._timer.stop()
        if self.process is not None:
            self.process.close()
