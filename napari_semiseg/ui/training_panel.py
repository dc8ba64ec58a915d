"""Parts of the training panel: the live loss / validation curve and the model-version list.

The curve uses pyqtgraph: it draws with QPainter in the viewer's thread (no second OpenGL
context beside napari's canvas). Redraws are coalesced to one a second, and the axis ranges
only grow in steps, so the axes (the costly part of a redraw) rarely lay out again.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pyqtgraph as pg
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.versions import ModelVersion, VersionError, VersionStore

LOSS_COLOUR = "#4fa3e0"
DICE_COLOUR = "#f0a030"
REDRAW_MS = 1000  # the curve redraws at most once a second: each redraw costs the viewer a few ms


class QuietProgressBar(QProgressBar):
    """A progress bar whose new value is drawn with the window's next paint, not at once.

    ``QProgressBar.setValue`` repaints synchronously whenever its text changes. In napari's
    window, beside the OpenGL canvas, any repaint composes the whole window: 70 to 90 ms with
    software OpenGL (measured under Xvfb), a stutter the annotator feels on every step event.
    An ordinary update instead joins the next paint of the dock.
    """

    def setValue(self, value: int) -> None:  # noqa: N802 (Qt naming)
        self.setUpdatesEnabled(False)
        super().setValue(value)
        self.setUpdatesEnabled(True)  # schedules an ordinary, asynchronous update


class TrainingCurves(QWidget):
    """Training loss and held-out validation Dice against training time (seconds)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.plot = pg.GraphicsLayoutWidget()
        self.plot.setMinimumHeight(240)
        self.loss_plot = self.plot.addPlot(row=0, col=0)
        self.loss_plot.setLabel("left", "loss")
        self.loss_plot.showGrid(x=True, y=True, alpha=0.2)
        self.dice_plot = self.plot.addPlot(row=1, col=0)
        self.dice_plot.setLabel("left", "val Dice")
        self.dice_plot.setLabel("bottom", "training time (s)")
        self.dice_plot.getAxis("bottom").setHeight(36)
        for axis in ("left", "bottom"):
            self.loss_plot.getAxis(axis).enableAutoSIPrefix(False)
            self.dice_plot.getAxis(axis).enableAutoSIPrefix(False)
        self.dice_plot.setYRange(0.0, 1.0)
        self.dice_plot.showGrid(x=True, y=True, alpha=0.2)
        self.dice_plot.setXLink(self.loss_plot)
        for item in (self.loss_plot, self.dice_plot):
            item.setMouseEnabled(x=False, y=False)
            item.hideButtons()
        self.loss_curve = self.loss_plot.plot(pen=pg.mkPen(LOSS_COLOUR, width=2))
        self.dice_curve = self.dice_plot.plot(pen=pg.mkPen(DICE_COLOUR, width=2), symbol="o", symbolSize=5,
                                              symbolBrush=DICE_COLOUR)
        layout.addWidget(self.plot)
        self.loss_points: list[tuple[float, float]] = []
        self.dice_points: list[tuple[float, float]] = []
        for item in (self.loss_plot, self.dice_plot):
            item.disableAutoRange()
        self._x_max = self._loss_max = 0.0
        self._redraw_timer = QTimer(self)
        self._redraw_timer.setSingleShot(True)
        self._redraw_timer.setInterval(REDRAW_MS)
        self._redraw_timer.timeout.connect(self.redraw)

    def reset(self) -> None:
        """Empty both curves (a new run starts)."""
        self.loss_points.clear()
        self.dice_points.clear()
        self._x_max = self._loss_max = 0.0
        self.redraw()

    def add_loss(self, seconds: float, loss: float) -> None:
        if np.isfinite(loss):
            self.loss_points.append((seconds, loss))
            self._schedule()

    def add_validation(self, seconds: float, dice: float) -> None:
        if np.isfinite(dice):
            self.dice_points.append((seconds, dice))
            self._schedule()

    def _schedule(self) -> None:
        if not self._redraw_timer.isActive():
            self._redraw_timer.start()

    def flush(self) -> None:
        """Redraw now if a redraw is pending, so it shares the dock's paint with other changes."""
        if self._redraw_timer.isActive():
            self._redraw_timer.stop()
            self.redraw()

    def redraw(self) -> None:
        """Draw the points so far. Ranges only grow, in steps, so the axes rarely re-layout."""
        for curve, points in ((self.loss_curve, self.loss_points), (self.dice_curve, self.dice_points)):
            if points:
                curve.setData(*np.array(points).T)
            else:
                curve.setData([], [])
        latest = max([p[0] for p in self.loss_points[-1:] + self.dice_points[-1:]], default=0.0)
        if latest > self._x_max or self._x_max == 0.0:
            self._x_max = max(30.0, 1.5 * latest)
            self.loss_plot.setXRange(0.0, self._x_max, padding=0)
        highest = max((p[1] for p in self.loss_points), default=0.0)
        if highest > self._loss_max or self._loss_max == 0.0:
            self._loss_max = max(0.1, 1.3 * highest)
            self.loss_plot.setYRange(0.0, self._loss_max, padding=0)


