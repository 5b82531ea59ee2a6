"""Compiled CPU kernel of a MARS layer: coefficients and recurrence fused in one pass.

A MARS state costs three exponentials (the sigmoid drive and the two MF rates) and a
multiply-add; as separate torch ops each is a pass over (batch, T, units) numbers, and the
exponentials dominate. Here one numba loop runs over time with the units as the vector
lane, so every number is touched once (the pooled kernel, MARS's training path, puts eight
sequences' units side by side: at 100 units the loops' vector remainders cost as much as
the arithmetic). The exponential is written out because numba's ``exp`` is a scalar libm
call in the pip build of llvmlite (no SVML), which made the fused loop 10x slower than
torch's vectorized ops; this form compiles to AVX/AVX-512 lanes. Float32 only.

The kernels work in base 2: each exponent is scaled by log2(e) once, outside the loops
(the drive's -p, the rate lines' constants), so an exponential is 2^y = 2^k 2^r with
k = rint(y), r = y - k exact, and a degree-6 polynomial for 2^r on |r| <= 1/2 (a
Lawson-weighted least-squares fit, near minimax: 2e-9 relative error before float32
rounding; < 1 ulp after it, tested). Against the Cephes ``expf`` form used before
(range reduction by a two-part ln 2, degree 7) this is 8 fewer operations per exponential;
the pooled kernel ran 1.3x faster from it alone. Folding log2(e) into a float32 constant
rounds it once more, an error of the size of the constant's own float32 rounding (~1e-7
relative in a rate): over 1500 steps the pooled features' largest error against a float64
evaluation went from 8.3e-7 to 9.3e-7 (torch's float32 path: 8.2e-7; tested within 1.5x
of it in tests/algorithms/test_mars.py).
"""

from __future__ import annotations

import numba
import numpy as np

from memhil.core.numba_target import prefer_full_vector_width

prefer_full_vector_width()  # before the first @njit: 512-bit vectors on AVX-512 CPUs

_f32 = np.float32
#: log2(e): the kernels' exponents are scaled by it once, in float64
LOG2E = 1.4426950408889634
# 2^r ~ 1 + r (Q1 + r (Q2 + ... + r Q6)) on |r| <= 1/2
_Q1 = _f32(6.9314718e-01)
_Q2 = _f32(2.4022648e-01)
_Q3 = _f32(5.5503324e-02)
_Q4 = _f32(9.6184369e-03)
_Q5 = _f32(1.3398875e-03)
_Q6 = _f32(1.5353362e-04)
#: the exponents' range: 2^k stays a normal float32 (its bits are built from k)
_Y_MIN, _Y_MAX = _f32(-126.0), _f32(127.0)
# fastmath without "nnan"/"ninf"/"reassoc": FMA contraction only, the polynomial's
# evaluation order (and so its error bound) is kept
_FLAGS = {"contract", "arcp", "nsz"}


@numba.njit(fastmath=_FLAGS, error_model="numpy", inline="always")
def _in_range(y):
    """``y`` clipped to [-126, 127]: where 2^k is a normal float32 (built from k's bits)."""
    return min(max(y, _Y_MIN), _Y_MAX)


@numba.njit(fastmath=_FLAGS, error_model="numpy", inline="always")
def _exp2_parts(y):
    """(m, k) with 2^y = m 2^k for float32 y in [-126, 127] (see :func:`_in_range`)."""
    k = np.rint(y)
    r = y - k
    return (((((_Q6 * r + _Q5) * r + _Q4) * r + _Q3) * r + _Q2) * r + _Q1) * r + _f32(1.0), k


@numba.njit(fastmath=_FLAGS, error_model="numpy", inline="always")
def _pow2_bits(k):
    """The int32 bit pattern of the float 2^k (|k| <= 127): read back through a float view,
    which keeps the loop free of scalar bit casts, so it vectorizes."""
    return (np.int32(k) + np.int32(127)) << 23


@numba.njit(fastmath=_FLAGS, cache=True, nogil=True, error_model="numpy")
def exp2_f32(y, out, exponent_bits):
    """out = 2^y for float32 vectors (y clipped to [-126, 127]); ``exponent_bits``: int32
    scratch of the same length."""
    for j in range(y.shape[0]):
        m, k = _exp2_parts(_in_range(y[j]))
        out[j] = m
        exponent_bits[j] = _pow2_bits(k)
    scale = exponent_bits.view(np.float32)
    for j in range(y.shape[0]):
        out[j] *= scale[j]


@numba.njit(fastmath=_FLAGS, error_model="numpy", inline="always")
def _base2(values):
    """``values`` log2(e) as float32 (the product in float64: one rounding)."""
    return (values.astype(np.float64) * LOG2E).astype(np.float32)


