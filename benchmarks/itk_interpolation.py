"""ITK morphological contour interpolation (3D Slicer's "fill between slices") in its own process.

    python benchmarks/itk_interpolation.py SPARSE.npy OUT.npy [AXIS]

ITK's Python wheels and SimpleITK each bring their own copy of the ITK libraries; runs that loaded
both in one process sometimes ended in heap corruption at exit, so the protocols call this script
instead of importing itk. It imports only numpy and itk.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def interpolate_in_subprocess(sparse: np.ndarray, axis: int = 0) -> np.ndarray:
    """Fill the slices between painted slices along ``axis`` (0 = z), in a child process."""
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "sparse.npy", Path(folder) / "dense.npy"
        np.save(source, np.ascontiguousarray(sparse.astype(np.uint8)))
        subprocess.run([sys.executable, __file__, str(source), str(target), str(axis)], check=True)
        return np.load(target).astype(sparse.dtype)


def interpolate(sparse: np.ndarray, axis: int = 0) -> np.ndarray:
    import itk

    image = itk.image_from_array(np.ascontiguousarray(sparse.astype(np.uint8)))
    interpolator = itk.MorphologicalContourInterpolator.New(image)
    interpolator.SetAxis(2 - axis)  # ITK counts axes (x, y, z)
    interpolator.Update()
    return itk.array_from_image(interpolator.GetOutput())


if __name__ == "__main__":
    np.save(sys.argv[2], interpolate(np.load(sys.argv[1]), int(sys.argv[3]) if len(sys.argv) > 3 else 0))
