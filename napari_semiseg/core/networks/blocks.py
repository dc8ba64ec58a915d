"""Parts shared by the networks: padding to a valid size, stochastic depth, window attention.

Transformer feature maps are kept as ``(B, H, W, C)`` "token grids": linear layers and
LayerNorm act on the last axis, and ``grid.permute(0, 3, 1, 2)`` is a channels-last NCHW view
that convolutions accept without a copy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Swin's masking constant: large enough to remove a key after softmax, finite so that a row
# with every key masked cannot produce NaN.
MASK_VALUE = -100.0

# Grid sizes whose attention masks a layer keeps; a few cover fixed-size training plus
# inference on one or two other sizes, without growing forever under random crop sizes.
MAX_CACHED_GRIDS = 8


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pads an NCHW tensor at the bottom and right so that H and W are multiples of ``multiple``.

    Reflection padding is used when the image is large enough for it, zeros otherwise. Padding
    only at the far edges keeps pixel (i, j) of any stride-s feature map at (i // s, j // s).

    Args:
        x: Tensor of shape (B, C, H, W).
        multiple: The size multiple the network needs.

    Returns:
        The padded tensor, or ``x`` itself when no padding is needed.
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < h and pad_w < w else "constant"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def crop_to_input(y: Tensor, height: int, width: int, stride: int = 1) -> Tensor:
    """Crops an NCHW map of a padded input back to the extent of the unpadded input.

    Args:
        y: Map of shape (B, C, h, w) computed at ``stride`` from the padded input.
        height: Height of the unpadded input.
        width: Width of the unpadded input.
        stride: Downsampling factor of ``y`` relative to the input.

    Returns:
        A view of shape (B, C, ceil(height / stride), ceil(width / stride)).
    """
    return y[..., : math.ceil(height / stride), : math.ceil(width / stride)]


def like_input_format(y: Tensor, x: Tensor) -> Tensor:
    """Returns ``y`` contiguous in the memory format of the input ``x`` (NCHW or channels-last)."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return y.contiguous(memory_format=fmt)


def grid_to_nchw(grid: Tensor) -> Tensor:
    """(B, H, W, C) token grid -> (B, C, H, W) view (channels-last strides, no copy)."""
    return grid.permute(0, 3, 1, 2)


def nchw_to_grid(x: Tensor) -> Tensor:
    """(B, C, H, W) map -> (B, H, W, C) view (contiguous when ``x`` is channels-last)."""
    return x.permute(0, 2, 3, 1)


class DropPath(nn.Module):
    """Stochastic depth: drops a whole residual branch per sample during training.

    Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016.
    """

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


def window_geometry(height: int, width: int, window_size: int, shifted: bool) -> tuple[int, ...]:
    """Window and shift for a grid, following Swin: a grid smaller than the window gets a
    window the size of the grid and no shift along that axis.

    Returns:
        (window_h, window_w, shift_h, shift_w, pad_h, pad_w).
    """
    win_h, win_w = min(window_size, height), min(window_size, width)
    shift_h = window_size // 2 if shifted and height > window_size else 0
    shift_w = window_size // 2 if shifted and width > window_size else 0
    return win_h, win_w, shift_h, shift_w, (-height) % win_h, (-width) % win_w


