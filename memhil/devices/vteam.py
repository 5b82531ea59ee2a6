"""VTEAM: voltage-threshold adaptive memristor model.

Kvatinsky, Ramadan, Friedman & Kolodny, "VTEAM: A general model for voltage-controlled
memristors", IEEE TCAS-II 62, 786 (2015); window from TEAM, IEEE TCAS-I 60, 211 (2013).

Orientation. memhil's contract is that positive pulses raise G, so memhil's ``v`` is the
published voltage with its sign flipped. The published (v_on, v_off, k_on, k_off) =
(-0.2 V, +0.02 V, -10 m/s, +5e-4 m/s) (MemTorch defaults) are stored as magnitudes
``v_on_v = 0.2``, ``v_off_v = 0.02``, ``k_on_m_per_s = 10``, ``k_off_m_per_s = 5e-4``:

    v >  v_on_v :  dx/dt = -(k_on / D) (v / v_on_v - 1)^alpha_on  f_on(x)    (ON, x -> 0)
    v < -v_off_v:  dx/dt = +(k_off / D) (-v / v_off_v - 1)^alpha_off f_off(x) (OFF, x -> 1)

State ``x = w / D`` in [0, 1] (published w in [x_on = 0, x_off = D]); x = 0 is ON (R_on).
Rates in m/s are divided by D to act on x. With the defaults a 1 us pulse moves x visibly
but not to the bound near the thresholds, e.g. +0.21 V gives dx ~ -0.4 and -0.03 V gives
dx ~ +0.08; beyond about +0.22 V or -0.15 V a 1 us pulse saturates the device.

Kvatinsky window (x, a_on, a_off, w_c in units of D): f_on = exp(-exp(-(x - a_on) / w_c)),
f_off = exp(-exp((x - a_off) / w_c)), so each fades at the bound its motion heads for (as in
Pickett's model, which TEAM simplifies); the reverse inner signs would stall motion
leaving a bound instead of arriving at one (``docs/devices.md#vteam``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from memhil.core.config import require
from memhil.devices.base import D2D, DeviceModel, lognormal_spread, register_device
from memhil.devices.integration import c2c_pulses, rk4

# Per-device parameters and the relative D2D spread each is drawn with.
_D2D = {
    "r_on_ohm": "r_on_dtod",
    "r_off_ohm": "r_off_dtod",
    "v_on_v": "v_on_dtod",
    "v_off_v": "v_off_dtod",
    "k_on_m_per_s": "k_on_dtod",
    "k_off_m_per_s": "k_off_dtod",
}


@register_device("vteam")
class VTEAMDevice(DeviceModel):
    """VTEAM with thresholds, optional Kvatinsky window, linear or exponential I-V."""

    nominal_set_pulse = (0.21, 10e-9)
    nominal_reset_pulse = (-0.03, 1e-6)

    name = "vteam"
    state_names = ("x",)

    @dataclass(frozen=True)
    class Params:
        """Constants in SI units (magnitudes, memhil orientation; see the module docstring).
        Defaults: MemTorch's VTEAM; the 5 % D2D/C2C spreads are a memhil choice."""

        r_on_ohm: float = 50.0
        r_off_ohm: float = 1000.0
        d_m: float = 3e-9
        k_on_m_per_s: float = 10.0
        k_off_m_per_s: float = 5e-4
        alpha_on: float = 3.0
        alpha_off: float = 1.0
        v_on_v: float = 0.2  # SET threshold, applies to positive v
        v_off_v: float = 0.02  # RESET threshold magnitude, applies to negative v
        x0: float = 1.0  # as fabricated: fully OFF
        iv: Literal["linear", "exponential"] = "linear"
        window: Literal["none", "kvatinsky"] = "none"
        a_on_m: float = 0.15e-9  # Kvatinsky window: ON motion fades below a_on
        a_off_m: float = 2.85e-9  # OFF motion fades above a_off
        w_c_m: float = 0.06e-9  # width of the fade
        substeps: int = 16  # min RK4 steps per pulse (window "kvatinsky")
        r_on_dtod: float = 0.05  # relative (lognormal) D2D spreads
        r_off_dtod: float = 0.05
        v_on_dtod: float = 0.05
        v_off_dtod: float = 0.05
        k_on_dtod: float = 0.05
        k_off_dtod: float = 0.05
        dx_std: float = 0.05  # relative C2C spread of each pulse's dx (see c2c_pulses)

        def __post_init__(self) -> None:
            require(
                0 < self.r_on_ohm < self.r_off_ohm,
                "r_on_ohm",
                f"need 0 < r_on_ohm < r_off_ohm, got {self.r_on_ohm}, {self.r_off_ohm}",
            )
            for name in (
                "d_m",
                "k_on_m_per_s",
                "k_off_m_per_s",
                "alpha_on",
                "alpha_off",
                "v_on_v",
                "v_off_v",
                "w_c_m",
            ):
                require(getattr(self, name) > 0, name, f"must be > 0, got {getattr(self, name)}")
            require(0.0 <= self.x0 <= 1.0, "x0", f"must be in [0, 1], got {self.x0}")
            require(self.iv in ("linear", "exponential"), "iv", f"unknown I-V law {self.iv!r}")
            require(
                self.window in ("none", "kvatinsky"), "window", f"unknown window {self.window!r}"
            )
            require(self.substeps >= 1, "substeps", f"must be >= 1, got {self.substeps}")
            for name in (*_D2D.values(), "dx_std"):
                require(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")

    # -- plugin interface --------------------------------------------------------------
    def sample_d2d(self, shape, generator, device="cpu", dtype=torch.float32) -> D2D:
        p = self.p
        d2d = {
            name: lognormal_spread(
                getattr(p, name), getattr(p, spread), shape, generator, device, dtype
            )
            for name, spread in _D2D.items()
        }
        # Rates act on x = w / D: store k / D (1/s) so step skips a division per call.
        d2d["k_on_per_s"] = d2d.pop("k_on_m_per_s") / p.d_m
        d2d["k_off_per_s"] = d2d.pop("k_off_m_per_s") / p.d_m
        return d2d

    def initial_state(self, d2d, shape, generator, device="cpu", dtype=torch.float32) -> Tensor:
        return torch.full((*shape, 1), self.p.x0, device=device, dtype=dtype)

    def conductance(self, state: Tensor, d2d: D2D, v_read: float | Tensor, t_s: float) -> Tensor:
        x = state[..., 0]
        r_on, r_off = d2d["r_on_ohm"], d2d["r_off_ohm"]
        if self.p.iv == "exponential":  # R = R_on exp(ln(R_off / R_on) x)
            return torch.exp(-torch.log(r_off / r_on) * x) / r_on
        return 1.0 / (r_on + (r_off - r_on) * x)

    def conductance_range(self) -> tuple[float, float]:
        return 1.0 / self.p.r_off_ohm, 1.0 / self.p.r_on_ohm

    def conductance_ceiling(self, d2d: D2D) -> float:
        """R(x) >= R_on for both I-V laws, so G <= 1 / R_on."""
        r_on = d2d.get("r_on_ohm")
        return float(1.0 / (r_on.min() if r_on is not None else self.p.r_on_ohm))

    def step(self, state, d2d, v, width_s, count, t_s, generator, compliance_a=None) -> Tensor:
        """Without a window dx/dt depends on v only, so count pulses are exact in closed
        form (few elementwise ops: the hot path); with the window, RK4 substeps per pulse.

        A SET under compliance is quasi-static: the source holds |v| * G <= I_c throughout
        the pulse, so the cell stops switching once I_c / G falls to its threshold v_on,
        i.e. at G = I_c / v_on (never below the conductance it started from)."""
        new = self._step_free(state, d2d, v, width_s, count, generator)
        if compliance_a is None:
            return new
        x_stop = self._x_at_conductance(d2d, compliance_a / d2d["v_on_v"])
        limited = (v > 0) & (count > 0)
        floor = torch.minimum(state[..., 0], x_stop)
        x = torch.where(limited & (new[..., 0] < floor), floor, new[..., 0])
        return x.unsqueeze(-1)

    def compliance_train(self, state, d2d, v, width_s, count, compliance_a, generator):
        """Linear I-V without a window on CPU: one compiled pass per block of pulses
        (:func:`memhil.devices.train_kernels.vteam_compliance_train`), the same arithmetic
        and C2C draws as the simulator's pulse-by-pulse loop over :meth:`step`."""
        p = self.p
        exponents = (p.alpha_on, p.alpha_off)
        if p.window != "none" or p.iv != "linear" or state.device.type != "cpu":
            return None
        if any(a not in (1.0, 2.0, 3.0) for a in exponents):  # the kernel's powers
            return None
        import numpy as np

        from memhil.devices import train_kernels

        x = state[..., 0].clone(memory_format=torch.contiguous_format)
        cells = x.numel()

        def arr(t: Tensor) -> np.ndarray:
            return t.reshape(-1).numpy()

        # a request every cell shares passes as scalars (loop invariants in the kernel);
        # all four or none, so the kernel compiles in two variants per dtype, not sixteen
        shared = all(t.numel() == 1 for t in (v, width_s, count, compliance_a))

        def request(t: Tensor, dtype: torch.dtype) -> Any:
            t = t.to(dtype)
            return arr(t)[0] if shared else arr(t.expand(x.shape).contiguous())

        params = [arr(d2d[k]) for k in ("r_on_ohm", "r_off_ohm", "v_on_v", "v_off_v")]
        params += [arr(d2d["k_on_per_s"]), arr(d2d["k_off_per_s"])]
        pulse = [request(t, x.dtype) for t in (v, width_s)]
        pulse += [request(count, torch.int64), request(compliance_a, x.dtype)]
        consts = np.array([1.0, 0.0, 1e-15], dtype=arr(x).dtype)
        n_max = int(count.max()) if cells else 0
        # C2C normals in blocks of pulses (one (n_max, cells) draw could be huge)
        block = train_kernels.block_pulses(n_max, cells, x.element_size())
        block = block if p.dx_std > 0.0 else max(n_max, 1)
        for k0 in range(0, n_max, block):
            m = min(block, n_max - k0)
            xi = torch.empty((m if p.dx_std > 0.0 else 0, cells), dtype=x.dtype)
            for row in xi:  # pulse by pulse, as step draws them
                row.normal_(0.0, p.dx_std, generator=generator)
            train_kernels.vteam_compliance_train(
                arr(x), *params, *pulse, xi.numpy(), k0, m, *(int(a) for a in exponents), consts
            )
        return x.unsqueeze(-1)

    def _x_at_conductance(self, d2d: D2D, g_s: Tensor) -> Tensor:
        """The state x at which the cell's conductance is ``g_s`` (clipped to [0, 1])."""
        r_on, r_off = d2d["r_on_ohm"], d2d["r_off_ohm"]
        if self.p.iv == "exponential":
            x = -torch.log(g_s * r_on) / torch.log(r_off / r_on)
        else:
            x = (1.0 / g_s - r_on) / (r_off - r_on)
        return x.clamp(0.0, 1.0)

    def _step_free(self, state, d2d, v, width_s, count, generator) -> Tensor:
        """The pulse train without a current limit."""
        p = self.p
        x = state[..., 0]
        if p.window == "kvatinsky":
            rate_on, rate_off = self._rates(d2d, v)

            def rate(y: Tensor) -> Tensor:
                return rate_off * self.window_off(y) - rate_on * self.window_on(y)

            # max |f'| of either window is 1 / (e w_c), with w_c in units of D
            lam = torch.maximum(rate_on, rate_off) * (count > 0) * (p.d_m / (math.e * p.w_c_m))
            return c2c_pulses(
                state,
                count,
                width_s,
                p.dx_std,
                generator,
                lambda y, w: rk4(y, rate, w, lam, p.substeps),
            )

        # Hot path: dx/dt depends on v only, so count pulses move x by rate * width * count.
        # Everything runs in place in two buffers: rate_off's becomes the new state and
        # rate_on's is a work buffer kept between calls (a fresh 1024 x 1024 tensor costs
        # ~1000 page faults, as much time as the arithmetic).
        rate_on, rate_off = self._rates(d2d, v, out=self._work_buffer(x))
        dx = rate_off.sub_(rate_on).mul_(width_s)  # per pulse
        if p.dx_std > 0.0:
            # Sum of `count` i.i.d. C2C factors 1 + s xi = count (1 + s xi / sqrt(count)).
            c2c = rate_on.normal_(0.0, p.dx_std, generator=generator)
            if count.numel() and count.max() > 1:
                c2c.div_(count.sqrt().clamp_min_(1.0))
            dx.mul_(c2c.add_(1.0).clamp_min_(0.0))
        n = rate_on.copy_(count)  # float count, without the temporary dx.mul_(count) makes
        return dx.mul_(n).add_(x).clamp_(0.0, 1.0).unsqueeze(-1)

    # -- physics helpers ---------------------------------------------------------------
    def _rates(self, d2d: D2D, v: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Unwindowed |dx/dt| (1/s) towards ON (written to ``out`` if given) and towards OFF;
        exactly 0 below threshold."""
        p = self.p
        on = torch.div(v, d2d["v_on_v"], out=out).sub_(1.0).clamp_min_(0.0)
        off = torch.div(v, d2d["v_off_v"]).add_(1.0).neg_().clamp_min_(0.0)
        if p.alpha_on != 1.0:
            on.pow_(p.alpha_on)
        if p.alpha_off != 1.0:
            off.pow_(p.alpha_off)
        return on.mul_(d2d["k_on_per_s"]), off.mul_(d2d["k_off_per_s"])

    def _work_buffer(self, like: Tensor) -> Tensor:
        """A scratch tensor shaped like ``like``, reused across calls (not thread-safe)."""
        buf = getattr(self, "_work", None)
        if buf is None or (buf.shape, buf.dtype, buf.device) != (
            like.shape,
            like.dtype,
            like.device,
        ):
            buf = self._work = torch.empty_like(like)
        return buf

    def window_on(self, x: Tensor) -> Tensor:
        """Kvatinsky f_on: ~1 above a_on, vanishing towards the ON bound x = 0."""
        p = self.p
        return torch.exp(-torch.exp(-(x - p.a_on_m / p.d_m) / (p.w_c_m / p.d_m)))

    def window_off(self, x: Tensor) -> Tensor:
        """Kvatinsky f_off: ~1 below a_off, vanishing towards the OFF bound x = 1."""
        p = self.p
        return torch.exp(-torch.exp((x - p.a_off_m / p.d_m) / (p.w_c_m / p.d_m)))
