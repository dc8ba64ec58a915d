"""Does the viewer stay fluid while training runs? (a benchmark, not a timed test)

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/responsiveness.py --seconds 120

1. The real napari window with the plugin docked, in two phases: *scrolling* (a script scrolls one
   slice every second) and *painting* (the same, plus brush strokes into the annotations layer, one
   dab every 30 ms through ``Labels.paint``, the brush's own call). Each phase measures an idle
   baseline (no training), then starts the widget's training and runs until it ends. A 10 ms QTimer
   records its ticks; the gaps between ticks are what a user feels as stutter. The five longest gaps
   are listed with the training events the viewer handled during them.
2. Training throughput without a viewer: the widget's exact job (bundled MNI152 sample, three painted
   slices, default strategy) in the same worker process (idle CPU class, cores - 1 threads) for
   ``--seconds``.

Throughput is steady-state slices per second from the training's own step events (start-up excluded),
so the ratio compares the training itself with and without the viewer. Writes
resources/benchmarks/responsiveness.json (``max_gap_ms``, ``p99_gap_ms``, ``throughput_ratio``...).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_semiseg.core.events import StepCompleted, TrainingStarted  # noqa: E402
from napari_semiseg.core.config import DEFAULT_STRATEGY  # noqa: E402

TICK_MS = 10
DAB_MS = 30
DABS_PER_STROKE = 25
SCROLL_MS = 1000
PAINTED = (22, 40, 58)


def paint_reference_slices(annotations, tissue) -> None:
    for index in PAINTED:
        y, x = np.nonzero(tissue.array[index] > 0)
        annotations.data_setitem((np.full_like(y, index), y, x), tissue.array[index][y, x])


def steady_throughput(steps: list[StepCompleted], batch_size: int, skip_seconds: float = 5.0) -> float:
    """Slices per second between the first step event after ``skip_seconds`` of training and the last."""
    steady = [s for s in steps if s.seconds >= skip_seconds]
    if len(steady) < 2:
        steady = steps
    if len(steady) < 2:
        return float("nan")
    first, last = steady[0], steady[-1]
    return (last.iteration - first.iteration) * batch_size / max(last.seconds - first.seconds, 1e-9)


def headless_run(job, seconds: float) -> dict:
    """The same job in the same worker, with no viewer."""
    from napari_semiseg.ui.training_process import TrainingProcess

    process = TrainingProcess(job)
    started = time.perf_counter()
    process.start()
    steps, first_event = [], None
    while process.running:
        for event in process.poll():
            if first_event is None and isinstance(event, (TrainingStarted, StepCompleted)):
                first_event = time.perf_counter() - started
            if isinstance(event, StepCompleted):
                steps.append(event)
        time.sleep(0.1)
    process.close()
    return {"slices_per_second": steady_throughput(steps, job.config.batch_size),
            "seconds_to_first_event": first_event, "iterations": steps[-1].iteration if steps else 0}


class TickRecorder:
    """Times of a 10 ms QTimer's ticks."""

    def __init__(self):
        from qtpy.QtCore import QTimer

        self.times: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(lambda: self.times.append(time.perf_counter()))

        self.started = time.perf_counter()
        self.events: list[tuple[float, str]] = []
        self.handled_ms: dict[str, float] = {}  # the longest handling of each event type

    def start(self) -> None:
        self.times.clear()
        self.events.clear()
        self.handled_ms.clear()
        self.started = time.perf_counter()
        self.timer.start()

    def note(self, what: str, kind: str | None = None, ms: float | None = None) -> None:
        """Remember that the viewer handled ``what`` now (to explain the longest gaps), an event
        of type ``kind`` that took ``ms`` on the main thread."""
        self.events.append((time.perf_counter(), what))
        if kind is not None:
            self.handled_ms[kind] = max(ms, self.handled_ms.get(kind, 0.0))

    def stop(self, worst: int = 5) -> dict:
        self.timer.stop()
        times = np.asarray(self.times)
        gaps = np.diff(times) * 1000.0
        if gaps.size == 0:
            return {"max_gap_ms": float("nan"), "p99_gap_ms": float("nan"), "mean_gap_ms": float("nan"), "ticks": 0}
        return {"max_gap_ms": round(float(gaps.max()), 1), "p99_gap_ms": round(float(np.percentile(gaps, 99)), 1),
                "mean_gap_ms": round(float(gaps.mean()), 2), "ticks": int(gaps.size),
                "gaps_over_35_ms": int((gaps > 35).sum()), "gaps_over_16_ms": int((gaps > 16).sum()),
                "longest_handling_ms": {kind: round(ms, 1) for kind, ms in
                                        sorted(self.handled_ms.items(), key=lambda item: -item[1])},
                "longest_gaps": [self._explain(times[i], gaps[i]) for i in np.argsort(gaps)[::-1][:worst]]}

    def _explain(self, begin: float, gap_ms: float) -> dict:
        """A gap's time since start and the events the viewer handled while it lasted."""
        end = begin + gap_ms / 1000.0
        during = sorted({what for when, what in self.events if begin - 0.02 <= when <= end + 0.02})
        return {"at_s": round(float(begin - self.started), 2), "ms": round(float(gap_ms), 1), "handling": during}


