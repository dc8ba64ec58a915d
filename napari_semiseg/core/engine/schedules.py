"""Weight and learning-rate schedules as functions of training progress in [0, 1].

Expressing every schedule in fractions of the budget lets one preset serve a two-minute
CPU run and a 30,000-iteration GPU run.
"""

from __future__ import annotations

import math
from typing import Callable

Schedule = Callable[[float], float]


def constant(progress: float) -> float:
    return 1.0


def gaussian_warmup(progress: float) -> float:
    """exp(-5 (1 - t/T)^2): the cross-teaching warm-up (Luo et al., MIDL 2022)."""
    return math.exp(-5.0 * (1.0 - min(max(progress, 0.0), 1.0)) ** 2)


def sigmoid_rampup(progress: float, ramp_fraction: float = 0.4) -> float:
    """exp(-5 (1 - min(t, R)/R)^2) with R a fraction of the budget (mean-teacher family)."""
    phase = min(max(progress, 0.0), ramp_fraction) / ramp_fraction
    return math.exp(-5.0 * (1.0 - phase) ** 2)


def poly(progress: float, power: float = 0.9) -> float:
    """(1 - t/T)^0.9, the poly learning-rate decay."""
    return (1.0 - min(max(progress, 0.0), 1.0)) ** power


SCHEDULES: dict[str, Schedule] = {
    "constant": constant,
    "gaussian_warmup": gaussian_warmup,
    "sigmoid_rampup": sigmoid_rampup,
    "poly": poly,
}


def get_schedule(name: str) -> Schedule:
    try:
        return SCHEDULES[name]
    except KeyError:
        raise ValueError(f"Unknown schedule '{name}'; choose from {', '.join(SCHEDULES)}.") from None
