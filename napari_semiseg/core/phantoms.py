"""Small synthetic volumes with known labels, for tests, demos and quick checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
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


def write_dicom_series(volume: Volume, folder: Path, series_uid: str, prefix: str = "slice") -> None:
    """Write ``volume`` as a DICOM series, one file per slice, with the tags a series reader needs
    (after SimpleITK's DicomSeriesFromArray example): test data the code makes itself."""
    folder.mkdir(parents=True, exist_ok=True)
    image = volume.to_sitk()
    direction = image.GetDirection()
    shared = {
        "0008|0008": "DERIVED\\SECONDARY",
        "0008|0060": "MR",
        "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
        "0020|000e": series_uid,
        "0020|0037": "\\".join(str(direction[i]) for i in (0, 3, 6, 1, 4, 7)),
        "0018|0050": str(image.GetSpacing()[2]),
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(image.GetDepth()):
        slice_image = image[:, :, z]
        for tag, value in shared.items():
            slice_image.SetMetaData(tag, value)
        position = image.TransformIndexToPhysicalPoint((0, 0, z))
        slice_image.SetMetaData("0020|0032", "\\".join(str(p) for p in position))
        slice_image.SetMetaData("0020|0013", str(z + 1))
        writer.SetFileName(str(folder / f"{prefix}{z:03d}.dcm"))
        writer.Execute(slice_image)
