"""Training data: the volumes and labels of a run, their 2D slices along the annotation axis,
random crops and augmentation.

Augmentation draws its random parameters first and applies them to the whole batch in
one vectorised call, so it costs little next to the networks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..annotations import IGNORE, AnnotationScheme, check_label_array, check_trainable
from ..volume import Volume, check_image_usable

MAX_FOREGROUND_SAMPLES = 4096


@dataclass
class TrainingData:
    """Volumes with their label arrays (``None`` for unannotated volumes).

    ``registration_cache`` is a folder where registrations (for registration pseudo-labels) are
    kept between runs, such as a project's ``registration-cache``; None keeps nothing.
    """

    volumes: list[Volume]
    labels: list[np.ndarray | None]
    scheme: AnnotationScheme
    registration_cache: str | None = None

    def check(self) -> tuple[int, ...]:
        """Validate images and labels and return the class label values."""
        if len(self.volumes) != len(self.labels):
            raise ValueError("Give one label array (or None) per volume.")
        for volume, labels in zip(self.volumes, self.labels):
            check_image_usable(volume)
            if labels is not None:
                check_label_array(labels, volume.shape, name=f"labels of '{volume.name}'")
        return check_trainable([labels for labels in self.labels if labels is not None], self.scheme)


@dataclass
class Batch:
    """A training batch: the first ``annotated`` rows carry targets, the rest do not."""

    images: torch.Tensor
    targets: torch.Tensor
    annotated: int
    pseudo_targets: torch.Tensor | None = None
    pseudo_weights: torch.Tensor | None = None

    @property
    def has_unannotated(self) -> bool:
        return self.images.shape[0] > self.annotated


def normalise_intensity(array: np.ndarray) -> np.ndarray:
    """Clip to the 0.5-99.5 percentiles, then zero mean and unit variance (float32)."""
    data = np.asarray(array, dtype=np.float32)
    low, high = np.percentile(data, [0.5, 99.5])
    data = np.clip(data, low, high)
    std = float(data.std())
    return ((data - float(data.mean())) / (std if std > 0 else 1.0)).astype(np.float32)


def slices_along(array: np.ndarray, axis: int) -> list[np.ndarray]:
    """The 2D slices of a (z, y, x) array along ``axis``, each contiguous."""
    return [np.ascontiguousarray(s) for s in np.moveaxis(array, axis, 0)]


@dataclass
class TrainingSlices:
    """All training slices of all volumes, split into those with and without known pixels."""

    images: list[np.ndarray]
    targets: list[np.ndarray | None]
    annotated: np.ndarray
    unannotated: np.ndarray
    foreground: list[np.ndarray | None]
    pseudo_targets: list[np.ndarray | None] | None = None
    pseudo_weights: list[np.ndarray | None] | None = None

    @property
    def counts(self) -> tuple[int, int]:
        return len(self.annotated), len(self.unannotated)


def build_training_slices(
    images: list[np.ndarray], targets: list[np.ndarray | None], axis: int, seed: int = 0, pseudo_labels=None
) -> TrainingSlices:
    """Cut normalised images and their targets (``None`` = unannotated volume) into slices.

    Args:
        pseudo_labels: optional per-volume objects with ``targets`` and ``weights`` arrays
            (registration pseudo-labels), or None for volumes without them.
    """
    rng = np.random.default_rng(seed)
    image_slices: list[np.ndarray] = []
    target_slices: list[np.ndarray | None] = []
    for image, target in zip(images, targets):
        image_slices += slices_along(normalise_intensity(image), axis)
        target_slices += _optional_slices(target, image.shape[axis], axis)
    known = [t is not None and bool(np.any(t != IGNORE)) for t in target_slices]
    foreground = [_foreground_sample(t, rng) if k else None for t, k in zip(target_slices, known)]
    slices = TrainingSlices(
        images=image_slices,
        targets=[t if k else None for t, k in zip(target_slices, known)],
        annotated=np.flatnonzero(known),
        unannotated=np.flatnonzero(~np.asarray(known)),
        foreground=foreground,
    )
    if pseudo_labels is not None and any(p is not None for p in pseudo_labels):
        slices.pseudo_targets, slices.pseudo_weights = [], []
        for image, pseudo in zip(images, pseudo_labels):
            slices.pseudo_targets += _optional_slices(pseudo and pseudo.targets, image.shape[axis], axis)
            slices.pseudo_weights += _optional_slices(pseudo and pseudo.weights, image.shape[axis], axis)
    return slices


def _optional_slices(array: np.ndarray | None, count: int, axis: int) -> list[np.ndarray | None]:
    return slices_along(array, axis) if array is not None else [None] * count


def _foreground_sample(target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    flat = np.flatnonzero(target > 0)
    if len(flat) > MAX_FOREGROUND_SAMPLES:
        flat = rng.choice(flat, MAX_FOREGROUND_SAMPLES, replace=False)
    return flat


class BatchSampler:
    """Draws batches of random crops: annotated slices first, then unannotated ones."""

    def __init__(
        self,
        slices: TrainingSlices,
        patch_size: int,
        batch_size: int,
        use_unannotated: bool,
        augment: bool,
        seed: int = 0,
        foreground_fraction: float = 0.5,
    ):
        self.slices = slices
        self.patch_size = patch_size
        self.use_unannotated = use_unannotated and len(slices.unannotated) > 0
        self.annotated_per_batch = batch_size // 2 if self.use_unannotated else batch_size
        self.unannotated_per_batch = batch_size - self.annotated_per_batch if self.use_unannotated else 0
        self.augment = augment
        self.foreground_fraction = foreground_fraction
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def batch_size(self) -> int:
        return self.annotated_per_batch + self.unannotated_per_batch

    def shrink_batch(self) -> bool:
        """Halve the batch (keeping one slice of each kind); False when it cannot shrink."""
        if self.batch_size <= 2:
            return False
        self.annotated_per_batch = max(1, self.annotated_per_batch // 2)
        if self.unannotated_per_batch:
            self.unannotated_per_batch = max(1, self.unannotated_per_batch // 2)
        return True

    def sample(self) -> Batch:
        chosen = list(self.rng.choice(self.slices.annotated, self.annotated_per_batch))
        if self.unannotated_per_batch:
            chosen += list(self.rng.choice(self.slices.unannotated, self.unannotated_per_batch))
        crops = [self._crop(int(index)) for index in chosen]
        images = torch.from_numpy(np.stack([c[0] for c in crops]))[:, None]
        label_maps = [torch.from_numpy(np.stack([c[1] for c in crops]))]
        weight_maps = []
        if self.slices.pseudo_targets is not None:
            label_maps.append(torch.from_numpy(np.stack([c[2] for c in crops])))
            weight_maps.append(torch.from_numpy(np.stack([c[3] for c in crops])))
        if self.augment:
            params = draw_augmentation(len(chosen), self.generator)
            images, label_maps, weight_maps = apply_augmentation(images, label_maps, params, weight_maps)
        pseudo = (label_maps[1].contiguous(), weight_maps[0].contiguous()) if weight_maps else (None, None)
        return Batch(images.contiguous(), label_maps[0].contiguous(), self.annotated_per_batch, *pseudo)

    def _crop(self, index: int) -> tuple[np.ndarray, ...]:
        """The same random window of the image, its targets and (if any) its pseudo-labels."""
        image = self.slices.images[index]
        maps = [image, _or_full(self.slices.targets[index], image.shape, IGNORE, np.int64)]
        if self.slices.pseudo_targets is not None:
            maps.append(_or_full(self.slices.pseudo_targets[index], image.shape, IGNORE, np.int64))
            maps.append(_or_full(self.slices.pseudo_weights[index], image.shape, 0.0, np.float32))
        padded = _pad_to(maps, self.patch_size)
        centre = self._crop_centre(index, padded[0].shape, image.shape)
        top = int(np.clip(centre[0] - self.patch_size // 2, 0, padded[0].shape[0] - self.patch_size))
        left = int(np.clip(centre[1] - self.patch_size // 2, 0, padded[0].shape[1] - self.patch_size))
        window = (slice(top, top + self.patch_size), slice(left, left + self.patch_size))
        return tuple(array[window] for array in padded)

    def _crop_centre(self, index: int, padded_shape: tuple, original_shape: tuple) -> tuple[int, int]:
        foreground = self.slices.foreground[index]
        if foreground is not None and len(foreground) and self.rng.random() < self.foreground_fraction:
            y, x = np.unravel_index(int(self.rng.choice(foreground)), original_shape)
            offset = [(p - o) // 2 for p, o in zip(padded_shape, original_shape)]
            return int(y) + offset[0], int(x) + offset[1]
        return int(self.rng.integers(0, padded_shape[0])), int(self.rng.integers(0, padded_shape[1]))


def _or_full(array: np.ndarray | None, shape: tuple, fill, dtype) -> np.ndarray:
    return array if array is not None else np.full(shape, fill, dtype=dtype)


def _pad_to(maps: list[np.ndarray], size: int) -> list[np.ndarray]:
    """Pad an image (with its minimum), targets (IGNORE) and weights (0) to at least size²."""
    image = maps[0]
    pad = [(max(0, size - s) // 2, max(0, size - s) - max(0, size - s) // 2) for s in image.shape]
    if not any(before or after for before, after in pad):
        return maps
    fills = [float(image.min())] + [IGNORE if m.dtype.kind == "i" else 0.0 for m in maps[1:]]
    return [np.pad(m, pad, constant_values=fill) for m, fill in zip(maps, fills)]


def draw_augmentation(count: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random parameters for :func:`apply_augmentation`, drawn separately so runs are reproducible."""

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(count, generator=generator)

    return {
        "flip_y": torch.rand(count, generator=generator) < 0.5,
        "flip_x": torch.rand(count, generator=generator) < 0.5,
        "angle": uniform(-math.pi / 12, math.pi / 12) * (torch.rand(count, generator=generator) < 0.7),
        "scale": 1.0 + uniform(-0.15, 0.15) * (torch.rand(count, generator=generator) < 0.7),
        "contrast": uniform(0.8, 1.2),
        "brightness": uniform(-0.15, 0.15),
        "noise": uniform(0.0, 0.08) * (torch.rand(count, generator=generator) < 0.3),
        "noise_seed": torch.randint(0, 2**31 - 1, (1,), generator=generator),
    }


