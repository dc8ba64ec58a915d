"""Screenshots of the real napari window for the README (run under Xvfb or on a desktop).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/screenshots.py --minutes 2

Paints three axial slices of the bundled sample from its reference tissue labels (what an
annotator would paint), trains through the widget exactly as a user would, and saves
resources/screenshots/trained.png.
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
from napari_semiseg.core.metrics import dice_per_class, slice_mask  # noqa: E402
from napari_semiseg.ui.launch import open_demo, settle_window  # noqa: E402
from napari_semiseg.ui.layers import CERTAINTY_LAYER  # noqa: E402
from napari_semiseg.ui.layers import REVIEW_LAYER  # noqa: E402
from napari_semiseg.core.config import DEFAULT_STRATEGY  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--strategy", default=DEFAULT_STRATEGY)
    parser.add_argument("--out", default=str(ROOT / "resources" / "screenshots" / "trained.png"))
    args = parser.parse_args()

    viewer, widget = open_demo(run=False)
    viewer.window.resize(1500, 950)
    _, tissue = load_sample_volumes()
    annotations = viewer.layers["annotations"]
    painted = [22, 40, 58]
    for index in painted:
        y, x = np.nonzero(tissue.array[index] > 0)
        annotations.data_setitem((np.full_like(y, index), y, x), tissue.array[index][y, x])
    widget.training.strategy_combo.setCurrentIndex(widget.training.strategy_combo.findData(args.strategy))
    widget.training.budget_unit.setCurrentText("minutes")
    widget.training.budget_spin.setValue(args.minutes)
    widget.training.continue_check.setChecked(False)  # an earlier run's model would make the picture longer than its budget
    viewer.dims.set_current_step(0, 31)
    assert widget.training.start_training(), widget.status_label.text()
    while widget.session.process.running:
        settle_window(5)
        time.sleep(0.2)
    settle_window()
    unpainted = slice_mask(tissue.shape, 0, painted)
    scores = dice_per_class(np.asarray(viewer.layers["prediction"].data), tissue.array, [1, 2, 3], unpainted)
    print("Dice on unpainted slices:", {k: round(v, 3) for k, v in scores.items()}, widget.status_label.text())
    for overlay in (CERTAINTY_LAYER, REVIEW_LAYER):  # the prediction is what the picture shows
        if overlay in viewer.layers:
            viewer.layers[overlay].visible = False
    viewer.layers.selection.active = annotations
    settle_window()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(args.out, canvas_only=False)
    print("saved", args.out)
    viewer.close()


if __name__ == "__main__":
    main()
