"""Device-model fitting: pulse-response data measured on any backend -> simulator parameters.

The loop this closes is *measure -> fit -> simulate*: ``measure_pulse_response`` on a
backend (simulator, mock lab, bench) gives mean LTP/LTD curves; ``fit_neurosim`` fits the
NeuroSim exponential LTP/LTD law (``docs/devices.md#neurosim-nonlinear-ltp-and-ltd``) to
them by weighted nonlinear least squares and returns a versioned ``FitResult`` whose
``to_yaml`` file ``build_device_model`` (and so ``SimBackend({"device": path})``) loads
directly.

Model (``memhil.devices.neurosim``), k pulses from the prepared start::

    LTP from G_min:  G(k) = min(G_min + (G_max - G_min) (1 - e^{-k/A_ltp}) / (1 - e^{-P_max/A_ltp}), G_max)
    LTD from G_max:  G(k) = max(G_max - (G_max - G_min) (1 - e^{-k/A_ltd}) / (1 - e^{-P_max/A_ltd}), G_min)

Fitted: ``g_min_s``, ``g_max_s``, ``a_ltp`` (and ``a_ltd`` with a down curve); ``p_max`` is
held fixed (it is nearly degenerate with A and G_max on a curve that saturates; pass the
value the device is specified with, default NeuroSim's 31). The curves must start from the
prepared state (a full RESET before the LTP train, a full SET before the LTD train), as
``measure_pulse_response(..., prepare=...)`` does.

Uncertainties: residuals are weighted by sigma_k = spread_k / sqrt(n_cells) when the
response carries its across-cell spread and ``n_cells`` is given (floored at 1e-4 of the
conductance span so a clamped, spread-free point cannot dominate), else unweighted;
covariance = s^2 (J^T J)^-1 with s^2 = sum(r^2) / (m - p) of the weighted residuals, the
usual scaled estimate (robust to a mis-stated noise level).

Parameter file: ``build_device_model`` rejects unknown keys, so the fit metadata cannot sit
in the mapping as a ``memhil_fit:`` key. ``to_yaml`` writes it twice instead: as a YAML
comment block at the top of the parameter file (human-readable, ignored by the loader) and
in a sidecar ``<path>.fit.json`` that ``FitResult.load`` reads back.

VTEAM (a threshold ODE model) is fitted from pulse trains at several amplitudes by
``memhil.calibration.fit.vteam.fit_vteam``, into the same ``FitResult`` and files.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.optimize import least_squares

from memhil.calibration.pulse_response import PulseResponse

#: NeuroSim RealDevice default P_max (pulses from G_min to G_max).
DEFAULT_P_MAX = 31.0
FIT_FORMAT = 1


def _plain(value: Any) -> Any:
    """Numbers as floats, flags as bools, names as strings, nested sequences (the tables of
    a data-driven model) as lists."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str):
        return value
    return float(value)


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _content_hash(model: str, params: Mapping[str, Any]) -> str:
    blob = json.dumps(
        {"model": model, "params": {k: params[k] for k in sorted(params)}},
        sort_keys=True,
        default=float,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class FitResult:
    """A fitted device model: parameters (the complete mapping ``build_device_model`` takes,
    less ``model``), 1-sigma standard errors of the fitted ones, residual RMS (S) and the
    number of points used. ``version`` = ``<content hash>@<UTC timestamp>``."""

    model: str
    params: dict[str, Any]
    stderr: dict[str, float]
    residual_rms: float
    n_points: int
    version: str = ""
    source: str = ""
    date: str = ""
    covariance: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.date:
            self.date = _now_iso()
        if not self.version:
            self.version = f"{_content_hash(self.model, self.params)}@{self.date}"

    # -- using the fit ------------------------------------------------------------------
    def device_config(self) -> dict[str, Any]:
        """The mapping for ``SimBackend({"device": ...})`` / ``build_device_model``."""
        return {"model": self.model, **{k: _plain(v) for k, v in self.params.items()}}

    def device_model(self):
        from memhil.devices import build_device_model

        return build_device_model(self.device_config())

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FIT_FORMAT,
            "version": self.version,
            "date": self.date,
            "source": self.source,
            "stderr": dict(self.stderr),
            "residual_rms_s": self.residual_rms,
            "n_points": self.n_points,
            "covariance": self.covariance,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.device_config(), "memhil_fit": self.metadata()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FitResult:
        data = dict(data)
        meta = dict(data.pop("memhil_fit", {}) or {})
        model = data.pop("model")
        return cls(
            model=model,
            params={k: v for k, v in data.items()},
            stderr=dict(meta.get("stderr", {})),
            residual_rms=float(meta.get("residual_rms_s", float("nan"))),
            n_points=int(meta.get("n_points", 0)),
            version=meta.get("version", ""),
            source=meta.get("source", ""),
            date=meta.get("date", ""),
            covariance=dict(meta.get("covariance", {})),
        )

    # -- files --------------------------------------------------------------------------
    @staticmethod
    def sidecar_path(path: str | Path) -> Path:
        path = Path(path)
        return path.with_name(path.name + ".fit.json")

    def to_yaml(self, path: str | Path) -> Path:
        """Write the parameter file (loadable by ``build_device_model``) with the fit
        metadata as a leading comment block, plus the sidecar ``<path>.fit.json``."""
        path = Path(path)
        meta = self.metadata()
        comment = yaml.safe_dump(
            {
                "memhil_fit": {
                    k: meta[k]
                    for k in ("version", "date", "source", "stderr", "residual_rms_s", "n_points")
                }
            },
            sort_keys=False,
        )
        header = "".join(f"# {line}\n" for line in comment.splitlines())
        body = yaml.safe_dump(self.device_config(), sort_keys=False)
        path.write_text(
            f"# memhil fitted device parameters (fit metadata also in "
            f"{self.sidecar_path(path).name})\n{header}{body}"
        )
        self.sidecar_path(path).write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> FitResult:
        """Read a parameter file written by ``to_yaml`` (metadata from its sidecar)."""
        from memhil.core.config import load_yaml

        data = load_yaml(path)
        side = cls.sidecar_path(path)
        if side.exists():
            data["memhil_fit"] = json.loads(side.read_text()).get("memhil_fit", {})
        return cls.from_dict(data)


# -- NeuroSim -----------------------------------------------------------------------------


def _sat(p_max: float, a: float) -> float:
    return 1.0 / -math.expm1(-p_max / a)


def neurosim_curve(
    k: np.ndarray, g_min: float, g_max: float, a: float, p_max: float, rising: bool
) -> np.ndarray:
    """Mean G after ``k`` pulses on the NeuroSim LTP (``rising``) or LTD curve."""
    frac = -np.expm1(-np.asarray(k, dtype=float) / a) * _sat(p_max, a)
    frac = np.minimum(frac, 1.0)
    span = g_max - g_min
    return g_min + frac * span if rising else g_max - frac * span


def _curve_data(
    resp: PulseResponse, n_cells: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    g = resp.g_curve_s.numpy().astype(float)
    k = np.arange(g.size, dtype=float)
    sigma = None
    if n_cells is not None and resp.spread_s is not None:
        sigma = resp.spread_s.numpy().astype(float) / math.sqrt(n_cells)
    return k, g, sigma


def fit_neurosim(
    up: PulseResponse,
    down: PulseResponse | None = None,
    *,
    p_max: float = DEFAULT_P_MAX,
    n_cells: int | None = None,
    fixed: Mapping[str, Any] | None = None,
    source: str = "",
) -> FitResult:
    """Fit the NeuroSim LTP (``up``) and optionally LTD (``down``) curve.

    ``up`` must be a rising response that starts from a full RESET, ``down`` a falling one
    that starts from a full SET. ``n_cells`` (cells averaged per point) turns the responses'
    spreads into weights. ``fixed`` adds non-fitted parameters (e.g. ``c2c_std``,
    ``v_threshold_v``) to the result's mapping; ``p_max`` is held at the given value.
    Without a down curve ``a_ltd`` is set equal to ``a_ltp`` and has no stderr.
    """
    if not up.rising:
        raise ValueError("fit_neurosim: `up` must be a potentiating (positive-amplitude) response")
    if down is not None and down.rising:
        raise ValueError("fit_neurosim: `down` must be a depressing (negative-amplitude) response")
    curves = [(up, True)] + ([(down, False)] if down is not None else [])
    data = [(*_curve_data(r, n_cells), rising) for r, rising in curves]

    g_all = np.concatenate([d[1] for d in data])
    scale = float(np.max(np.abs(g_all))) or 1.0  # work in units of the largest G
    span0 = float(g_all.max() - g_all.min()) or scale
    floor = 1e-4 * span0
    weights = []
    for _k, g, sigma, _ in data:
        weights.append(np.ones_like(g) if sigma is None else 1.0 / np.maximum(sigma, floor) * floor)

    names = ["g_min_s", "g_max_s", "a_ltp"] + (["a_ltd"] if down is not None else [])

    def residuals(x: np.ndarray) -> np.ndarray:
        g_min, g_max = x[0] * scale, x[1] * scale
        out = []
        for i, (k, g, _, rising) in enumerate(data):
            a = x[2] if rising else x[3]
            out.append((neurosim_curve(k, g_min, g_max, a, p_max, rising) - g) / scale * weights[i])
        return np.concatenate(out)

    # start: ends of the curves and a mid nonlinearity
    x0 = np.array(
        [g_all.min() / scale, g_all.max() / scale, p_max / 4]
        + ([p_max / 4] if down is not None else [])
    )
    lo = np.array([0.0, 0.0, 1e-2 * p_max] + ([1e-2 * p_max] if down is not None else []))
    hi = np.array([np.inf, np.inf, 1e3 * p_max] + ([1e3 * p_max] if down is not None else []))
    x0 = np.clip(x0, lo + 1e-9, None)
    sol = least_squares(
        residuals,
        x0,
        bounds=(lo, hi),
        x_scale="jac",
        method="trf",
        xtol=1e-12,
        ftol=1e-12,
        gtol=1e-12,
    )

    m, p = sol.fun.size, sol.x.size
    s2 = float(sol.fun @ sol.fun) / max(m - p, 1)
    jac = sol.jac
    try:
        cov = np.linalg.inv(jac.T @ jac) * s2
    except np.linalg.LinAlgError:
        cov = np.linalg.pinv(jac.T @ jac) * s2
    unit = np.array([scale, scale, 1.0] + ([1.0] if down is not None else []))
    cov = cov * np.outer(unit, unit)
    values = sol.x * unit
    stderr = {n: float(math.sqrt(max(cov[i, i], 0.0))) for i, n in enumerate(names)}

    # unweighted residual RMS in siemens
    parts = []
    for k, g, _, rising in data:
        a = values[2] if rising else values[3]
        parts.append(neurosim_curve(k, values[0], values[1], a, p_max, rising) - g)
    raw = np.concatenate(parts)

    params: dict[str, float] = {n: float(v) for n, v in zip(names, values)}
    if down is None:
        params["a_ltd"] = params["a_ltp"]
    params["p_max"] = float(p_max)
    for key, value in (fixed or {}).items():
        if key in names:
            raise ValueError(f"fit_neurosim: {key!r} is fitted and cannot be fixed")
        params[key] = value
    # validate against the model's own checks now, not when the file is loaded
    from memhil.devices import build_device_model

    build_device_model({"model": "neurosim", **params})
    cov_d = {a: {b: float(cov[i, j]) for j, b in enumerate(names)} for i, a in enumerate(names)}
    return FitResult(
        model="neurosim",
        params=params,
        stderr=stderr,
        residual_rms=float(np.sqrt(np.mean(raw**2))),
        n_points=int(m),
        source=source,
        covariance=cov_d,
    )


__all__ = ["FitResult", "fit_neurosim", "neurosim_curve", "DEFAULT_P_MAX"]
