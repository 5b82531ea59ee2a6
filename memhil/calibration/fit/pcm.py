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


#: Programmed levels closer than this ratio are one class (their exponents pooled).
LEVEL_MERGE_RATIO = 1.05


def fit_drift_levels(
    runs: list[tuple[np.ndarray, np.ndarray]], *, t0_s: float = 38.6, source: str = ""
) -> FitResult:
    """One drift exponent per programmed conductance class: ``runs`` are (times s, reads
    (cells, times)) of retention runs, each one class (its cells programmed alike). Each
    class's level is the median over its cells of the conductance at T0 (the first read
    at or after T0, moved back to T0 by the fitted law) and its exponent ``fit_drift``'s;
    classes within ``LEVEL_MERGE_RATIO`` of each other are pooled (inverse-variance
    weights). Params: ``levels_s`` and ``nu_levels`` (increasing levels), ``nu`` (their
    mean), ``nu_dtod`` (the classes' relative spreads, averaged), ``t0_s``; stderr
    ``nu_levels[k]``."""
    found = []
    for t_s, g_s in runs:  # a loop over the few classes
        fit = fit_drift(t_s, g_s, t0_s=t0_s)
        t = np.asarray(t_s, dtype=float)
        g = np.atleast_2d(np.asarray(g_s, dtype=float))
        k = int(np.argmax(t >= t0_s))
        nu = fit.params["nu"]
        level = float(np.median(g[:, k])) * (t[k] / t0_s) ** nu
        found.append((level, nu, fit.stderr["nu"], fit.params["nu_dtod"], fit.n_points))
    found.sort()
    merged: list[list[tuple[float, float, float, float, int]]] = []
    for f in found:
        if merged and f[0] < LEVEL_MERGE_RATIO * merged[-1][-1][0]:
            merged[-1].append(f)
        else:
            merged.append([f])
    levels, nus, ses, dtods = [], [], [], []
    for group in merged:
        w = np.array([1.0 / max(f[2], 1e-12) ** 2 for f in group])
        levels.append(float(np.exp(np.sum(w * np.log([f[0] for f in group])) / w.sum())))
        nus.append(float(np.sum(w * [f[1] for f in group]) / w.sum()))
        ses.append(float(1.0 / math.sqrt(w.sum())))
        dtods.append(float(np.mean([f[3] for f in group])))
    return FitResult(
        model="pcm",
        params={
            "levels_s": levels,
            "nu_levels": nus,
            "nu": float(np.mean(nus)),
            "nu_dtod": float(np.mean(dtods)),
            "t0_s": float(t0_s),
        },
        stderr={f"nu_levels[{k}]": se for k, se in enumerate(ses)},
        residual_rms=float("nan"),
        n_points=int(sum(f[4] for f in found)),
        source=source,
    )
