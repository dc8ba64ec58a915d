"""When to autosave: a few seconds after the last edit, and never later than a bound after the first.

:class:`AutosaveClock` holds only the timing rule, so the widget (a Qt timer) and headless
sessions (:class:`Autosaver`, a thread) save at the same moments.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import numpy as np

from .project import Project, ProjectError

log = logging.getLogger(__name__)

QUIET_SECONDS = 2.0
MAX_UNSAVED_SECONDS = 10.0


class AutosaveClock:
    """Due ``quiet_seconds`` after the last edit, or ``max_unsaved_seconds`` after the first unsaved one.

    The second bound matters for someone who paints without pausing: a pure debounce would
    never save while they work.
    """

    def __init__(self, quiet_seconds: float = QUIET_SECONDS, max_unsaved_seconds: float = MAX_UNSAVED_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.quiet_seconds = quiet_seconds
        self.max_unsaved_seconds = max_unsaved_seconds
        self._clock = clock
        self._first_unsaved: float | None = None
        self._last_edit: float | None = None

    @property
    def dirty(self) -> bool:
        return self._first_unsaved is not None

    def edited(self) -> None:
        now = self._clock()
        if self._first_unsaved is None:
            self._first_unsaved = now
        self._last_edit = now

    def due(self) -> bool:
        if not self.dirty:
            return False
        now = self._clock()
        return now - self._last_edit >= self.quiet_seconds or now - self._first_unsaved >= self.max_unsaved_seconds

    def saved(self, edits_since: bool = False) -> None:
        """Mark the state as saved (``edits_since``: an edit arrived while saving)."""
        if not edits_since:
            self._first_unsaved = self._last_edit = None


class Autosaver:
    """Saves one volume's labels into a project from a background thread (headless sessions).

    Args:
        project: where to save.
        name: the volume the labels belong to.
        labels: returns the current labels (called on the saving thread; return a copy if
            another thread edits the array in place).
    """

    def __init__(self, project: Project, name: str, labels: Callable[[], np.ndarray],
                 clock: AutosaveClock | None = None, poll_seconds: float = 0.1):
        self.project = project
        self.name = name
        self.labels = labels
        self.clock = clock or AutosaveClock()
        self.poll_seconds = poll_seconds
        self.last_saved: float | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._edits = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autosave", daemon=True)

    def start(self) -> "Autosaver":
        self._thread.start()
        return self

    def edited(self) -> None:
        with self._lock:
            self._edits += 1
            self.clock.edited()

    def save_now(self) -> bool:
        """Save if anything changed since the last save; returns whether a save succeeded."""
        with self._lock:
            if not self.clock.dirty:
                return True
            edits_before = self._edits
        try:
            self.project.save_annotations(self.name, self.labels())
        except ProjectError as error:
            self.last_error = str(error)
            log.error("%s", error)
            return False
        with self._lock:
            self.clock.saved(edits_since=self._edits != edits_before)
        self.last_saved = time.time()
        self.last_error = None
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            with self._lock:
                due = self.clock.due()
            if due:
                self.save_now()

    def close(self) -> None:
        """Stop the thread after a last save of any unsaved edits."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.save_now()
