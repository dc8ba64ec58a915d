"""Running out of memory: recognise it, free what can be freed, and say what would fit."""

from __future__ import annotations

import gc
import logging
import os

import torch

log = logging.getLogger(__name__)

# float32 image + normalised copy + int64 targets + pseudo-labels and weights, per voxel, when training
TRAINING_BYTES_PER_VOXEL = 32
_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory", "failed to allocate")


class OutOfMemory(RuntimeError):
    """Work that does not fit even at its smallest setting; the message says what fits."""


def is_out_of_memory(error: BaseException) -> bool:
    """True for torch's out-of-memory errors (CUDA, MPS, CPU allocator) and MemoryError."""
    if isinstance(error, MemoryError) or isinstance(error, getattr(torch, "OutOfMemoryError", ())):
        return True
    return isinstance(error, RuntimeError) and any(text in str(error).lower() for text in _MESSAGES)


def release_memory(device: torch.device | None = None) -> None:
    """Return freed tensors to the system before retrying with a smaller piece of work."""
    gc.collect()
    if device is not None and device.type == "cuda":
        torch.cuda.empty_cache()


def available_bytes(device: torch.device | None = None) -> int:
    """Memory free now on ``device`` (main memory for the CPU)."""
    if device is not None and device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


def voxels_that_fit(device: torch.device | None = None, bytes_per_voxel: int = TRAINING_BYTES_PER_VOXEL) -> int:
    """Roughly how many voxels of training data fit in the memory free now."""
    return available_bytes(device) // bytes_per_voxel