def window_partition(grid: Tensor, win_h: int, win_w: int) -> Tensor:
    """(B, H, W, C) with H, W multiples of the window -> (B, nW, win_h * win_w, C)."""
    b, h, w, c = grid.shape
    x = grid.reshape(b, h // win_h, win_h, w // win_w, win_w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, -1, win_h * win_w, c)


def window_merge(windows: Tensor, height: int, width: int, win_h: int, win_w: int) -> Tensor:
    """Inverse of :func:`window_partition`: (B, nW, N, C) -> (B, height, width, C)."""
    b, _, _, c = windows.shape
    x = windows.reshape(b, height // win_h, width // win_w, win_h, win_w, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, height, width, c)


def relative_position_index(win_h: int, win_w: int, window_size: int) -> Tensor:
    """Index into a ((2 * window_size - 1) ** 2)-row bias table for every pair of positions in a
    win_h x win_w window (smaller windows use the central part of the table)."""
    coords = torch.stack(torch.meshgrid(torch.arange(win_h), torch.arange(win_w), indexing="ij"))
    coords = coords.flatten(1)
    rel = coords[:, :, None] - coords[:, None, :] + (window_size - 1)
    return rel[0] * (2 * window_size - 1) + rel[1]


def attention_mask(height: int, width: int, geometry: tuple[int, ...]) -> Tensor | None:
    """Additive mask (nW, 1, N, N) for shifted windows and padded keys, or None if not needed.

    Regions follow Swin's construction in the shifted frame, so tokens that were rolled around
    the border do not attend to their new neighbours. Padded tokens never serve as keys.
    """
    win_h, win_w, shift_h, shift_w, pad_h, pad_w = geometry
    if not (shift_h or shift_w or pad_h or pad_w):
        return None
    hp, wp = height + pad_h, width + pad_w
    rows, cols = torch.arange(hp), torch.arange(wp)
    row_region = (rows >= hp - win_h).long() + (rows >= hp - shift_h).long() if shift_h else 0 * rows
    col_region = (cols >= wp - win_w).long() + (cols >= wp - shift_w).long() if shift_w else 0 * cols
    region = row_region[:, None] * 3 + col_region[None, :]
    padded = (rows >= height)[:, None] | (cols >= width)[None, :]
    padded = torch.roll(padded, (-shift_h, -shift_w), dims=(0, 1))
    region = window_partition(region[None, :, :, None], win_h, win_w)[0, :, :, 0]
    padded = window_partition(padded[None, :, :, None], win_h, win_w)[0, :, :, 0]
    blocked = (region[:, :, None] != region[:, None, :]) | padded[:, None, :]
    return torch.zeros(blocked.shape).masked_fill_(blocked, MASK_VALUE)[:, None]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside (shifted) windows with a relative position bias.

    Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows",
    ICCV 2021. Takes already projected q/k/v so that linear (Swin) and convolutional (CS-Unet)
    projections share it. Any grid size works: the grid is padded to a multiple of the window
    and padded keys are masked; masks and bias indices are cached per grid size as
    non-persistent buffers, so they follow ``.to(device)`` and stay out of the state dict.

    Args:
        dim: Channels of q, k and v.
        num_heads: Attention heads; ``dim`` must be divisible by it.
        window_size: Side of the (square) window on grids at least that large.
        shifted: Whether this layer shifts its windows by half a window.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shifted: bool) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}.")
        self.dim, self.num_heads = dim, num_heads
        self.window_size, self.shifted = window_size, shifted
        self.bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        self._cached_grids: list[tuple[int, int]] = []

    def forward(self, qkv: Tensor) -> Tensor:
        """Attends within windows.

        Args:
            qkv: (B, H, W, 3 * dim), the channels ordered q, k, v and head-major within each.

        Returns:
            (B, H, W, dim) attention output, before the output projection.
        """
        b, h, w, _ = qkv.shape
        geometry = window_geometry(h, w, self.window_size, self.shifted)
        win_h, win_w, shift_h, shift_w, pad_h, pad_w = geometry
        if pad_h or pad_w:
            qkv = F.pad(qkv, (0, 0, 0, pad_w, 0, pad_h))
        if shift_h or shift_w:
            qkv = torch.roll(qkv, (-shift_h, -shift_w), dims=(1, 2))
        windows = window_partition(qkv, win_h, win_w)
        n_windows, n_tokens = windows.shape[1:3]
        heads, head_dim = self.num_heads, self.dim // self.num_heads
        q, k, v = windows.reshape(b, n_windows, n_tokens, 3, heads, head_dim).permute(3, 0, 1, 4, 2, 5)
        # Plain matmuls beat scaled_dot_product_attention here: with a float mask its CPU
        # path adds full passes over the scores to look for fully masked rows.
        scores = (q * head_dim**-0.5) @ k.transpose(-2, -1) + self._attention_bias(h, w, geometry)
        out = scores.softmax(dim=-1) @ v
        out = out.transpose(2, 3).reshape(b, n_windows, n_tokens, self.dim)
        out = window_merge(out, h + pad_h, w + pad_w, win_h, win_w)
        if shift_h or shift_w:
            out = torch.roll(out, (shift_h, shift_w), dims=(1, 2))
        return out[:, :h, :w] if pad_h or pad_w else out

    def _attention_bias(self, height: int, width: int, geometry: tuple[int, ...]) -> Tensor:
        """Relative position bias (heads, N, N), plus the mask as (nW, heads, N, N) if any."""
        index, mask = self._cached_index_and_mask(height, width, geometry)
        n_tokens = index.shape[0]
        bias = self.bias_table[index.reshape(-1)].reshape(n_tokens, n_tokens, -1).permute(2, 0, 1)
        return bias if mask is None else bias + mask

    def _cached_index_and_mask(
        self, height: int, width: int, geometry: tuple[int, ...]
    ) -> tuple[Tensor, Tensor | None]:
        index_name, mask_name = f"rel_index_{height}x{width}", f"attn_mask_{height}x{width}"
        if (height, width) not in self._cached_grids:
            if len(self._cached_grids) >= MAX_CACHED_GRIDS:
                old_h, old_w = self._cached_grids.pop(0)
                del self._buffers[f"rel_index_{old_h}x{old_w}"], self._buffers[f"attn_mask_{old_h}x{old_w}"]
            device = self.bias_table.device
            index = relative_position_index(geometry[0], geometry[1], self.window_size).to(device)
            mask = attention_mask(height, width, geometry)
            self.register_buffer(index_name, index, persistent=False)
            self.register_buffer(mask_name, None if mask is None else mask.to(device), persistent=False)
            self._cached_grids.append((height, width))
        mask = self._buffers[mask_name]
        if mask is not None and mask.dtype != self.bias_table.dtype:
            mask = mask.to(self.bias_table.dtype)
        return self._buffers[index_name], mask

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.num_heads}, window={self.window_size}, shifted={self.shifted}"


