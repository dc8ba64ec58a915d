"""Review box: the fused certainty map, the slices to look at next, and where each label came from.

The provenance follows the labels layer: painting and erasing through its paint events, undo and
redo through the layer's Ctrl+Z / Ctrl+Shift+Z (``layers.follow_voxel_edits``), acceptances
through the session, and anything else at the latest before the next ranking or export.
"""

from __future__ import annotations

import numpy as np
from napari.utils.colormaps import Colormap, DirectLabelColormap
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QGroupBox, QLabel, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout

from ..core.certainty import fuse_certainty, rank_slices, registered_mask, slice_summaries
from ..core.provenance import CODE_NAMES, Provenance
from .layers import PROVENANCE_LAYER, REVIEW_LAYER, follow_voxel_edits, geometry_kwargs, painting_axis, upsert_layer
from .session import Session

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
    """Fused certainty, a ranked next-slice list and the provenance of the chosen labels."""

    def __init__(self, session: Session):
        super().__init__("Review")
        self.session = session
        self.viewer = session.viewer
        self.summaries = []
        self._axis = 0
        self._sync_timer = QTimer(self)
        self._sync_timer.setSingleShot(True)
        self._sync_timer.setInterval(SYNC_DELAY_MS)
        self._sync_timer.timeout.connect(self.sync_provenance)
        self._build()
        session.training_submitted.connect(self.prepare_review_layer)
        session.proposal_changed.connect(self.update_review)
        session.registration_changed.connect(self.update_review)
        session.accepted.connect(self.sync_provenance)
        session.layers_changed.connect(self._follow_labels)
        self._follow_labels()

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        self.update_button = QPushButton("Update certainty map")
        self.update_button.setToolTip("Fuse entropy, network disagreement and registration quality; rank slices")
        layout.addWidget(self.update_button)
        layout.addWidget(QLabel("Look next (least certain first; click to go there):"))
        self.next_list = QListWidget()
        self.next_list.setMaximumHeight(110)
        layout.addWidget(self.next_list)
        self.summary_label = QLabel("")
        self.summary_label.setWordWrap(True)
        layout.addWidget(self.summary_label)
        self.provenance_label = QLabel("Provenance: -")
        self.provenance_label.setWordWrap(True)
        layout.addWidget(self.provenance_label)
        self.update_button.clicked.connect(self.update_review)
        self.next_list.itemClicked.connect(self._go_to_item)

    # ----- certainty map and ranking ------------------------------------------------
    def update_review(self, *args) -> bool:
        """Fuse the signals available into the review certainty layer and rank the slices."""
        image, result, proposal = self.session.image_layer, self.session.registration, self.session.proposal
        if image is None or (proposal is None and result is None):
            self.session.say("Train a model or propagate registered labels to see what needs review.")
            return False
        shape = image.data.shape
        certainty, disagreement = (proposal.certainty, proposal.disagreement) \
            if proposal is not None and proposal.certainty.shape == shape else (None, None)
        quality = covered = None
        if result is not None and result.quality.shape == shape:
            quality = result.quality
            covered = registered_mask(shape, result.axis, list(result.slice_scores))
        if certainty is None and quality is None:
            self.session.say("The prediction and registered labels do not match the image; train or propagate again.")
            return False
        self.session.review = fuse_certainty(certainty, disagreement, quality, covered)
        self._axis = painting_axis(self.viewer)
        self.summaries = slice_summaries(self.session.review, self._axis)
        self._upsert_review_layer(self.session.review.certainty, image)
        self.sync_provenance()
        self._select_labels()
        return True

    def prepare_review_layer(self) -> None:
        """Create the review certainty layer now (hidden, all certain) if it is missing, so that
        the first prediction only writes its data (a new layer stalls the viewer ~170 ms)."""
        image = self.session.image_layer
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
        ranked = rank_slices(self.summaries, self._painted_slices(provenance))
        if ranked:
            mean = float(np.mean([summary.certainty for summary in ranked]))
            doubtful = sum(summary.certainty < DOUBTFUL_SLICE for summary in ranked)
            self.summary_label.setText(f"{len(ranked)} unpainted slices: mean certainty {mean:.2f}, "
                                       f"{doubtful} below {DOUBTFUL_SLICE:.2f}.")
        scores = self._registration_scores()
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
        result = self.session.registration
        if result is None or result.axis != self._axis:
            return {}
        return {int(k): float(v) for k, v in result.slice_scores.items()}

    def _go_to_item(self, item: QListWidgetItem) -> None:
        self.go_to_slice(int(item.data(Qt.UserRole)))

    def go_to_slice(self, index: int) -> None:
        """Show slice ``index`` along the ranking's axis."""
        image = self.session.image_layer
        if image is None:
            return
        world = image.data_to_world([index if a == self._axis else 0 for a in range(image.ndim)])
        self.viewer.dims.set_point(self._axis, world[self._axis])

    # ----- provenance ---------------------------------------------------------------
    def _follow_labels(self) -> None:
        layer = self.session.labels_layer
        if layer is not None and layer.ndim == 3:
            follow_voxel_edits(layer, self._schedule_sync)

    def _schedule_sync(self) -> None:
        self._sync_timer.start()

    def sync_provenance(self, *args) -> Provenance | None:
        """Update the provenance from the labels, show it, and re-rank without painted slices."""
        self._follow_labels()
        layer = self.session.labels_layer
        provenance = self.session.provenance.now(layer)
        if provenance is None:
            return None
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

    def _select_labels(self) -> None:
        labels = self.session.labels_layer
        if labels is not None and labels in self.viewer.layers:
            self.viewer.layers.selection.active = labels
