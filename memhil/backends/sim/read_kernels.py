"""Compiled CPU loops of the read path: converters, squares and read noise fused.

A per-sample read adds to every output current its own Gaussian noise, so a batch of
1024 inputs on 512 columns draws half a million normals per call; a per-read call draws a
realization of every device read. torch's CPU ``normal_`` draws them one at a time from a
Mersenne Twister, and the noise and ADC are six more passes over the output. Here one numba
loop draws the normals (Philox4x32-10 and Box-Muller, :mod:`memhil.core.philox_normals`:
their precision is stated there), adds them scaled by the noise std and rounds to the ADC
grid, in one pass that vectorizes (a counter-based generator has no serial state); the
DAC and the ADC alone are one pass each. Imported lazily, like
:mod:`memhil.devices.train_kernels`.
"""

import numba
import numpy as np
from numba import types
from numba.extending import overload

from memhil.core.numba_target import prefer_full_vector_width
from memhil.core.philox_normals import bits_f32, f32_bits, normals4, normals4_call

prefer_full_vector_width()  # before the first @njit: 512-bit vectors on AVX-512 CPUs

_Q1, _Q2, _Q3, _Q4 = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)


def _var_at(var, k):
    """var[k] as float32; a bfloat16 array arrives as its int16 bits."""
    return var[k]


@overload(_var_at, inline="always")
def _var_at_compiled(var, k):
    """bfloat16 bits (int16) widen to float32 exactly by a 16-bit shift (no extra pass
    over the array); float32 reads as is."""
    if var.dtype == types.int16:
        return lambda var, k: f32_bits(np.uint32(np.uint16(var[k])) << np.uint32(16))
    return lambda var, k: var[k]


@numba.njit(inline="always")
def _on_grid(x, scale, levels, lsb):
    """round(x * scale) clipped to +-levels, times lsb: the operations and rounding of
    :func:`memhil.backends.sim.read_path.quantize_symmetric_` (np.rint: ties to even);
    every converter here rounds through it."""
    return min(max(np.rint(x * scale), -levels), levels) * lsb


@numba.njit(inline="always")
def _noisy_adc(i, var, extra_var, lo, scale, levels, lsb, z, is_std):
    """max(i + sqrt(var + extra_var) z, lo), on the ADC grid when ``levels`` > 0 (the
    operations and rounding of :func:`memhil.backends.sim.read_path.quantize_symmetric_`);
    ``is_std`` (a constant of the compiled loop): ``var`` is already the std (no sqrt)."""
    spread = var if is_std else np.sqrt(var + extra_var)
    y = max(i + spread * z, lo)
    if levels > 0:
        y = _on_grid(y, scale, levels, lsb)
    return y


@numba.njit(inline="always")
def _noisy_adc_at(src, var, k, extra_var, lo, scale, levels, lsb, z, is_std):
    """:func:`_noisy_adc` of element ``k`` of ``src`` and ``var``."""
    return _noisy_adc(src[k], _var_at(var, k), extra_var, lo, scale, levels, lsb, z, is_std)


