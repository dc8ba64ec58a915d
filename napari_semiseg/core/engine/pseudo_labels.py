"""Registration as a pseudo-label source (CCT-R, Liu thesis ch. 6; arXiv 2409.10422).

Annotated volumes (slice mode) get their unpainted slices from within-volume slice-to-slice
registration; each unannotated volume gets the labels of the annotated volume whose
registration is most cycle-consistent (best-registration selection), with the densified
labels of the annotated volumes as sources. Every pseudo-label carries its per-voxel quality,
which weights the registration supervision loss.

Registering every unannotated volume against every source costs seconds per pair on a CPU
(about 17 s per ACDC volume against six sources), so a time limit bounds it: unannotated
volumes are registered in a seeded random order until the limit, and the rest train as plain
unannotated data. A registration cache folder makes later runs on the same data nearly free.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..annotations import IGNORE, AnnotationMode, class_indices
from ..events import PseudoLabelsLimited, PseudoLabelsReady
from ..registration import AnnotatedVolume, best_pseudo_label, propagate_labels

log = logging.getLogger(__name__)


@dataclass
class PseudoLabels:
    """Class-index targets (``IGNORE`` where unknown or untrustworthy) and their weights."""

    targets: np.ndarray
    weights: np.ndarray


@dataclass(frozen=True)
class RegistrationPlan:
    """How much registration the pseudo-labels may cost and where it is cached.

    Args:
        seconds: time limit for registering unannotated volumes (None: no limit).
        cache_dir: folder of the registration cache (None: no cache).
        threads: CPU threads registration may use (0: all cores).
        seed: order in which unannotated volumes are registered.
    """

    seconds: float | None = None
    cache_dir: str | os.PathLike | None = None
    threads: int = 0
    seed: int = 0


class _StopOrDeadline:
    """Set when the caller's stop flag is set or the deadline has passed."""

    def __init__(self, stop, deadline: float | None) -> None:
        self.stop, self.deadline = stop, deadline

    def is_set(self) -> bool:
        return (self.stop is not None and self.stop.is_set()) or self.expired()

    def expired(self) -> bool:
        return self.deadline is not None and time.perf_counter() >= self.deadline


def registration_pseudo_labels(
    data, label_values: tuple[int, ...], min_quality: float, stop=None, plan: RegistrationPlan | None = None,
) -> Iterator[PseudoLabelsReady | PseudoLabelsLimited | list]:
    """Yield one event per volume, then the list of :class:`PseudoLabels` (None where none).

    Within-volume propagation (cheap) always runs; registration of unannotated volumes stops at
    ``plan.seconds`` after the start, and a :class:`PseudoLabelsLimited` event reports how many
    volumes it reached.
    """
    plan = plan or RegistrationPlan()
    results: list[PseudoLabels | None] = [None] * len(data.volumes)
    if data.scheme.mode is not AnnotationMode.SLICES:
        log.info("registration pseudo-labels need painted slices; scribble mode trains without them")
        yield results
        return
    started = time.perf_counter()
    dense_sources = []
    for index, (volume, labels) in enumerate(zip(data.volumes, data.labels)):
        if labels is None or (stop is not None and stop.is_set()):
            continue
        volume_started = time.perf_counter()
        propagated = propagate_labels(volume, labels, data.scheme.axis, stop=stop)
        if propagated is None:
            continue
        results[index] = _as_targets(propagated.labels, propagated.quality, label_values, min_quality)
        dense_sources.append(AnnotatedVolume(volume, propagated.labels))
        yield _ready(index, "within volume", volume_started, propagated.quality)
    unannotated = _registration_order(data.labels, plan.seed)
    if not dense_sources or not unannotated:
        yield results
        return
    halt = _StopOrDeadline(stop, None if plan.seconds is None else started + plan.seconds)
    registered = 0
    for index in unannotated:
        if halt.is_set():
            break
        volume_started = time.perf_counter()
        best = best_pseudo_label(data.volumes[index], dense_sources, stop=halt, cache_dir=plan.cache_dir,
                                 threads=plan.threads or None)
        if best is None:
            continue
        results[index] = _as_targets(best.labels, best.quality, label_values, min_quality)
        registered += 1
        yield _ready(index, f"from {best.moving}", volume_started, best.quality)
    if halt.expired() and registered < len(unannotated):
        log.info("registration time limit (%.0f s) reached: %d of %d unannotated volumes registered",
                 plan.seconds, registered, len(unannotated))
        yield PseudoLabelsLimited(registered, len(unannotated) - registered, float(plan.seconds))
    yield results


def _registration_order(labels, seed: int) -> list[int]:
    """Indices of the unannotated volumes in a seeded random order (a fair subsample if time runs out)."""
    indices = [index for index, volume_labels in enumerate(labels) if volume_labels is None]
    return [indices[i] for i in np.random.default_rng(seed).permutation(len(indices))]


def _ready(index: int, source: str, started: float, quality: np.ndarray) -> PseudoLabelsReady:
    return PseudoLabelsReady(index, source, time.perf_counter() - started, float(quality.mean()))


def _as_targets(labels: np.ndarray, quality: np.ndarray, label_values: tuple[int, ...],
                min_quality: float) -> PseudoLabels:
    targets = class_indices(labels, label_values)
    weights = np.clip(quality, 0.0, 1.0).astype(np.float32)
    targets[weights < min_quality] = IGNORE
    return PseudoLabels(targets, weights)
