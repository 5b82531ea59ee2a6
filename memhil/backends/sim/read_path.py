"""Converters of the analog read path: symmetric uniform DAC/ADC quantization."""

from __future__ import annotations

import torch
from torch import Tensor


def quantize_symmetric(x: Tensor, bits: int, full_scale: float) -> Tensor:
    """Round ``x`` to a signed ``bits``-bit grid spanning ±``full_scale`` and clip there.

    The grid has 2^(bits-1) - 1 steps per sign (zero is exact), like aihwkit's
    ``inp_res``/``out_res`` = 1/(2^(bits-1) - 1) of the bound.
    """
    levels = float(2 ** (bits - 1) - 1)
    lsb = full_scale / levels
    return torch.mul(x, 1.0 / lsb).round_().clamp_(-levels, levels).mul_(lsb)


def quantize_to_steps(x: Tensor, bits: int, full_scale: float) -> tuple[Tensor, float]:
    """Like ``quantize_symmetric`` but returns the integer step counts and the step size,
    so a caller can fold the step size into a later scale (one elementwise pass fewer)."""
    levels = float(2 ** (bits - 1) - 1)
    lsb = full_scale / levels
    return torch.mul(x, 1.0 / lsb).round_().clamp_(-levels, levels), lsb


def quantize_scaled_(x: Tensor, scale: float, bits: int, full_scale: float) -> Tensor:
    """In place: quantize ``x * scale`` to the signed ``bits`` grid over ±``full_scale``."""
    levels = float(2 ** (bits - 1) - 1)
    lsb = full_scale / levels
    return x.mul_(scale / lsb).round_().clamp_(-levels, levels).mul_(lsb)
