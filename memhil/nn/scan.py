"""Parallel scan of the first-order linear recurrence h_t = a_t ⊙ h_{t-1} + b_t.

This is the shared kernel of MARS, the LRU and the CMRU family. It uses the
Hillis–Steele doubling scan: ⌈log2 T⌉ rounds of elementwise tensor ops over the whole
sequence. Only products of the a_t are formed (never divisions or cumulative sums of
logs), so it stays exact for |a_t| < 1 over thousands of steps where a closed form
``cumprod``/``cumsum`` would underflow or divide by ~0. Works on real or complex
tensors and is differentiable by autograd.
"""

from __future__ import annotations

import torch
from torch import Tensor


def linear_scan(a: Tensor, b: Tensor, h0: Tensor | None = None, dim: int = 1) -> Tensor:
    """All states h_1..h_T of h_t = a_t * h_{t-1} + b_t along ``dim`` (h_0 = ``h0`` or 0).

    ``a`` broadcasts against ``b`` (e.g. a per-channel constant decay of shape (1, 1, D));
    ``h0`` has ``b``'s shape without ``dim``.
    """
    a, b = torch.broadcast_tensors(a, b)
    a = a.movedim(dim, 0)
    b = b.movedim(dim, 0)
    if h0 is not None:
        b = torch.cat([b[:1] + a[:1] * h0.unsqueeze(0), b[1:]], dim=0)
    steps = b.shape[0]
    offset = 1
    while offset < steps:
        # combine (a_i, b_i) with its predecessor offset steps back: (a_i a_j, a_i b_j + b_i)
        b = torch.cat([b[:offset], a[offset:] * b[:-offset] + b[offset:]], dim=0)
        a = torch.cat([a[:offset], a[offset:] * a[:-offset]], dim=0)
        offset *= 2
    return b.movedim(0, dim)


def linear_recurrence_loop(a: Tensor, b: Tensor, h0: Tensor | None = None, dim: int = 1) -> Tensor:
    """The same recurrence as a sequential loop: the reference the scan is tested against."""
    a, b = torch.broadcast_tensors(a, b)
    a = a.movedim(dim, 0)
    b = b.movedim(dim, 0)
    h = torch.zeros_like(b[0]) if h0 is None else h0
    out = []
    for t in range(b.shape[0]):
        h = a[t] * h + b[t]
        out.append(h)
    return torch.stack(out, 0).movedim(0, dim)
