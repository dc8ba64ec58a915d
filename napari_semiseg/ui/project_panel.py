"""Project box of the dock widget: create or open a project folder, autosave, export everything.

Opening a project restores the session: every volume as an image layer, its saved annotations
as a labels layer, the annotation mode and axis, and the last model (so training can continue).
The labels autosave a few seconds after each edit (:class:`AutosaveClock`); a small line says
when they were last saved, or why they could not be.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from .._reader import geometry_layer_kwargs
from .._writer import layer_geometry
from ..core.annotations import AnnotationMode, AnnotationScheme
from ..core.autosave import AutosaveClock
from ..core.events import CheckpointSaved, TrainingFailed, TrainingFinished, TrainingStarted
from ..core.export import ExportItem, export_maps
from ..core.project import Project, ProjectError
from ..core.provenance import Provenance
from ..core.volume import VolumeError, is_readable_path, read_volume, write_volume
from .layers import (CERTAINTY_LAYER, follow_voxel_edits, is_preview, layer_meta, stop_following_voxel_edits,
                     volume_from_layer)
from .provenance_tracker import ProvenanceTracker

log = logging.getLogger(__name__)

AUTOSAVE_POLL_MS = 250
RETRY_AFTER_FAILURE_SECONDS = 10.0


class ProjectPanel(QGroupBox):
    """Project folder controls; ``widget`` is the :class:`SemisegWidget` it belongs to."""

    def __init__(self, widget, clock: AutosaveClock | None = None, provenance: ProvenanceTracker | None = None):
        super().__init__("Project")
        self.widget = widget
        self.provenance = provenance or ProvenanceTracker()
        self.viewer = widget.viewer
        self.project: Project | None = None
        self.clock = clock or AutosaveClock()
        self.volume_name: str | None = None
        self.labels_layer: Labels | None = None
        self.last_saved: float | None = None
        self.last_checkpoint: CheckpointSaved | None = None
        self._annotated_at_start = 0
        self._retry_at = 0.0
        self._build()
        self._timer = QTimer(self)
        self._timer.setInterval(AUTOSAVE_POLL_MS)
        self._timer.timeout.connect(self._autosave_if_due)

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        self.new_button = QPushButton("New...")
        self.new_button.setToolTip("Make a project folder for the image and labels picked below; they autosave there")
        self.open_button = QPushButton("Open...")
        self.open_button.setToolTip("Open a project folder and restore its images, annotations and last model")
        self.export_button = QPushButton("Export all...")
        self.export_button.setToolTip("Write labels, certainty and provenance in the image's geometry, verified")
        for button in (self.new_button, self.open_button, self.export_button):
            row.addWidget(button)
        layout.addLayout(row)
        self.folder_label = QLabel("No project: annotations are not autosaved.")
        self.folder_label.setWordWrap(True)
        self.saved_label = QLabel("")
        self.saved_label.setStyleSheet("color: grey; font-size: small;")
        layout.addWidget(self.folder_label)
        layout.addWidget(self.saved_label)
        self.new_button.clicked.connect(self._choose_new)
        self.open_button.clicked.connect(self._choose_open)
        self.export_button.clicked.connect(self._choose_export)

    # ----- dialogs ------------------------------------------------------------------------
    def _choose_new(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the new project")
        if folder:
            self.create_project(folder)

    def _choose_open(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a project folder")
        if folder:
            self.open_project(folder)

    def _choose_export(self) -> None:
        start = str(self.project.predictions_dir) if self.project else ""
        folder = QFileDialog.getExistingDirectory(self, "Export into folder", start)
        if folder:
            self.export_all(folder)

    # ----- create and open ----------------------------------------------------------------
    def create_project(self, folder: str | Path) -> Project | None:
        """Make a project from the widget's image and labels layers, and start autosaving them."""
        image, labels = self.widget.image_layer, self.widget.labels_layer
        if image is None:
            show_warning("Open an image first, then make a project for it.")
            return None
        try:
            project = Project.create(folder)  # never into an existing project: that would overwrite its labels
            name = self._add_image(project, image)
            if labels is None:
                labels = self.widget.add_annotation_layer()
            project.set_scheme(self.widget.scheme())
            self._attach(project, name, labels)
            self.save_now()
        except (ProjectError, VolumeError) as error:
            self._fail(str(error))
            return None
        return project

    def _add_image(self, project: Project, image: Image) -> str:
        """The image's source file joins the project as is; an image without one is saved into it."""
        source = (image.metadata.get("semiseg") or {}).get("source")
        for entry in project.volumes:
            if source and Path(source).absolute() == project.source_path(entry.name).absolute():
                return entry.name
        if not (source and Path(source).exists() and is_readable_path(source)
                and read_volume(source).shape == image.data.shape):
            copy = project.folder / "images" / f"{image.name}.nii.gz"
            source = str(write_volume(volume_from_layer(image), copy))
        entry = project.add_volume(source)
        image.metadata.setdefault("semiseg", {})["source"] = str(project.source_path(entry.name))
        return entry.name

    def open_project(self, folder: str | Path) -> Project | None:
        """Open a project and restore its layers, annotation scheme and last model."""
        try:
            project = Project.open(folder)
            if not project.volumes:
                raise ProjectError(f"The project '{project.folder}' has no images yet.")
            layers = [self._restore_volume(project, name) for name in project.volume_names]
        except (ProjectError, VolumeError) as error:
            self._fail(str(error))
            return None
        self._restore_scheme(project.scheme)
        image, labels, name = layers[0]
        self.widget.image_combo.setCurrentText(image.name)
        self.widget.labels_combo.setCurrentText(labels.name)
        self.widget.runs_dir = project.runs_dir
        model = project.latest_model() or project.latest_resumable()
        if model is not None:
            self.widget.last_model = str(model)
            self.widget.continue_check.setEnabled(True)
        self._attach(project, name, labels)
        for note in project.recovery_notes:
            show_warning(note)
        return project

    def _restore_volume(self, project: Project, name: str) -> tuple[Image, Labels, str]:
        volume = project.read_volume(name)
        saved = project.load_annotations(name)
        if saved is not None and saved.note:
            show_warning(saved.note)
            project.recovery_notes.append(saved.note)
        source = str(project.source_path(name))
        image = self.viewer.add_image(volume.array, **geometry_layer_kwargs(volume.geometry, name, source))
        labels = saved.labels if saved is not None else np.zeros(volume.shape, np.uint8)
        layer = self.viewer.add_labels(labels, **geometry_layer_kwargs(volume.geometry, f"{name} annotations", source))
        if saved is not None and saved.provenance is not None:
            self._restore_provenance(layer, saved, name)
        return image, layer, name

    def _restore_provenance(self, layer: Labels, saved, name: str) -> None:
        """Accepted voxels stay accepted after reopening (not counted as painted by the user)."""
        try:
            self.provenance.adopt(layer, Provenance.from_saved(saved.labels, saved.provenance))
        except (ValueError, KeyError) as error:
            note = f"The provenance of '{name}' could not be read ({error}); its labels count as painted by you."
            show_warning(note)
            log.warning(note)

    def _restore_scheme(self, scheme: AnnotationScheme) -> None:
        combo = self.widget.mode_combo
        combo.setCurrentIndex(max(0, combo.findData(scheme.mode.value)))
        if scheme.mode is AnnotationMode.SCRIBBLES and scheme.background_label:
            self.widget.background_spin.setValue(int(scheme.background_label))
        others = [axis for axis in range(3) if axis != scheme.axis]
        self.viewer.dims.order = (scheme.axis, *others)

    def _attach(self, project: Project, name: str, labels: Labels) -> None:
        if self.labels_layer is not None and self.labels_layer is not labels:
            self.save_now()
            stop_following_voxel_edits(self.labels_layer, self._edited)
        self.project, self.volume_name, self.labels_layer = project, name, labels
        follow_voxel_edits(labels, self._edited)  # undo and redo too: an undone stroke must not stay on disk
        self.widget.runs_dir = project.runs_dir
        state = " (read-only: changes cannot be saved here)" if project.read_only else ""
        self.folder_label.setText(f"Project: {project.folder}{state}")
        if project.read_only:
            show_warning(f"The project folder '{project.folder}' is read-only; annotations cannot be saved there. "
                         "Copy it to a folder you can write to.")
        self.saved_label.setText(self._saved_text())
        self._timer.start()

    # ----- autosave -----------------------------------------------------------------------
    def _edited(self) -> None:
        if self.project is not None:
            self.clock.edited()
            self.saved_label.setText("unsaved changes")

    def _autosave_if_due(self) -> None:
        if self.clock.due() and time.monotonic() >= self._retry_at:
            self.save_now()

    def save_now(self) -> bool:
        """Save the labels (and the annotation scheme) into the project now; returns success."""
        if self.project is None or self.labels_layer is None:
            return False
        try:
            if self.viewer.dims.ndisplay == 2:  # in 3D there is no painting axis to record
                self.project.set_scheme(self.widget.scheme())
            provenance = self.provenance.now(self.labels_layer)
            self.project.save_annotations(self.volume_name, np.asarray(self.labels_layer.data),
                                          provenance.saved_state() if provenance is not None else None)
        except (ProjectError, ValueError) as error:
            self._retry_at = time.monotonic() + RETRY_AFTER_FAILURE_SECONDS
            first_failure = not self.saved_label.text().startswith("not saved")
            self.saved_label.setText(f"not saved: {error}")
            self.saved_label.setStyleSheet("color: #d04040; font-size: small;")
            if first_failure:
                show_error(str(error))
            return False
        self.clock.saved()
        self.last_saved = time.time()
        self.saved_label.setStyleSheet("color: grey; font-size: small;")
        self.saved_label.setText(self._saved_text())
        return True

    def _saved_text(self) -> str:
        if self.last_saved is None:
            return ""
        return "saved " + time.strftime("%H:%M:%S", time.localtime(self.last_saved))

    # ----- training runs ------------------------------------------------------------------
    def on_training_event(self, event) -> None:
        """Record finished runs in the project; after a crash, offer to resume from the checkpoint."""
        if isinstance(event, TrainingStarted):
            self._annotated_at_start = event.annotated_slices
            self.last_checkpoint = None
        elif isinstance(event, CheckpointSaved):
            self.last_checkpoint = event
        elif isinstance(event, TrainingFinished) and self.project is not None:
            try:
                self.project.record_run(event.model_path, self.widget.strategy_combo.currentData(),
                                        self._annotated_at_start, event.iteration)
            except ProjectError as error:
                show_warning(str(error))
        elif isinstance(event, TrainingFailed) and self.last_checkpoint is not None:
            self.widget.last_model = self.last_checkpoint.path
            self.widget.continue_check.setEnabled(True)
            self.widget.continue_check.setChecked(True)
            self.widget.status_label.setText(
                f"{self.widget.status_label.text()} Training will resume from the checkpoint at iteration "
                f"{self.last_checkpoint.iteration}."
            )

    # ----- export -------------------------------------------------------------------------
    def export_all(self, folder: str | Path) -> list[Path]:
        """Write labels, certainty and provenance (when present) in the image's geometry, verified."""
        labels = self.widget.labels_layer
        if labels is None:
            show_warning("Pick a labels layer to export.")
            return []
        stem = self.volume_name or labels.name.replace(" ", "_")
        items = [ExportItem("seg", np.asarray(labels.data))]
        left_out = ""
        certainty = self.viewer.layers[CERTAINTY_LAYER] if CERTAINTY_LAYER in self.viewer.layers else None
        if certainty is not None and is_preview(certainty):
            left_out = (" The certainty map was left out: it holds training previews of a few slices; "
                        "export again once training has finished.")
        elif certainty is not None and certainty.data.shape == labels.data.shape:
            items.append(ExportItem("certainty", np.asarray(certainty.data)))
        provenance = self.provenance.now(labels)
        if provenance is not None:
            record = provenance.to_json(labels_file=f"{stem}_seg.nii.gz", provenance_map=f"{stem}_provenance.nii.gz")
            items.append(ExportItem("provenance", provenance.codes, record))
        try:
            result = export_maps(folder, stem, layer_geometry(layer_meta(labels)), items)
        except (VolumeError, RuntimeError) as error:
            self._fail(str(error))
            return []
        message = f"Exported and verified {result.describe()} in {folder}.{left_out}"
        self.widget.status_label.setText(message)
        show_info(message)
        return result.files

    def _fail(self, message: str) -> None:
        log.error(message)
        self.widget.status_label.setText(message)
        show_error(message)
