"""The model's proposal on screen: the prediction and certainty layers, previews while training.

Not a panel: it listens to the session and writes layers. Previews write one slice at a time
into layers made at the click on Start, so nothing here creates a layer while the user paints.
"""

from __future__ import annotations

import numpy as np

from ..core.events import PreviewReady
from .layers import CERTAINTY_LAYER, PREDICTION_LAYER, current_slice, mark_preview, painting_axis, upsert_layer
from .session import Proposal, Session


class ProposalLayers:
    """Keeps the prediction and certainty layers in step with the session's proposal."""

    def __init__(self, session: Session):
        self.session = session
        self.viewer = session.viewer
        session.training_submitted.connect(self.prepare)
        session.training_event.connect(self._on_event)
        session.proposal_changed.connect(self._show_proposal)
        session.comparison_ready.connect(self._show_comparison)

    def prepare(self) -> None:
        """Create the prediction and certainty layers now, if missing, so that previews and the
        final prediction only write data.

        Creating a napari layer stalls the viewer for about 170 ms (vispy visuals, layer
        controls); at the click on Start that goes unnoticed, at the first preview it interrupts
        a brush stroke, and three of them made the first final prediction stall for 0.5 to 0.9 s.
        """
        image = self.session.image_layer
        if image is None:
            return
        layers = self._layers(image.data.shape)
        if layers is None:
            shape = image.data.shape
            self._show(np.zeros(shape, dtype=np.int32), np.ones(shape, dtype=np.float32), preview=True)
            return
        mark_preview(layers, True)  # previews now overwrite slices of the last final prediction

    def _layers(self, shape: tuple[int, ...]) -> list | None:
        """The prediction and certainty layers, or None unless both exist with this shape."""
        layers = [self.viewer.layers[name] if name in self.viewer.layers else None
                  for name in (PREDICTION_LAYER, CERTAINTY_LAYER)]
        if any(layer is None or layer.data.shape != shape for layer in layers):
            return None
        return layers

    def _on_event(self, event) -> None:
        if isinstance(event, PreviewReady):
            self._show_preview(event)

    def _show_preview(self, event: PreviewReady) -> None:
        image = self.session.image_layer
        if image is None:
            return
        shape = image.data.shape
        if self._write_preview_in_place(event, shape):
            return
        prediction = self.viewer.layers[PREDICTION_LAYER].data if PREDICTION_LAYER in self.viewer.layers else None
        if prediction is None or prediction.shape != shape:
            prediction = np.zeros(shape, dtype=np.int32)
        certainty_layer = self.viewer.layers[CERTAINTY_LAYER] if CERTAINTY_LAYER in self.viewer.layers else None
        certainty = certainty_layer.data if certainty_layer is not None and certainty_layer.data.shape == shape \
            else np.ones(shape, dtype=np.float32)
        index = _slice_index(event)
        prediction[index] = event.labels
        certainty[index] = event.certainty
        self._show(prediction, certainty, preview=True)

    def _write_preview_in_place(self, event: PreviewReady, shape: tuple[int, ...]) -> bool:
        """Write the previewed slice into the existing layers and redraw only them.

        Replacing a layer's data makes napari re-check the whole volume (dims, thumbnail,
        contrast), a stall the user feels while painting; an in-place write does not.
        """
        layers = self._layers(shape)
        if layers is None:
            return False
        on_screen = painting_axis(self.viewer) == event.axis and \
            current_slice(self.viewer, layers[0], event.axis) == event.slice_index
        for layer, values in zip(layers, (event.labels, event.certainty)):
            layer.data[_slice_index(event)] = values
            if layer.visible and on_screen:  # another slice is read afresh when the user scrolls to it
                layer.refresh(thumbnail=False, highlight=False, extent=False)
        return True

    def _show_proposal(self, proposal: Proposal | None) -> None:
        if proposal is not None and self.session.image_layer is not None:
            self._show(proposal.labels, proposal.certainty)

    def _show_comparison(self, name: str, labels: np.ndarray) -> None:
        image = self.session.image_layer
        if image is not None:
            upsert_layer(self.viewer, name, labels, "labels", image, opacity=0.5)
            self.session.say(f"'{name}' added to compare with the other version (toggle the layers to see each).")

    def _show(self, prediction: np.ndarray, certainty: np.ndarray, preview: bool = False) -> None:
        image = self.session.image_layer
        # one overlay on at a time (the proposal); the certainty map is a click away
        certainty_layer = upsert_layer(self.viewer, CERTAINTY_LAYER, certainty, "image", image,
                                       colormap="inferno", contrast_limits=(0.0, 1.0), opacity=0.4, visible=False)
        layer = upsert_layer(self.viewer, PREDICTION_LAYER, prediction, "labels", image, opacity=0.5)
        mark_preview((certainty_layer, layer), preview)
        layer.refresh()
        labels = self.session.labels_layer
        if labels is not None:
            self.viewer.layers.selection.active = labels


def _slice_index(event: PreviewReady) -> tuple:
    index = [slice(None)] * 3
    index[event.axis] = event.slice_index
    return tuple(index)
