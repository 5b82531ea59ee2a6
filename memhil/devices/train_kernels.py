"""Compiled CPU loops of pulse trains (PCM SET trains, VTEAM trains under compliance).

A pulse of these models is ~10-25 elementwise operations per cell; as torch ops each is
a pass over the whole array, and under compliance the simulator re-reads G and re-caps
the voltage before every pulse. Here one numba loop visits each cell once per block of
pulses and keeps its state in registers, so a train costs its random draws plus one pass
over memory. numba, not ``torch.compile``: it compiles in about a second without a C++
toolchain and caches to disk (as :mod:`memhil.nn.scan_kernels`). The cycle-to-cycle
normals are drawn beforehand (PCM: :func:`memhil.devices.base.standard_normals_`, VTEAM:
torch), pulse by pulse over the whole array, in the order the unfused torch path draws
them, so both paths consume the same random stream.

Scalars arrive in ``consts``, an array of the state's dtype, so float32 arithmetic stays
float32 (a Python float literal would promote it to float64). Imported lazily: numba's
import costs ~0.3 s that commands without a pulse train should not pay.
"""

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic, overload

from memhil.core.numba_target import prefer_full_vector_width

prefer_full_vector_width()  # before the first @njit: 512-bit vectors on AVX-512 CPUs

# PCM consts: decay, m2, a2, c2, 1 + m1, a1, c1, g_min, t_s
# VTEAM consts: 1, 0, 1e-15 (the simulator's G floor when capping)


#: Bytes of C2C normals drawn ahead per block of pulses: under glibc's largest mmap
#: threshold (32 MiB), so the block is reused from the heap, not mapped and page-faulted
#: on every call (measured: 8 pulses x 1M cells in float32 drew 1.5x slower).
BLOCK_BYTES = 16 << 20


