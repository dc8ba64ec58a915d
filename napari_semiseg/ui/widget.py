"""The dock widget: the shell that builds the session and one panel per feature, in a scroll area.

Each panel is built from the :class:`~.session.Session` and listens to it; this module only
stacks them and ends the session when the viewer closes.
"""

from __future__ import annotations

import weakref
from pathlib import Path

from qtpy.QtCore import QEvent, QObject, QSize, Qt, QTimer
from qtpy.QtWidgets import QFrame, QMainWindow, QScrollArea, QStyle, QVBoxLayout, QWidget

from .accept_panel import AcceptPanel
from .data_panel import DataPanel
from .export_panel import ExportPanel
from .overlay_panel import OverlayPanel
from .project_panel import ProjectPanel
from .propagation_panel import PropagationPanel
from .proposal_layers import ProposalLayers
from .review_panel import ReviewPanel
from .session import Session
from .training_panel import TrainingPanel
from .versions_panel import VersionsPanel


class VerticalScrollArea(QScrollArea):
    """Scrolls its content up and down only: as wide as the content needs, as short as the dock allows."""

    def __init__(self):
        super().__init__()
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)

    def setWidget(self, widget: QWidget) -> None:  # noqa: N802 (Qt's name)
        super().setWidget(widget)
        widget.installEventFilter(self)

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt's name)
        # the content's width changes after construction (napari's style sheet, longer labels)
        if watched is self.widget() and event.type() == QEvent.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(watched, event)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        hint = super().minimumSizeHint()
        if self.widget() is None:
            return hint
        scrollbar = max(self.verticalScrollBar().sizeHint().width(),
                        self.style().pixelMetric(QStyle.PM_ScrollBarExtent, None, self.verticalScrollBar()))
        width = self.widget().minimumSizeHint().width() + scrollbar + 2 * self.frameWidth()
        return QSize(max(width, hint.width()), hint.height())


class SemisegWidget(QWidget):
    """Train a segmentation model from a few painted slices without blocking the viewer."""

    def __init__(self, napari_viewer, runs_dir: str | Path | None = None):
        super().__init__()
        self.viewer = napari_viewer
        self.session = Session(napari_viewer, runs_dir)
        self._window_watcher: _WindowCloseWatcher | None = None
        self._build()
        QTimer.singleShot(0, self._close_with_the_viewer)

    def _build(self) -> None:
        session = self.session
        self.project = ProjectPanel(session)
        self.data = DataPanel(session)
        self.training = TrainingPanel(session)
        self.versions = VersionsPanel(session)
        self.proposal_layers = ProposalLayers(session)
        self.overlays = OverlayPanel(session)
        self.registration = PropagationPanel(session)
        self.review = ReviewPanel(session)
        self.accept = AcceptPanel(session)
        self.export = ExportPanel(session)
        content = QWidget()
        layout = QVBoxLayout(content)
        for panel in (self.project, self.data, self.training, self.versions, self.overlays, self.registration,
                      self.review, self.accept, self.export):
            layout.addWidget(panel)
        layout.addStretch(1)
        # napari docks plugin widgets without a scroll area: the panels stacked are taller than a
        # laptop screen, and their minimum height would stretch the viewer window past it
        self.scroll_area = VerticalScrollArea()
        self.scroll_area.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll_area)

    @property
    def status_label(self):
        """The status line (in the training box): what the plugin last said."""
        return self.training.status_label

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        self.shut_down()
        super().closeEvent(event)

    def shut_down(self) -> None:
        """Save the annotations, end the training process and let go of the viewer's mouse."""
        self.project.save_now()
        self._let_go()

    def _let_go(self) -> None:
        # only Python objects here: after the viewer's window closes, the Qt side may be deleted
        self.session.shut_down()
        self.accept.close_callbacks()

    def _close_with_the_viewer(self) -> None:
        """napari closes its window without closing the widgets docked in it, and has no public
        closing event: watch the main window the widget is docked in (docking follows construction)."""
        window = self.window()
        if isinstance(window, QMainWindow) and self._window_watcher is None:
            self._window_watcher = _WindowCloseWatcher(window, self.project.save_now, self._let_go)


class _WindowCloseWatcher(QObject):
    """Saves at once when the viewer's window is asked to close, and lets go of the training
    process once it has closed (the user may still cancel napari's "close window?" dialog)."""

    def __init__(self, window: QWidget, save, let_go):
        super().__init__(window)  # installed on that window only; holds no reference to it
        self._save, self._let_go = save, let_go
        window.installEventFilter(self)

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Close:
            self._save()
            window, let_go = weakref.ref(watched), self._let_go
            # a lambda, not a method of this object: the window deletes its children as it closes
            QTimer.singleShot(0, lambda: _let_go_unless_open(window, let_go))
        return False


def _let_go_unless_open(window: weakref.ref, let_go) -> None:
    try:
        still_open = window() is not None and window().isVisible()
    except RuntimeError:  # the window is already deleted
        still_open = False
    if not still_open:
        let_go()
