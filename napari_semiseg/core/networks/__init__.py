"""2D segmentation networks and a factory that rebuilds them from plain, JSON-able arguments.

Every network maps (B, in_channels, H, W) float images of any size to (B, num_classes, H, W)
logits, and offers ``forward_features(x) -> (logits, [full, quarter, eighth])`` with
``feature_channels`` and ``feature_strides`` for multi-scale contrastive losses.

``build_network(name, in_channels, num_classes, size, **overrides)`` is the only way the engine
should create one, so that a checkpoint storing those arguments (see ``network.build_spec``)
rebuilds the same architecture.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from .cs_unet import CSUNet
from .multi_head import BoundaryUNet, DualDecoderUNet
from .swin_unet import SwinUNet
from .unet import UNet

__all__ = [
    "NETWORKS",
    "BoundaryUNet",
    "DualDecoderUNet",
    "PRESETS",
    "SIZES",
    "CSUNet",
    "SwinUNet",
    "UNet",
    "build_network",
    "count_parameters",
    "network_names",
]

NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "unet": UNet,
    "swin_unet": SwinUNet,
    "cs_unet": CSUNet,
    "unet_boundary": BoundaryUNet,
    "unet_dual_sdf": DualDecoderUNet,
}

SIZES = ("cpu", "paper")

# "cpu": fast enough to train on two cores; window 8 tiles the 128/256-pixel crops used there
# without padding. "paper": the published configurations.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "unet": {
        "cpu": {"channels": (16, 32, 64, 128, 256)},
        "paper": {"channels": (16, 32, 64, 128, 256)},
    },
    "swin_unet": {
        "cpu": {"embed_dim": 48, "depths": (2, 2, 2, 2), "num_heads": (3, 6, 12, 24), "window_size": 8},
        "paper": {"embed_dim": 96, "depths": (2, 2, 2, 2), "num_heads": (3, 6, 12, 24), "window_size": 7},
    },
    "cs_unet": {
        "cpu": {"embed_dim": 32, "depths": (2, 2, 2, 2), "num_heads": (2, 4, 8, 16), "window_size": 8},
        "paper": {"embed_dim": 96, "depths": (2, 2, 2, 2), "num_heads": (3, 6, 12, 24), "window_size": 7},
    },
    "unet_boundary": {
        "cpu": {"channels": (16, 32, 64, 128, 256)},
        "paper": {"channels": (16, 32, 64, 128, 256)},
    },
    "unet_dual_sdf": {
        "cpu": {"channels": (16, 32, 64, 128, 256)},
        "paper": {"channels": (16, 32, 64, 128, 256)},
    },
}


def network_names() -> list[str]:
    """Names accepted by :func:`build_network`."""
    return list(NETWORKS)


def build_network(name: str, in_channels: int, num_classes: int, size: str = "cpu", **overrides: Any) -> nn.Module:
    """Builds a network from a preset plus overrides.

    Args:
        name: One of :func:`network_names`.
        in_channels: Input image channels.
        num_classes: Output classes (background included).
        size: ``"cpu"`` for small, fast defaults or ``"paper"`` for the published sizes.
        **overrides: Constructor arguments replacing the preset's (lists work for tuples).

    Returns:
        The network, with ``build_spec`` set to the arguments that rebuild it.

    Raises:
        ValueError: For an unknown name, size or override.
    """
    if name not in NETWORKS:
        raise ValueError(f"Unknown network {name!r}; valid names: {', '.join(network_names())}.")
    if size not in SIZES:
        raise ValueError(f"Unknown size {size!r}; valid sizes: {', '.join(SIZES)}.")
    constructor = NETWORKS[name]
    accepted = set(inspect.signature(constructor).parameters) - {"in_channels", "num_classes"}
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise ValueError(f"{name} does not take {unknown}; it takes {sorted(accepted)}.")
    kwargs = {**PRESETS[name][size], **overrides}
    network = constructor(in_channels=int(in_channels), num_classes=int(num_classes), **kwargs)
    network.build_spec = {
        "name": name,
        "in_channels": int(in_channels),
        "num_classes": int(num_classes),
        "size": size,
        "overrides": dict(overrides),
    }
    return network


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (only those requiring grad if ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
