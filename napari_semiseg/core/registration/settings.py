"""Frozen, validated settings for registration between and within volumes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

MODES = ("auto", "volume", "stack")


class RegistrationError(ValueError):
    """Inputs that cannot be registered; the message says what to do."""


@dataclass(frozen=True)
class RegistrationSettings:
    """How a pair of volumes is registered and scored.

    Args:
        mode: ``"volume"`` (plain 3D affine, optional B-spline: isotropic 3D data),
            ``"stack"`` (thin stacks of slices: slices matched by relative position, in-plane
            similarity search around the source's labels, 2.5D affine, per-slice B-spline) or
            ``"auto"`` (chosen from the geometry, see :func:`choose_mode`).
        deformable: add the deformable stage (3D B-spline in volume mode; in stack mode the
            per-slice 2D B-spline, which is cheap and on by default through ``stack_deformable``).
        stack_deformable: per-slice in-plane B-spline in stack mode.
        cycle: register the reverse direction too and score cycle consistency.
        w_rmse: weight of RMSE(v, v~) in the cycle score.
        w_mi: weight of -MI(v, v~) in the cycle score.
        sampling: fraction of voxels the 3D metrics sample (volume mode).
        iterations: optimiser iterations per level (affine stages).
        bspline_mesh: control-point mesh size per axis of the 3D B-spline (volume mode).
        working_size: in-plane size (pixels) stacks are resampled to before registration.
        seed: random seed of the metric sampling, for repeatable results.
    """

    mode: str = "auto"
    deformable: bool = False
    stack_deformable: bool = True
    cycle: bool = True
    w_rmse: float = 1.0
    w_mi: float = 1.0
    sampling: float = 0.05
    iterations: int = 100
    bspline_mesh: int = 4
    working_size: int = 112
    seed: int = 7

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise RegistrationError(f"Registration mode must be one of {MODES}, got '{self.mode}'.")
        if not 0.0 < self.sampling <= 1.0:
            raise RegistrationError(f"Sampling fraction must be in (0, 1], got {self.sampling}.")
        if self.iterations < 1 or self.bspline_mesh < 1 or self.working_size < 32:
            raise RegistrationError("Iterations and mesh size must be positive; working size at least 32.")
        if self.w_rmse < 0 or self.w_mi < 0:
            raise RegistrationError("Score weights must not be negative.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RegistrationSettings":
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


@dataclass(frozen=True)
class PropagationSettings:
    """How painted slices are carried to their unpainted neighbours within one volume.

    Args:
        deformable: add a 2D B-spline after the 2D affine of each slice-to-slice step.
        extrapolate: also fill slices beyond the first/last painted slice (one side only).
        max_distance: fill at most this many slices away from a painted slice (None: no limit).
        margin: ROI margin around the painted labels, as a fraction of their extent.
        iterations: optimiser iterations of each 2D stage.
        mesh: B-spline control-point mesh size per axis.
    """

    deformable: bool = True
    extrapolate: bool = True
    max_distance: int | None = None
    margin: float = 0.5
    iterations: int = 60
    mesh: int = 4

    def __post_init__(self) -> None:
        if self.max_distance is not None and self.max_distance < 1:
            raise RegistrationError("max_distance must be at least 1 (or None for no limit).")
        if self.margin < 0 or self.iterations < 1 or self.mesh < 1:
            raise RegistrationError("Margin must be >= 0; iterations and mesh positive.")

    def to_dict(self) -> dict:
        return asdict(self)
