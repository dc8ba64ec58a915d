"""Data box: which image and labels layers the session works on, how they are annotated, and how
much is annotated so far."""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QPushButton, QSpinBox

from ..core.annotations import AnnotationMode, annotated_slices
from .layers import (
    AXIS_NAMES,
    COMPARE_LAYER_PREFIX,
    PLUGIN_IMAGE_LAYERS,
    PLUGIN_LABELS_LAYERS,
    follow_voxel_edits,
    painting_axis,
)
from .session import Session

SUMMARY_DELAY_MS = 300


class DataPanel(QGroupBox):
    """Layer pickers, annotation mode and the annotated-slices line."""

    def __init__(self, session: Session):
        super().__init__("Data")
        self.session = session
        self.viewer = session.viewer
        # a paint event per stroke would rescan the whole volume; one rescan after a burst suffices
        self._summary_timer = QTimer(self)
        self._summary_timer.setSingleShot(True)
        self._summary_timer.setInterval(SUMMARY_DELAY_MS)
        self._summary_timer.timeout.connect(self.update_annotated_summary)
        self._build()
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.reordered):
            event.connect(self.refresh_layers)
        self.viewer.dims.events.order.connect(self.update_annotated_summary)
        session.layers_changed.connect(self._show_choice)
        session.scheme_changed.connect(self._show_scheme)
        self.refresh_layers()

    def _build(self) -> None:
        form = QFormLayout(self)
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
        self.background_spin.setValue(self.session.background_label)
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
        self.mode_combo.currentIndexChanged.connect(self._scheme_chosen)
        self.background_spin.valueChanged.connect(self._scheme_chosen)
        self.image_combo.currentIndexChanged.connect(self._layers_chosen)
        self.labels_combo.currentIndexChanged.connect(self._layers_chosen)

    # ----- the choice: combo boxes -> session -> combo boxes ---------------------------
    def refresh_layers(self, event=None) -> None:
        """Fill the layer pickers with the user's layers, keeping the choice where it still exists."""
        images = [l.name for l in self.viewer.layers if isinstance(l, Image) and l.name not in PLUGIN_IMAGE_LAYERS]
        labels = [l.name for l in self.viewer.layers
                  if isinstance(l, Labels) and l.name not in PLUGIN_LABELS_LAYERS and not l.name.startswith(COMPARE_LAYER_PREFIX)]
        _fill(self.image_combo, images, self.session.image_name)
        _fill(self.labels_combo, labels, self.session.labels_name)
        self._layers_chosen()

    def _layers_chosen(self, *args) -> None:
        self.session.choose_layers(self.image_combo.currentText() or None, self.labels_combo.currentText() or None)
        self._show_choice()

    def _show_choice(self) -> None:
        for combo, name in ((self.image_combo, self.session.image_name), (self.labels_combo, self.session.labels_name)):
            if name is not None and combo.currentText() != name and combo.findText(name) >= 0:
                combo.setCurrentText(name)
        layer = self.session.labels_layer
        if layer is not None:
            follow_voxel_edits(layer, self._schedule_summary)  # undo too: the summary must not go stale
        self.update_annotated_summary()

    def _scheme_chosen(self, *args) -> None:
        self.session.set_annotation(AnnotationMode(self.mode_combo.currentData()), self.background_spin.value())

    def _show_scheme(self) -> None:
        for widget in (self.mode_combo, self.background_spin):
            widget.blockSignals(True)
        self.mode_combo.setCurrentIndex(max(0, self.mode_combo.findData(self.session.mode.value)))
        self.background_spin.setValue(self.session.background_label)
        for widget in (self.mode_combo, self.background_spin):
            widget.blockSignals(False)
        self.background_spin.setEnabled(self.session.mode is AnnotationMode.SCRIBBLES)
        self.update_annotated_summary()

    def add_annotation_layer(self) -> Labels | None:
        """An empty labels layer on the image's grid, chosen for painting."""
        if self.session.image_layer is None:
            show_warning("Open an image first.")
            return None
        return self.session.add_annotation_layer()

    # ----- the annotated summary -------------------------------------------------------
    def _schedule_summary(self) -> None:
        self._summary_timer.start()

    def update_annotated_summary(self, event=None) -> None:
        layer = self.session.labels_layer
        if layer is None or layer.ndim != 3:
            self.annotated_label.setText("Pick or create a 3D labels layer.")
            return
        axis = painting_axis(self.viewer)
        indices = annotated_slices(np.asarray(layer.data), axis)
        shown = ", ".join(str(i) for i in indices[:20]) + (" ..." if len(indices) > 20 else "")
        self.annotated_label.setText(
            f"{len(indices)} of {layer.data.shape[axis]} slices along {AXIS_NAMES[axis]}" + (f": {shown}" if shown else "")
        )


def _fill(combo: QComboBox, names: list[str], chosen: str | None) -> None:
    current = chosen if chosen in names else combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(names)
    if current in names:
        combo.setCurrentText(current)
    combo.blockSignals(False)
