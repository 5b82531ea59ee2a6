"""Compiled CPU kernel of a MARS layer: coefficients and recurrence fused in one pass.

A MARS state costs three exponentials (the sigmoid drive and the two MF rates) and a
multiply-add; as separate torch ops each is a pass over (batch, T, units) numbers, and the
exponentials dominate. Here one numba loop runs over time with the units as the vector
lane, so every number is touched once (the pooled kernel, MARS's training path, puts eight
sequences' units side by side: at 100 units the loops' vector remainders cost as much as
the arithmetic). The exponential is written out (Cephes ``expf``:
S. L. Moshier, Cephes Mathematical Library, 1984-2000; range reduction by a two-part ln 2
and a degree-6 polynomial, < 1 ulp in float32) because numba's ``exp`` is a scalar libm
call in the pip build of llvmlite (no SVML), which made the fused loop 10x slower than
torch's vectorized ops; this form compiles to AVX/AVX-512 lanes. Float32 only.
"""

from __future__ import annotations

import numba
import numpy as np

from memhil.core.numba_target import prefer_full_vector_width

prefer_full_vector_width()  # before the first @njit: 512-bit vectors on AVX-512 CPUs

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


@numba.njit(fastmath=_FLAGS, error_model="numpy", inline="always")
def _exp_parts(x):
    """(m, k) with exp(x) = m 2^k for float32 x (clipped to [-87, 88], the float32 range)."""
    y = min(max(x, _f32(-87.0)), _f32(88.0))
    k = np.floor(y * _LOG2E + _f32(0.5))
    r = y - k * _LN2_HI - k * _LN2_LO
    poly = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
    return poly * (r * r) + r + _f32(1.0), k


@numba.njit(fastmath=_FLAGS, error_model="numpy", inline="always")
def _pow2_bits(k):
    """The int32 bit pattern of the float 2^k (|k| <= 127): read back through a float view,
    which keeps the loop free of scalar bit casts, so it vectorizes."""
    return (np.int32(k) + np.int32(127)) << 23


@numba.njit(fastmath=_FLAGS, cache=True, nogil=True, error_model="numpy")
def exp_f32(x, out, exponent_bits):
    """out = exp(x) for float32 vectors; ``exponent_bits``: int32 scratch of the same length."""
    for j in range(x.shape[0]):
        m, k = _exp_parts(x[j])
        out[j] = m
        exponent_bits[j] = _pow2_bits(k)
    scale = exponent_bits.view(np.float32)
    for j in range(x.shape[0]):
        out[j] *= scale[j]


@numba.njit(fastmath=_FLAGS, error_model="numpy", inline="always")
def _rates_and_update(e, e_bits, c, c_bits, d, d_bits, h, row, lc0, c1, ld0, d1, gamma):
    """Given the drive's exp(-p (z + bias)) as mantissa ``e`` and 2^k bits, the two rate
    exps and the state update h = (gamma - c - d) h + c, written to ``row``."""
    e_pow, c_pow, d_pow = e_bits.view(np.float32), c_bits.view(np.float32), d_bits.view(np.float32)
    for j in range(h.shape[0]):
        s = _f32(1.0) / (_f32(1.0) + e[j] * e_pow[j])
        c[j], kc = _exp_parts(lc0[j] + c1 * s)
        d[j], kd = _exp_parts(ld0[j] - d1 * s)
        c_bits[j] = _pow2_bits(kc)
        d_bits[j] = _pow2_bits(kd)
    for j in range(h.shape[0]):
        cj = c[j] * c_pow[j]
        h[j] = (gamma - cj - d[j] * d_pow[j]) * h[j] + cj
        row[j] = h[j]


@numba.njit(fastmath=_FLAGS, error_model="numpy", inline="always")
def _project(x, w, i, t, z):
    """z = the projected input of sequence i at step t: x[i, t] itself when ``w`` is
    (0, 0), else x[i, t] @ w (the projection in the loop, no (B, T, N) tensor of z)."""
    units = z.shape[0]
    if w.shape[0] == 0:
        for j in range(units):
            z[j] = x[i, t, j]
    else:
        for j in range(units):
            z[j] = x[i, t, 0] * w[0, j]
        for k in range(1, x.shape[2]):
            for j in range(units):
                z[j] += x[i, t, k] * w[k, j]


@numba.njit(fastmath=_FLAGS, error_model="numpy", inline="always")
def _drive_exps(z, bias, p, e, e_bits):
    """exp(-p (z + bias)) over the lanes of ``z``, as mantissa ``e`` and 2^k bits."""
    for j in range(z.shape[0]):
        e[j], kk = _exp_parts(-p * (z[j] + bias[j]))
        e_bits[j] = _pow2_bits(kk)


@numba.njit(fastmath=_FLAGS, error_model="numpy", inline="always")
def _drive(x, w, i, t, bias, p, z, e, e_bits):
    """:func:`_project` into ``z``, then :func:`_drive_exps`."""
    _project(x, w, i, t, z)
    _drive_exps(z, bias, p, e, e_bits)


