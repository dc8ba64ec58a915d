"""Swin-UNet: a pure Transformer U-Net built from shifted-window attention blocks.

Cao et al., "Swin-Unet: Unet-like Pure Transformer for Medical Image Segmentation",
ECCV Workshops 2022; the Transformer member of cross teaching (Luo et al., MIDL 2022).
Patch embedding 4x4, Swin blocks, patch merging down, patch expanding up, skip connections
fused by a linear layer, and a final 4x patch expansion. With ``embed_dim=96``,
``depths=(2, 2, 2, 2)`` and ``num_heads=(3, 6, 12, 24)`` it has about 27 M parameters.
"""

from __future__ import annotations


from torch import Tensor, nn

from .blocks import DropPath, TransformerUNet, WindowAttention, alternating_blocks


class SwinBlock(nn.Module):
    """Pre-norm Transformer block with (shifted) window attention and an MLP, on (B, H, W, C)."""

    def __init__(
        self, dim: int, num_heads: int, window_size: int, shifted: bool, mlp_ratio: float, drop_path: float
    ) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn = WindowAttention(dim, num_heads, window_size, shifted)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.proj(self.attn(self.qkv(self.norm1(x)))))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch`` x ``patch`` patches -> tokens: NCHW image -> (B, H/p, W/p, C)."""

    def __init__(self, in_channels: int, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """Concatenates each 2x2 group of tokens and projects it: (B, H, W, C) -> (B, H/2, W/2, C')."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).reshape(b, h // 2, w // 2, 4 * c)
        return self.reduction(self.norm(x))


class PatchExpand(nn.Module):
    """Linear expansion then pixel shuffle: (B, H, W, C) -> (B, sH, sW, C_out)."""

    def __init__(self, dim: int, out_dim: int, scale: int) -> None:
        super().__init__()
        self.scale, self.out_dim = scale, out_dim
        self.expand = nn.Linear(dim, scale * scale * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, _ = x.shape
        s = self.scale
        x = self.expand(x).reshape(b, h, w, s, s, self.out_dim).permute(0, 1, 3, 2, 4, 5)
        return self.norm(x.reshape(b, h * s, w * s, self.out_dim))


class SwinUNet(TransformerUNet):
    """Swin-UNet for 2D segmentation of any input size.

    Inputs are padded internally to a multiple of ``4 * 2 ** (len(depths) - 1)`` (32 for four
    stages); each attention layer further pads its grid to its window and masks the padding,
    so no size is rounded up to a multiple of the window.

    Feature maps (see :meth:`forward_features`): strides (1, 4, 8) with channels
    ``(embed_dim, embed_dim, 2 * embed_dim)``.

    Args:
        in_channels: Input image channels.
        num_classes: Output classes (background included).
        embed_dim: Channels of the first stage (96 in the paper).
        depths: Swin blocks per stage.
        num_heads: Attention heads per stage.
        window_size: Attention window side (7 for 224 x 224 inputs in the paper).
        mlp_ratio: MLP hidden width relative to the stage width.
        drop_path_rate: Stochastic depth rate of the deepest encoder block.
    """

    def make_embed(self, in_channels: int, dim: int) -> nn.Module:
        return PatchEmbed(in_channels, dim, self.patch_size)

    def make_stage(self, dim: int, depth: int, heads: int, drop_paths: list[float]) -> nn.Sequential:
        def block(shifted: bool, drop_path: float) -> nn.Module:
            return SwinBlock(dim, heads, self.window_size, shifted, self.mlp_ratio, drop_path)

        return alternating_blocks(depth, block, drop_paths)

    def make_down(self, dim: int, out_dim: int) -> nn.Module:
        return PatchMerging(dim, out_dim)

    def make_up(self, dim: int, out_dim: int) -> nn.Module:
        return PatchExpand(dim, out_dim, scale=2)

    def make_final_up(self, dim: int) -> nn.Module:
        return PatchExpand(dim, dim, scale=self.patch_size)
