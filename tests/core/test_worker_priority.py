"""The training worker's CPU priority: idle class on Linux, so the viewer wins every contended core."""

import os
import sys
import threading

import pytest

from napari_semiseg.ui.training_process import lower_priority


def _in_new_thread(function):
    """Run ``function`` in a fresh thread (Linux priorities are per thread) and return its result."""
    result = {}
    thread = threading.Thread(target=lambda: result.update(value=function()))
    thread.start()
    thread.join(timeout=30)
    return result["value"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_IDLE is Linux only")
def test_lower_priority_puts_the_calling_thread_in_the_idle_class():
    def lower_and_read():
        reached = lower_priority()
        return reached, os.sched_getscheduler(0)

    reached, policy = _in_new_thread(lower_and_read)
    assert reached == "idle"
    assert policy == os.SCHED_IDLE
    assert os.sched_getscheduler(0) != os.SCHED_IDLE, "the caller's own thread keeps its priority"


def test_lower_priority_never_raises_where_scheduling_is_forbidden(monkeypatch):
    def forbidden(*args):
        raise PermissionError("not allowed here")

    monkeypatch.setattr(os, "sched_setscheduler", forbidden, raising=False)
    assert _in_new_thread(lower_priority) in ("nice", "normal")
