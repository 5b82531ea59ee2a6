"""Data-driven nonlinear LTP/LTD device of NeuroSim (MLP_NeuroSim V3, ``RealDevice``).

Source: P.-Y. Chen, X. Peng, S. Yu, "NeuroSim: a circuit-level macro model for benchmarking
neuro-inspired architectures", IEEE TCAD 37, 3067 (2018), and the
``neurosim/MLP_NeuroSim_V3.0`` code (``Cell.cpp``, ``formula.cpp``);
``docs/devices.md#neurosim-nonlinear-ltp-and-ltd``.

Potentiation follows G(P) = B (1 - e^{-P/A}) + G_min with B = (G_max - G_min) /
(1 - e^{-P_max/A}); n pulses from G move the pulse position P0 = -A ln(1 - (G - G_min)/B)
to P0 + n. Depression is the mirrored curve (NeuroSim's negative A): distance from G_max
grows along the same form with its own A. Cycle-to-cycle noise is Gaussian with std
``c2c_std * (G_max - G_min) * sqrt(n)``; the result is clipped to [G_min, G_max].

Fitting: ``a_ltp``/``a_ltd`` are in pulses, exactly what a least-squares fit of the curve
to a measured pulse train gives. NeuroSim parameterises them by a nonlinearity label NL
as A = A_norm(NL) * P_max, with A_norm tabulated in ``formula.cpp::getParamA`` for
NL = 0.01..9 (step 0.01); e.g. A_norm(0.01) = 126.27 (almost linear), A_norm(1) = 1.2517,
A_norm(4.22) = 0.24975 (the RealDevice default, NL_LTP = +4.22, NL_LTD = -4.22), A_norm(9)
= 0.0228 (strongly saturating). The NL sign only selects LTP vs LTD; ``a_ltd`` here is the
magnitude. State ``(*shape, 1)``: [G (S)].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from memhil.core.config import require
from memhil.devices.base import D2D, DeviceModel, lognormal_spread, register_alias, register_device


@dataclass(frozen=True)
class NeuroSimParams:
    """Constants of the NeuroSim LTP/LTD curve (SI conductances, A and P_max in pulses).

    Defaults are NeuroSim ``RealDevice``: G_max = 10 µS, G_min = 0.476 µS, 31 levels (pulses
    from G_min to G_max) for LTP and LTD, NL = +/-4.22 (A = 0.249748 * 31 = 7.742 pulses),
    C2C 0.5 % of the range per pulse, no D2D. ``p_max_ltd`` None means = ``p_max``.
    D2D (``*_dtod``): relative log-normal spreads of G_max, G_min and of A (per device,
    LTP and LTD drawn independently; NeuroSim spreads the NL label instead).
    ``v_threshold_v``: pulses with |v| >= it program (a memhil choice; NeuroSim writes with 2 V and
    half-selects at 1 V, so the default sits between). Pulse width does not enter.
    Read noise is not a device parameter here: the simulator's read path adds it
    (``ReadPathConfig.read_noise_rel``).
    """

    g_min_s: float = 0.476e-6
    g_max_s: float = 10e-6
    p_max: float = 31.0
    p_max_ltd: float | None = None
    a_ltp: float = 0.249748 * 31
    a_ltd: float = 0.249748 * 31
    c2c_std: float = 0.005
    g_min_dtod: float = 0.0
    g_max_dtod: float = 0.0
    a_dtod: float = 0.0
    v_threshold_v: float = 1.5

    def __post_init__(self) -> None:
        require(
            0 <= self.g_min_s < self.g_max_s,
            "g_min_s",
            f"need 0 <= g_min_s ({self.g_min_s}) < g_max_s ({self.g_max_s})",
        )
        require(self.p_max > 0, "p_max", f"must be > 0 pulses, got {self.p_max}")
        require(
            self.p_max_ltd is None or self.p_max_ltd > 0,
            "p_max_ltd",
            f"must be > 0 pulses or null, got {self.p_max_ltd}",
        )
        for name in ("a_ltp", "a_ltd", "v_threshold_v"):
            require(getattr(self, name) > 0, name, f"must be > 0, got {getattr(self, name)}")
        for name in ("c2c_std", "g_min_dtod", "g_max_dtod", "a_dtod"):
            require(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")


def _saturation(p_max: Any, a: Any) -> Any:
    """B / (G_max - G_min) = 1 / (1 - e^{-P_max/A}), accurate for nearly linear A >> P_max."""
    if isinstance(a, Tensor):
        return 1.0 / -torch.expm1(-p_max / a)
    return 1.0 / -math.expm1(-p_max / a)


def _pick(up: Tensor, x: Any, y: Any, like: Tensor) -> Any:
    """``x`` where ``up`` else ``y``; stays a Python float when both are the same scalar."""
    if not isinstance(x, Tensor) and not isinstance(y, Tensor) and x == y:
        return x

    def as_t(z: Any) -> Tensor:
        return z if isinstance(z, Tensor) else torch.tensor(z, device=like.device, dtype=like.dtype)

    return torch.where(up, as_t(x), as_t(y))


@register_device("neurosim")
class NeuroSimLTPLTD(DeviceModel):
    """NeuroSim exponential LTP/LTD: positive pulses potentiate, negative depress.

    ``count`` pulses are applied in closed form (no loop): with u the normalised distance
    from the start of the curve (G_min for LTP, G_max for LTD) and b = B/(G_max - G_min),
    u' = u + (b - u)(1 - e^{-n/A}), identical to n single pulses when C2C is 0.
    """

    nominal_set_pulse = (2.0, 80e-9)
    nominal_reset_pulse = (-2.0, 80e-9)

    name = "neurosim"
    state_names = ("g_s",)
    bipolar = True
    drifts = False
    Params = NeuroSimParams

    @property
    def _p_max_ltd(self) -> float:
        return self.p.p_max if self.p.p_max_ltd is None else self.p.p_max_ltd

    # -- curves (for fitting and plots) -----------------------------------------------
    def ltp_curve(self, pulses: Any) -> Tensor:
        """G (S) after ``pulses`` LTP pulses from G_min: B (1 - e^{-P/A}) + G_min."""
        p = self.p
        x = torch.as_tensor(pulses, dtype=torch.float64)
        b = _saturation(p.p_max, p.a_ltp) * (p.g_max_s - p.g_min_s)
        return b * -torch.expm1(-x / p.a_ltp) + p.g_min_s

    def ltd_curve(self, pulses: Any) -> Tensor:
        """G (S) after ``pulses`` LTD pulses from G_max (the mirrored curve)."""
        p = self.p
        x = torch.as_tensor(pulses, dtype=torch.float64)
        b = _saturation(self._p_max_ltd, p.a_ltd) * (p.g_max_s - p.g_min_s)
        return p.g_max_s - b * -torch.expm1(-x / p.a_ltd)

    def pulse_position(self, g_s: Any, ltd: bool = False) -> Tensor:
        """Pulse position P0 of conductance ``g_s`` on the LTP (or LTD) curve."""
        p = self.p
        g = torch.as_tensor(g_s, dtype=torch.float64)
        a, p_max = (p.a_ltd, self._p_max_ltd) if ltd else (p.a_ltp, p.p_max)
        u = ((p.g_max_s - g) if ltd else (g - p.g_min_s)) / (p.g_max_s - p.g_min_s)
        return -a * torch.log1p(-u.clamp(0.0, 1.0) / _saturation(p_max, a))

    # -- plugin interface -------------------------------------------------------------
    def sample_d2d(self, shape, generator, device="cpu", dtype=torch.float32) -> D2D:
        """Per-device G_min, G_max (``g_min_s``, ``g_max_s``) and A (``a_ltp``, ``a_ltd``),
        only for spreads > 0; G_max is kept above G_min."""
        p = self.p
        dd = (shape, generator, device, dtype)
        d2d: D2D = {}
        if p.g_min_dtod > 0 or p.g_max_dtod > 0:
            g_min = lognormal_spread(p.g_min_s, p.g_min_dtod, *dd)
            g_max = lognormal_spread(p.g_max_s, p.g_max_dtod, *dd)
            d2d["g_min_s"] = g_min
            d2d["g_max_s"] = torch.maximum(g_max, g_min * 1.01)
        if p.a_dtod > 0:
            d2d["a_ltp"] = lognormal_spread(p.a_ltp, p.a_dtod, *dd)
            d2d["a_ltd"] = lognormal_spread(p.a_ltd, p.a_dtod, *dd)
        return d2d

    def initial_state(self, d2d, shape, generator, device="cpu", dtype=torch.float32) -> Tensor:
        """As NeuroSim: every cell starts at G_min."""
        g_min = d2d.get("g_min_s", self.p.g_min_s)
        state = torch.empty((*shape, 1), device=device, dtype=dtype)
        state[..., 0] = g_min
        return state

    def conductance(self, state: Tensor, d2d: D2D, v_read: float | Tensor, t_s: float) -> Tensor:
        return state[..., 0].clone()

    def conductance_range(self) -> tuple[float, float]:
        return (self.p.g_min_s, self.p.g_max_s)

    def conductance_ceiling(self, d2d: D2D) -> float:
        """Both curves saturate at G_max."""
        return float(d2d["g_max_s"].max()) if "g_max_s" in d2d else self.p.g_max_s

    def step(self, state, d2d, v, width_s, count, t_s, generator, compliance_a=None) -> Tensor:
        """``count`` LTP (v >= v_th) or LTD (v <= -v_th) pulses in closed form, + C2C noise."""
        p = self.p
        g = state[..., 0]
        pulsed = count > 0
        up = pulsed & (v >= p.v_threshold_v)
        down = pulsed & (v <= -p.v_threshold_v)
        prog = up | down
        if not bool(prog.any()):
            return state.clone()
        g_min = d2d.get("g_min_s", p.g_min_s)
        g_max = d2d.get("g_max_s", p.g_max_s)
        span = g_max - g_min
        a_ltp = d2d.get("a_ltp", p.a_ltp)
        a_ltd = d2d.get("a_ltd", p.a_ltd)
        b_ltp = _saturation(p.p_max, a_ltp)
        b_ltd = _saturation(self._p_max_ltd, a_ltd)
        a = _pick(up, a_ltp, a_ltd, g)
        b = _pick(up, b_ltp, b_ltd, g)
        n = count.to(g.dtype)
        # u: normalised distance from the curve's start (G_min for LTP, G_max for LTD)
        u = (torch.where(up, g - g_min, g_max - g) / span).clamp_(0.0, 1.0)
        frac = torch.expm1(-n / a).neg_()  # 1 - e^{-n/A}
        u = u + (b - u) * frac
        g_new = torch.where(up, g_min + u * span, g_max - u * span)
        if p.c2c_std > 0:
            xi = torch.randn(g.shape, generator=generator, device=g.device, dtype=g.dtype)
            sigma = p.c2c_std * (p.g_max_s - p.g_min_s)
            g_new = g_new + xi * n.sqrt() * sigma
        if isinstance(g_min, Tensor):
            g_new = torch.minimum(torch.maximum(g_new, g_min), g_max)
        else:
            g_new = g_new.clamp_(g_min, g_max)
        out = state.clone()
        out[..., 0] = torch.where(prog, g_new, g)
        return out


register_alias("ltp_ltd", NeuroSimLTPLTD)
