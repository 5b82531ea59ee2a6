"""Procedural vessel segmentation (a DRIVE stand-in,
``docs/algorithms.md#networks-and-data``): dark, tapering curvilinear vessels on a smooth
textured background with uneven illumination and pixel noise; the labels are the binary
vessel masks. Seeded, offline."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from memhil.datasets.containers import ClassificationData, Split


def _smooth_noise(n: int, size: int, cell: int, gen: torch.Generator) -> Tensor:
    """(n, size, size) smooth random field: coarse Gaussian noise, bicubic-upsampled."""
    coarse = torch.randn(n, 1, size // cell + 3, size // cell + 3, generator=gen)
    up = F.interpolate(coarse, scale_factor=cell, mode="bicubic", align_corners=False)
    return up[:, 0, cell : cell + size, cell : cell + size]


def _vessel_paths(
    n: int, n_vessels: int, n_points: int, size: int, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Points (n, V, P, 2) along random curvilinear paths and their radii (n, V, P):
    headings do a smoothed random walk, radius tapers from a random start."""
    step = 0.5  # px between samples, fine enough for a continuous vessel at radius >= 0.6
    start = torch.rand(n, n_vessels, 1, 2, generator=gen) * size
    heading0 = torch.rand(n, n_vessels, 1, generator=gen) * 2 * math.pi
    turn = torch.randn(n, n_vessels, n_points, generator=gen) * 0.12
    turn = F.avg_pool1d(turn.view(-1, 1, n_points), 9, 1, 4, count_include_pad=False).view_as(turn)
    heading = heading0 + torch.cumsum(turn, -1)
    delta = torch.stack([torch.cos(heading), torch.sin(heading)], -1) * step
    points = start + torch.cumsum(delta, -2)
    r0 = 0.7 + 1.3 * torch.rand(n, n_vessels, 1, generator=gen)
    taper = 1.0 - 0.5 * torch.linspace(0, 1, n_points)
    return points, r0 * taper


def _splat(points: Tensor, radius: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Vessel mask (d <= r) and Gaussian cross-profile exp(-d^2 / 2r^2), (n, size, size):
    every path sample updates the pixels of a window around it (scatter max)."""
    n = points.shape[0]
    reach = 4  # window half-width in px: radii stay below 2 px, the profile ~0 beyond 2r
    off = torch.arange(-reach, reach + 1)
    oy, ox = torch.meshgrid(off, off, indexing="ij")
    base = points.floor().long()  # (n, V, P, 2) as (x, y)
    px = base[..., :1] + ox.reshape(1, 1, 1, -1)  # (n, V, P, W)
    py = base[..., 1:] + oy.reshape(1, 1, 1, -1)
    d = torch.hypot(px + 0.5 - points[..., :1], py + 0.5 - points[..., 1:])
    r = radius[..., None]
    inside = (px >= 0) & (px < size) & (py >= 0) & (py < size)
    img = torch.arange(n).view(n, 1, 1, 1).expand_as(px)
    flat = ((img * size + py) * size + px)[inside]
    out = []
    for value in ((d <= r).float(), torch.exp(-0.5 * (d / r) ** 2)):
        acc = torch.zeros(n * size * size)
        acc.scatter_reduce_(0, flat, value[inside], reduce="amax")
        out.append(acc.view(n, size, size))
    return out[0] > 0.5, out[1]


def vessels(
    n_train: int = 160,
    n_test: int = 40,
    size: int = 64,
    n_vessels: int = 6,
    seed: int = 0,
    noise_std: float = 0.08,
    contrast: float = 0.35,
) -> ClassificationData:
    """Images x (N, 1, size, size) in about [0, 1] and masks y (N, size, size) int64
    (1 = vessel), as a 2-class per-pixel task. Vessels darken the background by
    ``contrast`` (Gaussian cross-profile); ``noise_std`` is the pixel noise."""
    if size < 16 or size % 8:
        raise ValueError(f"size must be a multiple of 8 and >= 16, got {size}")
    gen = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    n_points = int(2.5 * size)
    points, radius = _vessel_paths(n, n_vessels, n_points, size, gen)
    mask, profile = _splat(points, radius, size)
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(coords / size, coords / size, indexing="ij")
    tilt = torch.rand(n, 2, generator=gen) - 0.5
    illumination = 0.6 + tilt[:, :1, None] * xx + tilt[:, 1:, None] * yy
    texture = 0.06 * _smooth_noise(n, size, 8, gen) + 0.03 * _smooth_noise(n, size, 2, gen)
    image = illumination + texture - contrast * profile
    image = image + noise_std * torch.randn(image.shape, generator=gen)
    x = image.clamp(0.0, 1.0).unsqueeze(1)
    y = mask.to(torch.int64)
    return ClassificationData(
        "vessels", Split(x[:n_train], y[:n_train]), Split(x[n_train:], y[n_train:]), 2
    )
