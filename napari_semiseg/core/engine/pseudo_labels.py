"""Registration as a pseudo-label source (CCT-R, Liu thesis ch. 6; arXiv 2409.10422).

Annotated volumes (slice mode) get their unpainted slices from within-volume slice-to-slice
registration; each unannotated volume gets the labels of the annotated volume whose
registration is most cycle-consistent (best-registration selection), with the densified
labels of the annotated volumes as sources. Every pseudo-label carries its per-voxel quality,
which weights the registration supervision loss.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..annotations import IGNORE, AnnotationMode
from ..events import PseudoLabelsReady
from ..registration import AnnotatedVolume, best_pseudo_label, propagate_labels

log = logging.getLogger(__name__)


@dataclass
class PseudoLabels:
    """Class-index targets (``IGNORE`` where unknown or untrustworthy) and their weights."""

    targets: np.ndarray
    weights: np.ndarray


def registration_pseudo_labels(
    data, label_values: tuple[int, ...], min_quality: float, stop=None
) -> Iterator[PseudoLabelsReady | list]:
    """Yield one event per volume, then the list of :class:`PseudoLabels` (None where none)."""
    results: list[PseudoLabels | None] = [None] * len(data.volumes)
    if data.scheme.mode is not AnnotationMode.SLICES:
        log.info("registration pseudo-labels need painted slices; scribble mode trains without them")
        yield results
        return
    dense_sources = []
    for index, (volume, labels) in enumerate(zip(data.volumes, data.labels)):
        if labels is None or (stop is not None and stop.is_set()):
            continue
        started = time.perf_counter()
        propagated = propagate_labels(volume, labels, data.scheme.axis, stop=stop)
        if propagated is None:
            continue
        results[index] = _as_targets(propagated.labels, propagated.quality, label_values, min_quality)
        dense_sources.append(AnnotatedVolume(volume, propagated.labels))
        yield _ready(index, "within volume", started, propagated.quality)
    for index, (volume, labels) in enumerate(zip(data.volumes, data.labels)):
        if labels is not None or not dense_sources or (stop is not None and stop.is_set()):
            continue
        started = time.perf_counter()
        registered = best_pseudo_label(volume, dense_sources, stop=stop)
        if registered is None:
            continue
        results[index] = _as_targets(registered.labels, registered.quality, label_values, min_quality)
        yield _ready(index, f"from {registered.moving}", started, registered.quality)
    yield results


def _ready(index: int, source: str, started: float, quality: np.ndarray) -> PseudoLabelsReady:
    return PseudoLabelsReady(index, source, time.perf_counter() - started, float(quality.mean()))


def _as_targets(labels: np.ndarray, quality: np.ndarray, label_values: tuple[int, ...],
                min_quality: float) -> PseudoLabels:
    lookup = {value: index for index, value in enumerate(label_values)}
    targets = np.full(labels.shape, IGNORE, dtype=np.int64)
    for value, index in lookup.items():
        targets[labels == value] = index
    weights = np.clip(quality, 0.0, 1.0).astype(np.float32)
    targets[weights < min_quality] = IGNORE
    return PseudoLabels(targets, weights)
