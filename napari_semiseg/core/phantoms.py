"""Small synthetic volumes with known labels, for tests, demos and quick checks."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .volume import Geometry, Volume


def ring_phantom(
    shape: tuple[int, int, int] = (16, 64, 64),
    seed: int = 0,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    noise: float = 0.12,
) -> tuple[Volume, np.ndarray]:
    """A cardiac-like phantom: a bright blob (label 2) inside a darker ring (label 1).

    The blob's size and position drift smoothly along z, so a few painted slices do not
    give the others away by copying.

    Returns:
        The image volume and its (z, y, x) uint8 label array.
    """
    rng = np.random.default_rng(seed)
    depth, height, width = shape
    z = np.linspace(-1.0, 1.0, depth)
    radius = 0.22 * height * (1.0 - 0.45 * z**2) * rng.uniform(0.9, 1.1)
    centre_y = height / 2 + 0.08 * height * np.sin(1.3 * z + rng.uniform(0, np.pi))
    centre_x = width / 2 + 0.08 * width * np.cos(1.1 * z + rng.uniform(0, np.pi))
    yy, xx = np.mgrid[:height, :width]
    labels = np.zeros(shape, dtype=np.uint8)
    for k in range(depth):
        distance = np.hypot((yy - centre_y[k]) / 1.15, xx - centre_x[k])
        labels[k][distance < radius[k] + 0.09 * height] = 1
        labels[k][distance < radius[k]] = 2
    intensity = np.choose(labels, [0.15, 0.45, 0.85]).astype(np.float32)
    intensity = ndimage.gaussian_filter(intensity, sigma=(0, 0.8, 0.8))
    intensity += rng.normal(0.0, noise, shape).astype(np.float32)
    intensity += 0.1 * np.sin(yy / height * 3.0 + xx / width * 2.0)[None].astype(np.float32)
    return Volume(intensity.astype(np.float32), Geometry(spacing=spacing), name=f"phantom{seed}"), labels


def paint_slices(labels: np.ndarray, slice_indices: list[int], axis: int = 0) -> np.ndarray:
    """Sparse labels that keep only the given slices (what an annotator paints)."""
    sparse = np.zeros_like(labels)
    index = [slice(None)] * labels.ndim
    index[axis] = list(slice_indices)
    sparse[tuple(index)] = labels[tuple(index)]
    return sparse