@numba.njit(inline="always")
def _noise_pass(src, dst, var, extra_var, lo, scale, levels, lsb, k0, k1, is_std):
    """dst = max(src + sqrt(var + extra_var) N(0, 1), lo), then the ADC (``levels`` > 0:
    round(x * scale) clipped to +-levels, times ``lsb``), over float32 1-D arrays; ``var``
    (float32, or bfloat16 as int16 bits) has their length (``is_std``, a constant of the
    caller: ``var`` holds the std, no sqrt taken). Element j * Q + g (Q = len // 4) takes
    normal j of Philox counter g under key (k0, k1), the < 4 tail elements those of
    counter Q: the four outputs of a counter land in four contiguous runs, so the loop
    vectorizes. ``dst`` is ``src`` itself or an array apart from it (a partial overlap
    would fail LLVM's runtime check and run scalar)."""
    n = src.shape[0]
    q4 = np.uint64(n // 4)
    for g in range(q4):
        k = np.uint64(g)  # unsigned: no wraparound branch, so the loop vectorizes
        z0, z1, z2, z3 = normals4(k, k0, k1)
        dst[k] = _noisy_adc_at(src, var, k, extra_var, lo, scale, levels, lsb, z0, is_std)
        k1_ = q4 + k
        dst[k1_] = _noisy_adc_at(src, var, k1_, extra_var, lo, scale, levels, lsb, z1, is_std)
        k2_ = _Q2 * q4 + k
        dst[k2_] = _noisy_adc_at(src, var, k2_, extra_var, lo, scale, levels, lsb, z2, is_std)
        k3_ = _Q3 * q4 + k
        dst[k3_] = _noisy_adc_at(src, var, k3_, extra_var, lo, scale, levels, lsb, z3, is_std)
    tail = _Q4 * q4
    if n > tail:
        z = normals4_call(q4, k0, k1)
        for j in range(n - tail):
            k = tail + np.uint64(j)
            dst[k] = _noisy_adc_at(src, var, k, extra_var, lo, scale, levels, lsb, z[j], is_std)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def add_noise_adc(x, var, extra_var, lo, scale, levels, lsb, k0, k1):
    """In place on the float32 1-D array ``x``: max(x + sqrt(var + extra_var) N(0, 1), lo),
    then the ADC; the draws and arithmetic of :func:`_noise_pass`."""
    _noise_pass(x, x, var, extra_var, lo, scale, levels, lsb, k0, k1, False)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def noisy_cells(g, std, out, k0, k1):
    """``out`` = one per-device read-noise realization of the float32 1-D conductances
    ``g``, max(G + std N(0, 1), 0), without changing ``g``: the draws of
    :func:`add_noise_adc` under the same key, in one pass (no copy of ``g`` first)."""
    f0 = np.float32(0.0)
    _noise_pass(g, out, std, f0, f0, f0, f0, f0, k0, k1, True)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def dac_and_square(v, scale, levels, lsb, vq, v2_bits):
    """The DAC and the squares in one pass over float32 ``v`` (1-D): ``vq`` = v on the DAC
    grid (``levels`` > 0; the rounding of ``quantize_symmetric_``) or v itself, and
    ``v2_bits`` = vq^2 rounded to bfloat16 (nearest, ties to even), as int16 bits."""
    for k in range(v.shape[0]):
        x = v[k]
        if levels > 0:
            x = _on_grid(x, scale, levels, lsb)
        vq[k] = x
        b = bits_f32(x * x)
        b = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
        v2_bits[k] = np.int16(np.uint16(b))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def quantize_into(x, scale, levels, lsb, out):
    """``out`` = the float32 1-D ``x`` on a converter's grid, in one pass (``out`` must not
    alias ``x``: an overlapping pair fails LLVM's runtime check and runs scalar). Returns
    the largest |x| (float32; NaN if any x is NaN) from the same pass, for the read-voltage
    limit check: the largest integer of the float bits without their sign (an integer max
    vectorizes, and a NaN's bits exceed every number's)."""
    top = np.uint32(0)
    for j in range(x.shape[0]):
        k = np.uint64(j)  # unsigned: no wraparound branch, so the loop vectorizes
        out[k] = _on_grid(x[k], scale, levels, lsb)
        top = max(top, bits_f32(x[k]) & np.uint32(0x7FFFFFFF))
    return f32_bits(top)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def encode_quantize_rows(x, absmax, x_max, v_peak, floor, scale, levels, lsb, out, back):
    """The input encoding and the DAC in one pass over the float32 (rows, n) inputs ``x``
    (:class:`memhil.backends.base.InputEncoding`): per row alpha = max |x| (at least
    ``floor``; a NaN wins, as torch's ``amax``) if ``absmax`` else ``x_max``, ``out`` =
    x * ((1 / alpha) * v_peak) on the converter's grid (``out`` apart from ``x``) and
    ``back`` = alpha / v_peak: the rounding of :meth:`InputEncoding.scales` (torch's
    scalar / tensor is a reciprocal times the scalar) and :func:`quantize_into`, bit for
    bit. A row is read twice while it sits in the L1 cache. Returns the largest |x gain|
    as :func:`quantize_into` does."""
    f32 = np.float32
    magnitude = np.uint32(0x7FFFFFFF)
    v = f32(v_peak)
    top = np.uint32(0)
    for r in range(x.shape[0]):
        row, dst = x[r], out[r]
        a = f32(x_max)
        if absmax:
            # the largest |x| as the largest integer of the float bits without their sign:
            # an integer max vectorizes where a float one (NaN-aware) does not, and a
            # NaN's bits exceed every number's, so it wins as torch's amax lets it
            m = np.uint32(0)
            for j in range(row.shape[0]):
                m = max(m, bits_f32(row[j]) & magnitude)
            a = f32_bits(m)
            a = f32(floor) if a < f32(floor) else a  # NaN kept
        gain = (f32(1.0) / a) * v
        back[r] = a / v
        for j in range(row.shape[0]):
            k = np.uint64(j)
            y = row[k] * gain
            dst[k] = _on_grid(y, scale, levels, lsb)
            top = max(top, bits_f32(y) & magnitude)
    return f32_bits(top)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def quantize_in_place(x, scale, levels, lsb):
    """The float32 1-D ``x`` onto a converter's grid, in place, in one pass."""
    for j in range(x.shape[0]):
        k = np.uint64(j)
        x[k] = _on_grid(x[k], scale, levels, lsb)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def quantize_affine_in_place(x, scale, levels, lsb, row_scale, col_bias):
    """The float32 (rows, n) ``x``, in place, in one pass: on a converter's grid
    (``levels`` > 0; else as is), then times its row's ``row_scale`` (rows,) plus
    ``col_bias`` (n,; empty: none): a float32 product, then a sum (no fused
    multiply-add), as ``x * scale + bias`` in torch."""
    biased = col_bias.shape[0] > 0
    for r in range(x.shape[0]):
        row, a = x[r], row_scale[r]
        for j in range(row.shape[0]):
            k = np.uint64(j)
            y = _on_grid(row[k], scale, levels, lsb) if levels > 0 else row[k]
            y = y * a
            row[k] = y + col_bias[k] if biased else y


@numba.njit(inline="always")
def _noisy_cell(g, std, z):
    """One read of a cell, G + std z clipped at 0 S (the arithmetic of
    :func:`noisy_cells`)."""
    return max(g + std * z, np.float32(0.0))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def noisy_pair_difference(g, std, plus0, minus0, out, k0, k1):
    """``out`` (rows, pairs) = one per-device read-noise realization of each pair's
    difference, max(G+ + std+ z, 0) - max(G- + std- z', 0), from the C-contiguous float32
    (rows, cols) conductances ``g`` and noise stds ``std`` (rows a multiple of 4): pair j's
    + cell in column plus0 + j, its - cell in minus0 + j. The draws are those
    :func:`noisy_cells` gives the flattened array (cell e takes normal e // Q of counter
    e % Q, Q = rows cols / 4; quarters are whole rows), so the pairs read the realization a
    read of every column would, without writing it: per counter the four normals go to
    one cell in each quarter, and every access runs along a row, so the loop vectorizes."""
    rows, pairs = out.shape
    if rows % 4 or max(plus0, minus0) + pairs > g.shape[1] or min(plus0, minus0) < 0:
        raise ValueError("noisy_pair_difference: rows % 4 != 0 or a pair column out of range")
    quarter = rows // 4
    cols = np.uint64(g.shape[1])
    p0, m0 = np.uint64(plus0), np.uint64(minus0)
    for r in range(quarter):
        row = np.uint64(r) * cols  # the counter of the quarter's first cell in this row
        g0, g1, g2, g3 = g[r], g[quarter + r], g[2 * quarter + r], g[3 * quarter + r]
        s0, s1, s2, s3 = std[r], std[quarter + r], std[2 * quarter + r], std[3 * quarter + r]
        o0, o1, o2, o3 = out[r], out[quarter + r], out[2 * quarter + r], out[3 * quarter + r]
        for j in range(pairs):
            k = np.uint64(j)
            p, m = p0 + k, m0 + k
            a0, a1, a2, a3 = normals4(row + p, k0, k1)
            b0, b1, b2, b3 = normals4(row + m, k0, k1)
            o0[k] = _noisy_cell(g0[p], s0[p], a0) - _noisy_cell(g0[m], s0[m], b0)
            o1[k] = _noisy_cell(g1[p], s1[p], a1) - _noisy_cell(g1[m], s1[m], b1)
            o2[k] = _noisy_cell(g2[p], s2[p], a2) - _noisy_cell(g2[m], s2[m], b2)
            o3[k] = _noisy_cell(g3[p], s3[p], a3) - _noisy_cell(g3[m], s3[m], b3)
