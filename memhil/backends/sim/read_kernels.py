"""Compiled CPU loops of the per-sample read path: converters, squares and noise fused.

A per-sample read adds to every output current its own Gaussian noise, so a batch of
1024 inputs on 512 columns draws half a million normals per call. torch's CPU ``normal_``
draws them one at a time from a Mersenne Twister (~3.4 ns each, serial: a third of the
MVM's own matrix product on one thread, two thirds on two), and the noise and ADC are six
more passes over the output. Here one numba loop draws the normals from Philox4x32-10
(Salmon et al., SC 2011: the counter-based generator of cuRAND and of torch's CUDA
generator) by the Box-Muller transform (as torch's ``normal_``), adds them scaled by the
column noise std and rounds to the ADC grid, in one pass that vectorizes (a counter-based
generator has no serial state). numpy's generators measured slower than torch's here
(5-9 ns a normal), and numba has no vectorized ``log``/``sin`` without Intel's SVML, so
the few elementary functions below are written out as polynomials (accuracy in their
docstrings). Imported lazily, like :mod:`memhil.devices.train_kernels`.

Precision of the draws: Box-Muller on 24-bit uniforms, so |z| <= 5.77 (a missing tail
mass of 8e-9, as torch's float32 ``normal_``, which also uses 24-bit uniforms), values
exact to ~1e-6 relative (float32 arithmetic; the polynomials are exact to < 1e-8).
"""

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from memhil.core.numba_target import prefer_full_vector_width

prefer_full_vector_width()  # before the first @njit: 512-bit vectors on AVX-512 CPUs

#: Philox4x32 round multipliers and Weyl key increments (Salmon et al. 2011, Table 2).
PHILOX_M0, PHILOX_M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
PHILOX_W0, PHILOX_W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
MASK32 = np.uint64(0xFFFFFFFF)
_U32 = np.uint64(32)
_Q1, _Q2, _Q3, _Q4 = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)

_LN2 = np.float32(0.6931471805599453)
_SQRT2 = np.float32(1.4142135623730951)
_HALF_PI = np.float32(1.5707963267948966)
_TWO_M24 = np.float32(2.0**-24)


@intrinsic
def _bits_f32(typingctx, x):
    """The IEEE-754 bits of a float32 as a uint32 (a register reinterpretation)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@intrinsic
def _f32_bits(typingctx, x):
    """The float32 whose IEEE-754 bits are the uint32 ``x``."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


