"""HP linear ion-drift memristor with optional window functions.

Strukov, Snider, Stewart & Williams, "The missing memristor found", Nature 453, 80 (2008).
Windows: Joglekar & Wolf, Eur. J. Phys. 30, 661 (2009); Biolek, Biolek & Biolkova,
Radioengineering 18, 210 (2009); Prodromakis et al., IEEE TED 58, 3099 (2011).

State ``x`` in [0, 1] is the doped fraction of the film: R(x) = R_on x + R_off (1 - x),
i = v / R(x), dx/dt = k i f(x) with k = mu_v R_on / D^2. Positive v raises x and G (SET).
With the published constants (k = 1e4 /(A s)) a 1 V pulse moves x by ~1e-3 per ms: the
HP device switches on millisecond-to-second time scales.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from memhil.core.config import require
from memhil.devices.base import D2D, DeviceModel, lognormal_spread, register_alias, register_device
from memhil.devices.integration import c2c_pulses, rk4

Window = Literal["none", "joglekar", "biolek", "prodromakis"]


@register_device("hp", {"window": "none"})
class LinearIonDrift(DeviceModel):
    """HP TiO2 linear ion drift, batched; window none/joglekar/biolek/prodromakis."""

    nominal_set_pulse = (1.0, 10e-3)
    nominal_reset_pulse = (-1.0, 1e-3)

    name = "hp"
    state_names = ("x",)

    @dataclass(frozen=True)
    class Params:
        """Constants in SI units. Defaults: Strukov 2008 (R_on 100 ohm, R_off 16 kohm,
        D 10 nm, mu_v 1e-14 m^2/(V s)); D2D and C2C spreads of 5 % are a memhil choice
        (modest, nonzero, so arrays are not ideal by default)."""

        r_on_ohm: float = 100.0
        r_off_ohm: float = 16e3
        d_m: float = 10e-9
        mu_v_m2_per_vs: float = 1e-14
        x0: float = 0.1
        window: Window = "none"
        p: int = 1  # window exponent
        j: float = 1.0  # Prodromakis window scale
        v_threshold_v: float = 0.0  # state moves only while |device voltage| > this
        substeps: int = 16  # min RK4 steps per pulse (raised when stiff)
        r_on_dtod: float = 0.05  # relative (lognormal) D2D spreads
        r_off_dtod: float = 0.05
        mu_v_dtod: float = 0.05
        dx_std: float = 0.05  # relative C2C spread of each pulse's dx (see c2c_pulses)

        def __post_init__(self) -> None:
            require(
                0 < self.r_on_ohm < self.r_off_ohm,
                "r_on_ohm",
                f"need 0 < r_on_ohm < r_off_ohm, got {self.r_on_ohm}, {self.r_off_ohm}",
            )
            require(self.d_m > 0, "d_m", f"must be > 0 m, got {self.d_m}")
            require(
                self.mu_v_m2_per_vs > 0, "mu_v_m2_per_vs", f"must be > 0, got {self.mu_v_m2_per_vs}"
            )
            require(0.0 <= self.x0 <= 1.0, "x0", f"must be in [0, 1], got {self.x0}")
            require(
                self.window in get_args(Window),
                "window",
                f"{self.window!r} is not one of {list(get_args(Window))}",
            )
            require(self.p >= 1, "p", f"must be >= 1, got {self.p}")
            require(self.j > 0, "j", f"must be > 0, got {self.j}")
            require(
                self.v_threshold_v >= 0,
                "v_threshold_v",
                f"must be >= 0 V, got {self.v_threshold_v}",
            )
            require(self.substeps >= 1, "substeps", f"must be >= 1, got {self.substeps}")
            for name in ("r_on_dtod", "r_off_dtod", "mu_v_dtod", "dx_std"):
                require(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")

    # -- plugin interface --------------------------------------------------------------
    def sample_d2d(self, shape, generator, device="cpu", dtype=torch.float32) -> D2D:
        p = self.p
        return {
            "r_on_ohm": lognormal_spread(p.r_on_ohm, p.r_on_dtod, shape, generator, device, dtype),
            "r_off_ohm": lognormal_spread(
                p.r_off_ohm, p.r_off_dtod, shape, generator, device, dtype
            ),
            "mu_v_m2_per_vs": lognormal_spread(
                p.mu_v_m2_per_vs, p.mu_v_dtod, shape, generator, device, dtype
            ),
        }

    def initial_state(self, d2d, shape, generator, device="cpu", dtype=torch.float32) -> Tensor:
        return torch.full((*shape, 1), self.p.x0, device=device, dtype=dtype)

    def conductance(self, state: Tensor, d2d: D2D, v_read: float | Tensor, t_s: float) -> Tensor:
        return 1.0 / self._resistance(state[..., 0], d2d)

    def conductance_range(self) -> tuple[float, float]:
        return 1.0 / self.p.r_off_ohm, 1.0 / self.p.r_on_ohm

    def conductance_ceiling(self, d2d: D2D) -> float:
        """x is clamped to [0, 1], so G <= 1 / R_on."""
        return float(1.0 / d2d["r_on_ohm"].min())

    def step(self, state, d2d, v, width_s, count, t_s, generator, compliance_a=None) -> Tensor:
        """Voltage pulses: exact closed form without a window, RK4 substeps with one."""
        p = self.p
        count = count * (v.abs() > p.v_threshold_v)
        k = self._mobility(d2d)

        if p.window == "none":
            # R(x) dx = k v dt integrates to F(x) = F(x0) + k v t, F(x) = R_off x - b x^2 / 2.
            def exact(x: Tensor, t: Tensor) -> Tensor:
                r_off = d2d["r_off_ohm"]
                b = r_off - d2d["r_on_ohm"]
                c = x * (r_off - 0.5 * b * x) + k * v * t
                root = (r_off * r_off - 2.0 * b * c).clamp_min(0.0).sqrt()
                return (2.0 * c / (r_off + root)).clamp(0.0, 1.0)  # stable smaller root

            if p.dx_std == 0.0:  # deterministic: count pulses = one pulse of count * width
                x = state[..., 0]
                return torch.where(count > 0, exact(x, width_s * count), x).unsqueeze(-1)
            return c2c_pulses(state, count, width_s, p.dx_std, generator, exact)

        def rate(x: Tensor) -> Tensor:
            return k * v / self._resistance(x, d2d) * self.window_value(x, v)

        # |d(f/R)/dx| <= (max f' + max f (R_off - R_on) / R_on) / R_on on [0, 1].
        slope, f_max = self._window_bounds()
        r_on = d2d["r_on_ohm"]
        lam = k * v.abs() / r_on * (slope + f_max * (d2d["r_off_ohm"] - r_on) / r_on)
        lam = lam * (count > 0)
        return c2c_pulses(
            state,
            count,
            width_s,
            p.dx_std,
            generator,
            lambda x, w: rk4(x, rate, w, lam, p.substeps),
        )

    # -- current drive -----------------------------------------------------------------
    def step_current(
        self,
        state: Tensor,
        d2d: D2D,
        i_a: Tensor,
        width_s: Tensor,
        count: Tensor,
        generator: torch.Generator,
    ) -> Tensor:
        """State after ``count`` constant-current pulses of ``i_a`` (A), as an SMU sourcing
        current applies; the write threshold acts on the device voltage |i| R(x)."""
        p = self.p
        k = self._mobility(d2d)
        vth = p.v_threshold_v

        def above_threshold(x: Tensor) -> Tensor:
            return i_a.abs() * self._resistance(x, d2d) > vth

        if p.window == "none":
            # dx/dt = k i is linear in t, so the sum of `count` C2C factors (mean count,
            # std sqrt(count) dx_std) is drawn in closed form.
            x = state[..., 0]
            n = count.to(x.dtype)
            if p.dx_std > 0.0:
                xi = torch.randn(n.shape, generator=generator, device=n.device, dtype=n.dtype)
                n = (n + p.dx_std * n.sqrt() * xi).clamp_min(0.0)
            x_new = x + k * i_a * width_s * n
            if vth > 0.0:
                # R falls as x rises: positive current stops where |i| R(x) = vth.
                r_off, r_on = d2d["r_off_ohm"], d2d["r_on_ohm"]
                x_stop = (r_off - vth / i_a.abs()) / (r_off - r_on)
                x_new = torch.where(i_a > 0, torch.minimum(x_new, x_stop), x_new)
                x_new = torch.where(above_threshold(x), x_new, x)
            return x_new.clamp(0.0, 1.0).unsqueeze(-1)

        def rate(x: Tensor) -> Tensor:
            r = k * i_a * self.window_value(x, i_a)
            return r * above_threshold(x) if vth > 0.0 else r

        lam = k * i_a.abs() * self._window_bounds()[0] * (count > 0)
        return c2c_pulses(
            state,
            count,
            width_s,
            p.dx_std,
            generator,
            lambda x, w: rk4(x, rate, w, lam, p.substeps),
        )

    # -- physics helpers ---------------------------------------------------------------
    def window_value(self, x: Tensor, drive: Tensor) -> Tensor:
        """Window f(x); ``drive`` (current or voltage) sets the direction for Biolek."""
        p = self.p
        if p.window == "joglekar":
            return 1.0 - (2.0 * x - 1.0) ** (2 * p.p)
        if p.window == "biolek":
            return 1.0 - (x - (drive <= 0).to(x.dtype)) ** (2 * p.p)  # H(-i)
        if p.window == "prodromakis":
            return p.j * (1.0 - ((x - 0.5) ** 2 + 0.75) ** p.p)
        return torch.ones_like(x)

    def _window_bounds(self) -> tuple[float, float]:
        """(max |f'(x)|, max f(x)) on [0, 1], for the RK4 stiffness estimate."""
        p = self.p
        if p.window == "joglekar":
            return 4.0 * p.p, 1.0
        if p.window == "biolek":
            return 2.0 * p.p, 1.0
        if p.window == "prodromakis":
            return p.j * p.p, p.j * (1.0 - 0.75**p.p)
        return 0.0, 1.0

    def _resistance(self, x: Tensor, d2d: D2D) -> Tensor:
        r_off = d2d["r_off_ohm"]
        return r_off - (r_off - d2d["r_on_ohm"]) * x

    def _mobility(self, d2d: D2D) -> Tensor:
        """k = mu_v R_on / D^2 in 1/(A s), per device."""
        return d2d["mu_v_m2_per_vs"] * d2d["r_on_ohm"] / self.p.d_m**2


register_alias("joglekar", LinearIonDrift, {"window": "joglekar", "p": 1})  # MemTorch default
register_alias("biolek", LinearIonDrift, {"window": "biolek", "p": 2})
register_alias("prodromakis", LinearIonDrift, {"window": "prodromakis", "p": 7, "j": 1.0})
