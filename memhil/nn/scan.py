"""The first-order linear recurrence h_t = a_t ⊙ h_{t-1} + b_t, evaluated fast.

This is the shared kernel of MARS, the LRU, minGRU, e-prop's filters and the CMRU family.
On a CPU the recurrence is memory-bound: one sequential pass (T steps, each a vector
multiply-add over the independent channels) does the O(T) work of the problem once and
streams each number through the cache once, which a parallel prefix scan cannot beat on
a few cores (Blelloch, CMU-CS-90-190, 1990: the work-efficient scan still does ~2x the
operations, the Hillis–Steele scan O(T log T)). That pass is a numba-compiled loop
(numba rather than ``torch.compile``: it compiles in well under a second, offline, with no
C++ toolchain, and caches to disk; a Python loop over T would pay ~5 µs of dispatch per
step). Gradients come from the reverse recurrence in the same kind of loop. On CUDA (and
for dtypes numba lacks) the Hillis–Steele doubling scan keeps the GPU busy: ⌈log2 T⌉
rounds of elementwise ops. Neither form divides or takes logs, so both stay exact for
|a_t| < 1 over thousands of steps, where a closed-form ``cumprod``/``cumsum`` underflows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

#: dtypes the compiled CPU loop handles; others fall back to the doubling scan.
_KERNEL_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)


def _kernels() -> tuple[Any, Any]:
    """The compiled forward and reverse loops (numba imported on first use)."""
    from memhil.nn import scan_kernels

    return scan_kernels.forward, scan_kernels.backward


def _array(x: Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor (broadcast strides kept, no copy unless conjugated)."""
    return x.detach().resolve_conj().resolve_neg().numpy()


class _CompiledScan(torch.autograd.Function):
    """The sequential CPU loop as an autograd op on (pre, T, post) tensors."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
        forward, _ = _kernels()
        out = torch.empty(b.shape, dtype=b.dtype)
        forward(_array(a), _array(b), _array(h0), out.numpy())
        ctx.save_for_backward(a, out, h0)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        _, backward = _kernels()
        a, out, h0 = ctx.saved_tensors
        grad_b = torch.empty_like(out)
        grad_a = torch.empty_like(out)
        grad_h0 = torch.empty_like(h0)
        backward(
            _array(a),
            _array(out),
            _array(h0),
            _array(grad_out),
            grad_b.numpy(),
            grad_a.numpy(),
            grad_h0.numpy(),
        )
        return grad_a, grad_b, grad_h0


def linear_scan(a: Tensor, b: Tensor, h0: Tensor | None = None, dim: int = 1) -> Tensor:
    """All states h_1..h_T of h_t = a_t * h_{t-1} + b_t along ``dim`` (h_0 = ``h0`` or 0).

    ``a`` broadcasts against ``b`` (e.g. a per-channel constant decay of shape (1, 1, D));
    ``h0`` has ``b``'s shape without ``dim``. Differentiable in ``a``, ``b`` and ``h0``.
    """
    dtype = torch.promote_types(a.dtype, b.dtype)
    a, b = torch.broadcast_tensors(a.to(dtype), b.to(dtype))
    dim = dim % b.dim()
    if b.device.type != "cpu" or dtype not in _KERNEL_DTYPES:
        return doubling_scan(a, b, h0, dim)
    shape = b.shape
    pre, steps, post = math.prod(shape[:dim]), shape[dim], math.prod(shape[dim + 1 :])
    if h0 is None:
        h0 = torch.zeros(pre, post, dtype=dtype)
    out = _CompiledScan.apply(
        a.reshape(pre, steps, post), b.reshape(pre, steps, post), h0.to(dtype).reshape(pre, post)
    )
    return out.reshape(shape)


def linear_scan_in_place(a: Tensor, b: Tensor, dim: int = 1) -> Tensor:
    """:func:`linear_scan` from h_0 = 0 that overwrites ``b`` with the states and returns
    it: no autograd and no new (T, ...) buffer (``b`` must own its memory, not broadcast)."""
    dim = dim % b.dim()
    if b.device.type != "cpu" or b.dtype not in _KERNEL_DTYPES or a.dtype != b.dtype:
        return b.copy_(linear_scan(a, b, dim=dim))
    shape = b.shape
    pre, steps, post = math.prod(shape[:dim]), shape[dim], math.prod(shape[dim + 1 :])
    forward, _ = _kernels()
    with torch.no_grad():
        view = b.view(pre, steps, post)
        a3 = a.expand(shape).reshape(pre, steps, post)
        h0 = torch.zeros(pre, post, dtype=b.dtype)
        forward(_array(a3), _array(view), h0.numpy(), view.numpy())
    return b


def doubling_scan(a: Tensor, b: Tensor, h0: Tensor | None, dim: int) -> Tensor:
    """Hillis–Steele scan (Hillis & Steele, CACM 1986): ⌈log2 T⌉ rounds over the whole
    sequence, each combining (a_i, b_i) with the pair ``offset`` steps back."""
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
    """The same recurrence as a sequential loop of torch ops: the reference the fast
    forms are tested against."""
    a, b = torch.broadcast_tensors(a, b)
    a = a.movedim(dim, 0)
    b = b.movedim(dim, 0)
    h = torch.zeros_like(b[0]) if h0 is None else h0
    out = []
    for t in range(b.shape[0]):
        h = a[t] * h + b[t]
        out.append(h)
    return torch.stack(out, 0).movedim(0, dim)
