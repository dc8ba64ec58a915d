"""Accept box: the one set of controls that copies part of a proposal into the labels.

Every acceptance is computed by ``core.accept`` and written by :meth:`Session.accept` (one
``Labels.data_setitem``, so one undo step, noted in the provenance). The controls are enabled
only while the chosen source (the model's prediction or the registered labels) has a proposal.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
)

from ..core import accept as edits
from ..core.provenance import slices_touched
from .layers import REGION_LAYER, current_slice, geometry_kwargs, painting_axis
from .session import Session

MODEL, REGISTRATION = "model", "registration"


class AcceptPanel(QGroupBox):
    """Accept all, a slice, a label, a component, or the certain voxels of a region."""

    def __init__(self, session: Session):
        super().__init__("Accept")
        self.session = session
        self.viewer = session.viewer
        self._build()
        self.viewer.mouse_drag_callbacks.append(self._on_click)
        session.proposal_changed.connect(lambda *args: self._choose_source(MODEL))
        session.registration_changed.connect(self._registration_arrived)
        self._update_controls()

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        self.source_combo = QComboBox()
        self.source_combo.addItem("model prediction", MODEL)
        self.source_combo.addItem("registered labels", REGISTRATION)
        self.source_combo.setToolTip("What the accept buttons take labels from")
        top.addWidget(QLabel("Accept from"))
        top.addWidget(self.source_combo, 1)
        layout.addLayout(top)
        grid = QGridLayout()
        self.accept_all_button = QPushButton("Accept all")
        self.accept_all_button.setToolTip("Copy the whole proposal into the labels (painted voxels are kept)")
        self.accept_slice_button = QPushButton("Accept slice")
        self.accept_slice_button.setToolTip("Copy the proposal of the slice on screen into the labels")
        self.label_combo = QComboBox()
        self.label_combo.setToolTip("Label value to accept")
        self.accept_label_button = QPushButton("Accept label")
        self.accept_component_button = QPushButton("Accept component at cursor")
        self.accept_component_button.setToolTip("The 3D connected piece of the proposal under the mouse pointer")
        self.click_check = QCheckBox("Click picks")
        self.click_check.setToolTip("While ticked, a click in the canvas accepts the component under it")
        self.threshold_slider = QSlider(Qt.Horizontal)
        self.threshold_slider.setRange(0, 100)
        self.threshold_slider.setValue(70)
        self.threshold_value = QLabel("0.70")
        self.draw_region_button = QPushButton("Draw region")
        self.draw_region_button.setToolTip("Add a shapes layer: draw rectangles or polygons on the slice")
        self.depth_spin = QSpinBox()
        self.depth_spin.setRange(0, 999)
        self.depth_spin.setPrefix("± ")
        self.depth_spin.setSuffix(" slices")
        self.depth_spin.setToolTip("Extend each drawn shape through this many slices on each side (a 3D box)")
        self.accept_certain_button = QPushButton("Accept certain")
        self.accept_certain_button.setToolTip("Accept voxels whose fused certainty reaches the threshold: inside "
                                              "the drawn region, or everywhere when no region is drawn")
        threshold_row = QHBoxLayout()
        threshold_row.addWidget(QLabel("Certainty ≥"))
        threshold_row.addWidget(self.threshold_slider, 1)
        threshold_row.addWidget(self.threshold_value)
        grid.addWidget(self.accept_all_button, 0, 0)
        grid.addWidget(self.accept_slice_button, 0, 1)
        grid.addWidget(self.label_combo, 1, 0)
        grid.addWidget(self.accept_label_button, 1, 1)
        grid.addWidget(self.accept_component_button, 2, 0)
        grid.addWidget(self.click_check, 2, 1)
        grid.addLayout(threshold_row, 3, 0, 1, 2)
        grid.addWidget(self.draw_region_button, 4, 0)
        grid.addWidget(self.depth_spin, 4, 1)
        grid.addWidget(self.accept_certain_button, 5, 0, 1, 2)
        layout.addLayout(grid)
        self.overwrite_check = QCheckBox("Overwrite voxels I painted")
        self.overwrite_check.setToolTip("Off (default): acceptances never change a labelled voxel")
        layout.addWidget(self.overwrite_check)
        self.accept_all_button.clicked.connect(self.accept_all)
        self.accept_slice_button.clicked.connect(self.accept_slice)
        self.accept_label_button.clicked.connect(self.accept_label)
        self.accept_component_button.clicked.connect(self.accept_component_at_cursor)
        self.click_check.toggled.connect(self._on_click_mode)
        self.threshold_slider.valueChanged.connect(lambda v: self.threshold_value.setText(f"{v / 100:.2f}"))
        self.draw_region_button.clicked.connect(self.add_region_layer)
        self.accept_certain_button.clicked.connect(self.accept_certain)
        self.source_combo.currentIndexChanged.connect(self._update_controls)

    @property
    def threshold(self) -> float:
        return self.threshold_slider.value() / 100.0

    # ----- the source -------------------------------------------------------------------
    def _choose_source(self, source: str) -> None:
        self.source_combo.setCurrentIndex(self.source_combo.findData(source))
        self._update_controls()

    def _registration_arrived(self, *args) -> None:
        """New registered labels: accept from them unless a prediction exists."""
        self._choose_source(MODEL if self.session.proposal is not None else REGISTRATION)

    def proposal(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(labels, certainty) of the chosen source, or None."""
        if self.source_combo.currentData() == MODEL:
            proposal = self.session.proposal
            return None if proposal is None else (proposal.labels, proposal.certainty)
        result = self.session.registration
        return None if result is None else (result.labels, result.quality)

    def _update_controls(self, *args) -> None:
        proposal = self.proposal()
        for widget in (self.accept_all_button, self.accept_slice_button, self.label_combo, self.accept_label_button,
                       self.accept_component_button, self.click_check, self.accept_certain_button):
            widget.setEnabled(proposal is not None)
        current = self.label_combo.currentData()
        self.label_combo.clear()
        for value in np.unique(proposal[0]) if proposal is not None else ():
            if value != 0:
                self.label_combo.addItem(f"label {int(value)}", int(value))
        if current is not None and self.label_combo.findData(current) >= 0:
            self.label_combo.setCurrentIndex(self.label_combo.findData(current))

    # ----- acceptance ---------------------------------------------------------------
    def accept_all(self) -> int:
        """Accept the whole proposal (one undo step)."""
        return self._accept("all", lambda labels, proposal, certainty: edits.acceptance_edit(
            labels, proposal, None, self.overwrite_check.isChecked()))

    def accept_slice(self) -> int:
        """Accept the proposal on the slice on screen (one undo step)."""
        layer = self.session.labels_layer
        if layer is None:
            return 0
        axis = painting_axis(self.viewer)
        index = current_slice(self.viewer, layer, axis)
        return self._accept("slice", lambda labels, proposal, certainty: edits.accept_slice_edit(
            labels, proposal, axis, index, self.overwrite_check.isChecked()))

    def accept_label(self, label: int | None = None) -> int:
        """Accept every voxel of one label value (the picked one by default; one undo step)."""
        label = self.label_combo.currentData() if label is None else label
        if label is None:
            show_warning("There is no label to accept: the proposal is empty.")
            return 0
        return self._accept("label", lambda labels, proposal, certainty: edits.accept_label_edit(
            labels, proposal, int(label), None, self.overwrite_check.isChecked()), label=int(label))

    def accept_component_at_cursor(self) -> int:
        """Accept the connected component under the mouse pointer (one undo step)."""
        return self.accept_component_at(self.viewer.cursor.position)

    def accept_component_at(self, world_position) -> int:
        """Accept the connected component of the proposal at a world position (one undo step)."""
        layer = self.session.labels_layer
        if layer is None:
            return 0
        point = np.asarray(layer.world_to_data(tuple(world_position)[-layer.ndim:]))
        return self._accept("component", lambda labels, proposal, certainty: edits.accept_component_edit(
            labels, proposal, point, self.overwrite_check.isChecked()),
            point=[int(round(float(c))) for c in point])

    def _on_click_mode(self, checked: bool) -> None:
        layer = self.session.labels_layer
        if checked and layer is not None and layer.mode != "pan_zoom":
            layer.mode = "pan_zoom"  # a click should pick, not paint
        self.session.say("Click a predicted structure to accept it." if checked else "")

    def _on_click(self, viewer, event) -> None:
        if self.click_check.isChecked() and event.type == "mouse_press" and event.button == 1:
            self.accept_component_at(event.position)

    def add_region_layer(self):
        """A shapes layer on the image's grid to draw regions in (rectangle tool selected)."""
        image = self.session.image_layer
        if image is None:
            show_warning("Open an image first.")
            return None
        if REGION_LAYER in self.viewer.layers:
            layer = self.viewer.layers[REGION_LAYER]
        else:
            kwargs = geometry_kwargs(image, REGION_LAYER)
            kwargs.pop("metadata", None)
            layer = self.viewer.add_shapes(ndim=image.ndim, edge_color="cyan", face_color=[0, 1, 1, 0.1],
                                           edge_width=0.5, **kwargs)
        self.viewer.layers.selection.active = layer
        layer.mode = "add_rectangle"
        return layer

    def region_mask(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """Union of the drawn shapes in the labels' voxel grid, each extended ± depth slices."""
        labels = self.session.labels_layer
        if REGION_LAYER not in self.viewer.layers or labels is None or not len(self.viewer.layers[REGION_LAYER].data):
            return None
        shapes = self.viewer.layers[REGION_LAYER]
        axis = painting_axis(self.viewer)
        in_plane = [a for a in range(3) if a != axis]
        depth = self.depth_spin.value()
        mask = np.zeros(shape, dtype=bool)
        for vertices in shapes.data:
            voxels = np.array([labels.world_to_data(shapes.data_to_world(v)) for v in vertices])
            along = np.round(voxels[:, axis]).astype(int)
            mask |= edits.prism_mask(shape, axis, voxels[:, in_plane], along.min() - depth, along.max() + depth)
        return mask

    def accept_certain(self) -> int:
        """Accept voxels whose fused certainty reaches the threshold, inside the drawn region if
        there is one, else everywhere (one undo step)."""
        layer = self.session.labels_layer
        if layer is None:
            return 0
        try:
            region = self.region_mask(layer.data.shape)
        except ValueError as error:
            show_error(str(error))
            return 0
        threshold, review = self.threshold, self.session.review

        def edit(labels, proposal, certainty):
            fused = review.certainty if review is not None and review.certainty.shape == labels.shape else certainty
            return edits.accept_confident_edit(labels, proposal, fused, threshold, region,
                                               self.overwrite_check.isChecked())
        details = {"threshold": threshold, "region_voxels": None if region is None else int(region.sum())}
        return self._accept("region" if region is not None else "certain", edit, **details)

    def _accept(self, scope: str, make_edit: Callable, **details) -> int:
        layer, source, proposal = self.session.labels_layer, self.source_combo.currentData(), self.proposal()
        if layer is None or proposal is None:
            show_warning("Pick a labels layer to accept into." if layer is None else
                         "Train a model first: there is no prediction to accept." if source == MODEL else
                         "Propagate painted slices first: there are no registered labels to accept.")
            return 0
        labels = np.asarray(layer.data)
        if proposal[0].shape != labels.shape:
            show_error("The proposal does not match this labels layer's shape; choose the layer you trained on.")
            return 0
        try:
            indices, values = make_edit(labels, proposal[0], proposal[1])
        except ValueError as error:
            self.session.say(str(error))
            show_warning(str(error))
            return 0
        if len(indices[0]) == 0:
            self.session.say("Nothing to accept there: no unlabelled voxels would change.")
            return 0
        facts = {**self._source_facts(source, indices), **{k: v for k, v in details.items() if v is not None}}
        written = self.session.accept(indices, values, source, scope, **facts)
        self.session.say(f"Accepted {written} voxels ({scope}, from the {source}); "
                         "Ctrl+Z in the labels layer undoes it.")
        return written

    def _source_facts(self, source: str, indices) -> dict:
        axis = painting_axis(self.viewer)
        facts: dict = {"axis": axis, "slices": slices_touched(indices, axis)}
        if source == MODEL:
            return {**facts, **self.session.proposal.facts}
        result = self.session.registration
        touched = slices_touched(indices, result.axis)
        scores = {str(i): float(result.slice_scores[i]) for i in touched if i in result.slice_scores}
        return {"axis": result.axis, "slices": touched, "registration_scores": scores}

    def close_callbacks(self) -> None:
        """Stop listening to the viewer's mouse (when the widget closes)."""
        if self._on_click in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.remove(self._on_click)
