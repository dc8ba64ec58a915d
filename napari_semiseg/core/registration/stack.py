"""Registration of thin stacks of slices (e.g. cardiac short-axis cine MRI).

A stack of 6 to 18 slices with an unknown slice gap defeats a textbook 3D affine: the
through-plane axis carries almost no information and the anatomy of interest is a small part
of a large field of view. This module therefore treats the axes differently:

1. **Through-plane**: fixed slice ``k`` is matched to the moving stack at the same relative
   position, ``z_m = (k + 0.5) * n_m / n_f - 0.5`` (the 1 mm spacing in the files is not
   trusted). The moving stack is resampled to those positions.
2. **Region of interest**: the moving (annotated) volume's labels give its ROI. That ROI,
   as a 2.5D template (all slices at once), is searched for in the fixed stack by normalised
   cross-correlation over in-plane rotations and scales (FFT, coarse resolution). This finds
   the organ in the unannotated volume from intensities only.
3. **2.5D affine**: a SimpleITK affine, restricted to in-plane parameters (optimizer weights
   freeze everything involving z), refines the match inside the ROI mask (correlation metric).
4. **Per-slice deformable**: a small 2D B-spline per slice inside the ROI.

The result, :class:`StackMapping`, maps fixed voxel indices to moving voxel indices:
``m = A(p + d_k(p))`` with ``A`` affine (index space) and ``d_k`` an in-plane displacement.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import fft as sp_fft
from scipy import ndimage, signal

from .settings import RegistrationSettings
from .sitk_tools import StopFlag, check_stop, execute, single_transform

log = logging.getLogger(__name__)

ANGLES = tuple(float(a) for a in np.arange(-90, 91, 22.5))
SCALES = tuple(float(s) for s in np.geomspace(0.55, 1.9, 9))
ROI_MARGIN = 0.5
DEMONS_ITERATIONS = 100
DEMONS_SIGMA = 1.5


@dataclass
class StackMapping:
    """Fixed index (z, y, x) -> moving index (z, y, x), see module doc.

    Attributes:
        affine: 4x4 homogeneous matrix on (z, y, x) indices (z block: relative position).
        displacement: (n_z, g_y, g_x, 2) in-plane displacement (dy, dx) in fixed pixels,
            sampled every ``step`` pixels from index 0, applied before ``affine``; or None.
        step: in-plane spacing of the displacement grid, in fixed pixels.
        ncc: normalised cross-correlation of the best ROI match (diagnostic).
    """

    affine: np.ndarray
    displacement: np.ndarray | None
    step: float
    ncc: float = 0.0


def relative_z(n_fixed: int, n_moving: int) -> tuple[float, float]:
    """Slope and offset of ``z_m = a * z_f + b`` matching slices by relative position."""
    slope = n_moving / n_fixed
    return slope, 0.5 * slope - 0.5


def register_stack(fixed: np.ndarray, moving: np.ndarray, moving_labels: np.ndarray,
                   settings: RegistrationSettings, stop: StopFlag | None = None) -> StackMapping:
    """Register a moving stack (with labels) onto a fixed stack; arrays are (z, y, x).

    Raises:
        RegistrationCancelled: when ``stop`` is set.
    """
    slope, offset = relative_z(fixed.shape[0], moving.shape[0])
    factor = max(fixed.shape[1:] + moving.shape[1:]) / settings.working_size
    z_positions = slope * np.arange(fixed.shape[0]) + offset
    fixed_w = _to_working(_normalised(fixed), factor, np.arange(fixed.shape[0], dtype=float))
    moving_w = _to_working(_normalised(moving), factor, z_positions)
    labels_w = _to_working(moving_labels > 0, factor, z_positions, order=0).astype(bool)
    check_stop(stop)
    box = _label_box(labels_w)
    initial, ncc = _search_similarity(fixed_w, moving_w, box, stop)
    check_stop(stop)
    affine_w = _refine_affine(fixed_w, moving_w, initial, box, settings, stop)
    displacement = None
    if settings.stack_deformable:
        displacement = _per_slice_deformable(fixed_w, moving_w, affine_w, box, stop)
    return _to_full_resolution(affine_w, displacement, factor, slope, offset, ncc)


def _normalised(array: np.ndarray) -> np.ndarray:
    low, high = np.percentile(array, [1, 99.5])
    return np.clip((array - low) / (high - low if high > low else 1.0), 0, 1.2).astype(np.float32)


def _to_working(stack: np.ndarray, factor: float, z_positions: np.ndarray, order: int = 1) -> np.ndarray:
    """Resample slices at (fractional) ``z_positions`` and shrink in-plane by ``factor``.

    Working pixel ``u`` sits at full-resolution pixel ``u * factor + (factor - 1) / 2``.
    """
    shape = tuple(max(int(round(n / factor)), 8) for n in stack.shape[1:])
    source = stack.astype(np.float32)
    if order and factor > 1:
        source = ndimage.gaussian_filter(source, (0, 0.4 * factor, 0.4 * factor))
    ys = np.arange(shape[0]) * factor + (factor - 1) / 2
    xs = np.arange(shape[1]) * factor + (factor - 1) / 2
    zz, yy, xx = np.meshgrid(np.clip(z_positions, 0, stack.shape[0] - 1), ys, xs, indexing="ij")
    return ndimage.map_coordinates(source, [zz, yy, xx], order=order, mode="nearest").astype(np.float32)


def _label_box(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and half-size (y, x) of the labels' in-plane bounding box, widened by the margin."""
    where = np.argwhere(labels.any(0))
    if where.size == 0:
        centre = np.array(labels.shape[1:], float) / 2
        return centre, centre / 2
    low, high = where.min(0).astype(float), where.max(0).astype(float) + 1
    centre = (low + high - 1) / 2
    half = np.maximum((high - low) / 2 * (1 + 2 * ROI_MARGIN), 4.0)
    return centre, half


