"""Transients after and under bias: ``volatility`` (reads at log-spaced times right after
programming, and the relaxation time constant fitted per cell; ArC ONE's VolatilityRead)
and ``chronoamperometry`` (current vs time under a constant bias held as consecutive
pulses, each followed by a read at the bias; ArC ONE's ChronoAmperometry).

Each is one unit: a relaxation or a hold interrupted half-way is measured again on
resume, from the programming pulse or the start of the hold.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from memhil.core.config import require
from memhil.protocols.common import check_cells, positive, read_columns, resolve_cells
from memhil.protocols.plan import (
    EnergyCheck,
    Now,
    Pulse,
    Read,
    Wait,
    cell_records,
    keys,
    unit,
)


def log_times(t_first_s: float, t_last_s: float, n: int) -> list[float]:
    """``n`` log-spaced times from ``t_first_s`` to ``t_last_s`` (s)."""
    if n == 1:
        return [t_last_s]
    r = (t_last_s / t_first_s) ** (1 / (n - 1))
    return [t_first_s * r**k for k in range(n)]


@dataclass(frozen=True)
class VolatilityParams:
    program_v: float = 1.0
    program_width_s: float = 1e-6
    program_count: int = 1
    compliance_a: float = 1e-3
    t_first_s: float = 1e-6  # first read after the end of programming
    t_last_s: float = 1.0
    n_points: int = 30
    v_read_v: float = 0.2
    cells: tuple[tuple[int, int, int], ...] | None = None

    def __post_init__(self) -> None:
        positive(
            self,
            "program_width_s",
            "program_count",
            "compliance_a",
            "t_first_s",
            "t_last_s",
            "n_points",
            "v_read_v",
        )
        require(self.program_v != 0, "program_v", "must be non-zero (its sign is the polarity)")
        require(
            self.t_first_s < self.t_last_s,
            "t_last_s",
            f"must be > t_first_s ({self.t_first_s} s), got {self.t_last_s} s",
        )
        require(self.n_points >= 4, "n_points", f"must be >= 4 to fit, got {self.n_points}")
        check_cells(self.cells)


def _relaxation(t, g_inf, a, tau):
    return g_inf + a * np.exp(-t / tau)


def fit_relaxation(t_s: np.ndarray, g_s: np.ndarray) -> tuple[float, float, float, float]:
    """(tau_s, tau_err_s, g_inf, amplitude) of ``G(t) = g_inf + a exp(-t / tau)`` by
    nonlinear least squares (scipy's ``curve_fit``; the error is the 1-sigma of its
    covariance, scaled by the residuals); NaNs when the fit fails."""
    # imported here: scipy.optimize costs ~1 s to import, which every protocol lookup
    # (the registry imports this module) would otherwise pay
    from scipy.optimize import OptimizeWarning, curve_fit

    g0, g1 = float(g_s[0]), float(g_s[-1])
    half = g1 + 0.5 * (g0 - g1)
    cross = np.nonzero((g_s - half) * np.sign(g0 - g1) <= 0)[0]
    tau0 = float(t_s[cross[0]]) / math.log(2) if cross.size else float(np.sqrt(t_s[0] * t_s[-1]))
    scale = max(abs(g0), abs(g1), 1e-30)
    try:
        with warnings.catch_warnings():  # flat data (the pre-flight's): NaN error, no warning
            warnings.simplefilter("ignore", OptimizeWarning)
            popt, pcov = curve_fit(
                lambda t, gi, a, lt: _relaxation(t, gi, a, np.exp(lt)),
                t_s,
                g_s / scale,
                p0=(g1 / scale, (g0 - g1) / scale, math.log(max(tau0, 1e-30))),
                maxfev=5000,
            )
    except (RuntimeError, ValueError):
        return (math.nan,) * 4
    tau = float(np.exp(popt[2]))
    err = float(tau * np.sqrt(pcov[2, 2])) if np.isfinite(pcov[2, 2]) else math.nan
    return tau, err, float(popt[0]) * scale, float(popt[1]) * scale


def volatility_plan(p: VolatilityParams, caps):
    cells = resolve_cells(p.cells, caps)

    def body():
        yield Pulse(
            cells,
            p.program_v,
            p.program_width_s,
            p.program_count,
            p.compliance_a,
            keys(
                amplitude="program_v",
                width="program_width_s",
                count="program_count",
                compliance="compliance_a",
            ),
        )
        t0 = yield Now()
        ts, gs = [], []
        for k, t in enumerate(log_times(p.t_first_s, p.t_last_s, p.n_points)):
            now = yield Now()
            if t0 + t > now:
                yield Wait(t0 + t - now)
            t_read = (yield Now()) - t0  # the read samples G as the clock stands
            r = yield Read(cells, "volatility", p.v_read_v, keys(v_read="v_read_v"))
            ts.append(t_read)
            gs.append(r.g_s.double())
            yield from cell_records(
                "volatility",
                cells,
                {"record": "read", "index": k},
                {"t_s": [t_read] * len(cells), **read_columns(r)},
            )
        t = np.asarray(ts)
        g = torch.stack(gs).numpy()
        fits = [fit_relaxation(t, g[:, n]) for n in range(len(cells))]  # scipy: per cell
        cols = list(zip(*fits))
        yield from cell_records(
            "volatility",
            cells,
            {"record": "fit", "index": len(ts)},
            {
                "tau_s": cols[0],
                "tau_err_s": cols[1],
                "g_inf": cols[2],
                "g_volatile": cols[3],
                "t_min_s": [ts[0]] * len(cells),  # the shortest interval this backend reached
            },
        )

    yield from unit(("volatility",), body())


@dataclass(frozen=True)
class ChronoParams:
    v_bias_v: float = 0.2
    duration_s: float = 1.0
    n_points: int = 30
    spacing: Literal["linear", "log"] = "log"
    t_first_s: float = 1e-6  # log spacing: the first sample
    compliance_a: float = 1e-3
    cells: tuple[tuple[int, int, int], ...] | None = None

    def __post_init__(self) -> None:
        positive(self, "duration_s", "n_points", "t_first_s", "compliance_a")
        require(self.v_bias_v != 0, "v_bias_v", "must be non-zero")
        require(
            self.spacing in ("linear", "log"),
            "spacing",
            f"is 'linear' or 'log', got {self.spacing!r}",
        )
        require(
            self.t_first_s < self.duration_s,
            "t_first_s",
            f"must be < duration_s ({self.duration_s} s), got {self.t_first_s} s",
        )
        check_cells(self.cells)

    def times(self) -> list[float]:
        """The sample times (s from the start of the hold), ending at ``duration_s``."""
        if self.spacing == "log":
            return log_times(self.t_first_s, self.duration_s, self.n_points)
        return [self.duration_s * (k + 1) / self.n_points for k in range(self.n_points)]


def chronoamperometry_plan(p: ChronoParams, caps):
    """The bias is held as one pulse per interval between samples; each sample is a read
    at the bias itself (so ``|v_bias_v|`` must lie within the read limit). The energy
    limit is applied to the whole hold first (``EnergyCheck``), then per segment. Records
    ``t_s`` (the clock since the hold began, reads included) and ``t_pulsed_s`` (the time
    under the bias pulses alone: a backend whose reads take long, or do not act on the
    device, tells the two apart)."""
    cells = resolve_cells(p.cells, caps)

    def body():
        yield EnergyCheck(
            p.v_bias_v,
            p.duration_s,
            p.compliance_a,
            keys(amplitude="v_bias_v", width="duration_s", compliance="compliance_a"),
        )
        t0 = yield Now()
        t_prev = 0.0
        for k, t in enumerate(p.times()):
            yield Pulse(
                cells,
                p.v_bias_v,
                t - t_prev,
                1,
                p.compliance_a,
                keys(amplitude="v_bias_v", width="duration_s", compliance="compliance_a"),
            )
            t_prev = t
            t_now = (yield Now()) - t0
            r = yield Read(cells, "chrono", p.v_bias_v, keys(v_read="v_bias_v"))
            yield from cell_records(
                "chronoamperometry",
                cells,
                {"index": k},
                {"t_s": [t_now] * len(cells), "t_pulsed_s": [t] * len(cells), **read_columns(r)},
            )

    yield from unit(("chronoamperometry",), body())
