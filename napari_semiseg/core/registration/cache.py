"""On-disk cache of registrations: transforms (``sitk.WriteTransform``) plus scores (JSON).

Entries are keyed by content hashes of the two images (values and geometry), the source
labels (stack mode uses them to find the region of interest) and the settings, so a changed
image or setting never reuses a stale transform. Each entry is a folder written under a
temporary name and renamed into place, so readers never see half an entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..volume import Volume

log = logging.getLogger(__name__)

CACHE_VERSION = "registration-v1"


def array_hash(array: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def volume_hash(volume: Volume) -> str:
    """Content hash of a volume's values and geometry (not its name)."""
    geometry = json.dumps(volume.geometry.to_dict(), sort_keys=True)
    return hashlib.sha256((array_hash(volume.array) + geometry).encode()).hexdigest()


def pair_key(fixed: Volume, moving: Volume, moving_labels: np.ndarray, settings) -> str:
    """Cache key of registering ``moving`` (with its labels) onto ``fixed`` with ``settings``."""
    parts = [CACHE_VERSION, volume_hash(fixed), volume_hash(moving), array_hash(moving_labels),
             json.dumps(settings.to_dict(), sort_keys=True)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


class RegistrationCache:
    """A folder of registration results.

    Args:
        folder: where entries live (created on first save).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def _entry(self, key: str) -> Path:
        return self.folder / key[:2] / key

    def load(self, key: str) -> tuple[sitk.Transform, sitk.Transform | None, dict] | None:
        """The (forward, backward or None, metrics) stored under ``key``, or None."""
        entry = self._entry(key)
        try:
            metrics = json.loads((entry / "scores.json").read_text())
            forward = sitk.ReadTransform(str(entry / "forward.h5"))
            backward_path = entry / "backward.h5"
            backward = sitk.ReadTransform(str(backward_path)) if backward_path.exists() else None
        except (OSError, RuntimeError, ValueError) as error:
            if entry.exists():
                log.warning("ignoring unreadable cache entry %s: %s", entry, error)
            return None
        log.debug("cache hit %s", key[:12])
        return forward, backward, metrics

    def save(self, key: str, forward: sitk.Transform, backward: sitk.Transform | None, metrics: dict) -> None:
        """Store an entry atomically; failures are logged, never raised (the cache is optional)."""
        entry = self._entry(key)
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
            sitk.WriteTransform(forward, str(staging / "forward.h5"))
            if backward is not None:
                sitk.WriteTransform(backward, str(staging / "backward.h5"))
            (staging / "scores.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
            if entry.exists():
                shutil.rmtree(entry, ignore_errors=True)
            os.replace(staging, entry)
        except (OSError, RuntimeError) as error:
            log.warning("could not write registration cache entry %s: %s", entry, error)
            shutil.rmtree(locals().get("staging", entry.parent / ".missing"), ignore_errors=True)
