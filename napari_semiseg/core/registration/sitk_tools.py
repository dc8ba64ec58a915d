"""Small SimpleITK building blocks: cancellation, 2D affine and B-spline on arrays.

2D helpers work in pixel units (spacing 1, origin 0) on (y, x) arrays; the transforms they
return map fixed pixel coordinates (x, y) to moving pixel coordinates (x, y).
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np
import SimpleITK as sitk

log = logging.getLogger(__name__)


class StopFlag(Protocol):
    """Anything with ``is_set()``, e.g. ``threading.Event``."""

    def is_set(self) -> bool: ...


class RegistrationCancelled(Exception):
    """Raised inside the library when the stop flag was set; generators turn it into an event."""


def check_stop(stop: StopFlag | None) -> None:
    """Raise :class:`RegistrationCancelled` if ``stop`` is set."""
    if stop is not None and stop.is_set():
        raise RegistrationCancelled()


def watch_stop(method: sitk.ImageRegistrationMethod, stop: StopFlag | None) -> None:
    """End ``method.Execute`` early (``StopRegistration``) once ``stop`` is set."""
    if stop is None:
        return

    def on_iteration() -> None:
        if stop.is_set():
            method.StopRegistration()

    method.AddCommand(sitk.sitkIterationEvent, on_iteration)


def execute(method: sitk.ImageRegistrationMethod, fixed: sitk.Image, moving: sitk.Image,
            stop: StopFlag | None) -> sitk.Transform:
    """Run a registration, honouring the stop flag before and after."""
    check_stop(stop)
    watch_stop(method, stop)
    transform = method.Execute(fixed, moving)
    check_stop(stop)
    return transform


def single_transform(transform: sitk.Transform) -> sitk.Transform:
    """``Execute`` with ``inPlace=False`` returns a composite of one transform; unwrap it."""
    if transform.GetName() == "CompositeTransform":
        composite = sitk.CompositeTransform(transform)
        if composite.GetNumberOfTransforms() == 1:
            return composite.GetNthTransform(0)
    return transform


def image_2d(array: np.ndarray) -> sitk.Image:
    """A float32 2D SimpleITK image in pixel units."""
    return sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))


def affine_2d(fixed: np.ndarray, moving: np.ndarray, stop: StopFlag | None = None, iterations: int = 60,
              initial: sitk.Transform | None = None, fixed_mask: np.ndarray | None = None,
              threads: int = 1) -> sitk.Transform:
    """2D affine registration (correlation metric, two levels) of array ``moving`` onto ``fixed``."""
    fixed_image, moving_image = image_2d(fixed), image_2d(moving)
    if initial is None:
        initial = sitk.CenteredTransformInitializer(
            fixed_image, moving_image, sitk.AffineTransform(2), sitk.CenteredTransformInitializerFilter.GEOMETRY)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsCorrelation()
    if fixed_mask is not None:
        method.SetMetricFixedMask(sitk.GetImageFromArray(fixed_mask.astype(np.uint8)))
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-3, iterations, relaxationFactor=0.6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([2, 1])
    method.SetSmoothingSigmasPerLevel([1.0, 0.0])
    method.SetInitialTransform(initial, inPlace=False)
    method.SetNumberOfThreads(threads)
    return execute(method, fixed_image, moving_image, stop)


def bspline_2d(fixed: np.ndarray, moving: np.ndarray, stop: StopFlag | None = None, mesh: int = 4,
               iterations: int = 40, threads: int = 1) -> sitk.Transform:
    """2D B-spline registration (correlation, L-BFGS-B) of ``moving`` onto ``fixed``, already roughly aligned."""
    fixed_image, moving_image = image_2d(fixed), image_2d(moving)
    initial = sitk.BSplineTransformInitializer(fixed_image, [mesh, mesh], order=3)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsCorrelation()
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=iterations,
                                maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=2 * iterations)
    method.SetShrinkFactorsPerLevel([2, 1])
    method.SetSmoothingSigmasPerLevel([1.0, 0.0])
    method.SetInitialTransform(initial, inPlace=False)
    method.SetNumberOfThreads(threads)
    return execute(method, fixed_image, moving_image, stop)


def demons_2d(fixed: np.ndarray, moving: np.ndarray, iterations: int = 40, sigma: float = 2.0,
              threads: int = 1) -> np.ndarray:
    """Symmetric-forces demons on two roughly aligned (y, x) arrays; returns (dy, dx) per fixed pixel.

    The moving array is histogram-matched to the fixed one first (different patients and
    scanners have different contrasts); ``sigma`` smooths the displacement field (pixels).
    """
    fixed_image, moving_image = image_2d(fixed), image_2d(moving)
    moving_image = sitk.HistogramMatching(moving_image, fixed_image, numberOfHistogramLevels=64,
                                          numberOfMatchPoints=7, thresholdAtMeanIntensity=False)
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(iterations)
    demons.SetStandardDeviations(sigma)
    demons.SetSmoothDisplacementField(True)
    demons.SetNumberOfThreads(threads)
    field = demons.Execute(fixed_image, moving_image)
    return sitk.GetArrayFromImage(field)[..., ::-1].astype(np.float32)


def displacement_2d(transform: sitk.Transform, shape: tuple[int, int]) -> np.ndarray:
    """Displacement (dy, dx) in pixels of a 2D transform at every pixel of a (y, x) grid."""
    reference = sitk.Image([int(shape[1]), int(shape[0])], sitk.sitkFloat32)
    field = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, reference.GetSize(),
                                              reference.GetOrigin(), reference.GetSpacing(), reference.GetDirection())
    return sitk.GetArrayFromImage(field)[..., ::-1].astype(np.float32)


def warp_2d(array: np.ndarray, transform: sitk.Transform, shape: tuple[int, int] | None = None,
            nearest: bool = False, default: float = 0.0) -> np.ndarray:
    """Resample a (y, x) array through a pixel-space 2D transform onto a grid of ``shape``."""
    image = image_2d(array) if not nearest else sitk.GetImageFromArray(np.ascontiguousarray(array))
    shape = shape or array.shape
    reference = sitk.Image([int(shape[1]), int(shape[0])], image.GetPixelID())
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.GetArrayFromImage(sitk.Resample(image, reference, transform, interpolator, default))