def apply_augmentation(
    images: torch.Tensor,
    label_maps: list[torch.Tensor],
    params: dict[str, torch.Tensor],
    weight_maps: list[torch.Tensor] = (),
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Random flips, rotation, scaling and intensity changes from drawn parameters.

    One sampling grid moves the images and weight maps (bilinear) and the label maps
    (nearest; pixels from outside the image become ``IGNORE``) together.
    """
    cos, sin = torch.cos(params["angle"]), torch.sin(params["angle"])
    flip_x = 1.0 - 2.0 * params["flip_x"].float()
    flip_y = 1.0 - 2.0 * params["flip_y"].float()
    theta = torch.zeros(images.shape[0], 2, 3)
    theta[:, 0, 0] = cos * flip_x / params["scale"]
    theta[:, 0, 1] = -sin / params["scale"]
    theta[:, 1, 0] = sin / params["scale"]
    theta[:, 1, 1] = cos * flip_y / params["scale"]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    background = images.amin(dim=(1, 2, 3), keepdim=True)
    warped = F.grid_sample(images - background, grid, mode="bilinear", align_corners=False) + background
    warped_labels = [_warp_labels(labels, grid) for labels in label_maps]
    warped_weights = [F.grid_sample(w.unsqueeze(1), grid, mode="bilinear", align_corners=False).squeeze(1)
                      for w in weight_maps]
    contrast = params["contrast"].view(-1, 1, 1, 1)
    brightness = params["brightness"].view(-1, 1, 1, 1)
    noise_generator = torch.Generator().manual_seed(int(params["noise_seed"]))
    noise = torch.randn(warped.shape, generator=noise_generator) * params["noise"].view(-1, 1, 1, 1)
    return warped * contrast + brightness + noise, warped_labels, warped_weights


def _warp_labels(labels: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    shifted = (labels + 1).unsqueeze(1).float()  # IGNORE -> 0, the padding value
    warped = F.grid_sample(shifted, grid, mode="nearest", align_corners=False)
    return warped.squeeze(1).round().long() - 1
