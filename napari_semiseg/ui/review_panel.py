"""Review and accept: the fused certainty map, slices to look at next, partial acceptance, provenance.

Every acceptance is one ``Labels.data_setitem`` (one undo step) and is noted in the provenance,
which follows the labels layer: painting and erasing through its paint events, undo and redo
through the layer's Ctrl+Z / Ctrl+Shift+Z (``layers.follow_voxel_edits``),
and anything else at the latest before the next acceptance, ranking or export.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from napari.utils.colormaps import Colormap, DirectLabelColormap
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
)

from .._writer import write_provenance
from ..core import accept as edits
from ..core.certainty import ReviewMap, fuse_certainty, rank_slices, registered_mask, slice_summaries
from ..core.provenance import CODE_NAMES, Provenance, slices_touched
from .layers import current_slice, follow_voxel_edits, geometry_kwargs, layer_meta, painting_axis, upsert_layer
from .provenance_tracker import ProvenanceTracker

REVIEW_LAYER = "review certainty"
PROVENANCE_LAYER = "provenance"
REGION_LAYER = "review region"
MODEL, REGISTRATION = "model", "registration"
SYNC_DELAY_MS = 300
LISTED_SLICES = 30
DOUBTFUL_SLICE = 0.8  # a slice whose mean review certainty is below this is counted as doubtful
# Additive blending makes black invisible: certain voxels leave the image as it is, doubtful ones glow.
REVIEW_COLORMAP = Colormap([[1.0, 1.0, 0.3, 1.0], [1.0, 0.1, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]],
                           controls=[0.0, 0.5, 1.0], name="semiseg review")
PROVENANCE_COLORS = {
    None: (0, 0, 0, 0),
    0: (0, 0, 0, 0),
    1: (0.25, 0.55, 1.0, 1.0),  # painted by user: blue
    2: (0.2, 0.85, 0.3, 1.0),  # accepted from model: green
    3: (1.0, 0.65, 0.1, 1.0),  # accepted from registration: orange
    4: (1.0, 0.15, 0.6, 1.0),  # edited after acceptance: magenta
}


class ReviewPanel(QGroupBox):
    """Fused certainty, a ranked next-slice list and acceptance of part of a proposal."""

    def __init__(self, viewer, image_layer: Callable, labels_layer: Callable, registration: Callable,
                 say: Callable[[str], None], tracker: ProvenanceTracker | None = None):
        super().__init__("Review and accept")
        self.viewer = viewer
        self._image_layer = image_layer
        self._labels_layer = labels_layer
        self._registration = registration
        self._say = say
        self.prediction = None  # (labels, certainty, disagreement)
        self.model_facts: dict = {}
        self.review: ReviewMap | None = None
        self.summaries = []
        self._axis = 0
        self.tracker = tracker or ProvenanceTracker()
        self._sync_timer = QTimer(self)
        self._sync_timer.setSingleShot(True)
        self._sync_timer.setInterval(SYNC_DELAY_MS)
        self._sync_timer.timeout.connect(self.sync_provenance)
        self._build()
        self.viewer.mouse_drag_callbacks.append(self._on_click)

    # ----- construction -------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        self.update_button = QPushButton("Update certainty map")
        self.update_button.setToolTip("Fuse entropy, network disagreement and registration quality; rank slices")
        self.source_combo = QComboBox()
        self.source_combo.addItem("model prediction", MODEL)
        self.source_combo.addItem("registered labels", REGISTRATION)
        self.source_combo.setToolTip("What the accept buttons below take labels from")
        top.addWidget(self.update_button)
        top.addWidget(QLabel("Accept from"))
        top.addWidget(self.source_combo, 1)
        layout.addLayout(top)
        layout.addWidget(QLabel("Look next (least certain first; click to go there):"))
        self.next_list = QListWidget()
        self.next_list.setMaximumHeight(110)
        layout.addWidget(self.next_list)
        self.summary_label = QLabel("")
        self.summary_label.setWordWrap(True)
        layout.addWidget(self.summary_label)
        layout.addLayout(self._accept_grid())
        self.overwrite_check = QCheckBox("Overwrite voxels I painted")
        self.overwrite_check.setToolTip("Off (default): acceptances never change a labelled voxel")
        layout.addWidget(self.overwrite_check)
        self.provenance_label = QLabel("Provenance: -")
        self.provenance_label.setWordWrap(True)
        layout.addWidget(self.provenance_label)
        self.update_button.clicked.connect(self.update_review)
        self.next_list.itemClicked.connect(self._go_to_item)
        self.source_combo.currentIndexChanged.connect(self._fill_label_combo)

    def _accept_grid(self) -> QGridLayout:
        grid = QGridLayout()
        self.accept_all_button = QPushButton("Accept all")
        self.accept_slice_button = QPushButton("Accept slice")
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
        self.accept_region_button = QPushButton("Accept certain in region")
        self.accept_region_button.setToolTip("Accept voxels in the drawn region whose fused certainty reaches the threshold")
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
        grid.addWidget(self.accept_region_button, 5, 0, 1, 2)
        self.accept_all_button.clicked.connect(self.accept_all)
        self.accept_slice_button.clicked.connect(self.accept_slice)
        self.accept_label_button.clicked.connect(self.accept_label)
        self.accept_component_button.clicked.connect(self.accept_component_at_cursor)
        self.click_check.toggled.connect(self._on_click_mode)
        self.threshold_slider.valueChanged.connect(lambda v: self.threshold_value.setText(f"{v / 100:.2f}"))
        self.draw_region_button.clicked.connect(self.add_region_layer)
        self.accept_region_button.clicked.connect(self.accept_in_region)
        return grid

    @property
    def threshold(self) -> float:
        return self.threshold_slider.value() / 100.0

    # ----- inputs -------------------------------------------------------------------
    def set_prediction(self, labels: np.ndarray, certainty: np.ndarray, disagreement: np.ndarray | None,
                       **model_facts) -> None:
        """A new model prediction: refresh the certainty map and the next-slice list."""
        self.prediction = (labels, certainty, disagreement)
        self.model_facts = {key: value for key, value in model_facts.items() if value is not None}
        self.source_combo.setCurrentIndex(self.source_combo.findData(MODEL))
        self.update_review()

    def note_model(self, **facts) -> None:
        """Add facts about the model behind the prediction (iteration, strategy) to its acceptances."""
        self.model_facts.update({key: value for key, value in facts.items() if value is not None})

    def registration_updated(self) -> None:
        """New registered labels: refresh the map; accept from them unless a prediction exists."""
        if self.prediction is None:
            self.source_combo.setCurrentIndex(self.source_combo.findData(REGISTRATION))
        self.update_review()

    def _proposal(self, source: str | None = None):
        """(labels, certainty) of the chosen source, or None with a message."""
        source = source or self.source_combo.currentData()
        if source == MODEL:
            if self.prediction is None:
                show_warning("Train a model first: there is no prediction to accept.")
                return None
            return self.prediction[0], self.prediction[1]
        result = self._registration()
        if result is None:
            show_warning("Propagate painted slices first: there are no registered labels to accept.")
            return None
        return result.labels, result.quality

    # ----- certainty map and ranking ------------------------------------------------
    def update_review(self) -> bool:
        """Fuse the signals available into the review certainty layer and rank the slices."""
        image = self._image_layer()
        result = self._registration()
        prediction = self.prediction
        if image is None or (prediction is None and result is None):
            self._say("Train a model or propagate registered labels to see what needs review.")
            return False
        shape = image.data.shape
        certainty, disagreement = (prediction[1], prediction[2]) if prediction is not None and \
            prediction[1].shape == shape else (None, None)
        quality = covered = None
        if result is not None and result.quality.shape == shape:
            quality = result.quality
            covered = registered_mask(shape, result.axis, list(result.slice_scores))
        if certainty is None and quality is None:
            self._say("The prediction and registered labels do not match the image; train or propagate again.")
            return False
        self.review = fuse_certainty(certainty, disagreement, quality, covered)
        self._axis = painting_axis(self.viewer)
        self.summaries = slice_summaries(self.review, self._axis)
        self._upsert_review_layer(self.review.certainty, image)
        self.sync_provenance()
        self._fill_label_combo()
        self._select_labels()
        return True

    def prepare_review_layer(self) -> None:
        """Create the review certainty layer now (hidden, all certain) if it is missing, so that
        the first prediction only writes its data (a new layer stalls the viewer ~170 ms)."""
        image = self._image_layer()
        if image is not None and REVIEW_LAYER not in self.viewer.layers:
            self._upsert_review_layer(np.ones(image.data.shape, np.float32), image)

    def _upsert_review_layer(self, certainty: np.ndarray, image) -> None:
        # created hidden: one overlay at a time, the proposal; the review map is a click away
        upsert_layer(self.viewer, REVIEW_LAYER, certainty, "image", image, colormap=REVIEW_COLORMAP,
                     contrast_limits=(0.0, 1.0), opacity=0.7, blending="additive", visible=False)

    def _fill_next_list(self, provenance: Provenance | None) -> None:
        self.next_list.clear()
        if not self.summaries:
            return
        skip = self._painted_slices(provenance)
        scores = self._registration_scores()
        ranked = rank_slices(self.summaries, skip)
        if ranked:
            mean = float(np.mean([summary.certainty for summary in ranked]))
            doubtful = sum(summary.certainty < DOUBTFUL_SLICE for summary in ranked)
            self.summary_label.setText(f"{len(ranked)} unpainted slices: mean certainty {mean:.2f}, "
                                       f"{doubtful} below {DOUBTFUL_SLICE:.2f}.")
        for summary in ranked[:LISTED_SLICES]:
            text = summary.describe()
            if summary.index in scores:
                text += f" (registration score {scores[summary.index]:.2f})"
            item = QListWidgetItem(text)
            item.setData(Qt.UserRole, summary.index)
            self.next_list.addItem(item)

    def _painted_slices(self, provenance: Provenance | None) -> np.ndarray:
        if provenance is None:
            return np.array([], dtype=int)
        painted = provenance.user_painted()
        return np.flatnonzero(painted.any(axis=tuple(a for a in range(painted.ndim) if a != self._axis)))

    def _registration_scores(self) -> dict[int, float]:
        result = self._registration()
        if result is None or result.axis != self._axis:
            return {}
        return {int(k): float(v) for k, v in result.slice_scores.items()}

    def _go_to_item(self, item: QListWidgetItem) -> None:
        self.go_to_slice(int(item.data(Qt.UserRole)))

    def go_to_slice(self, index: int) -> None:
        """Show slice ``index`` along the ranking's axis."""
        image = self._image_layer()
        if image is None:
            return
        world = image.data_to_world([index if a == self._axis else 0 for a in range(image.ndim)])
        self.viewer.dims.set_point(self._axis, world[self._axis])

    def _fill_label_combo(self, *args) -> None:
        proposal = self._proposal_quietly()
        current = self.label_combo.currentData()
        self.label_combo.clear()
        if proposal is None:
            return
        for value in np.unique(proposal):
            if value != 0:
                self.label_combo.addItem(f"label {int(value)}", int(value))
        if current is not None and self.label_combo.findData(current) >= 0:
            self.label_combo.setCurrentIndex(self.label_combo.findData(current))

    def _proposal_quietly(self) -> np.ndarray | None:
        if self.source_combo.currentData() == MODEL:
            return None if self.prediction is None else self.prediction[0]
        result = self._registration()
        return None if result is None else result.labels

    # ----- provenance ---------------------------------------------------------------
    def provenance(self, layer=None) -> Provenance | None:
        """The provenance of a labels layer (the chosen one by default), tracked from now on."""
        layer = layer if layer is not None else self._labels_layer()
        provenance = self.tracker.of(layer)
        if provenance is not None:
            follow_voxel_edits(layer, self._schedule_sync)
        return provenance

    def _schedule_sync(self) -> None:
        self._sync_timer.start()

    def sync_provenance(self) -> Provenance | None:
        """Update the provenance from the labels, show it, and re-rank without painted slices."""
        layer = self._labels_layer()
        provenance = self.provenance(layer)
        if provenance is None:
            return None
        provenance.update(np.asarray(layer.data))
        self._show_provenance(layer, provenance)
        self._fill_next_list(provenance)
        return provenance

    def _show_provenance(self, layer, provenance: Provenance) -> None:
        if PROVENANCE_LAYER in self.viewer.layers:
            self.viewer.layers[PROVENANCE_LAYER].data = provenance.codes.copy()
        elif provenance.codes.any():
            kwargs = geometry_kwargs(layer, PROVENANCE_LAYER)
            self.viewer.add_labels(provenance.codes.copy(), opacity=0.6, visible=False,
                                   colormap=DirectLabelColormap(color_dict=PROVENANCE_COLORS), **kwargs)
            self._select_labels()
        counts = {name: count for name, count in provenance.counts().items() if name != CODE_NAMES[0] and count}
        self.provenance_label.setText(
            "Provenance: " + (", ".join(f"{count} {name}" for name, count in counts.items()) or "nothing labelled yet")
        )

    def recorder(self, source: str, scope: str, **details) -> Callable:
        """A ``record`` callback for :func:`accept_into`: notes the acceptance in the provenance."""
        def record(labels_before: np.ndarray, indices, values) -> None:
            layer = self._labels_layer()
            provenance = self.provenance(layer)
            if provenance is None or provenance.shape != labels_before.shape:
                return
            provenance.update(labels_before)
            provenance.record_acceptance(labels_before, indices, values, source, scope,
                                         **self._source_facts(source, indices), **details)
            self._schedule_sync()
        return record

    def _source_facts(self, source: str, indices) -> dict:
        axis = painting_axis(self.viewer)
        facts: dict = {"axis": axis, "slices": slices_touched(indices, axis)}
        if source == MODEL:
            facts.update(self.model_facts)
            return facts
        result = self._registration()
        if result is not None:
            touched = slices_touched(indices, result.axis)
            facts["axis"] = result.axis
            facts["slices"] = touched
            facts["registration_scores"] = {str(i): float(result.slice_scores[i]) for i in touched
                                            if i in result.slice_scores}
        return facts

    # ----- acceptance ---------------------------------------------------------------
    def accept_all(self) -> int:
        """Accept the whole proposal (one undo step)."""
        return self._accept("all", lambda labels, proposal, certainty: edits.acceptance_edit(
            labels, proposal, None, self.overwrite_check.isChecked()))

    def accept_slice(self) -> int:
        """Accept the proposal on the slice on screen (one undo step)."""
        layer = self._labels_layer()
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
        layer = self._labels_layer()
        if layer is None:
            return 0
        point = np.asarray(layer.world_to_data(tuple(world_position)[-layer.ndim:]))
        return self._accept("component", lambda labels, proposal, certainty: edits.accept_component_edit(
            labels, proposal, point, self.overwrite_check.isChecked()),
            point=[int(round(float(c))) for c in point])

    def _on_click_mode(self, checked: bool) -> None:
        layer = self._labels_layer()
        if checked and layer is not None and layer.mode != "pan_zoom":
            layer.mode = "pan_zoom"  # a click should pick, not paint
        self._say("Click a predicted structure to accept it." if checked else "")

    def _on_click(self, viewer, event) -> None:
        if self.click_check.isChecked() and event.type == "mouse_press" and event.button == 1:
            self.accept_component_at(event.position)

    def add_region_layer(self):
        """A shapes layer on the image's grid to draw regions in (rectangle tool selected)."""
        image = self._image_layer()
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
        labels = self._labels_layer()
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

    def accept_in_region(self) -> int:
        """Accept voxels inside the drawn region whose fused certainty reaches the threshold."""
        layer = self._labels_layer()
        if layer is None:
            return 0
        try:
            region = self.region_mask(layer.data.shape)
        except ValueError as error:
            show_error(str(error))
            return 0
        if region is None:
            show_warning("Draw a region first (Draw region, then drag a rectangle on the slice).")
            return 0
        threshold = self.threshold
        if self.review is None:
            self.update_review()

        def edit(labels, proposal, certainty):
            fused = self.review.certainty if self.review is not None and self.review.certainty.shape == labels.shape \
                else certainty
            return edits.accept_confident_edit(labels, proposal, fused, threshold, region,
                                               self.overwrite_check.isChecked())
        return self._accept("region", edit, threshold=threshold, region_voxels=int(region.sum()))

    def _accept(self, scope: str, make_edit: Callable, **details) -> int:
        layer = self._labels_layer()
        source = self.source_combo.currentData()
        proposal = self._proposal(source)
        if layer is None or proposal is None:
            if layer is None:
                show_warning("Pick a labels layer to accept into.")
            return 0
        labels = np.asarray(layer.data)
        if proposal[0].shape != labels.shape:
            show_error("The proposal does not match this labels layer's shape; choose the layer you trained on.")
            return 0
        self.sync_provenance()
        try:
            indices, values = make_edit(labels, proposal[0], proposal[1])
        except ValueError as error:
            self._say(str(error))
            show_warning(str(error))
            return 0
        if len(indices[0]) == 0:
            self._say("Nothing to accept there: no unlabelled voxels would change.")
            return 0
        self.recorder(source, scope, **details)(labels, indices, values)
        layer.data_setitem(indices, values)
        self.sync_provenance()
        self._say(f"Accepted {len(indices[0])} voxels ({scope}, from the {source}); Ctrl+Z in the labels layer undoes it.")
        return int(len(indices[0]))

    # ----- export -------------------------------------------------------------------
    def export_provenance(self, labels_path: str, layer) -> list[str]:
        """Write the provenance sidecar (code map in the labels' geometry + JSON) beside a labels file.

        Raises:
            LayerWriteError: when a file cannot be written or does not read back the same.
        """
        self.provenance(layer)  # tracked and followed from now on
        provenance = self.tracker.now(layer)
        if provenance is None:
            return []
        return write_provenance(labels_path, provenance.codes, provenance.to_json(), layer_meta(layer))

    def _select_labels(self) -> None:
        labels = self._labels_layer()
        if labels is not None and labels in self.viewer.layers:
            self.viewer.layers.selection.active = labels

    def close_callbacks(self) -> None:
        """Stop listening to the viewer's mouse (when the widget closes)."""
        if self._on_click in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.remove(self._on_click)

