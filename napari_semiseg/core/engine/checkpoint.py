"""Checkpoints that hold everything needed to predict or resume, loaded safely.

Only tensors and plain Python values are stored, so loading uses ``weights_only=True``
and a file that carries pickled code is refused instead of executed.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from pathlib import Path

import torch

from ... import __version__
from ..atomic import atomic_file

log = logging.getLogger(__name__)

FORMAT = "napari-semiseg-model"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A model file that cannot be used; the message says why and what to do."""


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write a checkpoint atomically (temporary file, then rename)."""
    path = Path(path)
    content = {"format": FORMAT, "format_version": FORMAT_VERSION, "package_version": __version__, **payload}
    with atomic_file(path) as temporary:
        torch.save(content, temporary)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load and check a checkpoint on the CPU.

    Raises:
        CheckpointError: the file is missing, damaged, not ours, from an incompatible
            version, or contains pickled code.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.exists():
        raise CheckpointError(f"No model at '{path}'. Train one first, or pick the folder that holds model.pt.")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"'{path.name}' is damaged or is not a model file (truncated, or another format). "
            "Use an earlier checkpoint of the same run, or train again."
        )
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"'{path.name}' contains objects other than weights and plain settings (possibly code); "
            f"it was refused for safety. Only load models trained by napari-semiseg. ({_first_line(error)})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(
            f"'{path.name}' is damaged or is not a model file ({_first_line(error)}). "
            "Use an earlier checkpoint of the same run, or train again."
        ) from None
    _check_format(content, path)
    note = version_note(content, path)
    if note:
        log.warning(note)
        content["version_note"] = note
    return content


def version_note(content: dict, path: Path) -> str | None:
    """A warning when a usable checkpoint was written by another package version."""
    written_by = content.get("package_version")
    if written_by == __version__:
        return None
    return (f"'{path.name}' was written by napari-semiseg {written_by or 'of unknown version'} and this is "
            f"{__version__}; the model format is the same, so it loads, but retrain if predictions look wrong.")


def _check_format(content: object, path: Path) -> None:
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise CheckpointError(f"'{path.name}' is not a napari-semiseg model.")
    version = content.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"'{path.name}' was written by napari-semiseg {content.get('package_version', '?')} in model format "
            f"{version}; this is version {__version__} (format {FORMAT_VERSION}). Retrain with this version."
        )


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__
