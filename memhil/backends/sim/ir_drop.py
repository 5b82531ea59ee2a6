"""Line resistance (IR drop) in a passive crossbar read: an exact nodal solve and a cheap relaxation.

Geometry
--------
An array of ``R`` rows x ``C`` columns. Every cell (r, c) has two line nodes: a row-line node
``(r, c)`` and a column-line node ``(r, c)``; the device conductance ``G[r, c]`` (siemens) joins
them. The access devices are ideal (a passive 1R array, so sneak paths are included).

* **Rows.** Row ``r`` is driven by an ideal voltage source ``v_rows[r]`` at the column-0 end,
  through one wire segment ``r_wire_ohm`` plus an optional ``r_source_ohm`` (driver output
  resistance). Adjacent row-line nodes ``(r, c)`` and ``(r, c+1)`` are joined by ``r_wire_ohm``.
  The row line ends open at column ``C-1``.
* **Columns.** Column ``c`` is sensed at the row-``(R-1)`` end by a virtual-ground
  transimpedance amplifier, through one wire segment ``r_wire_ohm`` plus an optional
  ``r_sense_ohm``. Adjacent column-line nodes ``(r, c)`` and ``(r+1, c)`` are joined by
  ``r_wire_ohm``. The column line ends open at row 0.

So the cell (r, c) sees the row wire over ``c + 1`` segments and the column wire over
``R - r`` segments: the cell nearest both terminals is (R-1, 0), the farthest (0, C-1).
The result of a read is the current flowing *into* each column's sense amplifier.

Shapes and units (SI throughout)
--------------------------------
``g_s``: ``(T, R, C)`` conductances of ``T`` tiles, in siemens; ``v_rows``: ``(T, B, R)`` row
voltages for a batch of ``B`` inputs per tile, in volts (a leading tile dimension of 1 is
broadcast over the tiles); results: ``(T, B, C)`` column currents, in amperes, in the
promoted floating dtype of the two inputs and on their device.

Transposed read (``mvm_t``)
---------------------------
Driving the columns and sensing the rows is the same problem with the roles swapped: the caller
passes ``g_s.transpose(-1, -2)`` (shape ``(T, C, R)``) and column voltages ``(T, B, C)``, and
gets row currents ``(T, B, R)``. In that mirrored geometry the column drivers sit at the row-0
end of the column lines and the row sense amplifiers at the column-(C-1) end of the row lines;
with equal per-segment wire resistance on both line families this is the physical transpose
read. This is how the simulator's ``mvm_t`` uses these functions.

Two fidelity levels
-------------------
* :func:`solve_exact` -- modified nodal analysis over the ``2 R C`` line nodes, in float64, one
  dense LU factorisation per tile (the matrix depends on ``G`` only) reused for all ``B``
  right-hand sides. It solves for the *deviation* of the node voltages from the ideal ones
  (rows at the source voltage, columns at 0 V); the system is anchored through the terminal
  wires, so it stays well conditioned (condition number ~ line length squared) even for a
  vanishing ``r_wire_ohm``, and the result tends to ``V @ G`` smoothly. Dense, so limited to
  ``R * C <= MAX_DENSE_CELLS`` (64 x 64).
* :func:`first_order` -- a CrossSim-style fixed-point relaxation. Because each line is a chain
  fed from one end, the current in a line segment is exactly the sum of the cell currents
  beyond it, so the cell voltages satisfy ``dV = dV0 - D(G * dV)`` where ``D`` accumulates the
  IR drops (cumsum of cumsum). Starting from the ideal ``dV0`` and iterating
  ``dV <- dV + gamma * (dV0 - D(G * dV) - dV)`` gives the first-order correction in
  ``r_wire`` after one iteration and converges to the exact solution when the spectral radius
  of ``gamma * D G`` (roughly ``r_wire * G_mean * (R**2 + C**2) / 2``) is below 1; use
  ``damping < 1`` for stiffer arrays. Cost: O(B R C) per iteration with cumsums, no solve;
  for lines up to 512 cells the same linear drop operator is applied as a (C, C) and an
  (R, R) matmul, which is faster on CPU (``method="auto"``).

``r_wire_ohm = 0``: with ideal wires and zero terminal resistances both functions return the
ideal ``v_rows @ g_s``. The exact nodal solve needs ``r_wire_ohm > 0`` once a terminal
resistance is set (the line nodes of a zero-resistance line collapse into one node); it raises
a ValueError then -- use a tiny wire resistance (e.g. 1e-9 ohm) instead.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "MAX_DENSE_CELLS",
    "first_order",
    "ideal_currents",
    "solve_exact",
]

#: Largest R * C the dense nodal solve accepts (2 * R * C unknowns; 64 x 64 -> 8192 unknowns,
#: a 512 MiB float64 matrix per tile).
MAX_DENSE_CELLS = 64 * 64

#: Upper bound on float64 matrix elements materialised at once by solve_exact (tiles are
#: factored in groups that stay under it; one tile is always allowed).
_MATRIX_BUDGET_ELEMENTS = 2**27  # 1 GiB of float64


# -- helpers --------------------------------------------------------------------------------
def _check_inputs(g_s: Tensor, v_rows: Tensor) -> tuple[Tensor, Tensor, torch.dtype]:
    if g_s.ndim != 3:
        raise ValueError(f"g_s must have shape (T, R, C); got {tuple(g_s.shape)}")
    if v_rows.ndim != 3:
        raise ValueError(f"v_rows must have shape (T, B, R); got {tuple(v_rows.shape)}")
    t, r, _ = g_s.shape
    if v_rows.shape[-1] != r:
        raise ValueError(
            f"v_rows has {v_rows.shape[-1]} row voltages but g_s has {r} rows "
            f"(g_s {tuple(g_s.shape)}, v_rows {tuple(v_rows.shape)})"
        )
    if v_rows.shape[0] not in (t, 1):
        raise ValueError(
            f"v_rows has {v_rows.shape[0]} tiles but g_s has {t} "
            f"(g_s {tuple(g_s.shape)}, v_rows {tuple(v_rows.shape)})"
        )
    if v_rows.shape[0] != t:
        v_rows = v_rows.expand(t, -1, -1)
    dtype = torch.result_type(g_s, v_rows)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    return g_s, v_rows, dtype


def _check_resistances(
    r_wire_ohm: float, r_source_ohm: float, r_sense_ohm: float
) -> tuple[float, float, float]:
    vals = (float(r_wire_ohm), float(r_source_ohm), float(r_sense_ohm))
    for name, v in zip(("r_wire_ohm", "r_source_ohm", "r_sense_ohm"), vals):
        if not math.isfinite(v) or v < 0.0:
            raise ValueError(f"{name} must be finite and >= 0; got {v}")
    return vals


def ideal_currents(g_s: Tensor, v_rows: Tensor) -> Tensor:
    """Column currents without any line resistance: ``v_rows @ g_s``, shape ``(T, B, C)``."""
    g_s, v_rows, dtype = _check_inputs(g_s, v_rows)
    return torch.matmul(v_rows.to(dtype), g_s.to(dtype))


# -- exact nodal solve ----------------------------------------------------------------------
def _wire_matrix(
    rows: int, cols: int, g_wire: float, g_src: float, g_snk: float, device: torch.device
) -> Tensor:
    """Conductance matrix of the wires alone over the 2 R C line nodes (float64).

    Node numbering: row-line node (r, c) -> r * C + c; column-line node (r, c) -> R C + r * C + c.
    Terminal conductances (to the ideal source / the virtual ground) sit on the diagonal.
    """
    rc = rows * cols
    n = 2 * rc
    idx = torch.arange(rc, device=device).reshape(rows, cols)
    # Row lines: segments (r, c) -- (r, c+1); column lines: segments (r, c) -- (r+1, c).
    ea = torch.cat([idx[:, :-1].reshape(-1), rc + idx[:-1, :].reshape(-1)])
    eb = torch.cat([idx[:, 1:].reshape(-1), rc + idx[1:, :].reshape(-1)])
    diag = torch.zeros(n, dtype=torch.float64, device=device)
    ones = torch.ones(ea.numel(), dtype=torch.float64, device=device)
    diag.index_add_(0, ea, ones)
    diag.index_add_(0, eb, ones)
    diag *= g_wire
    # Terminals: source at row node (r, 0); sense amplifier at column node (R-1, c).
    diag[idx[:, 0]] += g_src
    diag[rc + idx[-1, :]] += g_snk
    a = torch.diag(diag)
    a[ea, eb] = -g_wire  # each off-diagonal pair occurs once
    a[eb, ea] = -g_wire
    return a


def solve_exact(
    g_s: Tensor,
    v_rows: Tensor,
    r_wire_ohm: float,
    r_source_ohm: float = 0.0,
    r_sense_ohm: float = 0.0,
    return_nodes: bool = False,
    max_cells: int = MAX_DENSE_CELLS,
):
    """Exact column currents of a passive crossbar read with line resistance.

    Modified nodal analysis over the 2 R C line nodes (geometry in the module docstring),
    solved in float64: the conductance matrix is built and LU-factored once per tile and the
    ``B`` inputs are solved as right-hand sides of that one factorisation. The unknowns are
    the deviations from the ideal node voltages, which keeps the result accurate for small
    ``r_wire_ohm``.

    Args:
        g_s: ``(T, R, C)`` conductances, siemens (>= 0; 0 is an open cell).
        v_rows: ``(T, B, R)`` (or ``(1, B, R)``) row source voltages, volts.
        r_wire_ohm: resistance of one wire segment (between neighbouring cells, and between
            each line end cell and its terminal), ohm. 0 is allowed only with zero terminal
            resistances and then returns ``v_rows @ g_s``.
        r_source_ohm, r_sense_ohm: extra series resistance of each row driver / each column
            sense amplifier input, ohm.
        return_nodes: also return the row-line and column-line node voltages.
        max_cells: largest ``R * C`` accepted for the dense solve.

    Returns:
        ``(T, B, C)`` currents into the column sense amplifiers, amperes (promoted input
        dtype); with ``return_nodes`` a tuple ``(i_cols, v_row_nodes, v_col_nodes)``, the
        latter two ``(T, B, R, C)`` in volts. With ``r_wire_ohm = 0`` the node voltages are the
        ideal ones (row nodes at the source voltage, column nodes at 0 V).
    """
    g_s, v_rows, dtype = _check_inputs(g_s, v_rows)
    r_wire, r_src, r_sns = _check_resistances(r_wire_ohm, r_source_ohm, r_sense_ohm)
    t, rows, cols = g_s.shape
    bsz = v_rows.shape[1]
    device = g_s.device

    if r_wire == 0.0:
        if r_src != 0.0 or r_sns != 0.0:
            raise ValueError(
                "solve_exact: r_wire_ohm = 0 with a nonzero r_source_ohm/r_sense_ohm is not "
                "supported by the nodal solve (zero-resistance line nodes collapse); pass a "
                "tiny r_wire_ohm such as 1e-9 instead"
            )
        i_cols = torch.matmul(v_rows.to(dtype), g_s.to(dtype))
        if not return_nodes:
            return i_cols
        vr = v_rows.to(dtype).unsqueeze(-1).expand(t, bsz, rows, cols).clone()
        vc = torch.zeros_like(vr)
        return i_cols, vr, vc

    rc = rows * cols
    if rc > max_cells:
        raise ValueError(
            f"solve_exact: a {rows}x{cols} array ({rc} cells, {2 * rc} unknowns) exceeds the "
            f"dense nodal-solve limit of {max_cells} cells (e.g. 64x64); use first_order for "
            f"large arrays"
        )
    n = 2 * rc

    g64 = g_s.to(torch.float64)
    v64 = v_rows.to(device=device, dtype=torch.float64)
    g_wire = 1.0 / r_wire
    g_src = 1.0 / (r_wire + r_src)
    g_snk = 1.0 / (r_wire + r_sns)
    base = _wire_matrix(rows, cols, g_wire, g_src, g_snk, device)

    ar = torch.arange(rc, device=device)
    ac = ar + rc
    chunk = max(1, _MATRIX_BUDGET_ELEMENTS // (n * n))

    i_out, vr_out, vc_out = [], [], []
    for t0 in range(0, t, chunk):
        g = g64[t0 : t0 + chunk]  # (t, R, C)
        v = v64[t0 : t0 + chunk]  # (t, B, R)
        tc = g.shape[0]
        gf = g.reshape(tc, rc)
        a = base.expand(tc, n, n).clone()
        a[:, ar, ar] += gf
        a[:, ac, ac] += gf
        a[:, ar, ac] -= gf
        a[:, ac, ar] -= gf
        # x = x0 + d with x0 = ideal voltages (rows at v, columns at 0); then A d = b - A x0,
        # and b - A x0 is minus the ideal cell current on row nodes, plus on column nodes.
        inj = g.unsqueeze(1) * v.unsqueeze(-1)  # (t, B, R, C) ideal cell currents
        inj = inj.reshape(tc, bsz, rc)
        rhs = torch.cat([-inj, inj], dim=-1).transpose(1, 2)  # (t, N, B)
        # One LU per tile serves all B right-hand sides. Tiles are factored one at a time:
        # with torch 2.13 + MKL, batched getrf returns invalid pivots ("Parameter 6 was
        # incorrect on entry to DLASWP") once torch.set_num_threads has been changed in the
        # process, while single-matrix factorizations stay correct. This validation
        # solver is not a hot path, so the loop over (few) tiles costs nothing that matters.
        d = torch.stack([torch.linalg.solve(a[k], rhs[k]) for k in range(tc)]).transpose(1, 2)
        vc = d[..., rc:].reshape(tc, bsz, rows, cols)
        i_out.append(vc[..., -1, :] * g_snk)
        if return_nodes:
            vr = v.unsqueeze(-1) + d[..., :rc].reshape(tc, bsz, rows, cols)
            vr_out.append(vr)
            vc_out.append(vc)

    i_cols = torch.cat(i_out, dim=0).to(dtype)
    if not return_nodes:
        return i_cols
    return i_cols, torch.cat(vr_out, dim=0).to(dtype), torch.cat(vc_out, dim=0).to(dtype)


# -- cheap relaxation -----------------------------------------------------------------------
#: Longest line (max(R, C)) for which first_order applies the drop operator as two small
#: matmuls instead of cumsums (same numbers; ~2.5x faster on CPU up to 128, ~1.3x at 512).
_MATMUL_MAX_LINE = 512


def _rev_cumsum(x: Tensor, dim: int) -> Tensor:
    return torch.flip(torch.cumsum(torch.flip(x, (dim,)), dim), (dim,))


def _relax(
    g: Tensor,
    v: Tensor,
    r_row: Tensor,
    r_col: Tensor,
    iterations: int,
    damping: float,
    use_matmul: bool,
) -> Tensor:
    """Relaxation on one chunk: g (t, 1, R, C), v (t, b, R, 1) -> column currents (t, b, C).

    ``r_row`` (C,): row-line segment resistances, segment k feeding node (r, k) (k = 0 from
    the source, terminal resistance included); ``r_col`` (R, 1): column-line segment
    resistances, segment k leaving node (k, c) towards the sense end (k = R-1 is the terminal).
    """
    rows, cols = g.shape[-2], g.shape[-1]
    dv0 = v.expand(-1, -1, rows, cols)
    if use_matmul:
        # The cumsum-of-cumsum operators as matrices: the row drop at column c from a cell
        # current at c' is the resistance shared by both paths to the source,
        # sum_{k <= min(c, c')} r_row[k]; the column voltage at row r from a cell current at
        # r' is sum_{k >= max(r, r')} r_col[k].
        r_cum = torch.cumsum(r_row, 0)
        m_row = torch.minimum(r_cum[:, None], r_cum[None, :])  # (C, C)
        r_rev = _rev_cumsum(r_col[:, 0], 0)
        m_col = torch.minimum(r_rev[:, None], r_rev[None, :])  # (R, R)
    dv = dv0
    for _ in range(iterations):
        i_cell = g * dv
        if use_matmul:
            v_row_drop = torch.matmul(i_cell, m_row)
            v_col = torch.matmul(m_col, i_cell)
        else:
            # Row line: segment k carries the current of cells k..C-1; the drop at node
            # (r, c) accumulates r_row[k] * I_k over k <= c.
            v_row_drop = torch.cumsum(_rev_cumsum(i_cell, -1) * r_row, dim=-1)
            # Column line: segment below node (r, c) carries cells 0..r; node (r, c) sits
            # above segments r..R-1 (the last one to the sense amplifier).
            v_col = _rev_cumsum(torch.cumsum(i_cell, dim=-2) * r_col, dim=-2)
        target = dv0 - v_row_drop - v_col
        dv = target if damping == 1.0 else dv + damping * (target - dv)
    return (g * dv).sum(dim=-2)


def first_order(
    g_s: Tensor,
    v_rows: Tensor,
    r_wire_ohm: float,
    iterations: int = 1,
    r_source_ohm: float = 0.0,
    r_sense_ohm: float = 0.0,
    max_elements: int = 2**24,
    damping: float = 1.0,
    method: str = "auto",
) -> Tensor:
    """Cheap IR-drop model: CrossSim-style fixed-point relaxation of the cell voltages.

    Starts from the ideal cell voltages ``dV0[r, c] = v_rows[r]``; each iteration computes
    the cell currents ``G * dV``, the line currents by cumulative sums along the rows and
    columns, the cumulative IR drops on the row lines (from the source end) and the column
    line voltages (from the sense end), and updates
    ``dV <- dV + damping * (dV0 - V_row_drop - V_col - dV)``. One iteration is the
    first-order correction in ``r_wire``; more iterations converge to :func:`solve_exact`
    when the relaxation is contractive (see the module docstring). ``iterations = 0`` gives
    the ideal ``v_rows @ g_s``. No convergence check is made: the caller picks the count.

    Computed in the promoted input dtype. The work is O(B R C) per tile and iteration; the
    (tile, batch) pairs are processed in chunks so that no intermediate tensor exceeds
    ``max_elements`` elements (at least one ``R x C`` slab per chunk). Chunking does not change
    the result.

    Args:
        g_s: ``(T, R, C)`` conductances, siemens.
        v_rows: ``(T, B, R)`` (or ``(1, B, R)``) row source voltages, volts.
        r_wire_ohm: resistance of one wire segment, ohm (0 allowed).
        iterations: number of relaxation updates (>= 0).
        r_source_ohm, r_sense_ohm: extra terminal resistances, ohm.
        max_elements: cap on the elements of any intermediate tensor.
        damping: relaxation factor gamma in (0, 1]; 1 is the plain fixed-point iteration.
        method: how the cumulative drops are formed: ``"cumsum"`` (cumulative sums along the
            lines), ``"matmul"`` (the same linear operator as an (C, C) and an (R, R) matrix;
            faster on CPU for lines up to a few hundred cells) or ``"auto"`` (matmul when
            max(R, C) <= 512). The two agree to rounding.

    Returns:
        ``(T, B, C)`` column currents, amperes.
    """
    g_s, v_rows, dtype = _check_inputs(g_s, v_rows)
    r_wire, r_src, r_sns = _check_resistances(r_wire_ohm, r_source_ohm, r_sense_ohm)
    if int(iterations) != iterations or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0; got {iterations}")
    iterations = int(iterations)
    if not (0.0 < float(damping) <= 1.0):
        raise ValueError(f"damping must be in (0, 1]; got {damping}")
    if int(max_elements) < 1:
        raise ValueError(f"max_elements must be >= 1; got {max_elements}")
    if method not in ("auto", "cumsum", "matmul"):
        raise ValueError(f"method must be 'auto', 'cumsum' or 'matmul'; got {method!r}")

    t, rows, cols = g_s.shape
    use_matmul = method == "matmul" or (method == "auto" and max(rows, cols) <= _MATMUL_MAX_LINE)
    bsz = v_rows.shape[1]
    g = g_s.to(dtype)
    v = v_rows.to(device=g.device, dtype=dtype)
    if iterations == 0 or (r_wire == 0.0 and r_src == 0.0 and r_sns == 0.0):
        return torch.matmul(v, g)

    r_row = torch.full((cols,), r_wire, dtype=dtype, device=g.device)
    r_row[0] += r_src
    r_col = torch.full((rows, 1), r_wire, dtype=dtype, device=g.device)
    r_col[-1] += r_sns

    slab = rows * cols
    pairs = max(1, int(max_elements) // slab)  # (tile, batch) slabs per chunk
    t_chunk = min(t, pairs)
    b_chunk = max(1, min(bsz, pairs // t_chunk))
    if t_chunk == t and b_chunk == bsz:
        return _relax(
            g.unsqueeze(1), v.unsqueeze(-1), r_row, r_col, iterations, float(damping), use_matmul
        )

    out = torch.empty(t, bsz, cols, dtype=dtype, device=g.device)
    for t0 in range(0, t, t_chunk):
        gt = g[t0 : t0 + t_chunk].unsqueeze(1)
        for b0 in range(0, bsz, b_chunk):
            vt = v[t0 : t0 + t_chunk, b0 : b0 + b_chunk].unsqueeze(-1)
            out[t0 : t0 + t_chunk, b0 : b0 + b_chunk] = _relax(
                gt, vt, r_row, r_col, iterations, float(damping), use_matmul
            )
    return out
