"""Shared pieces of the evaluation protocols: data paths, resumable result files, training through
the engine, scoring with core.metrics, and the Markdown summary tables.

Nothing derived from the ../shared volumes is written except the summary numbers.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from napari_semiseg.core.atomic import write_text_atomic  # noqa: E402
from napari_semiseg.core.metrics import evaluate_volume, summarise  # noqa: E402

# ../shared/data beside the project; SEMISEG_SHARED_DATA points elsewhere (e.g. from a git worktree)
DATA = Path(os.environ.get("SEMISEG_SHARED_DATA", ROOT.parent / "shared" / "data"))
ACDC = DATA / "acdc"
LA = DATA / "la2018"
RESULTS = ROOT / "resources" / "benchmarks"
ACDC_CLASSES = {1: "RV", 2: "Myo", 3: "LV"}


def add_run_options(parser, name: str, minutes: float, unit: str | None = None) -> None:
    """The options every protocol shares: budget, threads, seed, result name, redo; with
    ``unit`` ("voxels" or "mm"), also the NSD tolerance and the boundary-Dice band width."""
    parser.add_argument("--minutes", type=float, default=minutes, help="CPU training budget per run")
    parser.add_argument("--iterations", type=int, help="budget in iterations instead (quick checks)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=name, help="result file name")
    parser.add_argument("--redo", action="store_true", help="run again what is already in the result file")
    if unit is not None:
        parser.add_argument("--tolerance", type=float, default=2.0, help=f"NSD tolerance ({unit})")
        parser.add_argument("--band-width", type=float, default=2.0, help=f"boundary-Dice band width ({unit})")


def require(folder: Path) -> None:
    """Exit with a one-line message when the shared data is missing."""
    if not folder.exists():
        sys.exit(f"{folder} not found: this benchmark needs ../shared/data beside the project.")


class ResultFile:
    """A JSON list of result rows, rewritten atomically after every row so a long run can resume.

    Each write merges with what is on disk under a lock, so several processes (for example one per
    half of the cases) can fill the same file.
    """

    def __init__(self, path: Path, key_fields: tuple[str, ...]):
        self.path, self.key_fields = path, key_fields
        self.rows: list[dict] = self._read()

    def _read(self) -> list[dict]:
        return json.loads(self.path.read_text())["rows"] if self.path.exists() else []

    def key(self, row: dict) -> tuple:
        return tuple(row[name] for name in self.key_fields)

    def has(self, **fields) -> bool:
        wanted = tuple(fields[name] for name in self.key_fields)
        return any(self.key(row) == wanted for row in self.rows)

    def add(self, row: dict, meta: dict) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(Path(tempfile.gettempdir()) / f"{self.path.stem}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            # what is on disk wins over this process's copy: another process may have redone a row since
            merged = {self.key(r): r for r in self.rows + self._read()}
            merged[self.key(row)] = row
            self.rows = list(merged.values())
            write_text_atomic(self.path, json.dumps({"meta": meta, "rows": self.rows}, indent=1))


def score(prediction: np.ndarray, truth: np.ndarray, classes: dict[int, str], spacing=None,
          mask: np.ndarray | None = None, tolerance: float = 2.0, band_width: float = 2.0) -> dict:
    """JSON-ready scores of one volume (see core.metrics for definitions and empty-mask rules)."""
    return evaluate_volume(prediction, truth, list(classes), spacing, mask, tolerance, band_width).to_dict()


def train_model(volumes, labels, scheme, config, workdir: Path, stop: threading.Event | None = None) -> tuple[str, dict]:
    """Train with the engine; returns the model's path and run info."""
    from napari_semiseg.core.engine import TrainingData, train
    from napari_semiseg.core.events import PseudoLabelsReady, TrainingFailed, TrainingFinished, TrainingStarted

    started = time.perf_counter()
    finished, before_training, registered = None, None, 0
    for event in train(TrainingData(volumes, labels, scheme), config, workdir, stop):
        if isinstance(event, PseudoLabelsReady) and event.source.startswith("from "):
            registered += 1
        if isinstance(event, TrainingStarted):
            before_training = round(time.perf_counter() - started, 1)
        if isinstance(event, TrainingFailed):
            raise RuntimeError(f"training failed: {event.message}")
        if isinstance(event, TrainingFinished):
            finished = event
    if finished is None:
        raise RuntimeError("training ended without a model")
    return finished.model_path, {"iterations": finished.iteration, "train_seconds": round(finished.seconds, 1),
                                 "wall_seconds": round(time.perf_counter() - started, 1),
                                 "seconds_before_training": before_training, "registered_volumes": registered}


def train_and_predict(volumes, labels, scheme, config, targets, workdir: Path,
                      stop: threading.Event | None = None) -> tuple[list[np.ndarray], dict]:
    """Train with the engine, then predict each target volume slice by slice; returns labels and run info."""
    from napari_semiseg.core.model import load_model
    from napari_semiseg.core.predict import predict_volume

    started = time.perf_counter()
    model_path, info = train_model(volumes, labels, scheme, config, workdir, stop)
    model = load_model(model_path, "cpu")
    predicted = time.perf_counter()
    predictions = [predict_volume(model, volume).labels for volume in targets]
    info.update(predict_seconds=round(time.perf_counter() - predicted, 1),
                wall_seconds=round(time.perf_counter() - started, 1))
    return predictions, info


def class_values(rows: Iterable[dict], metric: str, label: int | None = None) -> list[float]:
    """Per-class values of ``metric`` over rows (None in JSON means NaN or inf: decided by the status)."""
    values = []
    for row in rows:
        for name, scores in row["scores"]["classes"].items():
            if label is None or int(name) == label:
                values.append(_restore(scores, metric))
    return values


def _restore(scores: dict, metric: str) -> float:
    value = scores[metric]
    if value is not None:
        return float(value)
    return math.nan if scores["status"] == "absent" else math.inf


def volume_mean_dice(row: dict) -> float:
    values = [v for v in class_values([row], "dice") if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def summary_cells(rows: list[dict], classes: dict[int, str]) -> list[str]:
    """Mean Dice over volumes, per-class Dice, HD95 and ASD (finite mean, count infinite), NSD.

    An infinite distance is a class missed (or predicted where there is none) in a volume.
    """
    cells = [_number(np.nanmean([volume_mean_dice(r) for r in rows]) if rows else math.nan)]
    for label in classes:
        cells.append(_number(summarise(class_values(rows, "dice", label))["mean"]))
    for metric in ("hd95", "asd"):
        summary = summarise(class_values(rows, metric))
        infinite = f" ({summary['infinite']} inf)" if summary["infinite"] else ""
        cells.append(_number(summary["mean"], 2) + infinite)
    cells.append(_number(summarise(class_values(rows, "nsd"))["mean"]))
    return cells


def summary_header(classes: dict[int, str], first: list[str]) -> list[str]:
    names = [f"Dice {name}" for name in classes.values()]
    columns = first + ["volumes", "mean Dice"] + names + ["HD95", "ASD", "NSD"]
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def write_markdown(path: Path, title: str, command: str, notes: list[str], table: list[str]) -> None:
    text = [f"# {title}", "", f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `{command}`.", ""]
    text += notes + [""] + table
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(text) + "\n")


def _number(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def command_line() -> str:
    return " ".join(["python", os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])


def timed(function: Callable, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, round(time.perf_counter() - started, 2)