@numba.njit(fastmath=_FLAGS, error_model="numpy", inline="always")
def _rates_and_update(n, e, e_bits, c, c_bits, d, d_bits, h, lc0, c1, ld0, d1, gamma, clip):
    """Over the first ``n`` lanes, given the drive's 2^(q (z + bias)) as mantissa ``e`` and
    2^k bits, the two rates c = 2^(lc0 + c1 s), d = 2^(ld0 - d1 s) (base-2 lines) and the
    state update h = (gamma - c - d) h + c, in place. The rates' exponents are clipped
    only with ``clip`` (:func:`_rates_need_clip`)."""
    e_pow, c_pow, d_pow = e_bits.view(np.float32), c_bits.view(np.float32), d_bits.view(np.float32)
    for j in range(n):
        s = _f32(1.0) / (_f32(1.0) + e[j] * e_pow[j])
        yc, yd = lc0[j] + c1 * s, ld0[j] - d1 * s
        if clip:  # loop-invariant: LLVM compiles the loop twice, without and with it
            yc, yd = _in_range(yc), _in_range(yd)
        c[j], kc = _exp2_parts(yc)
        d[j], kd = _exp2_parts(yd)
        c_bits[j] = _pow2_bits(kc)
        d_bits[j] = _pow2_bits(kd)
    for j in range(n):
        cj = c[j] * c_pow[j]
        h[j] = (gamma - cj - d[j] * d_pow[j]) * h[j] + cj


@numba.njit(fastmath=_FLAGS, error_model="numpy", inline="always")
def _project(x, w, i, t, z, base, units):
    """z[base : base + units] = x[i, t] @ w, or x[i, t] itself where ``w`` is None (inputs
    projected beforehand): the projection in the loop, no (B, T, N) tensor of z. Offsets,
    not a slice of z: no array view made per sequence and step. ``w is None`` is decided
    by the argument's type, when the kernel compiles: a branch on w's shape inside the step
    loop made the pooled kernel 1.4x slower (the compiler did not move it out)."""
    if w is None:
        for j in range(units):
            z[base + j] = x[i, t, j]
    else:
        xk = x[i, t, 0]  # hoisted: the compiler cannot prove that z does not alias x
        for j in range(units):
            z[base + j] = xk * w[0, j]
        for k in range(1, x.shape[2]):
            xk = x[i, t, k]
            for j in range(units):
                z[base + j] += xk * w[k, j]


@numba.njit(fastmath=_FLAGS, error_model="numpy", inline="always")
def _drive_exps(n, z, bias, q, e, e_bits):
    """2^(q (z + bias)) over the first ``n`` lanes (q = -p log2(e): the sigmoid's
    exp(-p (z + bias))), as mantissa ``e`` and 2^k bits."""
    for j in range(n):
        e[j], kk = _exp2_parts(_in_range(q * (z[j] + bias[j])))
        e_bits[j] = _pow2_bits(kk)


@numba.njit(inline="always")
def _step_buffers(n):
    """A step's scratch over ``n`` lanes: state h (zeros), projected input z, the three
    exps' mantissas (e, c, d) and their 2^k bits."""
    f32, i32 = np.float32, np.int32
    h = np.zeros(n, f32)
    z, e, c, d = np.empty(n, f32), np.empty(n, f32), np.empty(n, f32), np.empty(n, f32)
    return h, z, e, c, d, np.empty(n, i32), np.empty(n, i32), np.empty(n, i32)


@numba.njit(fastmath=_FLAGS, error_model="numpy", inline="always")
def _rates_need_clip(lc0, c1, ld0, d1):
    """Whether a rate's base-2 exponent, lc0 + c1 s or ld0 - d1 s for s in [0, 1], can
    leave [-125, 126] (the normal range with a margin for rounding): only then is it
    clipped per lane. A layer's decay check keeps both rates below 1, so the upper end
    never binds; the lower one binds for rates below ~1e-38."""
    lo = min(lc0.min() + min(c1, 0.0), ld0.min() - max(d1, 0.0))
    hi = max(lc0.max() + max(c1, 0.0), ld0.max() - min(d1, 0.0))
    return lo < _Y_MIN + 1.0 or hi > _Y_MAX - 1.0


@numba.njit(fastmath=_FLAGS, error_model="numpy", inline="always")
def _base2_constants(p, c1, d1):
    """(-p, c1, d1) log2(e) as float32: the drive's and the rate lines' scalars in base 2."""
    return (
        np.float32(-np.float64(p) * LOG2E),
        np.float32(np.float64(c1) * LOG2E),
        np.float32(np.float64(d1) * LOG2E),
    )


@numba.njit(fastmath=_FLAGS, cache=True, nogil=True, error_model="numpy")
def mf_states(x, w, bias, p, log_c0, c1, log_d0, d1, gamma, out):
    """States of h_t = a_t h_{t-1} + c_t from h_0 = 0 for inputs x (B, T, K) and the input
    weights w (K, N), or for already projected inputs z = x @ W_in.T (B, T, N) with ``w``
    None: z = x w, s = sigmoid(p (z + bias)), c = exp(log_c0 + c1 s),
    a = gamma - c - exp(log_d0 - d1 s). Per step three loops over the units: drive,
    rates, update (each exp as a mantissa and 2^k bits, multiplied in the next loop)."""
    batch, steps = x.shape[0], x.shape[1]
    units = bias.shape[0]
    h, z, e, c, d, e_bits, c_bits, d_bits = _step_buffers(units)
    q, c1b, d1b = _base2_constants(p, c1, d1)
    lc0, ld0 = _base2(log_c0), _base2(log_d0)
    clip = _rates_need_clip(lc0, c1b, ld0, d1b)
    for i in range(batch):
        h[:] = 0.0
        for t in range(steps):
            _project(x, w, i, t, z, 0, units)
            _drive_exps(units, z, bias, q, e, e_bits)
            _rates_and_update(
                units, e, e_bits, c, c_bits, d, d_bits, h, lc0, c1b, ld0, d1b, gamma, clip
            )
            out[i, t] = h