def _rotation(angle_degrees: float) -> np.ndarray:
    angle = np.deg2rad(angle_degrees)
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def _search_similarity(fixed: np.ndarray, moving: np.ndarray, box: tuple[np.ndarray, np.ndarray],
                       stop: StopFlag | None) -> tuple[np.ndarray, float]:
    """Best in-plane similarity (3x3 on (y, x, 1)) from fixed to moving working pixels by 2.5D NCC."""
    # search at half the working resolution: coarse pixel c sits at working pixel 2c + 0.5
    fixed, moving = _halve(fixed), _halve(moving)
    centre, half = (box[0] - 0.5) / 2, box[1] / 2
    best = (-np.inf, None)
    for scale in SCALES:
        check_stop(stop)
        sizes = np.maximum(np.round(2 * half * scale).astype(int), 3)
        correlator = _Correlator(fixed, tuple(int(n) for n in sizes))
        for angle in ANGLES:
            linear = _rotation(angle) / scale
            score, fixed_centre = correlator.peak(_sample_template(moving, centre, sizes, linear))
            if score > best[0]:
                best = (score, (linear, fixed_centre))
    score, (linear, fixed_centre) = best
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = centre - linear @ fixed_centre
    to_coarse = np.array([[0.5, 0, -0.25], [0, 0.5, -0.25], [0, 0, 1]])
    log.debug("ROI search: ncc %.3f", score)
    return np.linalg.inv(to_coarse) @ matrix @ to_coarse, float(score)


