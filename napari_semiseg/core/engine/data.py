"""Training data: 2D slices along the annotation axis, random crops and augmentation.

Augmentation draws its random parameters first and applies them to the whole batch in
one vectorised call, so it costs little next to the networks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..annotations import IGNORE
from .terms import Batch

MAX_FOREGROUND_SAMPLES = 4096


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

    @property
    def counts(self) -> tuple[int, int]:
        return len(self.annotated), len(self.unannotated)


def build_training_slices(
    images: list[np.ndarray], targets: list[np.ndarray | None], axis: int, seed: int = 0
) -> TrainingSlices:
    """Cut normalised images and their targets (``None`` = unannotated volume) into slices."""
    rng = np.random.default_rng(seed)
    image_slices: list[np.ndarray] = []
    target_slices: list[np.ndarray | None] = []
    for image, target in zip(images, targets):
        image_slices += slices_along(normalise_intensity(image), axis)
        target_slices += slices_along(target, axis) if target is not None else [None] * image.shape[axis]
    known = [t is not None and bool(np.any(t != IGNORE)) for t in target_slices]
    foreground = [_foreground_sample(t, rng) if k else None for t, k in zip(target_slices, known)]
    return TrainingSlices(
        images=image_slices,
        targets=[t if k else None for t, k in zip(target_slices, known)],
        annotated=np.flatnonzero(known),
        unannotated=np.flatnonzero(~np.asarray(known)),
        foreground=foreground,
    )


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

    def sample(self) -> Batch:
        chosen = list(self.rng.choice(self.slices.annotated, self.annotated_per_batch))
        if self.unannotated_per_batch:
            chosen += list(self.rng.choice(self.slices.unannotated, self.unannotated_per_batch))
        crops = [self._crop(int(index)) for index in chosen]
        images = torch.from_numpy(np.stack([c[0] for c in crops]))[:, None]
        targets = torch.from_numpy(np.stack([c[1] for c in crops]))
        if self.augment:
            images, targets = augment_batch(images, targets, self.generator)
        return Batch(images.contiguous(), targets.contiguous(), self.annotated_per_batch)

    def _crop(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image = self.slices.images[index]
        target = self.slices.targets[index]
        if target is None:
            target = np.full(image.shape, IGNORE, dtype=np.int64)
        image, target = _pad_to(image, target, self.patch_size)
        centre = self._crop_centre(index, image.shape, self.slices.images[index].shape)
        top = int(np.clip(centre[0] - self.patch_size // 2, 0, image.shape[0] - self.patch_size))
        left = int(np.clip(centre[1] - self.patch_size // 2, 0, image.shape[1] - self.patch_size))
        window = (slice(top, top + self.patch_size), slice(left, left + self.patch_size))
        return image[window], target[window]

    def _crop_centre(self, index: int, padded_shape: tuple, original_shape: tuple) -> tuple[int, int]:
        foreground = self.slices.foreground[index]
        if foreground is not None and len(foreground) and self.rng.random() < self.foreground_fraction:
            y, x = np.unravel_index(int(self.rng.choice(foreground)), original_shape)
            offset = [(p - o) // 2 for p, o in zip(padded_shape, original_shape)]
            return int(y) + offset[0], int(x) + offset[1]
        return int(self.rng.integers(0, padded_shape[0])), int(self.rng.integers(0, padded_shape[1]))


def _pad_to(image: np.ndarray, target: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    pad = [(max(0, size - s) // 2, max(0, size - s) - max(0, size - s) // 2) for s in image.shape]
    if not any(before or after for before, after in pad):
        return image, target
    return (
        np.pad(image, pad, constant_values=float(image.min())),
        np.pad(target, pad, constant_values=IGNORE),
    )


def augment_batch(
    images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips, rotation (±15°), scaling (0.85-1.15) and intensity changes, per sample."""
    params = draw_augmentation(images.shape[0], generator)
    return apply_augmentation(images, targets, params)


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
    images: torch.Tensor, targets: torch.Tensor, params: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply drawn parameters: one grid for images (bilinear) and targets (nearest)."""
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
    shifted_targets = (targets + 1).unsqueeze(1).float()  # IGNORE -> 0, the padding value
    warped_targets = F.grid_sample(shifted_targets, grid, mode="nearest", align_corners=False)
    warped_targets = warped_targets.squeeze(1).round().long() - 1
    contrast = params["contrast"].view(-1, 1, 1, 1)
    brightness = params["brightness"].view(-1, 1, 1, 1)
    noise_generator = torch.Generator().manual_seed(int(params["noise_seed"]))
    noise = torch.randn(warped.shape, generator=noise_generator) * params["noise"].view(-1, 1, 1, 1)
    return warped * contrast + brightness + noise, warped_targets
