"""The dock widget: pick layers, train in the background, review, accept, export."""

from __future__ import annotations

import logging
import time
import weakref
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QObject, QSize, Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from .._writer import write_labels
from ..core.annotations import AnnotationError, AnnotationMode, AnnotationScheme, annotated_slices
from ..core.config import DEFAULT_STRATEGY, TrainConfig
from ..core.device import device_status
from ..core.engine import TrainingData
from ..core.engine.presets import PRESETS
from ..core.events import (
    PreviewReady,
    PseudoLabelsLimited,
    PseudoLabelsReady,
    StepCompleted,
    TrainingFailed,
    TrainingFinished,
    TrainingPaused,
    TrainingResumed,
    TrainingStarted,
    ValidationScored,
)
from ..core.validation import MIN_ANNOTATED_FOR_HOLDOUT, hold_out, painting_plateau
from ..core.versions import ModelVersion, VersionError, VersionStore
from ..core.volume import VolumeError
from .layers import (
    AXIS_NAMES,
    CERTAINTY_LAYER,
    PREDICTION_LAYER,
    accept_into,
    current_slice,
    follow_voxel_edits,
    geometry_kwargs,
    layer_meta,
    mark_preview,
    painting_axis,
    upsert_layer,
    volume_from_layer,
)
from .project_panel import ProjectPanel
from .propagation_panel import QUALITY_LAYER, REGISTERED_LAYER, PropagationPanel
from .provenance_tracker import ProvenanceTracker
from .review_panel import PROVENANCE_LAYER, REVIEW_LAYER, ReviewPanel
from .training_panel import QuietProgressBar, TrainingCurves, VersionsPanel, held_out_note
from .training_process import PredictionJob, TrainingJob, TrainingProcess, VolumePredicted, background_threads

log = logging.getLogger(__name__)
POLL_MS = 100
SUMMARY_DELAY_MS = 300
CHECKPOINT_SECONDS = 20.0  # a killed training process loses at most this much work
STEP_DISPLAY_SECONDS = 1.0  # each status change repaints the dock: 70-90 ms with software OpenGL


class VerticalScrollArea(QScrollArea):
    """Scrolls its content up and down only: as wide as the content needs, as short as the dock allows."""

    def __init__(self):
        super().__init__()
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)

    def setWidget(self, widget: QWidget) -> None:  # noqa: N802 (Qt's name)
        super().setWidget(widget)
        widget.installEventFilter(self)

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt's name)
        # the content's width changes after construction (napari's style sheet, longer labels)
        if watched is self.widget() and event.type() == QEvent.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(watched, event)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        hint = super().minimumSizeHint()
        if self.widget() is None:
            return hint
        scrollbar = max(self.verticalScrollBar().sizeHint().width(),
                        self.style().pixelMetric(QStyle.PM_ScrollBarExtent, None, self.verticalScrollBar()))
        width = self.widget().minimumSizeHint().width() + scrollbar + 2 * self.frameWidth()
        return QSize(max(width, hint.width()), hint.height())


