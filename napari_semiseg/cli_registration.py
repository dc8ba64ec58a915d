"""Command-line subcommands ``register`` and ``propagate`` (argparse only; logic lives in core).

``add_parsers(subparsers)`` adds both; each handler takes the parsed arguments and returns an
exit code: 0 on success, 2 on a user error (missing file, shape mismatch, nothing painted),
with a one-line message on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .core.registration import (PropagationSettings, RegistrationError, RegistrationSettings, propagate_labels,
                                register_pair)
from .core.volume import Volume, VolumeError, read_volume, volume_stem, write_volume

USER_ERROR = 2


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``register`` and ``propagate`` subcommands."""
    register = subparsers.add_parser("register", help="warp an annotated volume's labels onto another volume")
    register.add_argument("fixed_image", help="the unannotated volume (output geometry)")
    register.add_argument("moving_image", help="the annotated volume")
    register.add_argument("--moving-labels", required=True, help="labels of the moving image")
    register.add_argument("--deformable", action="store_true", help="add a 3D B-spline stage (volume mode)")
    register.add_argument("--mode", choices=("auto", "volume", "stack"), default="auto",
                          help="volume: 3D affine; stack: thin slice stacks; auto: from the geometry")
    register.add_argument("--cache", default=None, help="folder for cached transforms")
    register.add_argument("--out", required=True, help="output folder")
    register.set_defaults(handler=run_register)

    propagate = subparsers.add_parser("propagate", help="fill unpainted slices from painted ones (one volume)")
    propagate.add_argument("image")
    propagate.add_argument("--labels", required=True, help="sparse labels: painted slices are fully annotated")
    propagate.add_argument("--axis", type=int, default=0, choices=(0, 1, 2))
    propagate.add_argument("--out", required=True, help="output folder")
    propagate.set_defaults(handler=run_propagate)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return USER_ERROR


def _labels_for(image: Volume, path: str) -> np.ndarray:
    labels = read_volume(path).array
    if labels.shape != image.shape:
        raise RegistrationError(f"labels {Path(path).name} have shape {labels.shape} but the image "
                                f"{image.name} has {image.shape}")
    if labels.dtype.kind == "f":
        labels = np.rint(labels).astype(np.int16)
    return labels


def run_register(args: argparse.Namespace) -> int:
    """Handler of ``register``: writes ``<fixed>_registered_seg/quality.nii.gz`` and ``_registration.json``."""
    try:
        fixed, moving = read_volume(args.fixed_image), read_volume(args.moving_image)
        labels = _labels_for(moving, args.moving_labels)
        settings = RegistrationSettings(mode=args.mode, deformable=args.deformable)
        result = register_pair(fixed, moving, labels, settings, cache=_cache(args.cache))
        out, stem = Path(args.out), volume_stem(args.fixed_image)
        write_volume(fixed.with_array(result.labels), out / f"{stem}_registered_seg.nii.gz")
        write_volume(fixed.with_array(result.quality.astype(np.float32)), out / f"{stem}_registered_quality.nii.gz")
        report = {"fixed": str(args.fixed_image), "moving": str(args.moving_image), "score": result.score,
                  "seconds": result.seconds, "cached": result.cached, "settings": settings.to_dict(),
                  "metrics": result.metrics, "mean_quality": float(result.quality.mean())}
        (out / f"{stem}_registration.json").write_text(json.dumps(report, indent=1, default=float))
    except (VolumeError, RegistrationError, OSError) as error:
        return _fail(str(error).strip().splitlines()[0])
    return 0


def _cache(folder: str | None):
    from .core.registration import RegistrationCache

    return RegistrationCache(folder) if folder else None


def run_propagate(args: argparse.Namespace) -> int:
    """Handler of ``propagate``: writes ``<name>_propagated_seg.nii.gz`` and ``_propagated_quality.nii.gz``."""
    try:
        image = read_volume(args.image)
        labels = _labels_for(image, args.labels)
        result = propagate_labels(image, labels, axis=args.axis, settings=PropagationSettings())
        out, stem = Path(args.out), volume_stem(args.image)
        write_volume(image.with_array(result.labels), out / f"{stem}_propagated_seg.nii.gz")
        write_volume(image.with_array(result.quality.astype(np.float32)), out / f"{stem}_propagated_quality.nii.gz")
    except (VolumeError, RegistrationError, OSError) as error:
        return _fail(str(error).strip().splitlines()[0])
    return 0
