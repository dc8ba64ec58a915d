"""Registration box: propagate painted slices to their neighbours, with a score per slice.

The result becomes the session's registration proposal; it is accepted in the accept box.

Propagation runs in a worker thread: SimpleITK releases the GIL while it registers, so the
viewer stays responsive, and the stop flag ends a running registration early.
"""

from __future__ import annotations

import threading
import numpy as np
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
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
from .curves import QuietProgressBar
from .layers import QUALITY_LAYER, REGISTERED_LAYER, painting_axis, upsert_layer
from .session import Session


class PropagationPanel(QGroupBox):
    """Fill unpainted slices from painted ones by 2D registration, with a score per slice."""

    def __init__(self, session: Session):
        super().__init__("Registration pseudo-labels")
        self.session = session
        self.viewer = session.viewer
        self.worker = None
        self._stop = threading.Event()
        self._build()

    @property
    def result(self):
        return self.session.registration

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
        self.propagate_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.slice_list.itemClicked.connect(self._go_to_slice)

    def start(self) -> bool:
        """Propagate the painted slices of the chosen labels layer in a worker thread."""
        image, labels = self.session.image_layer, self.session.labels_layer
        if image is None or labels is None:
            show_warning("Choose an image layer and a labels layer first.")
            return False
        axis = painting_axis(self.viewer)
        painted = np.array(labels.data, copy=True)
        try:  # bad input is said here, not raised in the worker thread as a traceback
            check_propagation_inputs(np.asarray(image.data), painted, axis)
        except RegistrationError as error:
            self.session.say(str(error))
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
        self.session.say("Propagating painted slices by registration...")
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
                self.session.say("Propagation cancelled.")
                return
            self._show(event.result, event.seconds)

    def _on_error(self, error: Exception) -> None:
        message = str(error) if isinstance(error, RegistrationError) else f"Propagation failed: {error}"
        self.session.say(message)
        show_error(message)

    def _on_finished(self) -> None:
        self.propagate_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _show(self, result, seconds: float) -> None:
        image = self.session.image_layer
        upsert_layer(self.viewer, QUALITY_LAYER, result.quality.astype(np.float32), "image", image,
                     colormap="viridis", contrast_limits=(0.0, 1.0), opacity=0.4, visible=False)
        upsert_layer(self.viewer, REGISTERED_LAYER, result.labels, "labels", image, opacity=0.5)
        self.slice_list.clear()
        for index, score in sorted(result.slice_scores.items(), key=lambda item: item[1]):
            item = QListWidgetItem(f"slice {index}: {score:.2f}")
            item.setData(Qt.UserRole, int(index))
            self.slice_list.addItem(item)
        labels = self.session.labels_layer
        if labels is not None:
            self.viewer.layers.selection.active = labels
        self.session.set_registration(result)
        self.session.say(f"Propagated to {len(result.slice_scores)} slices in {seconds:.1f} s; review the scores "
                         "below and accept them in the Accept box.")

    def _go_to_slice(self, item: QListWidgetItem) -> None:
        axis = self.result.axis if self.result is not None else 0
        image = self.session.image_layer
        if image is None:
            return
        world = image.data_to_world([item.data(Qt.UserRole) if a == axis else 0 for a in range(3)])
        self.viewer.dims.set_point(axis, world[axis])