class SemisegWidget(QWidget):
    """Train a segmentation model from a few painted slices without blocking the viewer."""

    def __init__(self, napari_viewer, runs_dir: str | Path | None = None):
        super().__init__()
        self.viewer = napari_viewer
        self.runs_dir = Path(runs_dir) if runs_dir else Path.home() / ".napari-semiseg" / "runs"
        self.process: TrainingProcess | None = None
        self.last_model: str | None = None
        self.prediction: np.ndarray | None = None
        self._job_axis = 0
        self.checkpoint_seconds = CHECKPOINT_SECONDS
        self._job_record: dict | None = None
        self._validation_dice: float | None = None
        self._window_watcher: _WindowCloseWatcher | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)
        # a paint event per stroke would rescan the whole volume; one rescan after a burst suffices
        self._summary_timer = QTimer(self)
        self._summary_timer.setSingleShot(True)
        self._summary_timer.setInterval(SUMMARY_DELAY_MS)
        self._summary_timer.timeout.connect(self.update_annotated_summary)
        self._build()
        self._connect_viewer()
        QTimer.singleShot(0, self._close_with_the_viewer)
        self.refresh_layers()
        self._continue_from_current_version()

    # ----- construction -------------------------------------------------------------
    def _build(self) -> None:
        content = QWidget()
        layout = QVBoxLayout(content)
        provenance = ProvenanceTracker()
        self.project_panel = ProjectPanel(self, provenance=provenance)
        layout.addWidget(self.project_panel)
        layout.addWidget(self._data_box())
        layout.addWidget(self._training_box())
        self.versions_panel = VersionsPanel(VersionStore(self.runs_dir), self.load_version, self.compare_versions,
                                            self._rolled_back, self._say)
        layout.addWidget(self.versions_panel)
        layout.addWidget(self._review_box())
        self.propagation = PropagationPanel(self.viewer, lambda: self.image_layer, lambda: self.labels_layer, self._say)
        layout.addWidget(self.propagation)
        self.review = ReviewPanel(self.viewer, lambda: self.image_layer, lambda: self.labels_layer,
                                  lambda: self.propagation.result, self._say, provenance)
        self.propagation.on_result = self.review.registration_updated
        self.propagation.recorder = lambda scope, **facts: self.review.recorder("registration", scope, **facts)
        layout.addWidget(self.review)
        layout.addStretch(1)
        self._put_in_scroll_area(content)

    def _put_in_scroll_area(self, content: QWidget) -> None:
        # napari docks plugin widgets without a scroll area: the panels stacked are taller than a
        # laptop screen, and their minimum height would stretch the viewer window past it
        self.scroll_area = VerticalScrollArea()
        self.scroll_area.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll_area)

    def _data_box(self) -> QGroupBox:
        box = QGroupBox("Data")
        form = QFormLayout(box)
        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
        self.new_labels_button = QPushButton("New")
        self.new_labels_button.setToolTip("Add an empty labels layer on the image's voxel grid")
        labels_row = QHBoxLayout()
        labels_row.addWidget(self.labels_combo, 1)
        labels_row.addWidget(self.new_labels_button)
        self.mode_combo = QComboBox()
        self.mode_combo.addItem("Painted slices", AnnotationMode.SLICES.value)
        self.mode_combo.addItem("Scribbles", AnnotationMode.SCRIBBLES.value)
        self.background_spin = QSpinBox()
        self.background_spin.setRange(1, 65535)
        self.background_spin.setValue(9)
        self.background_spin.setToolTip("Scribble mode: the label value you paint background with")
        self.background_spin.setEnabled(False)
        self.annotated_label = QLabel("-")
        self.annotated_label.setWordWrap(True)
        form.addRow("Image", self.image_combo)
        form.addRow("Labels", labels_row)
        form.addRow("Annotation", self.mode_combo)
        form.addRow("Background label", self.background_spin)
        form.addRow("Annotated", self.annotated_label)
        self.new_labels_button.clicked.connect(self.add_annotation_layer)
        self.mode_combo.currentIndexChanged.connect(self._on_mode_changed)
        self.labels_combo.currentIndexChanged.connect(self._on_labels_changed)
        return box

    def _training_box(self) -> QGroupBox:
        box = QGroupBox("Training")
        form = QFormLayout(box)
        self.strategy_combo = QComboBox()
        for name, preset in PRESETS.items():
            self.strategy_combo.addItem(name, name)
            self.strategy_combo.setItemData(self.strategy_combo.count() - 1, preset.summary, 3)
        self.strategy_combo.setCurrentIndex(max(0, self.strategy_combo.findData(DEFAULT_STRATEGY)))
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
        self.device_label = QLabel()
        self.device_label.setWordWrap(True)
        self.device_combo.currentTextChanged.connect(self._update_device_message)
        self._update_device_message()
        self.budget_spin = QDoubleSpinBox()
        self.budget_spin.setRange(0.1, 100000)
        self.budget_spin.setDecimals(1)
        self.budget_spin.setValue(2.0)
        self.budget_unit = QComboBox()
        self.budget_unit.addItems(["minutes", "iterations"])
        budget_row = QHBoxLayout()
        budget_row.addWidget(self.budget_spin, 1)
        budget_row.addWidget(self.budget_unit)
        self.continue_check = QCheckBox("Continue from the last model")
        self.continue_check.setEnabled(False)
        self.start_button = QPushButton("Start training")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip("Hold training (no CPU used, budget clock stopped); press again to resume")
        self.pause_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.pause_button)
        buttons.addWidget(self.stop_button)
        self.curves = TrainingCurves()
        self.validation_label = QLabel(f"Paint at least {MIN_ANNOTATED_FOR_HOLDOUT} slices to get a validation score.")
        self.validation_label.setWordWrap(True)
        self.progress_bar = QuietProgressBar()
        self._last_step_shown = -float("inf")
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(0)
        self.status_label = QLabel("Paint a few slices, then start training.")
        self.status_label.setWordWrap(True)
        form.addRow("Strategy", self.strategy_combo)
        form.addRow("Device", self.device_combo)
        form.addRow("", self.device_label)
        form.addRow("Budget", budget_row)
        form.addRow("", self.continue_check)
        form.addRow(buttons)
        form.addRow(self.progress_bar)
        form.addRow(self.status_label)
        form.addRow(self.curves)
        form.addRow(self.validation_label)
        self.start_button.clicked.connect(self.start_training)
        self.stop_button.clicked.connect(self.stop_training)
        self.pause_button.clicked.connect(self.toggle_pause)
        return box

    def _review_box(self) -> QGroupBox:
        box = QGroupBox("Review and export")
        layout = QVBoxLayout(box)
        row = QHBoxLayout()
        self.accept_slice_button = QPushButton("Accept slice")
        self.accept_slice_button.setToolTip("Copy the prediction of the slice on screen into the labels")
        self.accept_all_button = QPushButton("Accept all")
        self.accept_all_button.setToolTip("Copy the whole prediction into the labels (painted voxels are kept)")
        row.addWidget(self.accept_slice_button)
        row.addWidget(self.accept_all_button)
        layout.addLayout(row)
        self.export_button = QPushButton("Export labels...")
        layout.addWidget(self.export_button)
        self.accept_slice_button.clicked.connect(self.accept_slice)
        self.accept_all_button.clicked.connect(self.accept_all)
        self.export_button.clicked.connect(self._choose_export_path)
        self._set_review_enabled(False)
        return box

    def _connect_viewer(self) -> None:
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.reordered):
            event.connect(self.refresh_layers)
        self.viewer.dims.events.current_step.connect(self._on_slice_changed)
        self.viewer.dims.events.order.connect(self.update_annotated_summary)

    # ----- layer selection ----------------------------------------------------------
    def refresh_layers(self, event=None) -> None:
        """Fill the layer pickers, keeping the current choice where it still exists."""
        self._fill_combo(self.image_combo, [l.name for l in self.viewer.layers if isinstance(l, Image)
                                            and l.name not in (CERTAINTY_LAYER, QUALITY_LAYER, REVIEW_LAYER)])
        self._fill_combo(self.labels_combo, [l.name for l in self.viewer.layers if isinstance(l, Labels)
                                             and l.name not in (PREDICTION_LAYER, REGISTERED_LAYER, PROVENANCE_LAYER)])
        self._on_labels_changed()

    @staticmethod
    def _fill_combo(combo: QComboBox, names: list[str]) -> None:
        current = combo.currentText()
        combo.blockSignals(True)
        combo.clear()
        combo.addItems(names)
        if current in names:
            combo.setCurrentText(current)
        combo.blockSignals(False)

    @property
    def image_layer(self) -> Image | None:
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    @property
    def labels_layer(self) -> Labels | None:
        name = self.labels_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def add_annotation_layer(self) -> Labels | None:
        """An empty labels layer on the image's grid, selected for painting."""
        image = self.image_layer
        if image is None:
            show_warning("Open an image first.")
            return None
        layer = self.viewer.add_labels(np.zeros(image.data.shape, dtype=np.uint8),
                                       **geometry_kwargs(image, "annotations"))
        self.labels_combo.setCurrentText(layer.name)
        return layer

    def _on_mode_changed(self) -> None:
        self.background_spin.setEnabled(self.mode_combo.currentData() == AnnotationMode.SCRIBBLES.value)
        self.update_annotated_summary()

    def _on_labels_changed(self, *args) -> None:
        layer = self.labels_layer
        if layer is not None:
            follow_voxel_edits(layer, self._schedule_summary)  # undo too: the summary must not go stale
        self.update_annotated_summary()

    def _schedule_summary(self) -> None:
        self._summary_timer.start()

    def scheme(self) -> AnnotationScheme:
        mode = AnnotationMode(self.mode_combo.currentData())
        background = self.background_spin.value() if mode is AnnotationMode.SCRIBBLES else None
        return AnnotationScheme(mode, painting_axis(self.viewer), background)

    def update_annotated_summary(self, event=None) -> None:
        layer = self.labels_layer
        if layer is None or layer.ndim != 3:
            self.annotated_label.setText("Pick or create a 3D labels layer.")
            return
        axis = painting_axis(self.viewer)
        indices = annotated_slices(np.asarray(layer.data), axis)
        shown = ", ".join(str(i) for i in indices[:20]) + (" ..." if len(indices) > 20 else "")
        self.annotated_label.setText(
            f"{len(indices)} of {layer.data.shape[axis]} slices along {AXIS_NAMES[axis]}" + (f": {shown}" if shown else "")
        )

    # ----- training -----------------------------------------------------------------
    def config(self) -> TrainConfig:
        budget = self.budget_spin.value()
        by_iterations = self.budget_unit.currentText() == "iterations"
        return TrainConfig(
            strategy=self.strategy_combo.currentData(),
            minutes=None if by_iterations else budget,
            iterations=int(budget) if by_iterations else None,
            device=self.device_combo.currentText(),
            threads=background_threads(),
            checkpoint_seconds=self.checkpoint_seconds,
        )

    def start_training(self) -> bool:
        """Snapshot image and labels, then train in a separate process. Returns success."""
        if self.process is not None and self.process.running:
            show_info("Training is already running.")
            return False
        ok, message = device_status(self.device_combo.currentText())
        if not ok:
            self._say(message)
            show_error(message)
            return False
        try:
            job = self._make_job()
        except (AnnotationError, VolumeError, ValueError) as error:
            self._say(str(error))
            show_error(str(error))
            return False
        self._job_axis = job.data.scheme.axis
        self._submit(job)
        self._prepare_preview_layers()
        self._request_preview()
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.pause_button.setEnabled(True)
        self.pause_button.setText("Pause")
        self.progress_bar.setValue(0)
        self.curves.reset()
        self._validation_dice = None
        self.validation_label.setText(held_out_note(self._job_record["held_out"], self._job_record["painted"],
                                                    MIN_ANNOTATED_FOR_HOLDOUT))
        self._say("Starting the training process...")
        return True

    def _submit(self, job) -> None:
        """Run a job on the worker process, starting one if none is alive (start-up ~6 s)."""
        if self.process is None or not self.process.alive:
            self.process = TrainingProcess()
            self.process.start()
        self.process.submit(job)
        self._timer.start()

    def toggle_pause(self) -> None:
        """Pause a running training (it idles, its budget clock stops) or resume it."""
        if self.process is None or not self.process.running:
            return
        if self.process.paused:
            self.process.resume()
            self.pause_button.setText("Pause")
            self._say("Resuming...")
        else:
            self.process.pause()
            self.pause_button.setText("Resume")
            self._say("Pausing after the current step...")

    def _make_job(self) -> TrainingJob:
        image, labels = self.image_layer, self.labels_layer
        if image is None or labels is None:
            raise ValueError("Choose an image layer and a labels layer (or create one with New).")
        volume = volume_from_layer(image)
        painted = np.array(labels.data, copy=True)
        scheme = self.scheme()
        TrainingData([volume], [painted], scheme).check()
        rotation = len(self.versions_panel.store.versions())  # held-out slices rotate between runs
        training, held_out = hold_out(painted, scheme, rotation=rotation)
        data = TrainingData([volume], [training], scheme)
        run_dir = self.runs_dir / time.strftime("%Y%m%d-%H%M%S")
        resume = self.last_model if self.continue_check.isChecked() and self.last_model else None
        config = self.config()
        count = len(annotated_slices(painted, scheme.axis))
        held = held_out.slice_indices if held_out is not None else ()
        self._job_record = {"strategy": config.strategy, "painted": count, "held_out": held,
                            "trained": count - len(held)}
        return TrainingJob(data, config, str(run_dir), resume_from=resume, validation=held_out, painted=painted)

    def stop_training(self) -> None:
        """Ask training to stop after its current step; the model so far is kept."""
        if self.process is not None and self.process.running:
            self.process.stop()
            self._say("Stopping after the current step...")

    def _request_preview(self) -> None:
        if self.process is None or self.image_layer is None:
            return
        self.process.request_preview(0, current_slice(self.viewer, self.image_layer, self._job_axis))

    def _on_slice_changed(self, event=None) -> None:
        if self.process is not None and self.process.running:
            self._request_preview()

    def _poll(self) -> None:
        if self.process is None:
            return
        for event in self.process.poll():
            self._handle(event)
        if not self.process.running:
            self._timer.stop()
            self.start_button.setEnabled(True)
            self.stop_button.setEnabled(False)
            self.pause_button.setEnabled(False)
            self.pause_button.setText("Pause")

    def _handle(self, event) -> None:
        if isinstance(event, TrainingStarted):
            self._say(f"Training '{event.strategy}' on {event.device}: {event.annotated_slices} annotated, "
                      f"{event.unannotated_slices} unannotated slices.")
        elif isinstance(event, PseudoLabelsReady):
            self._say(f"Registration pseudo-labels ready ({event.source}, {event.seconds:.1f} s); training...")
        elif isinstance(event, PseudoLabelsLimited):
            self._say(f"Registration time limit reached: {event.registered} volumes registered, "
                      f"{event.skipped} train without pseudo-labels.")
        elif isinstance(event, StepCompleted):
            self.curves.add_loss(event.seconds, event.loss)
            now = time.monotonic()
            if now - self._last_step_shown >= STEP_DISPLAY_SECONDS:
                self._last_step_shown = now
                self.progress_bar.setValue(int(event.progress * 1000))
                self._say(f"Iteration {event.iteration}, loss {event.loss:.3f}, "
                          f"{event.slices_per_second:.1f} slices/s")
                self.curves.flush()  # one repaint of the dock for progress, status and curve
        elif isinstance(event, ValidationScored):
            self.curves.add_validation(event.seconds, event.dice)
            self._validation_dice = event.dice
            self.validation_label.setText(f"Validation Dice {event.dice:.3f} on {event.slices} held-out slices "
                                          f"(iteration {event.iteration}).")
        elif isinstance(event, TrainingPaused):
            self._say(f"Paused at iteration {event.iteration}; press Resume to continue.")
        elif isinstance(event, TrainingResumed):
            self._say(f"Resumed after {event.paused_seconds:.0f} s.")
        elif isinstance(event, PreviewReady):
            self._show_preview(event)
        elif isinstance(event, VolumePredicted):
            self._show_prediction(event)
        elif isinstance(event, TrainingFinished):
            self.progress_bar.setValue(1000)
            self.last_model = event.model_path
            self.continue_check.setEnabled(True)
            self.continue_check.setChecked(True)
            version = self._record_version(event)
            self.review.note_model(iteration=event.iteration, version=f"v{version.id}")
            verb = "Stopped" if event.reason == "stopped" else "Finished"
            members = ", ".join(f"{name} {value:.2f}" for name, value in event.member_dice.items())
            detail = f" Dice on painted slices: {members}." if len(event.member_dice) > 1 else ""
            self._say(f"{verb} after {event.iteration} iterations ({event.seconds:.0f} s).{detail} "
                      "Review the prediction.")
        elif isinstance(event, TrainingFailed):
            log.error("training failed: %s\n%s", event.message, event.details)
            self._say(f"Training failed: {event.message}")
            show_error(f"Training failed: {event.message}")
        self.project_panel.on_training_event(event)

    def _show_preview(self, event: PreviewReady) -> None:
        image = self.image_layer
        if image is None:
            return
        shape = image.data.shape
        if self._update_preview_in_place(event, shape):
            return
        prediction = self.viewer.layers[PREDICTION_LAYER].data if PREDICTION_LAYER in self.viewer.layers else None
        if prediction is None or prediction.shape != shape:
            prediction = np.zeros(shape, dtype=np.int32)
        certainty_layer = self.viewer.layers[CERTAINTY_LAYER] if CERTAINTY_LAYER in self.viewer.layers else None
        certainty = certainty_layer.data if certainty_layer is not None and certainty_layer.data.shape == shape \
            else np.ones(shape, dtype=np.float32)
        index = [slice(None)] * 3
        index[event.axis] = event.slice_index
        prediction[tuple(index)] = event.labels
        certainty[tuple(index)] = event.certainty
        self._show_layers(prediction, certainty, preview=True)

    def _prepare_preview_layers(self) -> None:
        """Create the prediction, certainty and review layers now, if missing, so that previews
        and the final prediction only write data.

        Creating a napari layer stalls the viewer for about 170 ms (vispy visuals, layer
        controls); at the click on Start that goes unnoticed, at the first preview it interrupts
        a brush stroke, and three of them made the first final prediction stall for 0.5 to 0.9 s.
        """
        image = self.image_layer
        if image is None:
            return
        shape = image.data.shape
        self.review.prepare_review_layer()
        layers = self._preview_layers(shape)
        if layers is None:
            self._show_layers(np.zeros(shape, dtype=np.int32), np.ones(shape, dtype=np.float32), preview=True)
            return
        mark_preview(layers, True)  # previews now overwrite slices of the last final prediction

    def _preview_layers(self, shape: tuple[int, ...]) -> list | None:
        """The prediction and certainty layers, or None unless both exist with this shape."""
        layers = [self.viewer.layers[name] if name in self.viewer.layers else None
                  for name in (PREDICTION_LAYER, CERTAINTY_LAYER)]
        if any(layer is None or layer.data.shape != shape for layer in layers):
            return None
        return layers

    def _update_preview_in_place(self, event: PreviewReady, shape: tuple[int, ...]) -> bool:
        """Write the previewed slice into the existing layers and redraw only them.

        Replacing a layer's data makes napari re-check the whole volume (dims, thumbnail,
        contrast), a stall the user feels while painting; an in-place write does not.
        """
        layers = self._preview_layers(shape)
        if layers is None:
            return False
        index = [slice(None)] * 3
        index[event.axis] = event.slice_index
        on_screen = painting_axis(self.viewer) == event.axis and \
            current_slice(self.viewer, layers[0], event.axis) == event.slice_index
        for layer, values in zip(layers, (event.labels, event.certainty)):
            layer.data[tuple(index)] = values
            if layer.visible and on_screen:  # another slice is read afresh when the user scrolls to it
                layer.refresh(thumbnail=False, highlight=False, extent=False)
        return True

    def _show_prediction(self, event: VolumePredicted) -> None:
        kind, _, name = event.tag.partition(":")
        if kind == "compare":
            image = self.image_layer
            if image is not None:
                upsert_layer(self.viewer, name, event.labels, "labels", image, opacity=0.5)
                self._say(f"'{name}' added to compare with the other version (toggle the layers to see each).")
            return
        if kind == "load":
            self._say(f"Showing the prediction of {name}: review it and accept what you trust.")
        self.prediction = event.labels
        self._show_layers(event.labels, event.certainty)
        self._set_review_enabled(True)
        facts = {"model": event.model_path, "version": name if kind == "load" else None}
        self.review.set_prediction(event.labels, event.certainty, event.disagreement, **facts)

    def _show_layers(self, prediction: np.ndarray, certainty: np.ndarray, preview: bool = False) -> None:
        image = self.image_layer
        # one overlay on at a time (the proposal); the certainty map is a click away
        certainty_layer = upsert_layer(self.viewer, CERTAINTY_LAYER, certainty, "image", image,
                                       colormap="inferno", contrast_limits=(0.0, 1.0), opacity=0.4, visible=False)
        layer = upsert_layer(self.viewer, PREDICTION_LAYER, prediction, "labels", image, opacity=0.5)
        mark_preview((certainty_layer, layer), preview)
        layer.refresh()
        if self.labels_layer is not None:
            self.viewer.layers.selection.active = self.labels_layer

    # ----- model versions -----------------------------------------------------------
    def _record_version(self, event: TrainingFinished) -> ModelVersion:
        record = self._job_record or {}
        store = self.versions_panel.store
        version = store.add(event.model_path, strategy=record.get("strategy", "?"), iterations=event.iteration,
                  painted_slices=record.get("painted", 0), trained_slices=record.get("trained", 0),
                  held_out_slices=record.get("held_out", ()), validation_dice=self._validation_dice,
                  reason=event.reason)
        self.versions_panel.refresh()
        plateau = painting_plateau(store.history())
        if plateau:
            self.validation_label.setText(plateau)
        return version

    def load_version(self, version: ModelVersion) -> bool:
        """Predict the image with a saved version; the result becomes the acceptable prediction."""
        return self._predict_with(version, f"load:v{version.id}", blend=True)

    def compare_versions(self, first: ModelVersion, second: ModelVersion) -> bool:
        """Predict with two versions into two labels layers, 'version vN', to compare as overlays."""
        return self._predict_with(first, f"compare:version v{first.id}", blend=False) and \
            self._predict_with(second, f"compare:version v{second.id}", blend=False)

    def _predict_with(self, version: ModelVersion, tag: str, blend: bool) -> bool:
        """Predict the image with ``version``; ``blend``: with the painted slices (a comparison shows
        what each network learned, so it is left unblended)."""
        image = self.image_layer
        if image is None:
            self._say("Choose the image to predict first.")
            return False
        volume = volume_from_layer(image)
        job = PredictionJob(str(self.versions_panel.store.path_of(version)), volume, tag,
                            device=self.device_combo.currentText(),
                            **(self._painted_for_blending(volume) if blend else {}))
        self._submit(job)
        self._say(f"Predicting with v{version.id}...")
        return True

    def _painted_for_blending(self, volume) -> dict:
        """The labels layer's painted slices and scheme, if they belong to ``volume``."""
        labels = self.labels_layer
        if labels is None or labels.data.shape != volume.array.shape:
            return {}
        return {"painted": np.array(labels.data, copy=True), "scheme": self.scheme()}

    def _rolled_back(self, version: ModelVersion) -> None:
        self.last_model = str(self.versions_panel.store.path_of(version))
        self.continue_check.setEnabled(True)
        self.continue_check.setChecked(True)
        self._say(f"v{version.id} is the current model: the next training continues from it.")

    def _continue_from_current_version(self) -> None:
        try:
            current = self.versions_panel.store.current()
        except VersionError:
            return
        if current is not None and self.versions_panel.store.path_of(current).exists():
            self._rolled_back(current)

    def _update_device_message(self, *args) -> None:
        ok, message = device_status(self.device_combo.currentText())
        self.device_label.setText(message if ok else f"⚠ {message}")

    # ----- review -------------------------------------------------------------------
    def _set_review_enabled(self, enabled: bool) -> None:
        for button in (self.accept_slice_button, self.accept_all_button):
            button.setEnabled(enabled)

    def accept_all(self) -> int:
        """Accept the whole prediction into the labels layer (one undo step)."""
        return self._accept(None)

    def accept_slice(self) -> int:
        """Accept the prediction of the slice on screen (one undo step)."""
        layer = self.labels_layer
        if layer is None:
            return 0
        axis = painting_axis(self.viewer)
        region = [slice(None)] * 3
        region[axis] = current_slice(self.viewer, layer, axis)
        return self._accept(tuple(region))

    def _accept(self, region) -> int:
        layer = self.labels_layer
        if layer is None or self.prediction is None:
            show_warning("Train a model first: there is no prediction to accept.")
            return 0
        if self.prediction.shape != layer.data.shape:
            show_error("The prediction does not match this labels layer's shape; choose the layer you trained on.")
            return 0
        changed = accept_into(layer, self.prediction, region,
                              record=self.review.recorder("model", "all" if region is None else "slice"))
        self._say(f"Accepted {changed} voxels (Ctrl+Z in the labels layer undoes it).")
        return changed

    def _choose_export_path(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export labels", "labels.nii.gz",
                                              "Medical volumes (*.nii.gz *.nii *.mha *.nrrd)")
        if path:
            self.export_labels(path)

    def export_labels(self, path: str) -> str | None:
        """Write the labels layer in its source geometry; the file is re-read and checked."""
        layer = self.labels_layer
        if layer is None:
            show_warning("Pick a labels layer to export.")
            return None
        try:
            written = write_labels(path, layer.data, layer_meta(layer))[0]
            self.review.export_provenance(written, layer)
        except (RuntimeError, ValueError) as error:
            show_error(str(error))
            self._say(str(error))
            return None
        self._say(f"Exported and verified {written}")
        return written

    def _say(self, message: str) -> None:
        self.status_label.setText(message)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        self.shut_down()
        super().closeEvent(event)

    def shut_down(self) -> None:
        """Save the annotations, end the training process and let go of the viewer's mouse."""
        self.project_panel.save_now()
        self._let_go()

    def _let_go(self) -> None:
        # only Python objects here: after the viewer's window closes, the Qt side may be deleted
        if self.process is not None:
            self.process.close()
        self.review.close_callbacks()

    def _close_with_the_viewer(self) -> None:
        """napari closes its window without closing the widgets docked in it, and has no public
        closing event: watch the main window the widget is docked in (docking follows construction)."""
        window = self.window()
        if isinstance(window, QMainWindow) and self._window_watcher is None:
            self._window_watcher = _WindowCloseWatcher(window, self.project_panel.save_now, self._let_go)


class _WindowCloseWatcher(QObject):
    """Saves at once when the viewer's window is asked to close, and lets go of the training
    process once it has closed (the user may still cancel napari's "close window?" dialog)."""

    def __init__(self, window: QWidget, save, let_go):
        super().__init__(window)  # installed on that window only; holds no reference to it
        self._save, self._let_go = save, let_go
        window.installEventFilter(self)

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Close:
            self._save()
            window, let_go = weakref.ref(watched), self._let_go
            # a lambda, not a method of this object: the window deletes its children as it closes
            QTimer.singleShot(0, lambda: _let_go_unless_open(window, let_go))
        return False


def _let_go_unless_open(window: weakref.ref, let_go) -> None:
    try:
        still_open = window() is not None and window().isVisible()
    except RuntimeError:  # the window is already deleted
        still_open = False
    if not still_open:
        let_go()
