"""Compiled CPU kernel of a MARS layer: coefficients and recurrence fused in one pass.

A MARS state costs three exponentials (the sigmoid drive and the two MF rates) and a
multiply-add; as separate torch ops each is a pass over (batch, T, units) numbers, and the
exponentials dominate. Here one numba loop runs over time with the units as the vector
lane, so every number is touched once. The exponential is written out (Cephes ``expf``:
S. L. Moshier, Cephes Mathematical Library, 1984-2000; range reduction by a two-part ln 2
and a degree-6 polynomial, < 1 ulp in float32) because numba's ``exp`` is a scalar libm
call in the pip build of llvmlite (no SVML), which made the fused loop 10x slower than
torch's vectorized ops; this form compiles to AVX/AVX-512 lanes. Float32 only.
"""

from __future__ import annotations

import numba
import numpy as np

_f32 = np.float32
_LOG2E = _f32(1.44269504088896341)
_LN2_HI = _f32(0.693359375)
_LN2_LO = _f32(-2.12194440e-4)
_P0 = _f32(1.9875691500e-4)
_P1 = _f32(1.3981999507e-3)
_P2 = _f32(8.3334519073e-3)
_P3 = _f32(4.1665795894e-2)
_P4 = _f32(1.6666665459e-1)
_P5 = _f32(5.0000001201e-1)
# fastmath without "nnan"/"ninf"/"reassoc": FMA contraction only, the polynomial's
# evaluation order (and so its error bound) is kept
_FLAGS = {"contract", "arcp", "nsz"}


@numba.njit(fastmath=_FLAGS, cache=True, nogil=True, error_model="numpy")
def exp_f32(x, out, exponent_bits):
    """out = exp(x) for float32 vectors (x clipped to [-87, 88], the float32 range);
    ``exponent_bits`` is an int32 scratch vector of the same length."""
    for j in range(x.shape[0]):
        y = min(max(x[j], _f32(-87.0)), _f32(88.0))
        k = np.floor(y * _LOG2E + _f32(0.5))
        r = y - k * _LN2_HI - k * _LN2_LO
        poly = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
        out[j] = poly * (r * r) + r + _f32(1.0)
        exponent_bits[j] = (np.int32(k) + np.int32(127)) << 23  # the float 2^k
    scale = exponent_bits.view(np.float32)
    for j in range(x.shape[0]):
        out[j] *= scale[j]


@numba.njit(fastmath=_FLAGS, cache=True, nogil=True, error_model="numpy")
def mf_states(z, bias, p, log_c0, c1, log_d0, d1, gamma, out):
    """States of h_t = a_t h_{t-1} + c_t from h_0 = 0 for projected inputs z (B, T, N):
    s = sigmoid(p (z + bias)), c = exp(log_c0 + c1 s), a = gamma - c - exp(log_d0 - d1 s)."""
    batch, steps, units = z.shape
    h = np.zeros(units, np.float32)
    u = np.empty(units, np.float32)
    e = np.empty(units, np.float32)
    c = np.empty(units, np.float32)
    d = np.empty(units, np.float32)
    bits = np.empty(units, np.int32)
    for i in range(batch):
        h[:] = 0.0
        for t in range(steps):
            for j in range(units):
                u[j] = -p * (z[i, t, j] + bias[j])
            exp_f32(u, e, bits)
            for j in range(units):
                s = _f32(1.0) / (_f32(1.0) + e[j])
                u[j] = log_c0[j] + c1 * s
                e[j] = log_d0[j] - d1 * s
            exp_f32(u, c, bits)
            exp_f32(e, d, bits)
            for j in range(units):
                h[j] = (gamma - c[j] - d[j]) * h[j] + c[j]
                out[i, t, j] = h[j]
