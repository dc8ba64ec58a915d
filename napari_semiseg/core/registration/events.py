"""Small, frozen, picklable events yielded by registration and propagation generators."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class PairStarted:
    """Registration of ``moving`` (annotated) onto ``fixed`` began."""

    fixed: str
    moving: str
    index: int
    total: int


@dataclass(frozen=True)
class PairRegistered:
    """One pair is done; ``score`` is the cycle-consistency score (lower is better)."""

    fixed: str
    moving: str
    score: float
    seconds: float
    cached: bool = False


@dataclass(frozen=True)
class PairFailed:
    fixed: str
    moving: str
    message: str


@dataclass(frozen=True)
class BestRegistrationSelected:
    """The source whose registration scored best for one unannotated volume."""

    fixed: str
    moving: str
    score: float


@dataclass(frozen=True)
class RegistrationFinished:
    """Last event. ``results`` maps each fixed volume name to its best ``RegisteredLabels``."""

    results: dict = field(default_factory=dict)
    pairs: tuple = ()
    cancelled: bool = False
    seconds: float = 0.0


@dataclass(frozen=True)
class SlicePropagated:
    """Labels reached ``slice_index`` from the painted ``sources``; ``labels`` is a copy."""

    slice_index: int
    sources: tuple[int, ...]
    score: float
    labels: np.ndarray
    done: int
    total: int


@dataclass(frozen=True)
class PropagationFinished:
    """Last event of within-volume propagation; ``result`` is a ``PropagationResult`` or None."""

    result: object = None
    cancelled: bool = False
    seconds: float = 0.0
