"""One provenance per labels layer for the whole session: review, acceptance, export and the
project all read the same one (``core.provenance.Provenance`` does the bookkeeping)."""

from __future__ import annotations

import numpy as np

from ..core.provenance import Provenance
from .layers import layer_key


class ProvenanceTracker:
    """The provenance of each labels layer, started the first time it is asked for."""

    def __init__(self) -> None:
        self._tracked: dict[str, Provenance] = {}  # layer_key -> its provenance

    def of(self, layer) -> Provenance | None:
        """The provenance of a 3D labels layer; what it holds when first asked counts as painted."""
        if layer is None or layer.ndim != 3:
            return None
        provenance = self._tracked.get(layer_key(layer))
        if provenance is None or provenance.shape != layer.data.shape:
            provenance = self._tracked[layer_key(layer)] = Provenance.for_labels(np.asarray(layer.data))
        return provenance

    def now(self, layer) -> Provenance | None:
        """The provenance of ``layer``, brought up to date with its labels (for an export or a save)."""
        provenance = self.of(layer)
        if provenance is not None:
            provenance.update(np.asarray(layer.data))
        return provenance

    def recorder(self, layer, source: str, scope: str, **facts):
        """A ``record(labels_before, indices, values)`` callback for ``layers.write_acceptance``:
        notes an acceptance from ``source`` in the provenance of ``layer`` just before it is written."""
        def record(labels_before: np.ndarray, indices, values) -> None:
            provenance = self.of(layer)
            if provenance is not None and provenance.shape == labels_before.shape:
                provenance.update(labels_before)
                provenance.record_acceptance(labels_before, indices, values, source, scope, **facts)
        return record

    def adopt(self, layer, provenance: Provenance) -> None:
        """Track ``layer`` with a provenance restored from a project."""
        self._tracked[layer_key(layer)] = provenance