def block_pulses(pulses: int, cells: int, itemsize: int) -> int:
    """Pulses per block of C2C draws: as many as fit in BLOCK_BYTES, at least one."""
    return max(1, min(pulses, BLOCK_BYTES // max(1, cells * itemsize)))


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c rounded once (LLVM ``fma``): torch's vectorized ``add_(t, alpha=s)`` is
    an FMA, so the fused loop rounds where the torch ops do."""

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return a(a, b, c), codegen


def _at(a, i):
    """a[i] for a per-cell array, ``a`` itself for a scalar shared by every cell."""
    return a[i] if isinstance(a, np.ndarray) else a


@overload(_at, inline="always")
def _at_compiled(a, i):
    """Chosen at compile time, so a shared value stays a loop invariant (a broadcast
    register) and the cell loop still vectorizes."""
    if isinstance(a, types.Array):
        return lambda a, i: a[i]
    return lambda a, i: a


#: Cells per tile: each tile runs all of its pulses while it sits in L1, with the cells
#: as the inner (vectorized) loop; a cell's pulses form a dependent chain of divisions
#: that would run at latency, not throughput, as the inner loop.
TILE = 512


@numba.njit(cache=True, nogil=True, error_model="numpy")
def pcm_set_train(state, xi, g_max, consts, out):
    """``xi.shape[0]`` SET pulses of Nandakumar et al. (J. Appl. Phys. 2018) on every cell
    of ``state`` (cells, 3) into ``out`` (may alias): P <- P e^{-1/a};
    G <- clip((1 + m1) G + c1 + A1 P + (m2 G + c2 + A2 P) xi, g_min, g_max). ``g_max`` has
    one element (shared) or one per cell; t_p is set to consts[8]."""
    decay, m2, a2, c2, m1p = consts[0], consts[1], consts[2], consts[3], consts[4]
    a1, c1, g_min, t_s = consts[5], consts[6], consts[7], consts[8]
    per_cell_max = g_max.shape[0] > 1
    cells = state.shape[0]
    g_t = np.empty(TILE, dtype=state.dtype)  # the tile's G and P, contiguous
    p_t = np.empty(TILE, dtype=state.dtype)
    for start in range(0, cells, TILE):
        m = min(TILE, cells - start)
        for j in range(m):
            g_t[j] = state[start + j, 0]
            p_t[j] = state[start + j, 1]
        for k in range(xi.shape[0]):
            xi_t = xi[k, start : start + m]
            for j in range(m):
                i = np.uint64(j)  # provably >= 0: no wraparound branch, so it vectorizes
                hi = g_max[start + i] if per_cell_max else g_max[0]
                g = g_t[i]
                p = p_t[i] * decay
                s = (_fma(p, a2, g * m2) + c2) * xi_t[i]
                s = _fma(p, a1, _fma(g, m1p, s)) + c1
                g_t[i] = min(max(s, g_min), hi)
                p_t[i] = p
        for j in range(m):
            out[start + j, 0] = g_t[j]
            out[start + j, 1] = p_t[j]
            out[start + j, 2] = t_s


@numba.njit(cache=True, nogil=True, error_model="numpy")
def pcm_set_counts(state, order, steps, xi, g_max, consts):
    """Per-cell SET trains of :func:`pcm_set_train`'s arithmetic, in place on ``state``
    (cells, 3): the cells ``order`` (sorted by count, most first) take ``steps[k]`` = the
    number of cells still pulsed at pass k, and the rank-r cell's pass-k normal is
    ``xi[offset_k + r]`` (offset_k = steps[0] + .. + steps[k-1]): the layout of the torch
    path's one draw per pass over a prefix. Per tile of ranks the cells are gathered into
    registers, every pass runs over the tile's still-active prefix (a contiguous, vectorized
    loop), and they are scattered back once with t_p = consts[8]."""
    decay, m2, a2, c2, m1p = consts[0], consts[1], consts[2], consts[3], consts[4]
    a1, c1, g_min, t_s = consts[5], consts[6], consts[7], consts[8]
    per_cell_max = g_max.shape[0] > 1
    passes = steps.shape[0]
    offset = np.zeros(passes, dtype=np.int64)
    for k in range(1, passes):
        offset[k] = offset[k - 1] + steps[k - 1]
    ranks = steps[0] if passes else 0
    g_t = np.empty(TILE, dtype=state.dtype)
    p_t = np.empty(TILE, dtype=state.dtype)
    hi_t = np.empty(TILE, dtype=state.dtype)
    for start in range(0, ranks, TILE):
        m = min(TILE, ranks - start)
        for j in range(m):
            c = order[start + j]
            g_t[j] = state[c, 0]
            p_t[j] = state[c, 1]
            hi_t[j] = g_max[c] if per_cell_max else g_max[0]
        for k in range(passes):
            active = min(max(steps[k] - start, 0), m)
            if active == 0:
                break
            xi_t = xi[offset[k] + start : offset[k] + start + active]
            for j in range(active):
                i = np.uint64(j)  # provably >= 0: no wraparound branch, so it vectorizes
                g = g_t[i]
                p = p_t[i] * decay
                s = (_fma(p, a2, g * m2) + c2) * xi_t[i]
                s = _fma(p, a1, _fma(g, m1p, s)) + c1
                g_t[i] = min(max(s, g_min), hi_t[i])
                p_t[i] = p
        for j in range(m):
            c = order[start + j]
            state[c, 0] = g_t[j]
            state[c, 1] = p_t[j]
            state[c, 2] = t_s


@numba.njit(inline="always")
def _power(y, alpha):
    """y ** alpha for alpha in {1, 2, 3}, as products (torch's ``pow_`` evaluates these
    exponents so); a select, not a branch, so the loop around it vectorizes."""
    y2 = y * y
    return y if alpha == 1 else (y2 if alpha == 2 else y2 * y)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def vteam_compliance_train(
    x,
    r_on,
    r_off,
    v_on,
    v_off,
    k_on,
    k_off,
    v,
    w,
    n,
    c,
    xi,
    k0,
    pulses,
    alpha_on,
    alpha_off,
    consts,
):
    """Pulses ``k0 .. k0 + pulses - 1`` of VTEAM trains (Kvatinsky et al., IEEE TCAS-II
    2015; linear I-V, no window) under compliance, in place on ``x``; per cell and pulse:
    G = 1 / (R_on + (R_off - R_on) x); v <- sign(v) I_c / G where |v| G > I_c; the closed
    form dx = (k_off (-v/v_off - 1)^a_off - k_on (v/v_on - 1)^a_on) w (1 + xi) (each rate
    0 below its threshold, the C2C factor clipped at 0), x <- clip(x + dx, 0, 1); a SET
    stops at the x where G = I_c / v_on (never below where it started). Cells whose
    ``n`` pulses are done are left alone. ``v``, ``w``, ``n``, ``c`` are per-cell arrays or
    scalars shared by all cells. ``xi`` (pulses, cells) holds each pulse's C2C normal, or
    has no rows when there is no C2C noise; ``alpha_on``, ``alpha_off`` in {1, 2, 3}."""
    one, zero, g_floor = consts[0], consts[1], consts[2]
    noisy = xi.shape[0] > 0
    cells = x.shape[0]
    for start in range(0, cells, TILE):
        stop = min(start + TILE, cells)
        todo = 0
        for i in range(start, stop):
            todo = max(todo, _at(n, i) - k0)
        for k in range(min(todo, pulses)):
            for j in range(start, stop):
                i = np.uint64(j)  # provably >= 0: no wraparound branch, so it vectorizes
                xc = x[i]
                ron = r_on[i]
                span = r_off[i] - ron
                vi = _at(v, i)
                ci = _at(c, i)
                von = v_on[i]
                g0 = one / (ron + span * xc)
                cap = ci / max(g0, g_floor)  # |v| G > I_c implies v != 0: sign(v) is +-1
                vc = (cap if vi > zero else -cap) if abs(vi) * g0 > ci else vi
                on = _power(max(vc / von - one, zero), alpha_on) * k_on[i]
                off = _power(max(-(vc / v_off[i] + one), zero), alpha_off) * k_off[i]
                dx = (off - on) * _at(w, i)
                if noisy:
                    dx = dx * max(xi[k, i] + one, zero)
                new = min(max(dx * one + xc, zero), one)
                x_stop = min(max((one / (ci / von) - ron) / span, zero), one)
                new = max(new, min(xc, x_stop)) if vc > zero else new
                x[i] = new if _at(n, i) > k0 + k else xc
