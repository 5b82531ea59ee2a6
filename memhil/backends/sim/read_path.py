"""Converters of the analog read path: symmetric uniform DAC/ADC quantization."""

from __future__ import annotations

import torch
from torch import Tensor


def quantize_symmetric(x: Tensor, bits: int, full_scale: float) -> Tensor:
    """Round ``x`` to a signed ``bits``-bit grid spanning ±``full_scale`` and clip there.

    The grid has 2^(bits-1) - 1 steps per sign (zero is exact), like aihwkit's
    ``inp_res``/``out_res`` = 1/(2^(bits-1) - 1) of the bound. One fused pass
    (``torch.fake_quantize_per_tensor_affine``: scale, round half to even, clip, rescale)
    instead of four elementwise ops over the batch.
    """
    levels = 2 ** (bits - 1) - 1
    lsb = full_scale / levels
    return torch.fake_quantize_per_tensor_affine(x, lsb, 0, -levels, levels)