class Annotator:
    """Paints brush strokes into the annotations layer and scrolls through slices, like a user."""

    def __init__(self, viewer, annotations, seed: int = 0, paint: bool = True):
        from qtpy.QtCore import QTimer

        self.viewer, self.annotations, self.paint = viewer, annotations, paint
        self.random = np.random.default_rng(seed)
        self.dabs = 0
        self.stroke: list[np.ndarray] = []
        self.paint_timer = QTimer()
        self.paint_timer.setInterval(DAB_MS)
        self.paint_timer.timeout.connect(self.dab)
        self.scroll_timer = QTimer()
        self.scroll_timer.setInterval(SCROLL_MS)
        self.scroll_timer.timeout.connect(self.scroll)
        self.direction = 1

    def start(self) -> None:
        self.annotations.brush_size = 6
        self.annotations.mode = "paint"
        if self.paint:
            self.paint_timer.start()
        self.scroll_timer.start()

    def stop(self) -> None:
        self.paint_timer.stop()
        self.scroll_timer.stop()
        if self.stroke:
            self.stroke = []
            self.history.__exit__(None, None, None)

    def dab(self) -> None:
        """One brush dab; a stroke is one undo step, as with the mouse (napari's ``block_history``)."""
        if not self.stroke:
            shape = np.asarray(self.annotations.data.shape[1:])
            start, end = self.random.uniform(0.2, 0.8, (2, 2)) * shape
            self.stroke = list(np.linspace(start, end, DABS_PER_STROKE))
            self.history = self.annotations.block_history()
            self.history.__enter__()
        y, x = self.stroke.pop()
        z = self.viewer.dims.current_step[0]
        self.annotations.paint((z, y, x), 1 + (self.dabs // DABS_PER_STROKE) % 3)
        self.dabs += 1
        if not self.stroke:
            self.history.__exit__(None, None, None)

    def scroll(self) -> None:
        z = self.viewer.dims.current_step[0]
        if not 20 <= z + self.direction <= 60:
            self.direction *= -1
        self.viewer.dims.set_current_step(0, z + self.direction)


def viewer_run(seconds: float, idle_seconds: float, strategy: str) -> tuple[dict, dict, object]:
    from napari_semiseg._sample_data import load_sample_volumes
    from napari_semiseg.ui.jobs import training_job
    from napari_semiseg.ui.launch import open_demo, settle_window

    import tempfile

    viewer, widget = open_demo(run=False)
    viewer.window.resize(1500, 950)
    widget.session.use_runs_dir(tempfile.mkdtemp(prefix="semiseg-bench-"))  # keep the user's runs folder clean
    annotations = viewer.layers["annotations"]
    paint_reference_slices(annotations, load_sample_volumes()[1])
    viewer.dims.set_current_step(0, 40)
    settle_window()
    widget.training.strategy_combo.setCurrentIndex(widget.training.strategy_combo.findData(strategy))
    widget.training.budget_unit.setCurrentText("minutes")
    widget.training.budget_spin.setValue(seconds / 60.0)

    steps: list[StepCompleted] = []
    recorder = TickRecorder()
    session = widget.session
    handle = session.handle

    def recording_handle(event):
        started = time.perf_counter()
        handle(event)
        ms = (time.perf_counter() - started) * 1000
        recorder.note(f"{type(event).__name__} ({ms:.0f} ms)", type(event).__name__, ms)
        if isinstance(event, StepCompleted):
            steps.append(event)

    session.handle = recording_handle  # the session's poll hands every event of the worker to this
    # the job the widget is about to run, for the headless comparison
    job, _ = training_job(session.image_layer, session.labels_layer, session.scheme(), widget.training.config(),
                          Path(tempfile.mkdtemp(prefix="semiseg-bench-")), None, rotation=0)
    phases = {}
    for phase, paint in (("scrolling", False), ("painting", True)):
        annotator = Annotator(viewer, annotations, paint=paint)
        _log(f"idle viewer, {phase}")
        recorder.start()
        annotator.start()
        _spin(idle_seconds)
        idle = recorder.stop()
        annotator.stop()
        _log(f"training with the viewer, {phase}")
        steps.clear()
        recorder.start()
        annotator.start()
        assert widget.training.start_training(), widget.status_label.text()
        _run_event_loop_until(lambda: not widget.session.process.running)
        training = recorder.stop()
        annotator.stop()
        training["slices_per_second"] = steady_throughput(steps, widget.training.config().batch_size)
        training["strokes_painted"] = annotator.dabs // DABS_PER_STROKE
        training["iterations"] = steps[-1].iteration if steps else 0
        phases[phase] = {"idle_viewer": idle, "training": training}
    widget.close()
    viewer.close()
    return phases, job


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    _run_event_loop_until(lambda: time.perf_counter() >= end)


def _run_event_loop_until(done) -> None:
    """Run Qt's own event loop (as napari does) until ``done()``, checked every 100 ms."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    check = QTimer()
    check.setInterval(100)
    check.timeout.connect(lambda: loop.quit() if done() else None)
    check.start()
    loop.exec()
    check.stop()


def _without_nan(value):
    """NaN (nothing measured) becomes null: the file stays standard JSON."""
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nan(item) for item in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="training time of each run")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="idle viewer baseline of each phase (no training)")
    parser.add_argument("--strategy", default=DEFAULT_STRATEGY,
                        help="default: the widget's (its registration phase runs before the budget's steps)")
    parser.add_argument("--out", default=str(ROOT / "resources" / "benchmarks" / "responsiveness.json"))
    parser.add_argument("--note", default="", help="e.g. 'machine loaded by other jobs'")
    args = parser.parse_args()

    phases, job = viewer_run(args.seconds, args.idle_seconds, args.strategy)
    _log("training without the viewer")
    headless = headless_run(job, args.seconds)
    for phase in phases.values():
        phase["throughput_ratio"] = round(float(phase["training"]["slices_per_second"]
                                                / headless["slices_per_second"]), 3)
    painting = phases["painting"]
    result = {
        "max_gap_ms": painting["training"]["max_gap_ms"],
        "p99_gap_ms": painting["training"]["p99_gap_ms"],
        "throughput_ratio": painting["throughput_ratio"],
        "goal": {"max_gap_ms": 35, "p99_gap_ms": 16, "throughput_ratio": 0.8},
        "phases": phases,
        "training_without_viewer": headless,
        "seconds": args.seconds,
        "strategy": job.config.strategy,
        "threads": job.config.threads,
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "machine": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "note": args.note,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(_without_nan(result), indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("max_gap_ms", "p99_gap_ms", "throughput_ratio")}))
    print(json.dumps(_without_nan(phases), indent=1), "headless:", headless, sep="\n")


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: Qt/vispy objects freed in the wrong order can abort it
