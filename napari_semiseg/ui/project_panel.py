"""Project box of the dock widget: create or open a project folder and autosave into it.

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
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from .._reader import geometry_layer_kwargs
from ..core.annotations import AnnotationScheme
from ..core.autosave import AutosaveClock
from ..core.project import Project, ProjectError
from ..core.provenance import Provenance
from ..core.volume import VolumeError, is_readable_path, read_volume, write_volume
from .layers import follow_voxel_edits, stop_following_voxel_edits, volume_from_layer
from .session import Session

log = logging.getLogger(__name__)

AUTOSAVE_POLL_MS = 250
RETRY_AFTER_FAILURE_SECONDS = 10.0


class ProjectPanel(QGroupBox):
    """Project folder controls: the session's project, its labels saved a few seconds after each edit."""

    def __init__(self, session: Session, clock: AutosaveClock | None = None):
        super().__init__("Project")
        self.session = session
        self.viewer = session.viewer
        self.clock = clock or AutosaveClock()
        self.labels_layer: Labels | None = None  # the labels being autosaved
        self.last_saved: float | None = None
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
        for button in (self.new_button, self.open_button):
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

    @property
    def project(self) -> Project | None:
        return self.session.project

    # ----- dialogs ------------------------------------------------------------------------
    def _choose_new(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the new project")
        if folder:
            self.create_project(folder)

    def _choose_open(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a project folder")
        if folder:
            self.open_project(folder)

    # ----- create and open ----------------------------------------------------------------
    def create_project(self, folder: str | Path) -> Project | None:
        """Make a project from the session's image and labels layers, and start autosaving them."""
        image, labels = self.session.image_layer, self.session.labels_layer
        if image is None:
            show_warning("Open an image first, then make a project for it.")
            return None
        try:
            project = Project.create(folder)  # never into an existing project: that would overwrite its labels
            name = self._add_image(project, image)
            if labels is None:
                labels = self.session.add_annotation_layer()
            project.set_scheme(self.session.scheme())
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
        self.session.choose_layers(image.name, labels.name)
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
            self.session.provenance.adopt(layer, Provenance.from_saved(saved.labels, saved.provenance))
        except (ValueError, KeyError) as error:
            note = f"The provenance of '{name}' could not be read ({error}); its labels count as painted by you."
            show_warning(note)
            log.warning(note)

    def _restore_scheme(self, scheme: AnnotationScheme) -> None:
        self.session.set_annotation(scheme.mode, scheme.background_label or None)
        others = [axis for axis in range(3) if axis != scheme.axis]
        self.viewer.dims.order = (scheme.axis, *others)

    def _attach(self, project: Project, name: str, labels: Labels) -> None:
        if self.labels_layer is not None and self.labels_layer is not labels:
            self.save_now()
            stop_following_voxel_edits(self.labels_layer, self._edited)
        self.labels_layer = labels
        follow_voxel_edits(labels, self._edited)  # undo and redo too: an undone stroke must not stay on disk
        self.session.set_project(project, name)
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
                self.project.set_scheme(self.session.scheme())
            provenance = self.session.provenance.now(self.labels_layer)
            self.project.save_annotations(self.session.volume_name, np.asarray(self.labels_layer.data),
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

    def _fail(self, message: str) -> None:
        self.session.say(message, error=True)
