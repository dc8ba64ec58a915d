"""Screenshots of the review panel for the README (run under Xvfb or on a desktop).

    xvfb-run -a -s "-screen 0 1600x1400x24" .venv/bin/python benchmarks/review_screenshots.py --minutes 1.5

Paints three axial slices of the bundled sample from its reference tissue labels, trains through
the widget, propagates the painted slices by registration, then saves
resources/screenshots/review.png (fused certainty map and the next-slice list, on the slice the
list puts first) and resources/screenshots/provenance.png (after accepting a slice from the
model, a slice from registration and the certain voxels inside a drawn rectangle).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_semiseg._sample_data import load_sample_volumes  # noqa: E402
from napari_semiseg.core.model import load_model  # noqa: E402
from napari_semiseg.core.predict import predict_volume  # noqa: E402
from napari_semiseg.ui.layers import volume_from_layer  # noqa: E402
from napari_semiseg.ui.training_process import VolumePredicted  # noqa: E402
from napari_semiseg.ui.launch import open_demo, settle_window  # noqa: E402
from napari_semiseg.ui.layers import PROVENANCE_LAYER, REGION_LAYER, REVIEW_LAYER  # noqa: E402
from napari_semiseg.core.config import DEFAULT_STRATEGY  # noqa: E402

PAINTED = [22, 40, 58]


def wait(condition, timeout: float) -> None:
    start = time.time()
    while not condition():
        if time.time() - start > timeout:
            raise TimeoutError("gave up waiting")
        settle_window(5)
        time.sleep(0.2)


def show_existing_model(widget, path: str) -> None:
    """Predict with a saved model and hand the result to the widget as its training process would."""
    model = load_model(path, "cpu")
    prediction = predict_volume(model, volume_from_layer(widget.session.image_layer))
    widget.session.handle(VolumePredicted(0, prediction.labels, prediction.certainty, prediction.disagreement, path))
    widget.session.continue_from(path)
    widget.session.proposal.facts.update(iteration=model.iteration)
    print(f"model at iteration {model.iteration} ({', '.join(model.networks)})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=1.5)
    parser.add_argument("--iterations", type=int, default=None, help="budget in iterations instead of minutes")
    parser.add_argument("--model", default=None,
                        help="a model trained on these painted slices (skips training; a loaded machine is slow)")
    parser.add_argument("--strategy", default=DEFAULT_STRATEGY)
    parser.add_argument("--out", default=str(ROOT / "resources" / "screenshots"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    viewer, widget = open_demo(run=False)
    viewer.window.resize(1500, 1300)
    _, tissue = load_sample_volumes()
    annotations = viewer.layers["annotations"]
    for index in PAINTED:
        y, x = np.nonzero(tissue.array[index] > 0)
        annotations.data_setitem((np.full_like(y, index), y, x), tissue.array[index][y, x])
    widget.training.strategy_combo.setCurrentIndex(widget.training.strategy_combo.findData(args.strategy))
    if args.model:
        show_existing_model(widget, args.model)
    else:
        widget.training.budget_unit.setCurrentText("iterations" if args.iterations else "minutes")
        widget.training.budget_spin.setValue(args.iterations or args.minutes)
        assert widget.training.start_training(), widget.status_label.text()
        wait(lambda: not widget.session.process.running, 3600)
    settle_window()
    print(widget.status_label.text())
    assert widget.registration.start()
    wait(lambda: widget.registration.result is not None, 600)
    settle_window()

    review, accept = widget.review, widget.accept
    for name in ("certainty", "prediction", "registered pseudo-labels", "registration quality"):
        viewer.layers[name].visible = False
    listed = [review.next_list.item(i) for i in range(review.next_list.count())]
    print("next slices:", [item.text() for item in listed[:10]])
    # The top entries are the nearly empty end slices registration could not follow; show the
    # first one inside the brain, where the map has something to say.
    shown = next(item for item in listed if 15 <= int(item.data(Qt.UserRole)) <= 65)
    print("shown:", review.next_list.row(shown), shown.text())
    review.next_list.setCurrentItem(shown)
    review.go_to_slice(int(shown.data(Qt.UserRole)))
    viewer.layers[REVIEW_LAYER].visible = True
    viewer.layers["MNI152 T1"].visible = False  # the map alone: certain = black, doubtful = red to yellow
    viewer.layers.selection.active = annotations
    viewer.reset_view()
    settle_window()
    viewer.screenshot(str(out / "review.png"), canvas_only=False)
    viewer.layers["MNI152 T1"].visible = True
    print("saved", out / "review.png")

    accept.source_combo.setCurrentIndex(accept.source_combo.findData("model"))
    viewer.dims.set_current_step(0, 31)
    print("model slice 31:", accept.accept_slice())
    accept.source_combo.setCurrentIndex(accept.source_combo.findData("registration"))
    viewer.dims.set_current_step(0, 45)
    print("registration slice 45:", accept.accept_slice())
    accept.source_combo.setCurrentIndex(accept.source_combo.findData("model"))
    viewer.dims.set_current_step(0, 50)
    shapes = accept.add_region_layer()
    shapes.add([[50, 20, 15], [50, 20, 75], [50, 60, 75], [50, 60, 15]], shape_type="rectangle")
    accept.depth_spin.setValue(2)
    print("region on slices 48-52:", accept.accept_certain())
    accepted = np.argwhere(widget.session.provenance_of().codes[50] == 2)
    if len(accepted):
        annotations.brush_size = 4
        annotations.paint((50, *accepted[len(accepted) // 2]), 3)  # a user correction over accepted voxels
    review.sync_provenance()
    viewer.layers[REVIEW_LAYER].visible = False
    viewer.layers[PROVENANCE_LAYER].visible = True
    viewer.layers[REGION_LAYER].mode = "pan_zoom"
    viewer.layers.selection.active = viewer.layers[PROVENANCE_LAYER]
    settle_window()
    viewer.screenshot(str(out / "provenance.png"), canvas_only=False)
    print("saved", out / "provenance.png", review.provenance_label.text())
    viewer.close()


if __name__ == "__main__":
    main()
