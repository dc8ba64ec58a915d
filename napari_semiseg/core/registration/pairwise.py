"""Registration of one annotated volume onto an unannotated one, with cycle-consistency scoring.

Transforms follow SimpleITK's convention: they map points of the *fixed* (unannotated)
volume's physical space to the *moving* (annotated) volume's physical space, so labels are
warped into the fixed geometry by resampling with nearest-neighbour interpolation.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..volume import Geometry, Volume
from .cache import RegistrationCache, pair_key
from .scores import cycle_score, foreground_box, box_mask, mean_dice, quality_map
from .settings import RegistrationError, RegistrationSettings
from .sitk_tools import StopFlag, execute, single_transform
from .stack import StackMapping, register_stack

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegisteredLabels:
    """A pseudo-label for a fixed (unannotated) volume, warped from one annotated source.

    Attributes:
        fixed: name of the volume the labels were warped into.
        moving: name of the annotated source volume.
        labels: label array in the fixed volume's grid (z, y, x), the source's dtype.
        quality: per-voxel trust in [0, 1] (1 = trustworthy), float32, same shape.
        score: cycle-consistency score S = w_rmse * RMSE - w_mi * MI; lower is better.
        metrics: score parts (``rmse``, ``mi``, ``label_cycle_dice``, ``ncc``) and ``mode``.
        seconds: time the registration took when computed (not when read from the cache).
        cached: True when the transforms came from the on-disk cache.
    """

    fixed: str
    moving: str
    labels: np.ndarray
    quality: np.ndarray
    score: float
    metrics: dict = field(default_factory=dict)
    seconds: float = 0.0
    cached: bool = False


def choose_mode(*geometries: tuple[tuple[int, int, int], Geometry]) -> str:
    """``"stack"`` if any volume is a thin or strongly anisotropic stack, else ``"volume"``.

    Args:
        geometries: (shape, geometry) of each volume, (z, y, x) order.
    """
    for shape, geometry in geometries:
        n_z, n_y, n_x = shape
        spacing_z, spacing_y, spacing_x = geometry.spacing
        if n_z < 0.25 * min(n_y, n_x) or spacing_z >= 2.5 * max(spacing_y, spacing_x):
            return "stack"
    return "volume"


def resolve_mode(fixed: Volume, moving: Volume, settings: RegistrationSettings) -> str:
    if settings.mode != "auto":
        return settings.mode
    return choose_mode((fixed.shape, fixed.geometry), (moving.shape, moving.geometry))


def register_transform(fixed: Volume, moving: Volume, moving_labels: np.ndarray, settings: RegistrationSettings,
                       stop: StopFlag | None = None, threads: int = 1) -> tuple[sitk.Transform, dict]:
    """One direction: a transform from fixed physical space to moving physical space.

    Returns:
        The transform and diagnostics (``mode``, and ``ncc`` of the ROI search in stack mode).
    """
    mode = resolve_mode(fixed, moving, settings)
    if mode == "stack":
        mapping = register_stack(fixed.array, moving.array, moving_labels, settings, stop)
        return stack_transform(mapping, fixed.geometry, moving.geometry), {"mode": mode, "ncc": mapping.ncc}
    return register_volume(fixed.to_sitk(), moving.to_sitk(), settings, stop, threads), {"mode": mode}


def register_volume(fixed: sitk.Image, moving: sitk.Image, settings: RegistrationSettings,
                    stop: StopFlag | None = None, threads: int = 1) -> sitk.Transform:
    """Plain 3D registration: centred affine, Mattes MI, 3 levels, sampled; optional B-spline."""
    fixed, moving = sitk.Cast(fixed, sitk.sitkFloat32), sitk.Cast(moving, sitk.sitkFloat32)
    initial = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3),
                                                sitk.CenteredTransformInitializerFilter.GEOMETRY)
    method = _mattes_method(settings, threads)
    method.SetOptimizerAsRegularStepGradientDescent(2.0, 1e-3, settings.iterations, relaxationFactor=0.5)
    method.SetOptimizerScalesFromPhysicalShift()
    shrink = [f for f in (4, 2, 1) if min(fixed.GetSize()) >= 16 * f or f == 1]
    method.SetShrinkFactorsPerLevel(shrink)
    method.SetSmoothingSigmasPerLevel([f / 2 for f in shrink[:-1]] + [0.0])
    method.SetInitialTransform(initial, inPlace=False)
    affine = sitk.AffineTransform(single_transform(execute(method, fixed, moving, stop)))
    if not settings.deformable:
        return affine
    bspline = sitk.BSplineTransformInitializer(fixed, [settings.bspline_mesh] * 3, order=3)
    # coarse levels only and sparse sampling: a full-resolution 3D B-spline costs minutes
    method = _mattes_method(settings, threads, sampling=min(settings.sampling, 0.02))
    method.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=30,
                                maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=60)
    shrink = [f for f in (4, 2) if min(fixed.GetSize()) >= 16 * f] or [1]
    method.SetShrinkFactorsPerLevel(shrink)
    method.SetSmoothingSigmasPerLevel([f / 2 for f in shrink])
    method.SetMovingInitialTransform(affine)
    method.SetInitialTransform(bspline, inPlace=True)
    execute(method, fixed, moving, stop)
    return sitk.CompositeTransform([affine, bspline])


def _mattes_method(settings: RegistrationSettings, threads: int, sampling: float | None = None,
                   ) -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(sampling or settings.sampling, settings.seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetNumberOfThreads(threads)
    return method


def stack_transform(mapping: StackMapping, fixed: Geometry, moving: Geometry) -> sitk.Transform:
    """Turn an index-space :class:`StackMapping` into a physical SimpleITK transform."""
    physical = moving.affine() @ mapping.affine @ np.linalg.inv(fixed.affine())
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(physical[:3, :3][::-1, ::-1].ravel().tolist())
    affine.SetTranslation(physical[:3, 3][::-1].tolist())
    if mapping.displacement is None:
        return affine
    in_plane = mapping.displacement
    index_zyx = np.concatenate([np.zeros(in_plane.shape[:-1] + (1,), np.float32), in_plane], axis=-1)
    physical_zyx = index_zyx @ (fixed.direction_matrix @ np.diag(fixed.spacing)).T
    image = sitk.GetImageFromArray(np.ascontiguousarray(physical_zyx[..., ::-1], dtype=np.float64), isVector=True)
    step = (1.0, mapping.step, mapping.step)
    Geometry(tuple(s * f for s, f in zip(fixed.spacing, step)), fixed.origin, fixed.direction).apply_to_sitk(image)
    return sitk.CompositeTransform([affine, sitk.DisplacementFieldTransform(image)])


def warp(array: np.ndarray, source: Geometry, transform: sitk.Transform, target: Geometry,
         shape: tuple[int, int, int], labels: bool = False) -> np.ndarray:
    """Resample ``array`` (in ``source`` geometry) into ``target`` geometry through ``transform``.

    Labels use nearest-neighbour interpolation and keep their dtype; images use linear.
    """
    image = Volume(array, source).to_sitk()
    reference = sitk.Image([int(s) for s in shape[::-1]], sitk.sitkUInt8)
    target.apply_to_sitk(reference)
    interpolator = sitk.sitkNearestNeighbor if labels else sitk.sitkLinear
    if not labels:
        image = sitk.Cast(image, sitk.sitkFloat32)
    result = sitk.GetArrayFromImage(sitk.Resample(image, reference, transform, interpolator, 0.0))
    return result.astype(array.dtype) if labels else result


def _check_pair(fixed: Volume, moving: Volume, moving_labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(moving_labels.array if isinstance(moving_labels, Volume) else moving_labels)
    if labels.shape != moving.shape:
        raise RegistrationError(
            f"Labels of '{moving.name}' have shape {labels.shape} but the image has {moving.shape}.")
    if not np.any(labels):
        raise RegistrationError(f"'{moving.name}' has no labelled voxel; nothing to register.")
    if fixed.array.size == 0 or moving.array.size == 0:
        raise RegistrationError("Empty volume.")
    return labels


def register_pair(fixed: Volume, moving: Volume, moving_labels: np.ndarray, settings: RegistrationSettings | None = None,
                  stop: StopFlag | None = None, cache: RegistrationCache | None = None,
                  threads: int = 1) -> RegisteredLabels:
    """Warp ``moving_labels`` into ``fixed`` and score the registration by cycle consistency.

    Args:
        fixed: the unannotated volume (its geometry is the output grid).
        moving: the annotated source volume.
        moving_labels: labels of ``moving`` (same shape; array or Volume).
        settings: registration settings (defaults: auto mode, cycle scoring).
        stop: cooperative stop flag (``is_set()``); raises ``RegistrationCancelled`` when set.
        cache: on-disk cache of transforms and scores; None disables caching.
        threads: SimpleITK threads for this pair.

    Raises:
        RegistrationError: mismatched shapes or no labels.
        RegistrationCancelled: when ``stop`` was set.
    """
    settings = settings or RegistrationSettings()
    labels = _check_pair(fixed, moving, moving_labels)
    key = pair_key(fixed, moving, labels, settings)
    stored = cache.load(key) if cache is not None else None
    if stored is not None:
        forward, backward, metrics = stored
        return _assemble(fixed, moving, labels, forward, backward, settings, metrics, cached=True)
    start = time.perf_counter()
    forward, info = register_transform(fixed, moving, labels, settings, stop, threads)
    backward = None
    if settings.cycle:
        pseudo = warp(labels, moving.geometry, forward, fixed.geometry, fixed.shape, labels=True)
        backward, _ = register_transform(moving, fixed, pseudo, settings, stop, threads)
    info["seconds"] = time.perf_counter() - start
    result = _assemble(fixed, moving, labels, forward, backward, settings, info, cached=False)
    if cache is not None:
        cache.save(key, forward, backward, result.metrics)
    log.info("registered %s -> %s: score %.3f in %.1f s", moving.name, fixed.name, result.score, result.seconds)
    return result


def _assemble(fixed: Volume, moving: Volume, labels: np.ndarray, forward: sitk.Transform,
              backward: sitk.Transform | None, settings: RegistrationSettings, info: dict,
              cached: bool) -> RegisteredLabels:
    """Warp labels, cycle the fixed image and its pseudo-label, and score."""
    pseudo = warp(labels, moving.geometry, forward, fixed.geometry, fixed.shape, labels=True)
    image = fixed.array.astype(np.float32)
    if backward is not None:
        there = warp(image, fixed.geometry, backward, moving.geometry, moving.shape)
        cycled = warp(there, moving.geometry, forward, fixed.geometry, fixed.shape)
        labels_there = warp(pseudo, fixed.geometry, backward, moving.geometry, moving.shape, labels=True)
        cycled_labels = warp(labels_there, moving.geometry, forward, fixed.geometry, fixed.shape, labels=True)
    else:
        cycled = _match_range(warp(moving.array.astype(np.float32), moving.geometry, forward, fixed.geometry,
                                   fixed.shape), image)
        cycled_labels = pseudo
    mask = box_mask(fixed.shape, foreground_box(pseudo))
    scores = cycle_score(image, cycled, mask, settings.w_rmse, settings.w_mi)
    metrics = {**info, **scores, "label_cycle_dice": mean_dice(cycled_labels, pseudo)}
    quality = quality_map(pseudo, cycled_labels, image, cycled)
    return RegisteredLabels(fixed.name, moving.name, pseudo, quality, float(scores["score"]), metrics,
                            float(info.get("seconds", 0.0)), cached)


def _match_range(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Linearly map ``image``'s robust range onto ``reference``'s (different scanners/patients)."""
    low, high = np.percentile(image, [1, 99])
    ref_low, ref_high = np.percentile(reference, [1, 99])
    return ((image - low) / (high - low if high > low else 1.0) * (ref_high - ref_low) + ref_low).astype(np.float32)