def _halve(stack: np.ndarray) -> np.ndarray:
    """Average 2x2 in-plane blocks (odd edges dropped)."""
    n_y, n_x = stack.shape[1] // 2 * 2, stack.shape[2] // 2 * 2
    trimmed = stack[:, :n_y, :n_x]
    return trimmed.reshape(stack.shape[0], n_y // 2, 2, n_x // 2, 2).mean(axis=(2, 4))


def _sample_template(moving: np.ndarray, centre: np.ndarray, sizes: np.ndarray, linear: np.ndarray) -> np.ndarray:
    """The moving ROI seen in fixed pixels: template pixel u -> moving ``centre + linear @ u``."""
    uy = np.arange(sizes[0]) - (sizes[0] - 1) / 2
    ux = np.arange(sizes[1]) - (sizes[1] - 1) / 2
    grid = np.stack(np.meshgrid(uy, ux, indexing="ij"))
    points = np.einsum("ij,jyx->iyx", linear, grid) + centre[:, None, None]
    slices = [ndimage.map_coordinates(s, points, order=1, mode="constant", cval=0.0) for s in moving]
    return np.stack(slices).astype(np.float32)


class _Correlator:
    """2.5D normalised cross-correlation of one fixed stack with templates of one size (FFT).

    The fixed stack's transform and window statistics are computed once per template size;
    each template then costs one forward and one inverse FFT (slices summed in Fourier space).
    """

    def __init__(self, fixed: np.ndarray, size: tuple[int, int]) -> None:
        ty, tx = size
        self.size = size
        self.pad = np.array([ty // 2, tx // 2])
        image = np.pad(fixed, ((0, 0), (ty // 2, ty // 2), (tx // 2, tx // 2)))
        self.valid = (image.shape[1] - ty + 1, image.shape[2] - tx + 1)
        self.shape = tuple(sp_fft.next_fast_len(n, real=True) for n in image.shape[1:])
        self.image_hat = sp_fft.rfft2(image, s=self.shape)
        window = np.ones(size, np.float32)
        inside = np.pad(np.ones(fixed.shape[1:], np.float32), ((ty // 2, ty // 2), (tx // 2, tx // 2)))
        s1 = signal.fftconvolve(image.sum(0), window, mode="valid")
        s2 = signal.fftconvolve((image ** 2).sum(0), window, mode="valid")
        count = fixed.shape[0] * ty * tx
        self.spread = np.sqrt(np.maximum(s2 - s1 ** 2 / count, 1e-6 * count))
        self.covered = signal.fftconvolve(inside, window, mode="valid") / window.size >= 0.7

    def peak(self, template: np.ndarray) -> tuple[float, np.ndarray]:
        """Best score and the template centre (y, x) in fixed pixels."""
        ty, tx = self.size
        centred = template - template.mean()
        product = (self.image_hat * sp_fft.rfft2(centred[:, ::-1, ::-1], s=self.shape)).sum(0)
        full = sp_fft.irfft2(product, s=self.shape)
        numerator = full[ty - 1:ty - 1 + self.valid[0], tx - 1:tx - 1 + self.valid[1]]
        ncc = np.where(self.covered, numerator / (self.spread * (np.linalg.norm(centred) + 1e-9)), -1.0)
        peak = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
        centre = np.array(peak, float) + np.array([(ty - 1) / 2, (tx - 1) / 2]) - self.pad
        return float(ncc[peak]), centre


def _stack_image(array: np.ndarray, low: tuple[int, int] = (0, 0)) -> sitk.Image:
    """A lightly smoothed stack in working pixel units whose in-plane index 0 sits at ``low`` (y, x)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(ndimage.gaussian_filter(array, (0, 0.7, 0.7))))
    image.SetOrigin((float(low[1]), float(low[0]), 0.0))
    return image


def _as_sitk_affine(matrix_yx: np.ndarray) -> sitk.AffineTransform:
    """An in-plane (y, x) 3x3 matrix as a 3D SimpleITK affine on (x, y, z) leaving z alone."""
    transform = sitk.AffineTransform(3)
    linear = np.eye(3)
    linear[:2, :2] = matrix_yx[:2, :2][::-1, ::-1]
    transform.SetMatrix(linear.ravel().tolist())
    transform.SetTranslation([float(matrix_yx[1, 2]), float(matrix_yx[0, 2]), 0.0])
    return transform


def _from_sitk_affine(transform: sitk.Transform) -> np.ndarray:
    affine = sitk.AffineTransform(single_transform(transform))
    linear = np.asarray(affine.GetMatrix()).reshape(3, 3)
    centre = np.asarray(affine.GetCenter())
    translation = np.asarray(affine.GetTranslation()) + centre - linear @ centre
    matrix = np.eye(3)
    matrix[:2, :2] = linear[:2, :2][::-1, ::-1]
    matrix[:2, 2] = translation[:2][::-1]
    return matrix


def _fixed_box(initial: np.ndarray, box: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The moving ROI box carried into fixed working pixels by the similarity ``initial``."""
    centre, half = box
    inverse = np.linalg.inv(initial)
    scale = np.sqrt(abs(np.linalg.det(inverse[:2, :2])))
    return inverse[:2, :2] @ centre + inverse[:2, 2], half * scale


def _refine_affine(fixed: np.ndarray, moving: np.ndarray, initial: np.ndarray, box: tuple[np.ndarray, np.ndarray],
                   settings: RegistrationSettings, stop: StopFlag | None) -> np.ndarray:
    """2.5D affine: a 3D SimpleITK affine whose z parameters are frozen, inside the ROI."""
    fixed_centre, fixed_half = _fixed_box(initial, box)
    low = np.maximum(np.floor(fixed_centre - 1.2 * fixed_half), 0).astype(int)
    high = np.minimum(np.ceil(fixed_centre + 1.2 * fixed_half) + 1, fixed.shape[1:]).astype(int)
    crop = fixed[:, low[0]:high[0], low[1]:high[1]]
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsCorrelation()
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.2, settings.seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-2, min(settings.iterations, 30), relaxationFactor=0.5)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetOptimizerWeights([1, 1, 0, 1, 1, 0, 0, 0, 0, 1, 1, 0])
    method.SetInitialTransform(_as_sitk_affine(initial), inPlace=False)
    method.SetNumberOfThreads(1)
    transform = execute(method, _stack_image(crop, tuple(low)), _stack_image(moving), stop)
    refined = _from_sitk_affine(transform)
    if not _plausible(refined, initial):
        log.debug("affine refinement rejected (implausible); keeping the similarity search")
        return initial
    return refined


def _plausible(refined: np.ndarray, initial: np.ndarray) -> bool:
    singular = np.linalg.svd(refined[:2, :2], compute_uv=False)
    reference = np.sqrt(abs(np.linalg.det(initial[:2, :2])))
    return bool(singular.min() > 0.6 * reference and singular.max() < 1.6 * reference)


def _warp_in_plane(stack: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    yy, xx = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    points = np.einsum("ij,jyx->iyx", matrix[:2, :2], np.stack([yy, xx])) + matrix[:2, 2, None, None]
    return np.stack([ndimage.map_coordinates(s, points, order=1, mode="nearest") for s in stack])


def _per_slice_deformable(fixed: np.ndarray, moving: np.ndarray, affine: np.ndarray,
                          box: tuple[np.ndarray, np.ndarray], stop: StopFlag | None) -> np.ndarray:
    """In-plane displacement (working pixels) per slice from demons inside the ROI."""
    warped = _warp_in_plane(moving, affine, fixed.shape[1:])
    centre, half = _fixed_box(affine, box)
    low = np.maximum(np.floor(centre - 1.3 * half), 0).astype(int)
    high = np.minimum(np.ceil(centre + 1.3 * half) + 1, fixed.shape[1:]).astype(int)
    crop = (slice(None), slice(low[0], high[0]), slice(low[1], high[1]))
    displacement = np.zeros(fixed.shape + (2,), np.float32)
    check_stop(stop)
    field = stack_demons(fixed[crop], warped[crop], DEMONS_ITERATIONS, DEMONS_SIGMA, stop)
    displacement[crop] = field * _taper(tuple(high - low))[None, ..., None]
    return displacement


def _match_slices(moving: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """Per-slice linear intensity match of ``moving`` to ``fixed`` (mean and spread)."""
    axes = (1, 2)
    scale = fixed.std(axis=axes, keepdims=True) / np.maximum(moving.std(axis=axes, keepdims=True), 1e-6)
    return (moving - moving.mean(axis=axes, keepdims=True)) * scale + fixed.mean(axis=axes, keepdims=True)


def stack_demons(fixed: np.ndarray, moving: np.ndarray, iterations: int = 40, sigma: float = 2.5,
                 stop: StopFlag | None = None) -> np.ndarray:
    """Symmetric demons in-plane on every slice at once (NumPy); returns (z, y, x, 2) (dy, dx).

    Fixed pixel ``p`` of slice ``k`` corresponds to moving ``p + d_k(p)``. The moving stack is
    intensity-matched per slice first; the total field is Gaussian-smoothed after every
    update (``sigma`` pixels), which keeps it smooth and small.
    """
    fixed = fixed.astype(np.float32)
    moving = _match_slices(moving.astype(np.float32), fixed)
    n_z, n_y, n_x = fixed.shape
    zz, yy, xx = np.meshgrid(np.arange(n_z), np.arange(n_y), np.arange(n_x), indexing="ij")
    field = np.zeros((2, n_z, n_y, n_x), np.float32)
    fixed_gradient = np.stack(np.gradient(fixed, axis=(1, 2)))
    for iteration in range(iterations):
        if iteration % 10 == 0:
            check_stop(stop)
        warped = ndimage.map_coordinates(moving, [zz, yy + field[0], xx + field[1]], order=1, mode="nearest")
        difference = warped - fixed
        gradient = 0.5 * (fixed_gradient + np.stack(np.gradient(warped, axis=(1, 2))))
        denominator = (gradient ** 2).sum(0) + difference ** 2
        update = -difference * gradient / np.where(denominator > 1e-9, denominator, np.inf)
        field = ndimage.gaussian_filter(field + update, (0, 0, sigma, sigma))
    return np.moveaxis(field, 0, -1)


def _taper(shape: tuple[int, int], width: float = 0.15) -> np.ndarray:
    """1 inside, falling smoothly to 0 over ``width`` of the size at the borders."""
    ramps = []
    for n in shape:
        distance = np.minimum(np.arange(n), np.arange(n)[::-1]) / max(width * n, 1.0)
        ramps.append(np.clip(distance, 0, 1))
    return np.outer(*ramps).astype(np.float32)


def _to_full_resolution(affine_w: np.ndarray, displacement: np.ndarray | None, factor: float, slope: float,
                        offset: float, ncc: float) -> StackMapping:
    """Express the working-resolution mapping on full-resolution (z, y, x) indices."""
    to_working = np.eye(3)
    to_working[:2, :2] /= factor
    to_working[:2, 2] = -(factor - 1) / (2 * factor)
    from_working = np.linalg.inv(to_working)
    in_plane = from_working @ affine_w @ to_working
    affine = np.eye(4)
    affine[0, 0], affine[0, 3] = slope, offset
    affine[1:3, 1:3], affine[1:3, 3] = in_plane[:2, :2], in_plane[:2, 2]
    field = None
    if displacement is not None:
        # working grid point u sits at full pixel u * factor + (factor - 1) / 2; resample on a
        # grid starting at full pixel 0 with step ``factor`` so it covers the whole image.
        n_z, g_y, g_x = displacement.shape[:3]
        zz, yy, xx = np.meshgrid(np.arange(n_z), np.arange(g_y + 2) - (factor - 1) / (2 * factor),
                                 np.arange(g_x + 2) - (factor - 1) / (2 * factor), indexing="ij")
        field = np.stack([ndimage.map_coordinates(displacement[..., c], [zz, yy, xx], order=1, mode="nearest")
                          for c in range(2)], axis=-1) * factor
    return StackMapping(affine=affine, displacement=field, step=factor, ncc=ncc)
