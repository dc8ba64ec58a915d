"""Bridge between napari layers and the core's volumes; all edits go through undo history."""

from __future__ import annotations

import weakref
from typing import Callable

import numpy as np
from app_model.types import KeyCode, KeyMod

from .._reader import geometry_layer_kwargs
from .._writer import layer_geometry
from ..core.volume import Volume

# The layers the plugin makes; one definition of each name.
PREDICTION_LAYER = "prediction"  # the model's proposal
CERTAINTY_LAYER = "certainty"  # the model's certainty, 0 to 1
REVIEW_LAYER = "review certainty"  # certainty fused with disagreement and registration quality
REGISTERED_LAYER = "registered pseudo-labels"  # labels propagated from painted slices
QUALITY_LAYER = "registration quality"  # per-voxel consistency of the propagation
PROVENANCE_LAYER = "provenance"  # where each label came from
REGION_LAYER = "review region"  # shapes drawn to accept within
COMPARE_LAYER_PREFIX = "version v"  # + version id: one version's prediction, to compare with another
PLUGIN_IMAGE_LAYERS = (CERTAINTY_LAYER, REVIEW_LAYER, QUALITY_LAYER)
PLUGIN_LABELS_LAYERS = (PREDICTION_LAYER, REGISTERED_LAYER, PROVENANCE_LAYER)
# Set on the prediction and certainty layers while they hold training previews (a few slices,
# certainty 1 elsewhere), cleared when the final prediction replaces them: export skips previews.
PREVIEW_METADATA_KEY = "napari_semiseg_preview"
AXIS_NAMES = ("z", "y", "x")


def layer_meta(layer) -> dict:
    """The parts of a layer's state the writer needs to recover its geometry."""
    return {
        "metadata": layer.metadata,
        "scale": tuple(layer.scale),
        "translate": tuple(layer.translate),
        "rotate": np.asarray(layer.rotate),
        "shear": np.asarray(layer.shear),
        "affine": np.asarray(layer.affine.affine_matrix),
        "name": layer.name,
    }


def volume_from_layer(layer) -> Volume:
    """A core Volume (a copy of the data) in the layer's physical geometry."""
    array = np.asarray(layer.data)
    return Volume(np.array(array, copy=True), layer_geometry(layer_meta(layer)), name=layer.name)


def geometry_kwargs(layer, name: str) -> dict:
    """Layer kwargs that put a new layer on the same voxel grid as ``layer``."""
    source = layer.metadata.get("semiseg", {}).get("source", layer.name)
    return geometry_layer_kwargs(layer_geometry(layer_meta(layer)), name, source)


def current_slice(viewer, layer, axis: int) -> int:
    """Index along ``axis`` of the slice the viewer shows, in the layer's voxel grid."""
    point = layer.world_to_data(viewer.dims.point[-layer.ndim :])
    index = int(round(float(point[axis])))
    return int(np.clip(index, 0, layer.data.shape[axis] - 1))


def painting_axis(viewer) -> int:
    """The axis the user scrolls through in a 2D view (the one they paint slices of)."""
    if viewer.dims.ndisplay == 2 and len(viewer.dims.order) >= 3:
        return int(viewer.dims.order[-3])
    return 0


def upsert_layer(viewer, name: str, data: np.ndarray, kind: str, template, **style):
    """Replace the data of layer ``name`` or add it, on ``template``'s voxel grid."""
    if name in viewer.layers:
        layer = viewer.layers[name]
        layer.data = data
        return layer
    kwargs = geometry_kwargs(template, name)
    kwargs.update(style)
    adder = viewer.add_labels if kind == "labels" else viewer.add_image
    return adder(data, **kwargs)


def is_preview(layer) -> bool:
    """Whether ``layer`` holds training previews rather than a finished prediction."""
    return bool(layer.metadata.get(PREVIEW_METADATA_KEY, False))


def mark_preview(layers, preview: bool) -> None:
    """Flag ``layers`` as holding training previews (True) or a finished prediction (False)."""
    for layer in layers:
        layer.metadata[PREVIEW_METADATA_KEY] = preview


_EDIT_LISTENERS: dict[str, list[weakref.WeakMethod]] = {}  # layer_key -> listeners


def layer_key(layer) -> str:
    """What recognises a layer across accesses: its unique_id. napari hands plugin widgets a
    proxy that wraps each layer anew on every access, so identity does not."""
    return str(layer.unique_id)


def follow_voxel_edits(layer, listener: Callable[[], None]) -> None:
    """Call ``listener()`` (a bound method) after every change to a labels layer's voxels.

    Painting, filling, erasing and acceptance reach it through the layer's paint events, a new
    array through its data event, and undo and redo through the layer's Ctrl+Z and Ctrl+Shift+Z,
    which are rebound here to undo and then tell: napari's undo emits no event of its own (only
    ``set_data``, which every scroll emits too). One place for this, so that autosave, the
    annotated summary and the provenance all see the same edits.
    """
    key = layer_key(layer)
    listeners = _EDIT_LISTENERS.get(key)
    if listeners is None:
        listeners = _EDIT_LISTENERS[key] = []
        _tell_listeners_of_edits(layer, listeners)
    if not any(ref() == listener for ref in listeners):
        listeners.append(weakref.WeakMethod(listener))


def stop_following_voxel_edits(layer, listener: Callable[[], None]) -> None:
    """Undo :func:`follow_voxel_edits` for ``listener``."""
    listeners = _EDIT_LISTENERS.get(layer_key(layer), [])
    listeners[:] = [ref for ref in listeners if ref() is not None and ref() != listener]


def _tell_listeners_of_edits(layer, listeners: list[weakref.WeakMethod]) -> None:
    def tell(*_args) -> None:
        for ref in list(listeners):
            listener = ref()
            if listener is not None:
                listener()

    def undo(labels) -> None:
        labels.undo()
        tell()

    def redo(labels) -> None:
        labels.redo()
        tell()

    layer.events.paint.connect(tell)
    layer.events.data.connect(tell)
    layer.bind_key(KeyMod.CtrlCmd | KeyCode.KeyZ, undo, overwrite=True)
    layer.bind_key(KeyMod.CtrlCmd | KeyMod.Shift | KeyCode.KeyZ, redo, overwrite=True)


def write_acceptance(labels_layer, indices, values, record=None) -> int:
    """Write an acceptance edit (from ``core.accept``) into a labels layer as one undo step.

    ``record(labels_before, indices, values)``, if given, is called just before the write (the
    session notes the acceptance in the provenance). Returns the number of voxels written.
    """
    if len(indices[0]) == 0:
        return 0
    if record is not None:
        record(np.asarray(labels_layer.data), indices, values)
    labels_layer.data_setitem(indices, values)
    return int(len(indices[0]))
