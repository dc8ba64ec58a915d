"""Register every annotated source onto every unannotated volume and keep the best per volume.

Best-registration selection (CCT-R): per unannotated volume, the source with the lowest
cycle-consistency score wins; its pseudo-label, per-voxel quality and score are kept.
Pairs run in a thread pool (SimpleITK releases the GIL); the generator yields small events
and stops cooperatively when the stop flag is set.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..volume import Volume
from .cache import RegistrationCache
from .events import BestRegistrationSelected, PairFailed, PairRegistered, PairStarted, RegistrationFinished
from .pairwise import RegisteredLabels, register_pair
from .settings import RegistrationError, RegistrationSettings
from .sitk_tools import RegistrationCancelled, StopFlag

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnnotatedVolume:
    """An annotated source: its image and its dense labels (same shape)."""

    image: Volume
    labels: np.ndarray

    def __post_init__(self) -> None:
        labels = self.labels.array if isinstance(self.labels, Volume) else np.asarray(self.labels)
        if labels.shape != self.image.shape:
            raise RegistrationError(
                f"Labels of '{self.image.name}' have shape {labels.shape}, the image {self.image.shape}.")
        object.__setattr__(self, "labels", labels)


class _AnyStop:
    """Set when either the caller's flag or the internal one is set."""

    def __init__(self, outer: StopFlag | None) -> None:
        self.outer, self.inner = outer, threading.Event()

    def is_set(self) -> bool:
        return self.inner.is_set() or (self.outer is not None and self.outer.is_set())


def register_to_sources(targets: Sequence[Volume], sources: Sequence[AnnotatedVolume],
                        settings: RegistrationSettings | None = None, stop: StopFlag | None = None,
                        cache_dir: str | os.PathLike | None = None, workers: int | None = None,
                        threads: int | None = None) -> Iterator[object]:
    """Register all sources onto all targets; yield events, ending with :class:`RegistrationFinished`.

    Args:
        targets: unannotated volumes (each gets a pseudo-label in its own geometry).
        sources: annotated volumes.
        settings: registration settings.
        stop: cooperative stop flag; when set, running pairs end early and the last event has
            ``cancelled=True``.
        cache_dir: folder of the on-disk cache (None: no cache).
        workers: parallel pairs (default: one per thread, at most 4).
        threads: CPU threads all pairs together may use (default: CPU count).

    Yields:
        PairStarted, PairRegistered / PairFailed, BestRegistrationSelected, RegistrationFinished.
    """
    settings = settings or RegistrationSettings()
    cache = RegistrationCache(cache_dir) if cache_dir is not None else None
    pairs = [(t, s) for t in range(len(targets)) for s in range(len(sources))]
    workers = max(1, min(workers or min(threads or os.cpu_count() or 1, 4), len(pairs) or 1))
    threads = max(1, (threads or os.cpu_count() or 1) // workers)
    halt, start = _AnyStop(stop), time.perf_counter()
    done: list[RegisteredLabels] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="registration") as pool:
        pending: dict[Future, tuple[int, int]] = {}
        for index, (t, s) in enumerate(pairs):
            yield PairStarted(targets[t].name, sources[s].image.name, index, len(pairs))
            pending[pool.submit(register_pair, targets[t], sources[s].image, sources[s].labels, settings,
                                halt, cache, threads)] = (t, s)
        yield from _collect(pending, targets, sources, halt, done)
    cancelled = halt.is_set()
    best = {} if cancelled else select_best(done)
    if not cancelled:
        for name, result in best.items():
            yield BestRegistrationSelected(name, result.moving, result.score)
    yield RegistrationFinished(best, tuple(done), cancelled, time.perf_counter() - start)


def _collect(pending: dict, targets, sources, halt: _AnyStop, done: list) -> Iterator[object]:
    """Yield results as pairs finish; poll the stop flag so cancellation is prompt."""
    while pending:
        finished, _ = wait(list(pending), timeout=0.1, return_when=FIRST_COMPLETED)
        if halt.is_set():
            halt.inner.set()
            for future in pending:
                future.cancel()
        for future in finished:
            t, s = pending.pop(future)
            fixed, moving = targets[t].name, sources[s].image.name
            try:
                result = future.result()
            except RegistrationCancelled:
                continue
            except (RegistrationError, RuntimeError, ValueError) as error:
                log.warning("registration %s -> %s failed: %s", moving, fixed, error)
                yield PairFailed(fixed, moving, str(error).strip().splitlines()[0] if str(error).strip() else "failed")
                continue
            done.append(result)
            yield PairRegistered(fixed, moving, result.score, result.seconds, result.cached)
        pending = {f: v for f, v in pending.items() if not f.cancelled()}


def select_best(results: Sequence[RegisteredLabels]) -> dict[str, RegisteredLabels]:
    """The lowest-score result per fixed volume name."""
    best: dict[str, RegisteredLabels] = {}
    for result in results:
        if result.fixed not in best or result.score < best[result.fixed].score:
            best[result.fixed] = result
    return best


def best_registrations(targets: Sequence[Volume], sources: Sequence[AnnotatedVolume],
                       settings: RegistrationSettings | None = None, stop: StopFlag | None = None,
                       cache_dir: str | os.PathLike | None = None, workers: int | None = None,
                       threads: int | None = None) -> dict[str, RegisteredLabels]:
    """Drain :func:`register_to_sources`; the best pseudo-label per target name ({} if cancelled)."""
    finished = RegistrationFinished()
    for event in register_to_sources(targets, sources, settings, stop, cache_dir, workers, threads):
        if isinstance(event, RegistrationFinished):
            finished = event
    return dict(finished.results)


def best_pseudo_label(target: Volume, sources: Sequence[AnnotatedVolume], settings: RegistrationSettings | None = None,
                      stop: StopFlag | None = None, cache_dir: str | Path | None = None,
                      workers: int | None = None, threads: int | None = None) -> RegisteredLabels | None:
    """For one unannotated volume: the best registered pseudo-label, its quality map and score.

    Returns:
        The winning :class:`RegisteredLabels` (``labels``, ``quality``, ``score``, ``moving``),
        or None when cancelled or every pair failed.
    """
    return best_registrations([target], sources, settings, stop, cache_dir, workers, threads).get(target.name)
