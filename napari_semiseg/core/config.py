"""Frozen training configuration, stored inside every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

# the strategy a new user gets, in the widget and on the command line (the fastest strong one on a CPU)
DEFAULT_STRATEGY = "registration_supervised"

DEVICES = ("auto", "cpu", "cuda", "mps")
NETWORK_SIZES = ("auto", "cpu", "paper")


class ConfigError(ValueError):
    """A setting out of range; the message names the setting and what is allowed."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides how a model is trained.

    Exactly one of ``minutes`` and ``iterations`` sets the budget. Schedules (learning
    rate, loss-weight ramps) are fractions of the budget, so a two-minute CPU run and a
    long GPU run use the same strategy preset.

    Args:
        strategy: name of a strategy preset (``napari-semiseg strategies`` lists them).
        minutes: wall-clock training budget, excluding start-up.
        iterations: number of optimiser steps.
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda`` or ``mps``.
        batch_size: slices per step; with unannotated data, half of them are unannotated.
        patch_size: side of the square crops the networks train on.
        network_size: ``cpu`` (small, fast), ``paper`` (the published sizes) or ``auto``
            (``paper`` on a GPU, ``cpu`` otherwise).
        boundary_weight: extra cross-entropy weight on a band around label boundaries.
        augment: random flips, rotations, scaling and intensity changes.
        seed: random seed for sampling, augmentation and initial weights.
        threads: CPU threads for torch; ``0`` means all cores.
        checkpoint_seconds: how often a checkpoint is written while training.
        registration_share: with a budget in minutes, the largest share of it that registering
            unannotated volumes may take (strategies with registration pseudo-labels); volumes
            not reached in time train as plain unannotated data. Iteration budgets register all.
    """

    strategy: str = DEFAULT_STRATEGY
    minutes: float | None = None
    iterations: int | None = None
    device: str = "auto"
    batch_size: int = 8
    patch_size: int = 128
    network_size: str = "auto"
    boundary_weight: float = 0.0
    augment: bool = True
    seed: int = 0
    threads: int = 0
    checkpoint_seconds: float = 60.0
    registration_share: float = 0.25

    def __post_init__(self) -> None:
        if self.minutes is None and self.iterations is None:
            object.__setattr__(self, "minutes", 5.0)
        if self.minutes is not None and self.iterations is not None:
            raise ConfigError("Give a budget in minutes or in iterations, not both.")
        if self.minutes is not None and not self.minutes > 0:
            raise ConfigError(f"minutes must be positive, got {self.minutes}.")
        if self.iterations is not None and self.iterations < 1:
            raise ConfigError(f"iterations must be at least 1, got {self.iterations}.")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got '{self.device}'.")
        if self.network_size not in NETWORK_SIZES:
            raise ConfigError(f"network_size must be one of {', '.join(NETWORK_SIZES)}.")
        if self.batch_size < 2:
            raise ConfigError("batch_size must be at least 2.")
        if self.patch_size < 32 or self.patch_size % 16:
            raise ConfigError("patch_size must be a multiple of 16, at least 32.")
        if self.boundary_weight < 0:
            raise ConfigError("boundary_weight must be 0 or more.")
        if not 0 < self.registration_share <= 1:
            raise ConfigError(f"registration_share must be in (0, 1], got {self.registration_share}.")

    @property
    def registration_seconds(self) -> float | None:
        """Time limit for registering unannotated volumes (None with an iteration budget)."""
        return None if self.minutes is None else self.minutes * 60.0 * self.registration_share

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})