@numba.njit(inline="always")
def _step_buffers(n):
    """A step's scratch over ``n`` lanes: state h (zeros), projected input z, the three
    exps' mantissas (e, c, d) and their 2^k bits."""
    f32, i32 = np.float32, np.int32
    h = np.zeros(n, f32)
    z, e, c, d = np.empty(n, f32), np.empty(n, f32), np.empty(n, f32), np.empty(n, f32)
    return h, z, e, c, d, np.empty(n, i32), np.empty(n, i32), np.empty(n, i32)


@numba.njit(fastmath=_FLAGS, cache=True, nogil=True, error_model="numpy")
def mf_states(x, w, bias, p, log_c0, c1, log_d0, d1, gamma, out):
    """States of h_t = a_t h_{t-1} + c_t from h_0 = 0 for inputs x (B, T, K) and the input
    weights w (K, N), or for already projected inputs z = x @ W_in.T (B, T, N) with
    ``w`` of shape (0, 0): z = x w, s = sigmoid(p (z + bias)), c = exp(log_c0 + c1 s),
    a = gamma - c - exp(log_d0 - d1 s). Per step three loops over the units: drive,
    rates, update (each exp as a mantissa and 2^k bits, multiplied in the next loop)."""
    batch, steps = x.shape[0], x.shape[1]
    units = bias.shape[0]
    h, z, e, c, d, e_bits, c_bits, d_bits = _step_buffers(units)
    for i in range(batch):
        h[:] = 0.0
        for t in range(steps):
            _drive(x, w, i, t, bias, p, z, e, e_bits)
            _rates_and_update(
                e, e_bits, c, c_bits, d, d_bits, h, out[i, t], log_c0, c1, log_d0, d1, gamma
            )


#: Sequences run side by side in :func:`mf_pooled`: its per-step loops then cover
#: GROUP x units lanes, not units (at 100 units a step cost the same as at 128: the
#: loops' vector remainders, not the arithmetic, set the time).
GROUP = 8


@numba.njit(fastmath=_FLAGS, cache=True, nogil=True, error_model="numpy")
def mf_pooled(x, w, bias, p, log_c0, c1, log_d0, d1, gamma, lengths, mean_out, last_out):
    """:func:`mf_states` pooled as it runs: per sequence i only its ``lengths[i]`` (>= 1)
    valid steps count (end padding never reaches a valid state, the recurrence being
    causal), and only the mean state over them (summed in float64) and the last state are
    written, to ``mean_out`` and ``last_out`` (batch, N): no (B, T, N) states in memory.
    Sequences run in groups of :data:`GROUP` of similar length, their units side by side
    in one row of lanes; each lane does the arithmetic of a sequence on its own (a group
    runs to its longest member: the others' extra steps are computed, never read)."""
    units = bias.shape[0]
    lanes = GROUP * units
    h, z, e, c, d, e_bits, c_bits, d_bits = _step_buffers(lanes)
    total = np.zeros(lanes, np.float64)
    bias_g = np.empty(lanes, np.float32)
    lc0_g = np.empty(lanes, np.float32)
    ld0_g = np.empty(lanes, np.float32)
    for q in range(GROUP):
        bias_g[q * units : (q + 1) * units] = bias
        lc0_g[q * units : (q + 1) * units] = log_c0
        ld0_g[q * units : (q + 1) * units] = log_d0
    order = np.argsort(-lengths)  # longest first: a group's members end close together
    for g0 in range(0, x.shape[0], GROUP):
        members = order[g0 : g0 + GROUP]
        m = members.shape[0]
        width = m * units
        h[:] = 0.0
        total[:] = 0.0
        # the group's lanes, as views made once (not per step)
        ew, ebw, cw, cbw, dw = e[:width], e_bits[:width], c[:width], c_bits[:width], d[:width]
        dbw, hw, lc0w, ld0w = d_bits[:width], h[:width], lc0_g[:width], ld0_g[:width]
        zw = z[:width]
        for t in range(lengths[members[0]]):
            for q in range(m):
                _project(x, w, members[q], t, z[q * units : (q + 1) * units])
            _drive_exps(zw, bias_g, p, ew, ebw)
            _rates_and_update(ew, ebw, cw, cbw, dw, dbw, hw, hw, lc0w, c1, ld0w, d1, gamma)
            if t < lengths[members[m - 1]] - 1:  # no member ends here: one loop, all lanes
                for j in range(width):
                    total[j] += h[j]
                continue
            for q in range(m):
                n = lengths[members[q]]
                if t < n:
                    base = q * units
                    for j in range(units):
                        total[base + j] += h[base + j]
                    if t == n - 1:
                        i = members[q]
                        for j in range(units):
                            mean_out[i, j] = total[base + j] / n
                            last_out[i, j] = h[base + j]