def as_int_tuple(values: Sequence[int] | int, length: int | None = None, name: str = "value") -> tuple[int, ...]:
    """Normalises a JSON-loaded list (or a single int) to a tuple of ints of an expected length."""
    out = (int(values),) * (length or 1) if isinstance(values, int) else tuple(int(v) for v in values)
    if length is not None and len(out) != length:
        raise ValueError(f"{name} needs {length} entries, got {len(out)}: {out}.")
    return out


class TransformerUNet(nn.Module):
    """U-shaped hierarchical Transformer: the skeleton SwinUNet and CSUNet share.

    Encoder stages at strides 4, 8, 16, ... with a downsampling layer between them; a decoder
    that upsamples, concatenates the encoder map of the same stride, fuses with a linear layer
    and runs a stage of blocks; a final 4x upsampling to full resolution and a per-pixel head.
    Subclasses supply the parts through the ``make_*`` methods.

    Any input size works: inputs are padded at the bottom/right to a multiple of
    ``patch_size * 2 ** (num_stages - 1)``, the blocks pad their grids to the window, and
    logits and features are cropped back.

    Args:
        in_channels: Input image channels.
        num_classes: Output classes (background included).
        embed_dim: Channels of the first stage; stage i has ``embed_dim * 2 ** i``.
        depths: Blocks per encoder stage (the decoder mirrors the first ``len - 1``).
        num_heads: Attention heads per stage.
        window_size: Attention window side.
        mlp_ratio: Hidden width of the feed-forward layers relative to the stage width.
        drop_path_rate: Stochastic depth rate of the deepest encoder block (linear ramp).
    """

    patch_size = 4

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        depths = as_int_tuple(depths, name="depths")
        num_heads = as_int_tuple(num_heads, len(depths), name="num_heads")
        if len(depths) < 3:
            raise ValueError(f"Need at least 3 stages for features at 1/4 and 1/8, got depths={depths}.")
        self.num_stages, self.window_size, self.mlp_ratio = len(depths), int(window_size), float(mlp_ratio)
        dims = [embed_dim * 2**i for i in range(self.num_stages)]
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        starts = [sum(depths[:i]) for i in range(self.num_stages)]

        def stage(i: int) -> nn.Sequential:
            return self.make_stage(dims[i], depths[i], num_heads[i], rates[starts[i] : starts[i] + depths[i]])

        self.embed = self.make_embed(in_channels, embed_dim)
        self.encoder = nn.ModuleList(stage(i) for i in range(self.num_stages))
        self.downs = nn.ModuleList(self.make_down(dims[i], dims[i + 1]) for i in range(self.num_stages - 1))
        self.bottleneck_norm = nn.LayerNorm(dims[-1])
        skip_levels = list(reversed(range(self.num_stages - 1)))
        self.ups = nn.ModuleList(self.make_up(dims[i + 1], dims[i]) for i in skip_levels)
        self.fuses = nn.ModuleList(nn.Linear(2 * dims[i], dims[i]) for i in skip_levels)
        self.decoder = nn.ModuleList(stage(i) for i in skip_levels)
        self.decoder_norm = nn.LayerNorm(embed_dim)
        self.final_up = self.make_final_up(embed_dim)
        self.head = self.make_head(embed_dim, num_classes)
        self.feature_channels: tuple[int, ...] = (embed_dim, dims[0], dims[1])
        self.decoder_channels: tuple[int, ...] = (embed_dim, dims[0], dims[1])
        self.feature_strides: tuple[int, ...] = (1, 4, 8)
        self.apply(_init_transformer_weights)

    # Parts supplied by subclasses. Every grid is (B, H, W, C).
    def make_embed(self, in_channels: int, dim: int) -> nn.Module:
        """NCHW image -> grid at stride 4."""
        raise NotImplementedError

    def make_stage(self, dim: int, depth: int, heads: int, drop_paths: list[float]) -> nn.Sequential:
        """A stage of ``depth`` blocks, alternating regular and shifted windows."""
        raise NotImplementedError

    def make_down(self, dim: int, out_dim: int) -> nn.Module:
        """Grid -> grid at half the resolution."""
        raise NotImplementedError

    def make_up(self, dim: int, out_dim: int) -> nn.Module:
        """Grid -> grid at twice the resolution."""
        raise NotImplementedError

    def make_final_up(self, dim: int) -> nn.Module:
        """Grid at stride 4 -> grid at full resolution."""
        raise NotImplementedError

    def make_head(self, dim: int, num_classes: int) -> nn.Module:
        """Full-resolution NCHW features -> NCHW logits."""
        return nn.Conv2d(dim, num_classes, kernel_size=1)

    @property
    def size_multiple(self) -> int:
        """Input sides are padded internally to a multiple of this."""
        return self.patch_size * 2 ** (self.num_stages - 1)

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
            ``(logits, [full, quarter, eighth])``: ``full`` is the decoder's full-resolution map
            before the head, ``quarter`` and ``eighth`` are the outputs of the first two encoder
            stages. Map i has ``feature_channels[i]`` channels and spatial size
            ``ceil(H / s), ceil(W / s)`` with ``s = feature_strides[i]``.
        """
        logits, encoder, decoder = self._run(x)
        return logits, [decoder[0], encoder[0], encoder[1]]

    def forward_decoder_features(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Like :meth:`forward_features`, but the stride-4 and stride-8 maps come from the decoder
        (``decoder_channels``)."""
        logits, _, decoder = self._run(x)
        return logits, decoder

    def _run(self, x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        height, width = x.shape[-2:]
        grid = self.embed(pad_to_multiple(x, self.size_multiple))
        skips = []
        for level, stage in enumerate(self.encoder):
            grid = stage(grid)
            if level < self.num_stages - 1:
                skips.append(grid)
                grid = self.downs[level](grid)
        grid = self.bottleneck_norm(grid)
        decoded = []
        for up, fuse, stage, skip in zip(self.ups, self.fuses, self.decoder, reversed(skips)):
            grid = stage(fuse(torch.cat([up(grid), skip], dim=-1)))
            decoded.append(grid)
        full = grid_to_nchw(self.final_up(self.decoder_norm(grid)))
        logits = like_input_format(crop_to_input(self.head(full), height, width), x)

        def crop(grid: Tensor, stride: int) -> Tensor:
            return crop_to_input(grid_to_nchw(grid), height, width, stride)

        encoder = [crop(skips[0], 4), crop(skips[1], 8)]
        decoder = [crop_to_input(full, height, width), crop(decoded[-1], 4), crop(decoded[-2], 8)]
        return logits, encoder, decoder


def _init_transformer_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def alternating_blocks(depth: int, block: Callable[[bool, float], nn.Module], drop_paths: list[float]) -> nn.Sequential:
    """``depth`` blocks, the odd ones with shifted windows (Swin's W-MSA / SW-MSA pairs)."""
    return nn.Sequential(*(block(i % 2 == 1, drop_paths[i]) for i in range(depth)))
