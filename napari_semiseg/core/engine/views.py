"""The strong view for students: stronger intensity changes, noise, blur and a cut-out box.

The weak view is the batch as the sampler made it (flips, rotation, scaling, mild intensity
changes). The strong view keeps its geometry, so a teacher's prediction on the weak view is a
pixel-aligned target for the student on the strong view (FixMatch-style consistency, as in
the mean-teacher family of methods.md). Only unannotated rows are perturbed: annotated rows
are the same in both views, so supervised terms are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BLUR_KERNEL = torch.tensor([0.0545, 0.2442, 0.4026, 0.2442, 0.0545])  # Gaussian, sigma = 1 pixel


def strong_view(images: torch.Tensor, annotated: int, generator: torch.Generator) -> torch.Tensor:
    """A perturbed copy of ``images`` (B, 1, H, W) whose rows from ``annotated`` on are changed.

    Per row: contrast in [0.6, 1.4], brightness in [-0.3, 0.3], Gaussian noise with standard
    deviation in [0.05, 0.2] (the images are normalised to unit variance), a blend of 0 to 100 %
    with a sigma-1 blur (half the rows), and a zeroed box of 10 to 40 % of each side (half the
    rows). All drawn from ``generator`` and applied in one vectorised pass.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}.")
    rows = images.shape[0] - annotated
    if rows <= 0:
        return images
    unannotated = images[annotated:].float()
    count, channels, height, width = unannotated.shape

    def uniform(low: float, high: float) -> torch.Tensor:
        return (low + (high - low) * torch.rand(count, generator=generator)).view(-1, 1, 1, 1)

    def coin() -> torch.Tensor:
        return (torch.rand(count, generator=generator) < 0.5).float().view(-1, 1, 1, 1)

    contrast, brightness, noise_std = uniform(0.6, 1.4), uniform(-0.3, 0.3), uniform(0.05, 0.2)
    blend = uniform(0.0, 1.0) * coin()
    cut_side_y, cut_side_x = uniform(0.1, 0.4), uniform(0.1, 0.4)
    cut_top, cut_left, cut = uniform(0.0, 1.0), uniform(0.0, 1.0), coin()
    noise = torch.randn(unannotated.shape, generator=generator)
    device = images.device
    contrast, brightness, noise_std, blend, noise = (t.to(device) for t in (contrast, brightness, noise_std, blend, noise))

    blurred = _blur(unannotated)
    perturbed = (unannotated + blend * (blurred - unannotated)) * contrast + brightness + noise_std * noise
    ys = torch.linspace(0.0, 1.0, height, device=device).view(1, 1, -1, 1)
    xs = torch.linspace(0.0, 1.0, width, device=device).view(1, 1, 1, -1)
    top = (cut_top * (1 - cut_side_y)).to(device)
    left = (cut_left * (1 - cut_side_x)).to(device)
    box = ((ys >= top) & (ys <= top + cut_side_y.to(device)) & (xs >= left) & (xs <= left + cut_side_x.to(device)))
    perturbed = torch.where(box & (cut.to(device) > 0), torch.zeros_like(perturbed), perturbed)
    return torch.cat([images[:annotated], perturbed.to(images.dtype)], dim=0)


def _blur(images: torch.Tensor) -> torch.Tensor:
    channels = images.shape[1]
    kernel = BLUR_KERNEL.to(images.device, images.dtype)
    pad = len(BLUR_KERNEL) // 2
    horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    return F.conv2d(F.conv2d(padded, horizontal, groups=channels), vertical, groups=channels)
