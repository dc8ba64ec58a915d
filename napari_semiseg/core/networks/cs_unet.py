"""CS-Unet: a Swin-style U-Net whose Transformer blocks are built with convolutions.

Liu et al., "Optimizing Vision Transformers for Medical Image Segmentation", ICASSP 2023, and
Liu, "Transformers and contrastive semi-supervised learning for medical image segmentation",
PhD thesis, University of Glasgow, 2025, ch. 3. Three changes to Swin-UNet:

* convolutional token embedding: overlapping strided convolutions instead of linear patch
  embedding and patch merging;
* convolutional projection: q, k and v come from depth-wise 3x3 convolutions (+ BatchNorm)
  followed by point-wise projections, as in CvT (Wu et al., ICCV 2021), before shifted-window
  attention;
* convolutional feed-forward: point-wise -> depth-wise 3x3 -> point-wise.

The decoder upsamples with transposed convolutions.
"""

from __future__ import annotations


import torch
from torch import Tensor, nn

from .blocks import DropPath, TransformerUNet, WindowAttention, alternating_blocks, grid_to_nchw, nchw_to_grid


class ConvProjection(nn.Module):
    """q, k, v = point-wise(BN(depth-wise 3x3(x))), each with its own weights: (B, H, W, C) ->
    (B, H, W, 3C), ordered q, k, v.

    The input is repeated three times so one depth-wise convolution computes all three
    depth-wise projections (a grouped 1x1 convolution would hit a slow CPU path, hence
    three linear layers for the point-wise part).
    """

    def __init__(self, dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            3 * dim, 3 * dim, kernel_size, padding=kernel_size // 2, groups=3 * dim, bias=False
        )
        self.norm = nn.BatchNorm2d(3 * dim)
        self.pointwise = nn.ModuleList(nn.Linear(dim, dim) for _ in range(3))

    def forward(self, x: Tensor) -> Tensor:
        x = grid_to_nchw(x)
        x = nchw_to_grid(self.norm(self.depthwise(torch.cat([x, x, x], dim=1))))
        return torch.cat([proj(part) for proj, part in zip(self.pointwise, x.chunk(3, dim=-1))], dim=-1)


class ConvFeedForward(nn.Module):
    """Point-wise -> GELU -> depth-wise 3x3 -> GELU -> point-wise, on (B, H, W, C)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.depthwise = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.fc1(x))
        x = self.act(nchw_to_grid(self.depthwise(grid_to_nchw(x))))
        return self.fc2(x)


class CSBlock(nn.Module):
    """Convolutional Swin block: conv projection + window attention, then a conv feed-forward."""

    def __init__(
        self, dim: int, num_heads: int, window_size: int, shifted: bool, mlp_ratio: float, drop_path: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = ConvProjection(dim)
        self.attn = WindowAttention(dim, num_heads, window_size, shifted)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = ConvFeedForward(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        # The projection convolves the whole, unshifted grid; windows are cut afterwards.
        x = x + self.drop_path(self.proj(self.attn(self.qkv(self.norm1(x)))))
        return x + self.drop_path(self.ffn(self.norm2(x)))


class ConvEmbed(nn.Module):
    """Overlapping strided convolution + LayerNorm: NCHW or a grid -> grid at 1/stride.

    Args:
        in_channels: Input channels.
        dim: Output channels.
        kernel_size: Convolution kernel, larger than ``stride`` so that patches overlap.
        stride: Downsampling factor.
        grid_input: Whether the input is a (B, H, W, C) grid rather than an NCHW image.
    """

    def __init__(self, in_channels: int, dim: int, kernel_size: int, stride: int, grid_input: bool) -> None:
        super().__init__()
        self.grid_input = grid_input
        self.proj = nn.Conv2d(in_channels, dim, kernel_size, stride=stride, padding=kernel_size // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        if self.grid_input:
            x = grid_to_nchw(x)
        return self.norm(nchw_to_grid(self.proj(x)))


class ConvUp(nn.Module):
    """Transposed convolution (kernel = stride = scale) + LayerNorm: grid -> grid at scale x."""

    def __init__(self, dim: int, out_dim: int, scale: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(dim, out_dim, kernel_size=scale, stride=scale)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(nchw_to_grid(self.up(grid_to_nchw(x))))


class CSUNet(TransformerUNet):
    """CS-Unet for 2D segmentation of any input size.

    Same skeleton, padding rules and feature maps as :class:`SwinUNet`: strides (1, 4, 8) with
    channels ``(embed_dim, embed_dim, 2 * embed_dim)``. The head is a 3x3 convolution, which
    smooths the 4x upsampled full-resolution map.

    Args:
        in_channels: Input image channels.
        num_classes: Output classes (background included).
        embed_dim: Channels of the first stage.
        depths: CS blocks per stage.
        num_heads: Attention heads per stage.
        window_size: Attention window side.
        mlp_ratio: Feed-forward hidden width relative to the stage width.
        drop_path_rate: Stochastic depth rate of the deepest encoder block.
    """

    def make_embed(self, in_channels: int, dim: int) -> nn.Module:
        return ConvEmbed(in_channels, dim, kernel_size=7, stride=self.patch_size, grid_input=False)

    def make_stage(self, dim: int, depth: int, heads: int, drop_paths: list[float]) -> nn.Sequential:
        def block(shifted: bool, drop_path: float) -> nn.Module:
            return CSBlock(dim, heads, self.window_size, shifted, self.mlp_ratio, drop_path)

        return alternating_blocks(depth, block, drop_paths)

    def make_down(self, dim: int, out_dim: int) -> nn.Module:
        return ConvEmbed(dim, out_dim, kernel_size=3, stride=2, grid_input=True)

    def make_up(self, dim: int, out_dim: int) -> nn.Module:
        return ConvUp(dim, out_dim, scale=2)

    def make_final_up(self, dim: int) -> nn.Module:
        return ConvUp(dim, dim, scale=self.patch_size)

    def make_head(self, dim: int, num_classes: int) -> nn.Module:
        return nn.Conv2d(dim, num_classes, kernel_size=3, padding=1)
