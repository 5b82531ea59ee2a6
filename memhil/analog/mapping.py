"""Signed weights on conductances: where a weight matrix lives on a tile, and the linear
map between weight units and siemens.

Three layouts, all on one rectangular region of one tile (rows = inputs):

``differential``  w = (sum_k G+_k - sum_k G-_k) / (n * scale); with ``n_devices = n > 1``
                  this is the multi-device cell (N devices per sign, weight = mean pair).
``reference``     w = (G - G_ref) / scale with one shared reference column at mid-range.

The columns of a region are grouped: all + devices (output-major, device-minor), then all
- devices (or the reference column last). ``scale`` (S per weight unit) comes from the
usable conductance window [g_lo, g_hi] and the largest weight ``w_max``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Layout = Literal["differential", "reference"]


@dataclass(frozen=True)
class WeightMapping:
    """Placement and scaling of an (out_features, in_features) weight matrix on a tile."""

    in_features: int
    out_features: int
    g_lo_s: float
    g_hi_s: float
    w_max: float = 1.0
    layout: Layout = "differential"
    n_devices: int = 1
    tile: int = 0
    row_offset: int = 0
    col_offset: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.g_lo_s < self.g_hi_s:
            raise ValueError(f"need 0 <= g_lo_s < g_hi_s, got {self.g_lo_s}, {self.g_hi_s}")
        if self.w_max <= 0:
            raise ValueError(f"w_max must be > 0, got {self.w_max}")
        if self.n_devices < 1:
            raise ValueError(f"n_devices must be >= 1, got {self.n_devices}")
        if self.layout == "reference" and self.n_devices != 1:
            raise ValueError("the reference layout has one device per weight (n_devices=1)")
        if self.layout not in ("differential", "reference"):
            raise ValueError(f"unknown layout {self.layout!r} (differential, reference)")

    # -- geometry ---------------------------------------------------------------------
    @property
    def n_cols(self) -> int:
        """Physical columns the layout occupies."""
        if self.layout == "reference":
            return self.out_features + 1
        return 2 * self.out_features * self.n_devices

    @property
    def rows(self) -> slice:
        return slice(self.row_offset, self.row_offset + self.in_features)

    @property
    def cols(self) -> slice:
        return slice(self.col_offset, self.col_offset + self.n_cols)

    def check_fits(self, shape: tuple[int, int, int]) -> None:
        """Raise ValueError naming the sizes if the region does not fit the backend."""
        tiles, rows, cols = shape
        if not 0 <= self.tile < tiles:
            raise ValueError(f"tile {self.tile} out of range 0..{tiles - 1}")
        if self.row_offset + self.in_features > rows:
            raise ValueError(
                f"{self.in_features} inputs at row {self.row_offset} need "
                f"{self.row_offset + self.in_features} rows; the tile has {rows}"
            )
        if self.col_offset + self.n_cols > cols:
            raise ValueError(
                f"{self.out_features} outputs ({self.layout}, {self.n_devices} "
                f"device(s) per sign) need {self.n_cols} columns from column "
                f"{self.col_offset}; the tile has {cols}"
            )

    @property
    def scale(self) -> float:
        """Siemens per weight unit on one device."""
        span = self.g_hi_s - self.g_lo_s
        return span / self.w_max if self.layout == "differential" else span / (2 * self.w_max)

    @property
    def g_ref_s(self) -> float:
        """Conductance that encodes w = 0 on a reference-layout device."""
        return 0.5 * (self.g_lo_s + self.g_hi_s)

    # -- weights <-> conductances (region coordinates: (in_features, n_cols)) ----------
    def targets(self, weight: Tensor) -> Tensor:
        """Target conductances (in_features, n_cols) that encode ``weight`` (out, in),
        clipped to ±w_max."""
        w = weight.detach().clamp(-self.w_max, self.w_max).t()  # (in, out)
        if self.layout == "reference":
            ref = torch.full_like(w[:, :1], self.g_ref_s)
            return torch.cat([self.g_ref_s + w * self.scale, ref], dim=1)
        pos = (self.g_lo_s + w.clamp(min=0) * self.scale).repeat_interleave(self.n_devices, 1)
        neg = (self.g_lo_s + (-w).clamp(min=0) * self.scale).repeat_interleave(self.n_devices, 1)
        return torch.cat([pos, neg], dim=1)

    def split(self, region: Tensor) -> tuple[Tensor, Tensor]:
        """(plus, minus) of a region tensor (..., n_cols): for the differential layout
        each is (..., out, n_devices); for the reference layout (..., out, 1) and the
        reference column broadcast to the same shape."""
        out, n = self.out_features, self.n_devices
        lead = region.shape[:-1]
        if self.layout == "reference":
            plus = region[..., :out].unsqueeze(-1)
            return plus, region[..., out : out + 1].unsqueeze(-1).expand_as(plus)
        plus = region[..., : out * n].reshape(*lead, out, n)
        minus = region[..., out * n : 2 * out * n].reshape(*lead, out, n)
        return plus, minus

    def combine(self, region: Tensor) -> Tensor:
        """Weight-domain value of a region tensor: (sum G+ - sum G-) / (n * scale), the
        last axis becoming ``out_features``. Works for conductances (in, n_cols) -> (in,
        out) and for currents (batch, n_cols) -> (batch, out) alike."""
        plus, minus = self.split(region)
        if self.n_devices == 1:  # one device per sign: a difference, no reduction pass
            return (plus[..., 0] - minus[..., 0]).div_(self.scale)
        return (plus.sum(-1) - minus.sum(-1)) / (self.n_devices * self.scale)

    def pair_columns(self) -> tuple[slice, slice] | None:
        """Backend columns (plus, minus) of the outputs' device pairs as slices (the
        reference layout's minus is its one reference column, broadcast), or None where
        an output sums several devices per sign (``n_devices`` > 1)."""
        if self.n_devices != 1:
            return None
        out, c0 = self.out_features, self.col_offset
        if self.layout == "reference":
            return slice(c0, c0 + out), slice(c0 + out, c0 + out + 1)
        return slice(c0, c0 + out), slice(c0 + out, c0 + 2 * out)

    def weights_from_conductance(self, g_region: Tensor) -> Tensor:
        """The weight matrix (out, in) that conductances (in_features, n_cols) encode."""
        return self.combine(g_region).t()

    # -- cell selections on the backend -----------------------------------------------
    def cell_mask(self, shape: tuple[int, int, int], region_mask: Tensor | None = None) -> Tensor:
        """Backend mask (tiles, rows, cols) of the region's cells (or of ``region_mask``,
        an (in_features, n_cols) boolean selection within it)."""
        mask = torch.zeros(shape, dtype=torch.bool)
        if region_mask is None:
            mask[self.tile, self.rows, self.cols] = True
        else:
            mask[self.tile, self.rows, self.cols] = region_mask.cpu()
        return mask

    def side_masks(self, select: Tensor) -> tuple[Tensor, Tensor]:
        """Region masks (in, n_cols) of the + and - devices of the weights ``select``
        (out, in) marks: every device of that sign (all N of a multi-device cell)."""
        sel = select.t().to(torch.bool)  # (in, out)
        zeros = torch.zeros_like(sel)
        if self.layout == "reference":
            pad = torch.zeros_like(sel[:, :1])
            return torch.cat([sel, pad], 1), torch.cat([zeros, pad], 1)
        rep = sel.repeat_interleave(self.n_devices, 1)
        z = zeros.repeat_interleave(self.n_devices, 1)
        return torch.cat([rep, z], 1), torch.cat([z, rep], 1)
