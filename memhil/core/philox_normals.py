"""Gaussian draws from Philox4x32-10, compiled: the one random source of memhil's kernels.

Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011: the
counter-based generator of cuRAND and of torch's CUDA generator) maps a counter and a key
to four 32-bit words with no serial state, so a loop that draws one counter per
iteration vectorizes; the Box-Muller transform (as torch's ``normal_``) turns each two
words into two normals. numba has no vectorized ``log``/``sin`` without Intel's SVML, so
those are written out as polynomials (accuracy in their docstrings). torch's CPU
``normal_`` draws from a Mersenne Twister, one word at a time (~2.7-3.4 ns a normal on one
core, measured); these take ~1.1 ns with 512-bit vectors. The read path
(:mod:`memhil.backends.sim.read_kernels`) and the devices' programming noise
(:func:`fill_normals`) draw from here. Imported lazily: numba's import costs ~0.3 s.

Precision of the draws: Box-Muller on 24-bit uniforms, so |z| <= 5.77 (a missing tail
mass of 8e-9, as torch's float32 ``normal_``, which also uses 24-bit uniforms), values
exact to ~1e-6 relative (float32 arithmetic; the polynomials are exact to < 1e-8).
"""

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

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
# Taylor coefficients of sin and cos as float32 products (a division by a constant is a
# division in the compiled loop, ~10 cycles a vector: Horner on these took the normals from
# 1.46 to 1.07 ns each, the draws moving by < 3e-7)
_SIN3, _SIN5, _SIN7, _SIN9 = (np.float32(v) for v in (-1 / 6, 1 / 120, -1 / 5040, 1 / 362880))
_COS2, _COS4, _COS6 = np.float32(-1 / 2), np.float32(1 / 24), np.float32(-1 / 720)
_COS8, _COS10 = np.float32(1 / 40320), np.float32(-1 / 3628800)


@intrinsic
def bits_f32(typingctx, x):
    """The IEEE-754 bits of a float32 as a uint32 (a register reinterpretation)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@intrinsic
def f32_bits(typingctx, x):
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
    bits = bits_f32(f)
    e = np.float32(np.int32(bits >> np.uint32(23)) - np.int32(127 + 24))
    m = f32_bits((bits & np.uint32(0x7FFFFF)) | np.uint32(0x3F800000))
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
    s = th + th * t2 * (_SIN3 + t2 * (_SIN5 + t2 * (_SIN7 + t2 * _SIN9)))
    c = np.float32(1.0) + t2 * (_COS2 + t2 * (_COS4 + t2 * (_COS6 + t2 * (_COS8 + t2 * _COS10))))
    # rotate (c, s) by q quarter turns: an odd q turns by 90 degrees, q >= 2 by 180
    # (selects and a sign product, no branch, so the loop vectorizes)
    odd = (q & _Q1) == _Q1
    cq = -s if odd else c
    sq = c if odd else s
    sign = np.float32(1.0) - np.float32(2.0) * np.float32(np.int32(q >> _Q1))
    return sign * cq, sign * sq


@numba.njit(inline="always")
def normals4(g, k0, k1):
    """Four independent N(0, 1) float32 draws of counter ``g`` under key (k0, k1)."""
    w0, w1, w2, w3 = philox4x32(g, np.uint64(0), np.uint64(0), np.uint64(0), k0, k1)
    r0 = np.sqrt(_neg2_log_unit(w0))
    c0, s0 = _cos_sin_turn(w1)
    r1 = np.sqrt(_neg2_log_unit(w2))
    c1, s1 = _cos_sin_turn(w3)
    return r0 * c0, r0 * s0, r1 * c1, r1 * s1


@numba.njit(error_model="numpy")
def normals4_call(g, k0, k1):
    """:func:`normals4` as a call (for the < 4 tail elements: one inlined copy per loop)."""
    return normals4(g, k0, k1)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def fill_normals(out, k0, k1):
    """``out`` (float32 1-D) = N(0, 1) draws under key (k0, k1): element j * Q + g
    (Q = len // 4) takes normal j of counter g, the < 4 tail elements those of counter Q
    (the layout of the read path's draws: four contiguous runs per counter)."""
    n = out.shape[0]
    q4 = np.uint64(n // 4)
    for g in range(q4):
        k = np.uint64(g)  # unsigned: no wraparound branch, so the loop vectorizes
        z0, z1, z2, z3 = normals4(k, k0, k1)
        out[k] = z0
        out[q4 + k] = z1
        out[_Q2 * q4 + k] = z2
        out[_Q3 * q4 + k] = z3
    tail = _Q4 * q4
    if n > tail:
        z = normals4_call(q4, k0, k1)
        for j in range(n - tail):
            out[tail + np.uint64(j)] = z[j]
