"""2D U-Net as used across the SSL4MIS semi-supervised segmentation literature.

Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation",
MICCAI 2015; the variant here follows the SSL4MIS baseline (Luo et al.): five levels of two
3x3 conv + BatchNorm + LeakyReLU, dropout in the encoder growing with depth, max-pool down,
bilinear (after a 1x1 conv) or transposed-convolution up. About 1.8 M parameters with the
default channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .blocks import as_int_tuple, crop_to_input, like_input_format, pad_to_multiple


class ConvBlock(nn.Sequential):
    """(3x3 conv, BatchNorm, LeakyReLU) twice, with dropout between the two."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(),
        )


class UpBlock(nn.Module):
    """Upsamples ``x`` 2x to ``skip_channels``, concatenates the skip map, applies a ConvBlock."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, bilinear: bool) -> None:
        super().__init__()
        if bilinear:
            self.up = nn.Sequential(
                nn.Conv2d(in_channels, skip_channels, kernel_size=1),
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            )
        else:
            self.up = nn.ConvTranspose2d(in_channels, skip_channels, kernel_size=2, stride=2)
        self.conv = ConvBlock(2 * skip_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """SSL4MIS-style 2D U-Net for any input size.

    Inputs are padded internally to a multiple of ``2 ** (len(channels) - 1)`` and the outputs
    cropped back.

    Feature maps (see :meth:`forward_features`): strides (1, 4, 8) with channels
    ``(channels[0], channels[2], channels[3])``.

    Args:
        in_channels: Input image channels.
        num_classes: Output classes (background included).
        channels: Channels per level, from full resolution to the bottleneck (at least 4).
        dropout: Dropout rate per encoder level (SSL4MIS: 0.05, 0.1, 0.2, 0.3, 0.5).
        bilinear: Bilinear upsampling after a 1x1 conv if True, transposed convolution if False.
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
        super().__init__()
        channels = as_int_tuple(channels, name="channels")
        if len(channels) < 4:
            raise ValueError(f"Need at least 4 levels for features at 1/8, got channels={channels}.")
        dropout = tuple(float(p) for p in dropout)
        if len(dropout) != len(channels):
            raise ValueError(f"dropout needs one rate per level ({len(channels)}), got {dropout}.")
        self.size_multiple = 2 ** (len(channels) - 1)
        self.encoder = nn.ModuleList([ConvBlock(in_channels, channels[0], dropout[0])])
        self.encoder.extend(
            nn.Sequential(nn.MaxPool2d(2), ConvBlock(channels[i - 1], channels[i], dropout[i]))
            for i in range(1, len(channels))
        )
        self.decoder = nn.ModuleList(
            UpBlock(channels[i + 1], channels[i], channels[i], bilinear) for i in reversed(range(len(channels) - 1))
        )
        self.head = nn.Conv2d(channels[0], num_classes, kernel_size=3, padding=1)
        self.feature_channels: tuple[int, ...] = (channels[0], channels[2], channels[3])
        self.decoder_channels: tuple[int, ...] = (channels[0], channels[2], channels[3])
        self.feature_strides: tuple[int, ...] = (1, 4, 8)

    def forward(self, x: Tensor) -> Tensor:
        """Segments a batch.

        Args:
            x: Images (B, in_channels, H, W), any H, W.

        Returns:
            Logits (B, num_classes, H, W).
        """
        return self._run(x)[0]

    def forward_features(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits plus maps at strides 1, 4 and 8 for contrastive losses.

        Returns:
            ``(logits, [full, quarter, eighth])``: ``full`` is the last decoder map (before the
            head), ``quarter`` and ``eighth`` the encoder maps of levels 2 and 3. Map i has
            ``feature_channels[i]`` channels and size ``ceil(H / s), ceil(W / s)`` with
            ``s = feature_strides[i]``.
        """
        logits, encoder, decoder = self._run(x)
        return logits, [decoder[0], encoder[2], encoder[3]]

    def forward_decoder_features(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Like :meth:`forward_features`, but the stride-4 and stride-8 maps come from the decoder
        (``decoder_channels``)."""
        logits, _, decoder = self._run(x)
        return logits, [decoder[0], decoder[2], decoder[3]]

    def _run(self, x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Returns logits, encoder maps per level and decoder maps per level (full res first)."""
        height, width = x.shape[-2:]
        y = pad_to_multiple(x, self.size_multiple)
        encoder = []
        for level in self.encoder:
            y = level(y)
            encoder.append(y)
        decoder = []
        for up, skip in zip(self.decoder, reversed(encoder[:-1])):
            y = up(y, skip)
            decoder.append(y)
        decoder.reverse()
        logits = like_input_format(crop_to_input(self.head(y), height, width), x)
        strides = [2**i for i in range(len(encoder))]
        encoder = [crop_to_input(m, height, width, s) for m, s in zip(encoder, strides)]
        decoder = [crop_to_input(m, height, width, s) for m, s in zip(decoder, strides)]
        return logits, encoder, decoder
