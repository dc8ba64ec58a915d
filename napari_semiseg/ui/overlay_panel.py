"""Overlays box: one of the plugin's overlays on the image at a time, and what its colours mean.

The image stays readable with one translucent overlay; the others are a click away. The user may
still switch any layer on in napari's layer list: the box follows what is visible.
"""

from __future__ import annotations

from functools import partial

from qtpy.QtWidgets import QButtonGroup, QGroupBox, QLabel, QRadioButton, QVBoxLayout

from .layers import CERTAINTY_LAYER, PREDICTION_LAYER, PROVENANCE_LAYER, QUALITY_LAYER, REGISTERED_LAYER, REVIEW_LAYER
from .session import Session

NONE = "none"


def _swatches(*pairs: tuple[str, str]) -> str:
    return " ".join(f'<span style="color:{colour}">■</span> {text}' for colour, text in pairs)


# (layer, radio text, legend)
OVERLAYS = (
    (PREDICTION_LAYER, "Proposal", "The model's labels, in the colours you paint with."),
    (CERTAINTY_LAYER, "Model certainty", _swatches(("#000004", "unsure"), ("#bc3754", "half"), ("#fcffa4", "sure"))),
    (REVIEW_LAYER, "Needs review", "Glows where to look: " + _swatches(("#ffff4d", "most doubtful"),
                                                                     ("#ff1a00", "doubtful")) + "; certain voxels leave "
     "the image as it is."),
    (REGISTERED_LAYER, "Registered labels", "Labels carried from your painted slices to their neighbours."),
    (QUALITY_LAYER, "Registration quality", _swatches(("#440154", "inconsistent"), ("#21918c", "fair"),
                                                      ("#fde725", "consistent"))),
    (PROVENANCE_LAYER, "Provenance", _swatches(("#408cff", "painted by you"), ("#33d94d", "accepted from the model"),
                                               ("#ffa61a", "accepted from registration"),
                                               ("#ff2699", "edited after acceptance"))),
)


class OverlayPanel(QGroupBox):
    """Radio buttons for the overlays that exist; the chosen one is shown, the others hidden."""

    def __init__(self, session: Session):
        super().__init__("Overlays")
        self.viewer = session.viewer
        layout = QVBoxLayout(self)
        self.group = QButtonGroup(self)
        self.buttons: dict[str, QRadioButton] = {}
        self.legends: dict[str, QLabel] = {}
        for name, text, legend in ((NONE, "None", ""),) + OVERLAYS:
            button = QRadioButton(text)
            self.group.addButton(button)
            self.buttons[name] = button
            layout.addWidget(button)
            button.toggled.connect(partial(self._toggled, name))
            if legend:
                label = QLabel(legend)
                label.setWordWrap(True)
                label.setStyleSheet("font-size: small; margin-left: 18px;")
                self.legends[name] = label
                layout.addWidget(label)
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed):
            event.connect(self._on_layers_changed)
        self._on_layers_changed()

    def _toggled(self, name: str, checked: bool) -> None:
        if checked:
            self.show_overlay(name)

    def show_overlay(self, name: str) -> None:
        """Show overlay ``name`` (or none) and hide the plugin's other overlays."""
        for overlay, *_ in OVERLAYS:
            if overlay in self.viewer.layers:
                self.viewer.layers[overlay].visible = overlay == name

    def visible_overlays(self) -> list[str]:
        return [name for name, *_ in OVERLAYS if name in self.viewer.layers and self.viewer.layers[name].visible]

    def _on_layers_changed(self, event=None) -> None:
        for name, *_ in OVERLAYS:
            present = name in self.viewer.layers
            self.buttons[name].setVisible(present)
            self.legends[name].setVisible(present)
            if present:
                self.viewer.layers[name].events.visible.connect(self._show_choice)
        self._show_choice()

    def _show_choice(self, event=None) -> None:
        visible = self.visible_overlays()
        chosen = visible[0] if len(visible) == 1 else NONE if not visible else None
        self.group.setExclusive(chosen is not None)
        for name, button in self.buttons.items():
            button.blockSignals(True)
            button.setChecked(name == chosen)
            button.blockSignals(False)
        self.setTitle("Overlays" if chosen is not None else f"Overlays ({len(visible)} on)")
