"""U-Nets with extra heads for the boundary and distance-aware strategies.

* :class:`BoundaryUNet` (BFA): the U-Net plus an early boundary head on the first decoder
  stage, so boundary supervision shapes the decoder from its coarsest stage on.
* :class:`DualDecoderUNet` (PMCM): one encoder, two decoders that upsample differently
  (transposed convolution and bilinear), each with a segmentation and a signed-distance head;
  prediction averages the two segmentation outputs.

Both keep the U-Net's interface (``forward``, ``forward_features``, ``forward_decoder_features``)
and add ``forward_heads(x) -> dict`` with everything the training terms need.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import crop_to_input, like_input_format, pad_to_multiple
from .unet import UNet, UpBlock


def _encode(network: UNet, x: Tensor) -> list[Tensor]:
    y = pad_to_multiple(x, network.size_multiple)
    maps = []
    for level in network.encoder:
        y = level(y)
        maps.append(y)
    return maps


def _decode(decoder: nn.ModuleList, encoder: list[Tensor]) -> list[Tensor]:
    """Decoder maps, full resolution first (the earliest stage is the last)."""
    y = encoder[-1]
    maps = []
    for up, skip in zip(decoder, reversed(encoder[:-1])):
        y = up(y, skip)
        maps.append(y)
    maps.reverse()
    return maps


def _crop_all(maps: list[Tensor], height: int, width: int) -> list[Tensor]:
    return [crop_to_input(m, height, width, 2**i) for i, m in enumerate(maps)]


class BoundaryUNet(UNet):
    """U-Net with an early boundary head (one logit per pixel) on the first decoder stage.

    Args:
        as :class:`UNet`; the boundary head reads the decoder stage at stride
        ``2 ** (len(channels) - 2)`` and is upsampled bilinearly to the input size.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        dropout: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.5),
        bilinear: bool = True,
    ) -> None:
        super().__init__(in_channels=in_channels, num_classes=num_classes, channels=channels, dropout=dropout,
                         bilinear=bilinear)
        early = tuple(channels)[-2]
        self.boundary_head = nn.Sequential(
            nn.Conv2d(early, early // 2, kernel_size=3, padding=1), nn.LeakyReLU(), nn.Conv2d(early // 2, 1, 1)
        )

    def forward_heads(self, x: Tensor) -> dict[str, Tensor | list[Tensor]]:
        """``logits`` (B, C, H, W), ``boundary`` logits (B, 1, H, W), ``decoder`` maps (full first),
        ``encoder`` maps."""
        height, width = x.shape[-2:]
        encoder = _encode(self, x)
        decoder = _decode(self.decoder, encoder)
        logits = like_input_format(crop_to_input(self.head(decoder[0]), height, width), x)
        boundary = F.interpolate(self.boundary_head(decoder[-1]), size=decoder[0].shape[-2:], mode="bilinear",
                                 align_corners=False)
        return {
            "logits": logits,
            "boundary": crop_to_input(boundary, height, width),
            "decoder": _crop_all(decoder, height, width),
            "encoder": _crop_all(encoder, height, width),
        }


class DualDecoderUNet(UNet):
    """One U-Net encoder, two decoders, each with segmentation and signed-distance heads.

    Decoder ``a`` upsamples by transposed convolution, decoder ``b`` bilinearly (after a 1×1
    conv); their different errors make their disagreement informative. ``forward`` returns
    the mean of the two segmentation logits. The SDF heads return raw values: apply ``tanh``.

    Args:
        as :class:`UNet` (``bilinear`` is fixed per decoder).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        dropout: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.5),
    ) -> None:
        super().__init__(in_channels=in_channels, num_classes=num_classes, channels=channels, dropout=dropout,
                         bilinear=False)
        channels = tuple(channels)
        if num_classes < 2:
            raise ValueError(f"a signed-distance head needs at least 2 classes, got {num_classes}.")
        self.decoder_b = nn.ModuleList(
            UpBlock(channels[i + 1], channels[i], channels[i], True) for i in reversed(range(len(channels) - 1))
        )
        self.head_b = nn.Conv2d(channels[0], num_classes, kernel_size=3, padding=1)
        self.sdf_head = nn.Conv2d(channels[0], num_classes - 1, kernel_size=3, padding=1)
        self.sdf_head_b = nn.Conv2d(channels[0], num_classes - 1, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_heads(x)["logits"]

    def forward_features(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        heads = self.forward_heads(x)
        encoder = heads["encoder"]
        return heads["logits"], [heads["decoders"][0]["features"], encoder[2], encoder[3]]

    def forward_decoder_features(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        heads = self.forward_heads(x)
        decoder = heads["decoders"][0]["decoder"]
        return heads["logits"], [decoder[0], decoder[2], decoder[3]]

    def forward_heads(self, x: Tensor) -> dict:
        """``logits`` (the mean), ``encoder`` maps and ``decoders``: two dicts with ``logits``,
        ``sdf`` (raw, B × C-1 × H × W), ``features`` (last decoder map) and ``decoder`` maps."""
        height, width = x.shape[-2:]
        encoder = _encode(self, x)
        decoders = []
        for decoder, head, sdf_head in ((self.decoder, self.head, self.sdf_head),
                                        (self.decoder_b, self.head_b, self.sdf_head_b)):
            maps = _decode(decoder, encoder)
            decoders.append({
                "logits": like_input_format(crop_to_input(head(maps[0]), height, width), x),
                "sdf": crop_to_input(sdf_head(maps[0]), height, width),
                "features": crop_to_input(maps[0], height, width),
                "decoder": _crop_all(maps, height, width),
            })
        mean = (decoders[0]["logits"] + decoders[1]["logits"]) / 2
        return {"logits": mean, "decoders": decoders, "encoder": _crop_all(encoder, height, width)}
