"""The training panel's live loss / validation curve and its quiet progress bar.

The curve uses pyqtgraph: it draws with QPainter in the viewer's thread (no second OpenGL
context beside napari's canvas). Redraws are coalesced to one a second, and the axis ranges
only grow in steps, so the axes (the costly part of a redraw) rarely lay out again.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QProgressBar, QVBoxLayout, QWidget

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
