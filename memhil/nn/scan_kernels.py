"""Compiled CPU loops of the linear recurrence h_t = a_t h_{t-1} + b_t (forward and adjoint).

Imported lazily by :mod:`memhil.nn.scan` on the first CPU recurrence: numba's import costs
~0.3 s that CLI commands without a recurrence should not pay. Arrays are (pre, T, post);
the inner loop runs over the contiguous ``post`` channels, so it vectorizes.
"""

import numba
import numpy as np

from memhil.core.numba_target import prefer_full_vector_width

prefer_full_vector_width()  # before the first @njit: 512-bit vectors on AVX-512 CPUs


@numba.njit(cache=True, nogil=True)
def forward(a, b, h0, out):
    """out[i, t] = a[i, t] * out[i, t-1] + b[i, t], out[i, -1] = h0[i]; out may be b."""
    pre, steps, post = b.shape
    for i in range(pre):
        if steps == 0:
            continue
        for j in range(post):
            out[i, 0, j] = a[i, 0, j] * h0[i, j] + b[i, 0, j]
        for t in range(1, steps):
            for j in range(post):
                out[i, t, j] = a[i, t, j] * out[i, t - 1, j] + b[i, t, j]


@numba.njit(cache=True, nogil=True)
def backward(a, h, h0, grad_out, grad_b, grad_a, grad_h0):
    """Reverse recurrence of the adjoint: g_t = grad_out_t + conj(a_{t+1}) g_{t+1};
    grad_b = g, grad_a_t = g_t conj(h_{t-1}), grad_h0 = conj(a_1) g_1 (the conjugate
    Wirtinger convention of torch autograd; conj is the identity on reals)."""
    pre, steps, post = h.shape
    for i in range(pre):
        if steps == 0:
            continue
        last = steps - 1
        for j in range(post):
            grad_b[i, last, j] = grad_out[i, last, j]
        for t in range(last - 1, -1, -1):
            for j in range(post):
                grad_b[i, t, j] = grad_out[i, t, j] + np.conj(a[i, t + 1, j]) * grad_b[i, t + 1, j]
        for t in range(1, steps):
            for j in range(post):
                grad_a[i, t, j] = grad_b[i, t, j] * np.conj(h[i, t - 1, j])
        for j in range(post):
            grad_a[i, 0, j] = grad_b[i, 0, j] * np.conj(h0[i, j])
            grad_h0[i, j] = np.conj(a[i, 0, j]) * grad_b[i, 0, j]
