"""Registration-propagated pseudo-labels: propagate painted slices, review scores, accept.

Propagation runs in a worker thread: SimpleITK releases the GIL while it registers, so the
viewer stays responsive, and the stop flag ends a running registration early.
"""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
)

from ..core.registration import PropagationFinished, RegistrationError, SlicePropagated, propagate_slices
from ..core.registration.slices import check_propagation_inputs
from .layers import accept_into, current_slice, painting_axis, upsert_layer
from .training_panel import QuietProgressBar

REGISTERED_LAYER = "registered pseudo-labels"
QUALITY_LAYER = "registration quality"


class PropagationPanel(QGroupBox):
    """Fill unpainted slices from painted ones by 2D registration, with a score per slice."""

    def __init__(self, viewer, image_layer: Callable, labels_layer: Callable, say: Callable[[str], None]):
        super().__init__("Registration pseudo-labels")
        self.viewer = viewer
        self._image_layer = image_layer
        self._labels_layer = labels_layer
        self._say = say
        self.result = None
        self.worker = None
        self._stop = threading.Event()
        self.on_result: Callable[[], None] | None = None  # called when new registered labels are shown
        self.recorder: Callable | None = None  # recorder(scope, **facts) -> accept_into's record callback
        self._build()

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        buttons = QHBoxLayout()
        self.propagate_button = QPushButton("Propagate painted slices")
        self.propagate_button.setToolTip("Register each painted slice to its neighbours and carry the labels over")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.propagate_button, 1)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.progress_bar = QuietProgressBar()
        layout.addWidget(self.progress_bar)
        self.slice_list = QListWidget()
        self.slice_list.setToolTip("Consistency score per slice, least trustworthy first; click to go there")
        self.slice_list.setMaximumHeight(120)
        layout.addWidget(QLabel("Slice scores (forward-backward consistency):"))
        layout.addWidget(self.slice_list)
        accept_row = QHBoxLayout()
        self.accept_slice_button = QPushButton("Accept slice")
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.0, 1.0)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setValue(0.7)
        self.threshold_spin.setToolTip("Accept registered labels where the per-voxel quality is at least this")
        self.accept_quality_button = QPushButton("Accept quality ≥")
        accept_row.addWidget(self.accept_slice_button)
        accept_row.addWidget(self.accept_quality_button)
        accept_row.addWidget(self.threshold_spin)
        layout.addLayout(accept_row)
        self.propagate_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.slice_list.itemClicked.connect(self._go_to_slice)
        self.accept_slice_button.clicked.connect(self.accept_slice)
        self.accept_quality_button.clicked.connect(self.accept_above_threshold)
        self._set_accept_enabled(False)

    def _set_accept_enabled(self, enabled: bool) -> None:
        for widget in (self.accept_slice_button, self.accept_quality_button, self.threshold_spin):
            widget.setEnabled(enabled)

    def start(self) -> bool:
        """Propagate the painted slices of the chosen labels layer in a worker thread."""
        image, labels = self._image_layer(), self._labels_layer()
        if image is None or labels is None:
            show_warning("Choose an image layer and a labels layer first.")
            return False
        axis = painting_axis(self.viewer)
        painted = np.array(labels.data, copy=True)
        try:  # bad input is said here, not raised in the worker thread as a traceback
            check_propagation_inputs(np.asarray(image.data), painted, axis)
        except RegistrationError as error:
            self._say(str(error))
            show_warning(str(error))
            return False
        self._stop = threading.Event()
        self.worker = create_worker(propagate_slices, np.asarray(image.data), painted, axis, stop=self._stop)
        self.worker.yielded.connect(self._on_event)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.propagate_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress_bar.setValue(0)
        self._say("Propagating painted slices by registration...")
        self.worker.start()
        return True

    def cancel(self) -> None:
        self._stop.set()

    def _on_event(self, event) -> None:
        if isinstance(event, SlicePropagated):
            self.progress_bar.setMaximum(event.total)
            self.progress_bar.setValue(event.done)
        elif isinstance(event, PropagationFinished):
            if event.cancelled or event.result is None:
                self._say("Propagation cancelled.")
                return
            self._show(event.result, event.seconds)

    def _on_error(self, error: Exception) -> None:
        message = str(error) if isinstance(error, RegistrationError) else f"Propagation failed: {error}"
        self._say(message)
        show_error(message)

    def _on_finished(self) -> None:
        self.propagate_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _show(self, result, seconds: float) -> None:
        self.result = result
        image = self._image_layer()
        upsert_layer(self.viewer, QUALITY_LAYER, result.quality.astype(np.float32), "image", image,
                     colormap="viridis", contrast_limits=(0.0, 1.0), opacity=0.4, visible=False)
        upsert_layer(self.viewer, REGISTERED_LAYER, result.labels, "labels", image, opacity=0.5)
        self.slice_list.clear()
        for index, score in sorted(result.slice_scores.items(), key=lambda item: item[1]):
            item = QListWidgetItem(f"slice {index}: {score:.2f}")
            item.setData(Qt.UserRole, int(index))
            self.slice_list.addItem(item)
        self._set_accept_enabled(True)
        labels = self._labels_layer()
        if labels is not None:
            self.viewer.layers.selection.active = labels
        self._say(f"Propagated to {len(result.slice_scores)} slices in {seconds:.1f} s; review the scores below.")
        if self.on_result is not None:
            self.on_result()

    def _go_to_slice(self, item: QListWidgetItem) -> None:
        axis = self.result.axis if self.result is not None else 0
        image = self._image_layer()
        if image is None:
            return
        world = image.data_to_world([item.data(Qt.UserRole) if a == axis else 0 for a in range(3)])
        self.viewer.dims.set_point(axis, world[axis])

    def accept_slice(self) -> int:
        """Accept the registered labels of the slice on screen (one undo step)."""
        labels = self._labels_layer()
        if labels is None or self.result is None:
            return 0
        region = [slice(None)] * 3
        region[self.result.axis] = current_slice(self.viewer, labels, self.result.axis)
        return self._accept(labels, tuple(region), "slice")

    def accept_above_threshold(self) -> int:
        """Accept registered labels wherever the quality reaches the threshold (one undo step)."""
        labels = self._labels_layer()
        if labels is None or self.result is None:
            return 0
        threshold = self.threshold_spin.value()
        return self._accept(labels, self.result.quality >= threshold, "quality threshold", threshold=threshold)

    def _accept(self, labels, region, scope: str, **facts) -> int:
        if self.result.labels.shape != labels.data.shape:
            show_error("The propagated labels do not match this labels layer; propagate again.")
            return 0
        record = self.recorder(scope, **facts) if self.recorder is not None else None
        changed = accept_into(labels, self.result.labels, region, record=record)
        self._say(f"Accepted {changed} registered voxels (Ctrl+Z in the labels layer undoes it).")
        return changed

