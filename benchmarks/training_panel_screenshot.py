"""Screenshots of the training panel (live curve, validation, model versions) from the real window.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/training_panel_screenshot.py --seconds 60

Paints five axial slices of the bundled sample from its reference tissue labels (so one is held out
for validation), trains twice through the widget (the second run continues from the first, with a
sixth painted slice), then saves the whole window (resources/screenshots/training_panel_window.png)
and the dock widget alone (resources/screenshots/training_panel.png).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_semiseg._sample_data import load_sample_volumes  # noqa: E402
from napari_semiseg.ui.launch import open_demo, settle_window  # noqa: E402

FIRST_RUN_SLICES = (22, 31, 40, 49, 58)
SECOND_RUN_SLICES = (35,)


def paint(annotations, tissue, indices) -> None:
    for index in indices:
        y, x = np.nonzero(tissue.array[index] > 0)
        annotations.data_setitem((np.full_like(y, index), y, x), tissue.array[index][y, x])


def train(widget, seconds: float) -> None:
    widget.training.budget_unit.setCurrentText("minutes")
    widget.training.budget_spin.setValue(seconds / 60.0)
    assert widget.training.start_training(), widget.status_label.text()
    while widget.session.process.running:
        settle_window(5)
        time.sleep(0.2)
    settle_window()
    print(widget.status_label.text(), "|", widget.training.validation_label.text(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0, help="training time of each of the two runs")
    parser.add_argument("--strategy", default="supervised",
                        help="supervised trains from the first second; the default strategy registers first")
    parser.add_argument("--small-steps", action="store_true",
                        help="64-px patches, batch 4: more points on the curve when the machine is busy")
    parser.add_argument("--runs-dir", default=None, help="where models go (default: a fresh temporary folder)")
    parser.add_argument("--out-dir", default=str(ROOT / "resources" / "screenshots"))
    args = parser.parse_args()

    import tempfile

    viewer, widget = open_demo(run=False)
    runs_dir = Path(args.runs_dir or tempfile.mkdtemp(prefix="semiseg-runs-"))
    widget.session.use_runs_dir(runs_dir)
    viewer.window.resize(1600, 1000)
    widget.training.strategy_combo.setCurrentIndex(widget.training.strategy_combo.findData(args.strategy))
    if args.small_steps:
        from dataclasses import replace

        full_config = widget.training.config
        widget.training.config = lambda: replace(full_config(), patch_size=64, batch_size=4)
    annotations = viewer.layers["annotations"]
    tissue = load_sample_volumes()[1]
    paint(annotations, tissue, FIRST_RUN_SLICES)
    viewer.dims.set_current_step(0, 45)
    train(widget, args.seconds)
    paint(annotations, tissue, SECOND_RUN_SLICES)
    train(widget, args.seconds)
    viewer.layers["certainty"].visible = False
    viewer.layers.selection.active = annotations
    settle_window()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out / "training_panel_window.png"), canvas_only=False)
    widget.grab().save(str(out / "training_panel.png"))
    print("saved", out / "training_panel_window.png", out / "training_panel.png")


if __name__ == "__main__":
    main()
