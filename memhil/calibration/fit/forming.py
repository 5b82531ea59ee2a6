"""Fit of the forming-RRAM model's breakdown-voltage distribution from a forming ramp
(``memhil.devices.forming``, docs/devices.md#stochastic-forming-rram).

A ramp reads every cell after each step, so a cell's breakdown voltage is only known to
lie between the step before the one that formed it and that step (interval-censored), and
a cell still pristine at the last step has V_bd above it (right-censored). The maximum-
likelihood normal ``N(v_bd_mean_v, v_bd_sigma_v^2)`` over those intervals is the fit;
standard errors from the inverse of the numerical Hessian of the negative log-likelihood.
The formed conductance is log-normal: the median and log-sigma of the reads right after
forming (each capped by its compliance, so cells at the cap are left out).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize
from scipy.stats import norm

from memhil.calibration.fit.neurosim import FitResult


def _hessian(f, x: np.ndarray, h: np.ndarray) -> np.ndarray:
    n = x.size
    out = np.empty((n, n))
    for i in range(n):  # central differences over the 2 parameters
        for j in range(n):
            ei, ej = np.eye(n)[i] * h[i], np.eye(n)[j] * h[j]
            out[i, j] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (
                4 * h[i] * h[j]
            )
    return out


def fit_breakdown(
    v_low: np.ndarray,
    v_high: np.ndarray,
    *,
    g_formed_s: np.ndarray | None = None,
    source: str = "",
) -> FitResult:
    """Normal V_bd from intervals ``(v_low, v_high]`` per cell (``v_high`` = inf for a
    cell never formed, ``v_low`` = -inf for one formed by the first step); with
    ``g_formed_s`` (reads after forming, uncapped cells) also the formed log-normal."""
    lo, hi = np.asarray(v_low, dtype=float), np.asarray(v_high, dtype=float)
    if lo.size == 0 or not np.isfinite(hi).any():
        raise ValueError("no cell formed in the ramp: the breakdown voltage is not measurable")

    def nll(theta: np.ndarray) -> float:
        mu, log_sigma = theta
        sigma = math.exp(log_sigma)
        p = norm.cdf((hi - mu) / sigma) - norm.cdf((lo - mu) / sigma)
        return float(-np.sum(np.log(np.clip(p, 1e-300, None))))

    finite = np.concatenate([lo[np.isfinite(lo)], hi[np.isfinite(hi)]])
    start = np.array([np.median(finite), math.log(max(np.std(finite), 1e-3))])
    res = minimize(nll, start, method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10})
    mu, log_sigma = res.x
    sigma = math.exp(log_sigma)
    cov = np.linalg.inv(_hessian(nll, res.x, np.array([1e-4, 1e-4])))
    params = {"v_bd_mean_v": float(mu), "v_bd_sigma_v": float(sigma)}
    stderr = {
        "v_bd_mean_v": float(math.sqrt(max(cov[0, 0], 0.0))),
        "v_bd_sigma_v": float(sigma * math.sqrt(max(cov[1, 1], 0.0))),  # delta method
    }
    if g_formed_s is not None and np.size(g_formed_s) >= 3:
        ln_g = np.log(np.asarray(g_formed_s, dtype=float))
        params["g_formed_median_s"] = float(math.exp(ln_g.mean()))
        params["g_formed_log_sigma"] = float(ln_g.std(ddof=1))
        stderr["g_formed_median_s"] = params["g_formed_median_s"] * float(
            ln_g.std(ddof=1) / math.sqrt(ln_g.size)
        )
        stderr["g_formed_log_sigma"] = params["g_formed_log_sigma"] / math.sqrt(2 * (ln_g.size - 1))
    return FitResult(
        model="rram_forming",
        params=params,
        stderr=stderr,
        residual_rms=float("nan"),
        n_points=int(lo.size),
        source=source,
    )
