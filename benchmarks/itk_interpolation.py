"""ITK morphological contour interpolation (3D Slicer's "fill between slices") in its own process.

ITK's Python wheels and SimpleITK each bring their own copy of the ITK libraries; runs that loaded
both in one process sometimes ended in heap corruption at exit, so the protocols call
:func:`interpolate_in_subprocess`, which keeps one child process (numpy and itk only) for all calls.

    python benchmarks/itk_interpolation.py        # serve: reads "SPARSE.npy OUT.npy AXIS" lines on stdin
"""

from __future__ import annotations

import atexit
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

_worker: subprocess.Popen | None = None


def interpolate_in_subprocess(sparse: np.ndarray, axis: int = 0) -> np.ndarray:
    """Fill the slices between painted slices along ``axis`` (0 = z), in the child process."""
    worker = _started_worker()
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "sparse.npy", Path(folder) / "dense.npy"
        np.save(source, np.ascontiguousarray(sparse.astype(np.uint8)))
        worker.stdin.write(f"{source} {target} {axis}\n")
        worker.stdin.flush()
        if worker.stdout.readline().strip() != "done":
            raise RuntimeError("the ITK interpolation process failed (see its error output above)")
        return np.load(target).astype(sparse.dtype)


def _started_worker() -> subprocess.Popen:
    global _worker
    if _worker is None or _worker.poll() is not None:
        _worker = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        atexit.register(_worker.stdin.close)
    return _worker


def interpolate(sparse: np.ndarray, axis: int = 0) -> np.ndarray:
    import itk

    image = itk.image_from_array(np.ascontiguousarray(sparse.astype(np.uint8)))
    interpolator = itk.MorphologicalContourInterpolator.New(image)
    interpolator.SetAxis(2 - axis)  # ITK counts axes (x, y, z)
    interpolator.Update()
    return itk.array_from_image(interpolator.GetOutput())


def serve() -> None:
    for line in sys.stdin:
        source, target, axis = line.split()
        np.save(target, interpolate(np.load(source), int(axis)))
        print("done", flush=True)


if __name__ == "__main__":
    serve()
