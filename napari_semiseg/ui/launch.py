"""Open napari with the plugin docked and the bundled sample loaded."""

from __future__ import annotations

PLUGIN = "napari-semiseg"
WIDGET = "Semi-supervised segmentation"


def open_demo(screenshot: str | None = None, show: bool = True, run: bool = True):
    """Start the viewer with the MNI152 sample and the training widget docked.

    Args:
        screenshot: save a screenshot of the whole window there and close (for checks).
        show: show the window (a screenshot needs it).
        run: enter napari's event loop; False returns ``(viewer, widget)`` (tests, scripts).
    """
    import napari

    viewer = napari.Viewer(title="napari-semiseg", show=show)
    viewer.open_sample(PLUGIN, "mni152")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    annotations = viewer.layers["annotations"]
    viewer.layers.selection.active = annotations
    annotations.mode = "paint"
    viewer.dims.set_current_step(0, viewer.layers["MNI152 T1"].data.shape[0] // 2)
    if screenshot:
        viewer.window.resize(1500, 950)
        settle_window()
        viewer.screenshot(screenshot, canvas_only=False)
        viewer.close()
        return 0
    if not run:
        return viewer, widget
    napari.run()
    return 0


def settle_window(rounds: int = 20) -> None:
    """Let Qt lay out and paint the window (docks appear a few event-loop turns late)."""
    import time

    from qtpy.QtWidgets import QApplication

    for _ in range(rounds):
        QApplication.processEvents()
        time.sleep(0.02)