class VersionsPanel(QGroupBox):
    """The model versions of the runs folder: load one, compare two, roll back."""

    def __init__(self, store: VersionStore, on_load: Callable[[ModelVersion], None],
                 on_compare: Callable[[ModelVersion, ModelVersion], None],
                 on_roll_back: Callable[[ModelVersion], None], say: Callable[[str], None]):
        super().__init__("Model versions")
        self.store = store
        self._on_load, self._on_compare, self._on_roll_back, self._say = on_load, on_compare, on_roll_back, say
        layout = QVBoxLayout(self)
        self.version_list = QListWidget()
        self.version_list.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.version_list.setToolTip("Select one version to load or roll back to, two to compare")
        self.version_list.setMaximumHeight(120)
        layout.addWidget(self.version_list)
        row = QHBoxLayout()
        self.load_button = QPushButton("Load")
        self.load_button.setToolTip("Predict the image with this version (prediction layer, acceptable)")
        self.compare_button = QPushButton("Compare")
        self.compare_button.setToolTip("Predict with two versions and show both as labels layers")
        self.roll_back_button = QPushButton("Roll back")
        self.roll_back_button.setToolTip("Make this version current: the next training continues from it")
        for button in (self.load_button, self.compare_button, self.roll_back_button):
            row.addWidget(button)
        layout.addLayout(row)
        self.load_button.clicked.connect(self.load_selected)
        self.compare_button.clicked.connect(self.compare_selected)
        self.roll_back_button.clicked.connect(self.roll_back_selected)
        self.version_list.itemSelectionChanged.connect(self._update_buttons)
        self.refresh()

    def set_store(self, store: VersionStore) -> None:
        """Point the panel at another runs folder (a project's)."""
        self.store = store
        self.refresh()

    def refresh(self) -> None:
        """Re-read the index; newest first, the current version marked."""
        self.version_list.clear()
        try:
            versions, current = self.store.versions(), self.store.current()
        except VersionError as error:
            self._say(str(error))
            versions, current = [], None
        for version in reversed(versions):
            marker = "● " if current is not None and version.id == current.id else "   "
            item = QListWidgetItem(marker + version.describe())
            item.setData(Qt.UserRole, version.id)
            item.setToolTip(f"{self.store.path_of(version)}\ncreated {version.created}, "
                            f"held-out slices {list(version.held_out_slices)}")
            self.version_list.addItem(item)
        self._update_buttons()

    def selected(self) -> list[ModelVersion]:
        ids = [item.data(Qt.UserRole) for item in self.version_list.selectedItems()]
        return [self.store.get(int(i)) for i in sorted(ids)]

    def select(self, *version_ids: int) -> None:
        for row in range(self.version_list.count()):
            item = self.version_list.item(row)
            item.setSelected(item.data(Qt.UserRole) in version_ids)

    def load_selected(self) -> None:
        chosen = self.selected()
        if len(chosen) != 1:
            self._say("Select one version to load.")
            return
        self._on_load(chosen[0])

    def compare_selected(self) -> None:
        chosen = self.selected()
        if len(chosen) != 2:
            self._say("Select two versions to compare (Ctrl+click).")
            return
        self._on_compare(chosen[0], chosen[1])

    def roll_back_selected(self) -> None:
        chosen = self.selected()
        if len(chosen) != 1:
            self._say("Select one version to roll back to.")
            return
        try:
            version = self.store.roll_back(chosen[0].id)
        except VersionError as error:
            self._say(str(error))
            return
        self.refresh()
        self._on_roll_back(version)

    def _update_buttons(self) -> None:
        count = len(self.version_list.selectedItems())
        self.load_button.setEnabled(count == 1)
        self.roll_back_button.setEnabled(count == 1)
        self.compare_button.setEnabled(count == 2)


def held_out_note(slices: tuple[int, ...], painted: int, minimum: int) -> str:
    """What the panel says about validation before a run."""
    if slices:
        return f"Validating on held-out painted slices {', '.join(str(i) for i in slices)}."
    return f"Paint at least {minimum} slices to get a validation score ({painted} painted)."
