"""Fit the VTEAM model (``memhil.devices.vteam``) to pulse trains measured at
several amplitudes, with parameter uncertainties.

Why several amplitudes: without a window, one VTEAM pulse of amplitude v and width w moves
the state by a constant ``dx = (k / D) w (|v| / v_th - 1)^alpha`` (x-independent), so one
train only fixes one ``dx`` per polarity; ``k``, ``v_th`` and ``alpha`` follow from how
``dx`` grows with the amplitude (three or more amplitudes per polarity).

Model of the measured mean curve: a fixed population of ``n_pop`` virtual cells whose
D2D parameters are ``nominal * exp(spread * z)`` (the simulator's log-normal D2D; the
spreads are held at the given values, the z are a seeded standard-normal sample) is run
through the applied pulse sequence in closed form, block by block (a block is a run of
identical pulses: ``x_k = clip(x_start + k dx, 0, 1)``, exact for a monotone block), and
``G = 1 / (R_on + (R_off - R_on) x)`` is averaged over the cells. C2C noise (``dx_std``)
has zero mean away from the bounds and is not modelled. The start state is inferred from
the first mean read (the as-fabricated or a saturated state gives x = 1 or 0).

Fitted: ``r_on_ohm``, ``r_off_ohm``, ``k_on_m_per_s``, ``v_on_v``, ``alpha_on``,
``k_off_m_per_s``, ``v_off_v``, ``alpha_off`` (a polarity without pulses in the data keeps
its given value). Held: ``d_m`` (only k / D is identifiable), the D2D spreads, ``dx_std``,
``x0``. Least squares (scipy ``least_squares``, trust-region) on log-parameters, residuals
weighted by the across-cell spread / sqrt(n_cells) of each point (floored at 1e-3 of the
conductance span); covariance = s^2 (J^T J)^-1 (s^2 the reduced chi-square), mapped back
to the parameters (sigma_p = p sigma_log p). Saved like ``fit_neurosim``: a versioned
``FitResult`` (YAML + ``.fit.json`` sidecar) that the simulator and the mock chip load.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from memhil.calibration.fit.neurosim import FitResult

FITTED = (
    "r_on_ohm",
    "r_off_ohm",
    "k_on_m_per_s",
    "v_on_v",
    "alpha_on",
    "k_off_m_per_s",
    "v_off_v",
    "alpha_off",
)
_ON = ("k_on_m_per_s", "v_on_v", "alpha_on")
_OFF = ("k_off_m_per_s", "v_off_v", "alpha_off")
# D2D spread parameter of each per-device quantity (as in the simulator's VTEAM)
_D2D = {
    "r_on_ohm": "r_on_dtod",
    "r_off_ohm": "r_off_dtod",
    "v_on_v": "v_on_dtod",
    "v_off_v": "v_off_dtod",
    "k_on_m_per_s": "k_on_dtod",
    "k_off_m_per_s": "k_off_dtod",
}
_HELD = ("d_m", "x0", "dx_std", *_D2D.values())


@dataclass(frozen=True)
class PulseSequence:
    """A measured pulse sequence: ``amplitude_v[j]``, ``width_s[j]`` of pulse j (in the
    order applied) and the mean conductance ``g_mean_s`` (n + 1 values: before the first
    pulse and after each), optionally its across-cell std ``g_std_s``, over ``n_cells``."""

    amplitude_v: np.ndarray
    width_s: np.ndarray
    g_mean_s: np.ndarray
    g_std_s: np.ndarray | None = None
    n_cells: int | None = None

    def __post_init__(self) -> None:
        a = np.asarray(self.amplitude_v, dtype=float).ravel()
        w = np.broadcast_to(np.asarray(self.width_s, dtype=float), a.shape).copy()
        g = np.asarray(self.g_mean_s, dtype=float).ravel()
        if g.size != a.size + 1:
            raise ValueError(
                f"g_mean_s needs {a.size + 1} values (before and after each of "
                f"{a.size} pulses), got {g.size}"
            )
        object.__setattr__(self, "amplitude_v", a)
        object.__setattr__(self, "width_s", w)
        object.__setattr__(self, "g_mean_s", g)
        if self.g_std_s is not None:
            s = np.asarray(self.g_std_s, dtype=float).ravel()
            if s.size != g.size:
                raise ValueError(f"g_std_s needs {g.size} values, got {s.size}")
            object.__setattr__(self, "g_std_s", s)

    def blocks(self) -> list[tuple[float, float, int]]:
        """Runs of identical pulses: (amplitude, width, count)."""
        out: list[tuple[float, float, int]] = []
        for v, w in zip(self.amplitude_v.tolist(), self.width_s.tolist()):
            if out and out[-1][0] == v and out[-1][1] == w:
                out[-1] = (v, w, out[-1][2] + 1)
            else:
                out.append((v, w, 1))
        return out


def _defaults() -> dict[str, Any]:
    import dataclasses

    from memhil.devices.vteam import VTEAMDevice

    return {f.name: f.default for f in dataclasses.fields(VTEAMDevice.Params)}


def population_curve(
    seq: PulseSequence, params: Mapping[str, float], z: np.ndarray, x_start: float | None = None
) -> np.ndarray:
    """Mean G (S) before and after each pulse of ``seq`` of a VTEAM population (no window,
    linear I-V) with nominal ``params`` and D2D normal deviates ``z`` (6, n_pop)."""
    cell = {name: params[name] * np.exp(params[_D2D[name]] * z[i]) for i, name in enumerate(_D2D)}
    r_on, r_off = cell["r_on_ohm"], cell["r_off_ohm"]
    if x_start is None:  # from the first mean read, nominal resistances
        x_start = (1.0 / seq.g_mean_s[0] - params["r_on_ohm"]) / (
            params["r_off_ohm"] - params["r_on_ohm"]
        )
    x = np.full(r_on.shape, float(np.clip(x_start, 0.0, 1.0)))
    d = params["d_m"]
    out = [np.mean(1.0 / (r_on + (r_off - r_on) * x))]
    for v, w, n in seq.blocks():
        on = np.maximum(v / cell["v_on_v"] - 1.0, 0.0) ** params["alpha_on"]
        off = np.maximum(-v / cell["v_off_v"] - 1.0, 0.0) ** params["alpha_off"]
        dx = (off * cell["k_off_m_per_s"] - on * cell["k_on_m_per_s"]) / d * w
        k = np.arange(1, n + 1, dtype=float)[:, None]
        xs = np.clip(x[None, :] + k * dx[None, :], 0.0, 1.0)
        out.extend(np.mean(1.0 / (r_on + (r_off - r_on) * xs), axis=1).tolist())
        x = xs[-1]
    return np.asarray(out)


def fit_vteam(
    sequences: Sequence[PulseSequence],
    *,
    fixed: Mapping[str, Any] | None = None,
    start: Mapping[str, float] | None = None,
    n_pop: int = 512,
    seed: int = 0,
    source: str = "",
) -> FitResult:
    """Fit VTEAM to one or more measured pulse sequences (each from its own start state).

    ``fixed``: held parameters (``d_m``, the ``*_dtod`` spreads, ``dx_std``, ``x0``, or any
    fitted name to hold it); default the model's own defaults. ``start``: initial guesses
    (default: model defaults; R_on / R_off from the largest / smallest mean G).
    """
    params = _defaults()
    fixed = dict(fixed or {})
    for key in ("iv", "window"):
        if key in fixed and fixed.pop(key) != _defaults()[key]:
            raise ValueError(
                f"fit_vteam: only the linear I-V law without a window is fitted "
                f"(closed form); got {key}"
            )
    unknown = set(fixed) - set(FITTED) - set(_HELD)
    if unknown:
        raise ValueError(
            f"fit_vteam: unknown parameter(s) {sorted(unknown)} "
            f"(fitted: {list(FITTED)}, held: {list(_HELD)})"
        )
    params.update({k: float(v) for k, v in fixed.items()})
    g_all = np.concatenate([s.g_mean_s for s in sequences])
    guess = {"r_on_ohm": 1.0 / g_all.max(), "r_off_ohm": 1.0 / g_all.min()}
    guess.update(start or {})
    for k, v in guess.items():
        if k not in fixed:
            params[k] = float(v)
    amps = np.concatenate([s.amplitude_v for s in sequences])
    names = [
        n
        for n in FITTED
        if n not in fixed
        and not (n in _ON and not (amps > 0).any())
        and not (n in _OFF and not (amps < 0).any())
    ]
    z = np.random.default_rng(seed).standard_normal((len(_D2D), n_pop))

    span = float(g_all.max() - g_all.min()) or float(g_all.max())
    weights = []
    for s in sequences:
        if s.g_std_s is not None and s.n_cells:
            sigma = np.maximum(s.g_std_s / math.sqrt(s.n_cells), 1e-3 * span)
        else:
            sigma = np.full(s.g_mean_s.shape, 1e-3 * span)
        weights.append(1.0 / sigma)

    def with_x(x: np.ndarray) -> dict[str, float]:
        return {**params, **{n: float(math.exp(v)) for n, v in zip(names, x)}}

    def residuals(x: np.ndarray) -> np.ndarray:
        p = with_x(x)
        if p["r_off_ohm"] <= p["r_on_ohm"]:
            return np.full(sum(s.g_mean_s.size for s in sequences), 1e6)
        return np.concatenate(
            [(population_curve(s, p, z) - s.g_mean_s) * w for s, w in zip(sequences, weights)]
        )

    x0 = np.log([params[n] for n in names])
    lo, hi = x0 - math.log(1e3), x0 + math.log(1e3)
    for i, n in enumerate(names):  # exponents: 0.2 .. 10
        if n.startswith("alpha"):
            lo[i], hi[i] = math.log(0.2), math.log(10.0)
    x0 = np.clip(x0, lo + 1e-9, hi - 1e-9)
    sol = least_squares(
        residuals,
        x0,
        bounds=(lo, hi),
        method="trf",
        x_scale="jac",
        diff_step=1e-6,
        xtol=1e-12,
        ftol=1e-12,
        gtol=1e-12,
        max_nfev=2000,
    )
    m, k = sol.fun.size, sol.x.size
    s2 = float(sol.fun @ sol.fun) / max(m - k, 1)
    jtj = sol.jac.T @ sol.jac
    try:
        cov_log = np.linalg.inv(jtj) * s2
    except np.linalg.LinAlgError:
        cov_log = np.linalg.pinv(jtj) * s2
    values = np.exp(sol.x)
    cov = cov_log * np.outer(values, values)
    fitted = with_x(sol.x)
    raw = np.concatenate([population_curve(s, fitted, z) - s.g_mean_s for s in sequences])
    out = {n: float(fitted[n]) for n in FITTED + _HELD}
    from memhil.devices import build_device_model

    build_device_model({"model": "vteam", **out})  # the model's own checks, now
    return FitResult(
        model="vteam",
        params=out,
        stderr={n: float(math.sqrt(max(cov[i, i], 0.0))) for i, n in enumerate(names)},
        residual_rms=float(np.sqrt(np.mean(raw**2))),
        n_points=int(m),
        source=source,
        covariance={
            a: {b: float(cov[i, j]) for j, b in enumerate(names)} for i, a in enumerate(names)
        },
    )


__all__ = ["FITTED", "PulseSequence", "fit_vteam", "population_curve"]
