"""PCM fits from retention and read-noise runs (``memhil.devices.pcm``, docs/devices.md#pcm):
the drift exponent ``nu`` (and its device-to-device spread) and the read noise
``sigma = m3 G + c3``.

Drift: G(t) = G(T0) (t / T0)^(-nu) for t >= T0 after programming, so each cell's reads at
t >= T0 give a least-squares slope of ln G on ln t, -nu_cell. ``nu`` is the mean over
cells, its standard error sd / sqrt(n); ``nu_dtod`` (the model's relative log-normal
spread) is the spread of the per-cell slopes beyond their estimation noise (read noise
scatters each slope by about its regression standard error), over nu.
"""

from __future__ import annotations

import math

import numpy as np

from memhil.calibration.fit.neurosim import FitResult


def fit_drift(
    t_s: np.ndarray, g_s: np.ndarray, *, t0_s: float = 38.6, source: str = ""
) -> FitResult:
    """``nu``/``nu_dtod`` from reads ``g_s`` (cells, times) at times ``t_s`` (s since the
    programming pulse, shared by all cells); reads before ``t0_s`` are not used."""
    t = np.asarray(t_s, dtype=float)
    g = np.atleast_2d(np.asarray(g_s, dtype=float))
    use = (t >= t0_s) & (t > 0)
    ok_cells = (g[:, use] > 0).all(1)
    if use.sum() < 3 or ok_cells.sum() < 2:
        raise ValueError(
            f"a drift fit needs >= 3 reads at t >= {t0_s} s and >= 2 cells with positive reads"
        )
    x = np.log(t[use])
    y = np.log(g[np.ix_(ok_cells, use)])
    xc = x - x.mean()
    slope = (y - y.mean(1, keepdims=True)) @ xc / (xc @ xc)
    resid = y - y.mean(1, keepdims=True) - slope[:, None] * xc
    se2 = (resid**2).sum(1) / max(x.size - 2, 1) / (xc @ xc)
    nu_cell = -slope
    nu = float(nu_cell.mean())
    spread = math.sqrt(max(nu_cell.var(ddof=1) - se2.mean(), 0.0))
    n = nu_cell.size
    return FitResult(
        model="pcm",
        params={"nu": nu, "nu_dtod": spread / nu if nu > 0 else 0.0, "t0_s": float(t0_s)},
        stderr={"nu": float(nu_cell.std(ddof=1) / math.sqrt(n))},
        residual_rms=float(np.sqrt(np.mean(resid**2))),
        n_points=int(y.size),
        source=source,
    )