@numba.njit(fastmath=_FLAGS, error_model="numpy", inline="always")
def _flush(block, total, width):
    """Move the float32 block sums of the first ``width`` lanes into the float64 totals."""
    for j in range(width):
        total[j] += block[j]
        block[j] = 0.0


#: Sequences run side by side in :func:`mf_pooled`: its per-step loops then cover
#: GROUP x units lanes, not units (at 100 units a step cost the same as at 128: the
#: loops' vector remainders, not the arithmetic, set the time).
GROUP = 8
#: Steps summed in float32 in :func:`mf_pooled` before the sum moves to float64 (a float64
#: add per lane and step cost ~4 % of the kernel; 16 float32 terms in (0, 1) lose < 1e-6)
SUM_BLOCK = 16


@numba.njit(fastmath=_FLAGS, cache=True, nogil=True, error_model="numpy")
def mf_pooled(x, w, bias, p, log_c0, c1, log_d0, d1, gamma, lengths, mean_out, last_out):
    """:func:`mf_states` pooled as it runs: per sequence i only its ``lengths[i]`` (>= 1)
    valid steps count (end padding never reaches a valid state, the recurrence being
    causal), and only the mean state over them and the last state are written, to
    ``mean_out`` and ``last_out`` (batch, N): no (B, T, N) states in memory. The mean sums
    blocks of :data:`SUM_BLOCK` steps in float32 and the blocks in float64.
    Sequences run in groups of :data:`GROUP` of similar length, their units side by side
    in one row of lanes; each lane does the arithmetic of a sequence on its own (a group
    runs to its longest member: the others' extra steps are computed, never read)."""
    units = bias.shape[0]
    lanes = GROUP * units
    q, c1b, d1b = _base2_constants(p, c1, d1)
    lc0, ld0 = _base2(log_c0), _base2(log_d0)
    clip = _rates_need_clip(lc0, c1b, ld0, d1b)
    bias_g = np.empty(lanes, np.float32)
    lc0_g = np.empty(lanes, np.float32)
    ld0_g = np.empty(lanes, np.float32)
    for g in range(GROUP):
        bias_g[g * units : (g + 1) * units] = bias
        lc0_g[g * units : (g + 1) * units] = lc0
        ld0_g[g * units : (g + 1) * units] = ld0
    _pooled(x, w, bias_g, q, lc0_g, c1b, ld0_g, d1b, gamma, clip, lengths, mean_out, last_out)


@numba.njit(fastmath=_FLAGS, cache=True, nogil=True, error_model="numpy")
def _pooled(x, w, bias_g, q, lc0_g, c1b, ld0_g, d1b, gamma, clip, lengths, mean_out, last_out):
    """:func:`mf_pooled`'s loops over the groups' lanes (constants repeated per member)."""
    units = mean_out.shape[1]
    lanes = bias_g.shape[0]
    h, z, e, c, d, e_bits, c_bits, d_bits = _step_buffers(lanes)
    total = np.zeros(lanes, np.float64)
    block = np.zeros(lanes, np.float32)
    order = np.argsort(-lengths)  # longest first: a group's members end close together
    for g0 in range(0, x.shape[0], GROUP):
        members = order[g0 : g0 + GROUP]
        m = members.shape[0]
        width = m * units
        h[:] = 0.0
        total[:] = 0.0
        block[:] = 0.0
        in_block = 0
        for t in range(lengths[members[0]]):
            for g in range(m):
                _project(x, w, members[g], t, z, g * units, units)
            _drive_exps(width, z, bias_g, q, e, e_bits)
            _rates_and_update(
                width, e, e_bits, c, c_bits, d, d_bits, h, lc0_g, c1b, ld0_g, d1b, gamma, clip
            )
            if t < lengths[members[m - 1]] - 1:  # no member ends here: one loop, all lanes
                for j in range(width):
                    block[j] += h[j]
                in_block += 1
                if in_block == SUM_BLOCK:
                    _flush(block, total, width)
                    in_block = 0
                continue
            if in_block:  # members end from here on: per member, straight into float64
                _flush(block, total, width)
                in_block = 0
            for g in range(m):
                n = lengths[members[g]]
                if t < n:
                    base = g * units
                    for j in range(units):
                        total[base + j] += h[base + j]
                    if t == n - 1:
                        i = members[g]
                        for j in range(units):
                            mean_out[i, j] = total[base + j] / n
                            last_out[i, j] = h[base + j]