@numba.njit(inline="always")
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of counter (c0..c3) under key (k0, k1), 32-bit words held in uint64:
    ten rounds of two 32x32->64-bit products (Salmon et al. 2011, Sect. 3.3)."""
    for _ in range(10):
        p0 = PHILOX_M0 * c0
        p1 = PHILOX_M1 * c2
        c0, c1, c2, c3 = (p1 >> _U32) ^ c1 ^ k0, p1 & MASK32, (p0 >> _U32) ^ c3 ^ k1, p0 & MASK32
        k0 = (k0 + PHILOX_W0) & MASK32
        k1 = (k1 + PHILOX_W1) & MASK32
    return c0, c1, c2, c3


@numba.njit(inline="always")
def _neg2_log_unit(word):
    """-2 ln(u) for u = (word >> 8 + 1) 2^-24 in (0, 1]: exponent from the float's bits,
    ln of the mantissa m in [1/sqrt2, sqrt2) by the atanh series 2(s + s^3/3 + .. + s^9/9),
    s = (m-1)/(m+1), |s| <= 0.172 (truncation < 1e-9)."""
    f = np.float32(np.int32(word >> np.uint64(8)) + np.int32(1))  # exact: at most 2^24
    bits = _bits_f32(f)
    e = np.float32(np.int32(bits >> np.uint32(23)) - np.int32(127 + 24))
    m = _f32_bits((bits & np.uint32(0x7FFFFF)) | np.uint32(0x3F800000))
    big = m > _SQRT2
    m = np.float32(0.5) * m if big else m
    e = e + np.float32(1.0) if big else e
    s = (m - np.float32(1.0)) / (m + np.float32(1.0))
    s2 = s * s
    poly = np.float32(1.0) + s2 * (
        np.float32(1 / 3)
        + s2 * (np.float32(1 / 5) + s2 * (np.float32(1 / 7) + s2 * np.float32(1 / 9)))
    )
    return np.float32(-2.0) * (np.float32(2.0) * s * poly + e * _LN2)


@numba.njit(inline="always")
def _cos_sin_turn(word):
    """(cos, sin) of a uniform angle on a full turn: the quadrant from the word's top two
    bits, an angle in [-pi/4, pi/4) from the next 24, Taylor series to theta^9 / theta^10
    there (truncation < 2e-9)."""
    q = word >> np.uint64(30)
    t = (
        np.float32(np.int32((word >> np.uint64(6)) & np.uint64(0xFFFFFF))) + np.float32(0.5)
    ) * _TWO_M24
    th = (t - np.float32(0.5)) * _HALF_PI
    t2 = th * th
    s = th * (
        np.float32(1.0)
        - t2
        / np.float32(6.0)
        * (
            np.float32(1.0)
            - t2
            / np.float32(20.0)
            * (np.float32(1.0) - t2 / np.float32(42.0) * (np.float32(1.0) - t2 / np.float32(72.0)))
        )
    )
    c = np.float32(1.0) - t2 / np.float32(2.0) * (
        np.float32(1.0)
        - t2
        / np.float32(12.0)
        * (
            np.float32(1.0)
            - t2
            / np.float32(30.0)
            * (np.float32(1.0) - t2 / np.float32(56.0) * (np.float32(1.0) - t2 / np.float32(90.0)))
        )
    )
    # rotate (c, s) by q quarter turns: an odd q turns by 90 degrees, q >= 2 by 180
    # (selects and a sign product, no branch, so the loop vectorizes)
    odd = (q & _Q1) == _Q1
    cq = -s if odd else c
    sq = c if odd else s
    sign = np.float32(1.0) - np.float32(2.0) * np.float32(np.int32(q >> _Q1))
    return sign * cq, sign * sq


@numba.njit(inline="always")
def _normals4(g, k0, k1):
    """Four independent N(0, 1) float32 draws of counter ``g`` under key (k0, k1)."""
    w0, w1, w2, w3 = philox4x32(g, np.uint64(0), np.uint64(0), np.uint64(0), k0, k1)
    r0 = np.sqrt(_neg2_log_unit(w0))
    c0, s0 = _cos_sin_turn(w1)
    r1 = np.sqrt(_neg2_log_unit(w2))
    c1, s1 = _cos_sin_turn(w3)
    return r0 * c0, r0 * s0, r1 * c1, r1 * s1


@numba.njit(error_model="numpy")
def _normals4_call(g, k0, k1):
    """:func:`_normals4` as a call (for the < 4 tail elements: one inlined copy per loop)."""
    return _normals4(g, k0, k1)


def _var_at(var, k):
    """var[k] as float32; a bfloat16 array arrives as its int16 bits."""
    return var[k]


@overload(_var_at, inline="always")
def _var_at_compiled(var, k):
    """bfloat16 bits (int16) widen to float32 exactly by a 16-bit shift (no extra pass
    over the array); float32 reads as is."""
    if var.dtype == types.int16:
        return lambda var, k: _f32_bits(np.uint32(np.uint16(var[k])) << np.uint32(16))
    return lambda var, k: var[k]


@numba.njit(inline="always")
def _noisy_adc(i, var, extra_var, lo, scale, levels, lsb, z):
    """max(i + sqrt(var + extra_var) z, lo), on the ADC grid when ``levels`` > 0 (the
    operations and rounding of :func:`memhil.backends.sim.read_path.quantize_symmetric_`)."""
    y = max(i + np.sqrt(var + extra_var) * z, lo)
    if levels > 0:
        y = min(max(np.rint(y * scale), -levels), levels) * lsb
    return y


@numba.njit(inline="always")
def _noise_pass(src, dst, var, extra_var, lo, scale, levels, lsb, k0, k1):
    """dst = max(src + sqrt(var + extra_var) N(0, 1), lo), then the ADC (``levels`` > 0:
    round(x * scale) clipped to +-levels, times ``lsb``), over float32 1-D arrays; ``var``
    (float32, or bfloat16 as int16 bits) has their length. Element j * Q + g (Q = len // 4)
    takes normal j of Philox counter g under key (k0, k1), the < 4 tail elements those of
    counter Q: the four outputs of a counter land in four contiguous runs, so the loop
    vectorizes. ``dst`` is ``src`` itself or an array apart from it (a partial overlap
    would fail LLVM's runtime check and run scalar)."""
    n = src.shape[0]
    q4 = np.uint64(n // 4)
    for g in range(q4):
        k = np.uint64(g)  # unsigned: no wraparound branch, so the loop vectorizes
        z0, z1, z2, z3 = _normals4(k, k0, k1)
        dst[k] = _noisy_adc(src[k], _var_at(var, k), extra_var, lo, scale, levels, lsb, z0)
        k1_ = q4 + k
        dst[k1_] = _noisy_adc(src[k1_], _var_at(var, k1_), extra_var, lo, scale, levels, lsb, z1)
        k2_ = _Q2 * q4 + k
        dst[k2_] = _noisy_adc(src[k2_], _var_at(var, k2_), extra_var, lo, scale, levels, lsb, z2)
        k3_ = _Q3 * q4 + k
        dst[k3_] = _noisy_adc(src[k3_], _var_at(var, k3_), extra_var, lo, scale, levels, lsb, z3)
    tail = _Q4 * q4
    if n > tail:
        z = _normals4_call(q4, k0, k1)
        for j in range(n - tail):
            k = tail + np.uint64(j)
            dst[k] = _noisy_adc(src[k], _var_at(var, k), extra_var, lo, scale, levels, lsb, z[j])


@numba.njit(cache=True, nogil=True, error_model="numpy")
def add_noise_adc(x, var, extra_var, lo, scale, levels, lsb, k0, k1):
    """In place on the float32 1-D array ``x``: max(x + sqrt(var + extra_var) N(0, 1), lo),
    then the ADC; the draws and arithmetic of :func:`_noise_pass`."""
    _noise_pass(x, x, var, extra_var, lo, scale, levels, lsb, k0, k1)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def noisy_cells(g, var, out, k0, k1):
    """``out`` = one per-device read-noise realization of the float32 1-D conductances
    ``g``, max(G + sqrt(var) N(0, 1), 0), without changing ``g``: the draws of
    :func:`add_noise_adc` under the same key, in one pass (no copy of ``g`` first)."""
    f0 = np.float32(0.0)
    _noise_pass(g, out, var, f0, f0, f0, f0, f0, k0, k1)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def dac_and_square(v, scale, levels, lsb, vq, v2_bits):
    """The DAC and the squares in one pass over float32 ``v`` (1-D): ``vq`` = v on the DAC
    grid (``levels`` > 0; the rounding of ``quantize_symmetric_``) or v itself, and
    ``v2_bits`` = vq^2 rounded to bfloat16 (nearest, ties to even), as int16 bits."""
    for k in range(v.shape[0]):
        x = v[k]
        if levels > 0:
            x = min(max(np.rint(x * scale), -levels), levels) * lsb
        vq[k] = x
        b = _bits_f32(x * x)
        b = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
        v2_bits[k] = np.int16(np.uint16(b))


@numba.njit(inline="always")
def _on_grid(x, scale, levels, lsb):
    """round(x * scale) clipped to +-levels, times lsb: the operations and rounding of
    :func:`memhil.backends.sim.read_path.quantize_symmetric_` (np.rint: ties to even)."""
    return min(max(np.rint(x * scale), -levels), levels) * lsb


@numba.njit(cache=True, nogil=True, error_model="numpy")
def quantize_into(x, scale, levels, lsb, out):
    """``out`` = the float32 1-D ``x`` on a converter's grid, in one pass (``out`` must not
    alias ``x``: an overlapping pair fails LLVM's runtime check and runs scalar)."""
    for j in range(x.shape[0]):
        k = np.uint64(j)  # unsigned: no wraparound branch, so the loop vectorizes
        out[k] = _on_grid(x[k], scale, levels, lsb)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def quantize_in_place(x, scale, levels, lsb):
    """The float32 1-D ``x`` onto a converter's grid, in place, in one pass."""
    for j in range(x.shape[0]):
        k = np.uint64(j)
        x[k] = _on_grid(x[k], scale, levels, lsb)


@numba.njit(inline="always")
def _noisy_cell(g, var, z):
    """One read of a cell, G + sqrt(var) z clipped at 0 S."""
    return max(g + np.sqrt(var) * z, np.float32(0.0))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def noisy_pair_difference(g, var, plus0, minus0, out, k0, k1):
    """``out`` (rows, pairs) = one per-device read-noise realization of each pair's
    difference, max(G+ + std+ z, 0) - max(G- + std- z', 0), from the C-contiguous float32
    (rows, cols) conductances ``g`` and variances ``var`` (rows a multiple of 4): pair j's
    + cell in column plus0 + j, its - cell in minus0 + j. The draws are those
    :func:`add_noise_adc` gives the flattened array (cell e takes normal e // Q of counter
    e % Q, Q = rows cols / 4; quarters are whole rows), so the pairs read the realization a
    read of every column would, without writing it: per counter the four normals go to
    one cell in each quarter, and every access runs along a row, so the loop vectorizes."""
    rows, pairs = out.shape
    quarter = rows // 4
    cols = np.uint64(g.shape[1])
    p0, m0 = np.uint64(plus0), np.uint64(minus0)
    for r in range(quarter):
        row = np.uint64(r) * cols  # the counter of the quarter's first cell in this row
        g0, g1, g2, g3 = g[r], g[quarter + r], g[2 * quarter + r], g[3 * quarter + r]
        v0, v1, v2, v3 = var[r], var[quarter + r], var[2 * quarter + r], var[3 * quarter + r]
        o0, o1, o2, o3 = out[r], out[quarter + r], out[2 * quarter + r], out[3 * quarter + r]
        for j in range(pairs):
            k = np.uint64(j)
            p, m = p0 + k, m0 + k
            a0, a1, a2, a3 = _normals4(row + p, k0, k1)
            b0, b1, b2, b3 = _normals4(row + m, k0, k1)
            o0[k] = _noisy_cell(g0[p], v0[p], a0) - _noisy_cell(g0[m], v0[m], b0)
            o1[k] = _noisy_cell(g1[p], v1[p], a1) - _noisy_cell(g1[m], v1[m], b1)
            o2[k] = _noisy_cell(g2[p], v2[p], a2) - _noisy_cell(g2[m], v2[m], b2)
            o3[k] = _noisy_cell(g3[p], v3[p], a3) - _noisy_cell(g3[m], v3[m], b3)
