"""Yakopcic generalised memristor model.

Yakopcic, Taha, Subramanyam, Pino & Rogers, "A memristor device model", IEEE EDL 32, 1436
(2011); generalised form in IEEE TCAD 32, 1201 (2013). Defaults: the Boise State
Ag-chalcogenide fit quoted there.

    I      = a1 x sinh(b V)  (V >= 0),   a2 x sinh(b V)  (V < 0)
    g(V)   = A_p (e^V - e^V_p)  if V > V_p;   -A_n (e^-V - e^V_n)  if V < -V_n;   0 otherwise
    f(x)   = e^(-alpha_p (x - x_p)) ((x_p - x) / (1 - x_p) + 1)  if eta V > 0 and x >= x_p
             e^(alpha_n (x + x_n - 1)) x / (1 - x_n)            if eta V <= 0 and x <= 1 - x_n
             1                                                  otherwise
    dx/dt  = eta g(V) f(x)

V enters the exponentials in volts (the published form is not dimensionless). With
eta = +1 positive pulses above V_p raise x and G (memhil's SET convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from memhil.core.config import require
from memhil.devices.base import D2D, DeviceModel, lognormal_spread, register_device
from memhil.devices.integration import c2c_pulses, rk4


@register_device("yakopcic")
class YakopcicDevice(DeviceModel):
    """Yakopcic model: sinh I-V, exponential threshold rate, asymmetric state window."""

    nominal_set_pulse = (0.3, 100e-6)
    nominal_reset_pulse = (-0.3, 100e-6)

    name = "yakopcic"
    state_names = ("x",)

    @dataclass(frozen=True)
    class Params:
        """Constants (SI units; V in volts inside the exponentials). The 5 % D2D/C2C
        spreads are a memhil choice."""

        a1_a: float = 0.17  # I-V amplitude, V >= 0
        a2_a: float = 0.17  # I-V amplitude, V < 0
        b_per_v: float = 0.05
        v_p_v: float = 0.16  # positive write threshold
        v_n_v: float = 0.15  # negative write threshold magnitude
        a_p_per_s: float = 4000.0
        a_n_per_s: float = 4000.0
        x_p: float = 0.3
        x_n: float = 0.5
        alpha_p: float = 1.0
        alpha_n: float = 5.0
        x0: float = 0.11  # as fabricated (HRS)
        eta: int = 1  # +1: positive V raises x; -1 reverses the polarity
        substeps: int = 16  # min RK4 steps per pulse (raised when stiff)
        a_dtod: float = 0.05  # relative (lognormal) D2D spreads; a scales a1 and a2
        v_p_dtod: float = 0.05
        v_n_dtod: float = 0.05
        a_p_dtod: float = 0.05
        a_n_dtod: float = 0.05
        dx_std: float = 0.05  # relative C2C spread of each pulse's dx (see c2c_pulses)

        def __post_init__(self) -> None:
            for name in ("a1_a", "a2_a", "b_per_v", "v_p_v", "v_n_v", "a_p_per_s", "a_n_per_s"):
                require(getattr(self, name) > 0, name, f"must be > 0, got {getattr(self, name)}")
            for name in ("x_p", "x_n"):
                require(
                    0 <= getattr(self, name) < 1,
                    name,
                    f"must be in [0, 1), got {getattr(self, name)}",
                )
            require(0.0 < self.x0 < 1.0, "x0", f"must be in (0, 1), got {self.x0}")
            require(self.eta in (1, -1), "eta", f"must be +1 or -1, got {self.eta}")
            require(self.substeps >= 1, "substeps", f"must be >= 1, got {self.substeps}")
            for name in ("a_dtod", "v_p_dtod", "v_n_dtod", "a_p_dtod", "a_n_dtod", "dx_std"):
                require(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")

    # -- plugin interface --------------------------------------------------------------
    def sample_d2d(self, shape, generator, device="cpu", dtype=torch.float32) -> D2D:
        p = self.p
        scale = lognormal_spread(1.0, p.a_dtod, shape, generator, device, dtype)
        return {
            "a1_a": p.a1_a * scale,
            "a2_a": p.a2_a * scale,
            "v_p_v": lognormal_spread(p.v_p_v, p.v_p_dtod, shape, generator, device, dtype),
            "v_n_v": lognormal_spread(p.v_n_v, p.v_n_dtod, shape, generator, device, dtype),
            "a_p_per_s": lognormal_spread(p.a_p_per_s, p.a_p_dtod, shape, generator, device, dtype),
            "a_n_per_s": lognormal_spread(p.a_n_per_s, p.a_n_dtod, shape, generator, device, dtype),
        }

    def initial_state(self, d2d, shape, generator, device="cpu", dtype=torch.float32) -> Tensor:
        return torch.full((*shape, 1), self.p.x0, device=device, dtype=dtype)

    def conductance(self, state: Tensor, d2d: D2D, v_read: float | Tensor, t_s: float) -> Tensor:
        """Chord I(v_read)/v_read (``v_read`` a float or a per-cell tensor); at 0 V the
        small-signal limit a x b."""
        b = self.p.b_per_v
        if not isinstance(v_read, Tensor):
            a = d2d["a1_a"] if v_read >= 0 else d2d["a2_a"]
            gain = b if v_read == 0 else math.sinh(b * v_read) / v_read
            return a * state[..., 0] * gain
        v = v_read.to(state.dtype)
        a = torch.where(v >= 0, d2d["a1_a"], d2d["a2_a"])
        safe = torch.where(v == 0, torch.ones_like(v), v)
        gain = torch.where(v == 0, torch.full_like(v, b), torch.sinh(b * safe) / safe)
        return a * state[..., 0] * gain

    def conductance_range(self) -> tuple[float, float]:
        """Small-signal G from the as-fabricated HRS (x0) to the fully SET state (x = 1)."""
        g_per_x = self.p.a1_a * self.p.b_per_v
        return g_per_x * self.p.x0, g_per_x

    def step(self, state, d2d, v, width_s, count, t_s, generator, compliance_a=None) -> Tensor:
        """``count`` pulses, each integrated with fixed RK4 substeps; g(V) is constant in a
        pulse, so cells inside the thresholds get exactly zero rate."""
        p = self.p
        rate0 = p.eta * self.threshold_rate(d2d, v)
        up = p.eta * v > 0
        count = count * (rate0 != 0)

        def rate(x: Tensor) -> Tensor:
            return rate0 * self.window_value(x, up)

        # max |f'(x)|: alpha_p + 1/(1 - x_p) at x_p, alpha_n + 1/(1 - x_n) at 1 - x_n.
        slope = max(p.alpha_p + 1.0 / (1.0 - p.x_p), p.alpha_n + 1.0 / (1.0 - p.x_n))
        lam = rate0.abs() * slope
        return c2c_pulses(
            state,
            count,
            width_s,
            p.dx_std,
            generator,
            lambda x, w: rk4(x, rate, w, lam, p.substeps),
        )

    # -- physics helpers ---------------------------------------------------------------
    def current(self, state: Tensor, d2d: D2D, v: Tensor) -> Tensor:
        """Device current (A) at voltage ``v``: the sinh I-V law."""
        a = torch.where(v >= 0, d2d["a1_a"], d2d["a2_a"])
        return a * state[..., 0] * torch.sinh(self.p.b_per_v * v)

    def threshold_rate(self, d2d: D2D, v: Tensor) -> Tensor:
        """g(V) in 1/s: zero for -V_n <= V <= V_p, exponential beyond."""
        pos = (torch.exp(v) - torch.exp(d2d["v_p_v"])).clamp_min(0.0) * d2d["a_p_per_s"]
        neg = (torch.exp(-v) - torch.exp(d2d["v_n_v"])).clamp_min(0.0) * d2d["a_n_per_s"]
        return pos - neg

    def window_value(self, x: Tensor, up: Tensor) -> Tensor:
        """f(x): ``up`` marks cells whose eta V > 0 (state rising)."""
        p = self.p
        one = torch.ones_like(x)
        f_up = torch.exp(-p.alpha_p * (x - p.x_p)) * ((p.x_p - x) / (1.0 - p.x_p) + 1.0)
        f_dn = torch.exp(p.alpha_n * (x + p.x_n - 1.0)) * x / (1.0 - p.x_n)
        return torch.where(
            up, torch.where(x >= p.x_p, f_up, one), torch.where(x <= 1.0 - p.x_n, f_dn, one)
        )
