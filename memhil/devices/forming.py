"""RRAM with stochastic electroforming by dielectric breakdown
(``docs/devices.md#stochastic-forming-rram``).

A memhil model after the random-weights-from-forming experiments (Li et al., Nat. Commun.
2026, arXiv 2311.07164, 40 nm TaOx RRAM; Wang et al., Nat. Mach. Intell. 5, 104 (2023)):
each pristine cell has a quasi-normal breakdown voltage V_bd ~ N(mu, sigma) (D2D); a
forming pulse of amplitude V >= V_bd forms it into a broad log-normal conductance
distribution capped by the compliance current, so the forming voltage read off the V_bd
CDF sets the fraction of formed cells (the sparsity of a random-weight network). Formed
cells switch abruptly: RESET to a log-normal HRS, SET back to a fresh LRS draw.

Endurance wear (optional, ``wear_cycles`` > 0): the HRS median creeps up towards the LRS
median with the number n of RESETs a cell has seen, so the log-window closes as
ln W(n) = ln W0 * exp(-(n / wear_cycles)^wear_shape) — the gradual window collapse of
filamentary RRAM endurance tests.

State ``(*shape, 3)``: [G (S), formed flag (0.0 pristine / 1.0 formed), RESETs seen].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import torch
from torch import Tensor

from memhil.core.config import require
from memhil.devices.base import D2D, DeviceModel, register_device


@dataclass(frozen=True)
class FormingParams:
    """Constants of the forming RRAM model (SI units; log-normal sigmas are of ln G).

    Breakdown: V_bd ~ N(v_bd_mean_v, v_bd_sigma_v^2) per cell, lowered by
    ``v_bd_per_decade_v`` per decade of total stress time (count * width) above
    ``width_ref_s`` (raised below it; 0 = width-independent, the default). Formed and SET
    G ~ LogNormal(ln g_formed_median_s, g_formed_log_sigma), capped at compliance/|V|;
    RESET G ~ LogNormal(ln g_reset_median_s, g_reset_log_sigma); pristine G =
    g_pristine_s (times a log-normal spread ``g_pristine_log_sigma``, default 0). Values
    after ``docs/devices.md#stochastic-forming-rram``; voltages are memhil's choices
    for a TaOx-like stack that fit the default 3 V pulse limit. Read noise is not a device
    parameter here: the simulator's read path adds it (``ReadPathConfig.read_noise_rel``).
    """

    v_bd_mean_v: float = 2.0
    v_bd_sigma_v: float = 0.2
    v_bd_per_decade_v: float = 0.0
    width_ref_s: float = 1e-6
    g_pristine_s: float = 0.1e-6
    g_pristine_log_sigma: float = 0.0
    g_formed_median_s: float = 20e-6
    g_formed_log_sigma: float = 0.5
    g_reset_median_s: float = 1e-6
    g_reset_log_sigma: float = 0.5
    v_set_v: float = 1.0
    v_reset_v: float = 1.0
    wear_cycles: float = 0.0  # characteristic endurance (RESETs); 0 = no wear
    wear_shape: float = 1.0

    def __post_init__(self) -> None:
        require(
            self.wear_cycles >= 0,
            "wear_cycles",
            f"must be >= 0 (0 = no wear), got {self.wear_cycles}",
        )
        require(self.wear_shape > 0, "wear_shape", f"must be > 0, got {self.wear_shape}")
        require(self.v_bd_mean_v > 0, "v_bd_mean_v", f"must be > 0 V, got {self.v_bd_mean_v}")
        require(self.v_bd_sigma_v >= 0, "v_bd_sigma_v", f"must be >= 0 V, got {self.v_bd_sigma_v}")
        require(
            self.v_bd_per_decade_v >= 0,
            "v_bd_per_decade_v",
            f"must be >= 0 V, got {self.v_bd_per_decade_v}",
        )
        for name in (
            "width_ref_s",
            "g_pristine_s",
            "g_formed_median_s",
            "g_reset_median_s",
            "v_set_v",
            "v_reset_v",
        ):
            require(getattr(self, name) > 0, name, f"must be > 0, got {getattr(self, name)}")
        for name in ("g_pristine_log_sigma", "g_formed_log_sigma", "g_reset_log_sigma"):
            require(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")


@register_device("rram_forming")
class FormingRRAM(DeviceModel):
    """Stochastic-forming RRAM: V_bd CDF sets the formed fraction; abrupt SET/RESET after.

    Pulse rules (``count`` pulses of one kind act like one, since every event is abrupt):
    pristine cell, ``v >= V_bd`` -> formed, G ~ LogNormal(ln 20 µS, 0.5) capped at
    compliance/|v|; formed cell, ``v >= v_set_v`` -> fresh LRS draw (the re-forming noise;
    a SET on a cell already in LRS redraws it too); formed cell, ``v <= -v_reset_v`` ->
    G ~ LogNormal(ln 1 µS, 0.5). Negative pulses on pristine cells do nothing.

    Sparsity: the fraction of cells left unformed by one forming pulse of amplitude V is
    1 - Phi((V - mu)/sigma); pick V with ``forming_voltage_for_sparsity(s)`` (or
    ``forming_voltage_for_fraction(1 - s)``).
    """

    nominal_set_pulse = (1.2, 1e-6)
    nominal_reset_pulse = (-1.2, 1e-6)

    name = "rram_forming"
    state_names = ("g_s", "formed", "resets")
    bipolar = False  # depression is an abrupt RESET, not gradual
    drifts = False
    Params = FormingParams

    # -- sparsity from the breakdown-voltage CDF --------------------------------------
    def _width_shift_v(self, width_s: Any = None, count: Any = 1) -> Any:
        """V_bd lowering for total stress time ``count * width_s`` (0 when width is None)."""
        p = self.p
        if width_s is None or p.v_bd_per_decade_v == 0.0:
            return 0.0
        if isinstance(width_s, Tensor) or isinstance(count, Tensor):
            stress = torch.as_tensor(width_s) * torch.as_tensor(count)
            return p.v_bd_per_decade_v * torch.log10(stress / p.width_ref_s)
        return p.v_bd_per_decade_v * math.log10(width_s * count / p.width_ref_s)

    def forming_voltage_for_fraction(
        self, formed_fraction: Any, width_s: Any = None, count: int = 1
    ) -> Any:
        """Pulse amplitude (V) that forms ``formed_fraction`` of pristine cells on average:
        mu + sigma Phi^{-1}(f), lowered for stress times ``count * width_s`` above
        ``width_ref_s`` (raised below it)."""
        p = self.p
        if isinstance(formed_fraction, Tensor):
            if not bool(((formed_fraction > 0) & (formed_fraction < 1)).all()):
                raise ValueError("formed_fraction must lie in (0, 1)")
            z = torch.special.ndtri(formed_fraction)
        else:
            if not 0.0 < formed_fraction < 1.0:
                raise ValueError(f"formed_fraction must lie in (0, 1), got {formed_fraction}")
            z = NormalDist().inv_cdf(formed_fraction)
        return p.v_bd_mean_v + p.v_bd_sigma_v * z - self._width_shift_v(width_s, count)

    def forming_voltage_for_sparsity(
        self, sparsity: Any, width_s: Any = None, count: int = 1
    ) -> Any:
        """Pulse amplitude (V) that leaves ``sparsity`` of the cells unformed (pruned)."""
        return self.forming_voltage_for_fraction(1 - sparsity, width_s, count)

    def formed_fraction_at(self, v: float, width_s: float | None = None, count: int = 1) -> float:
        """Expected formed fraction after pulses of amplitude ``v`` (the V_bd CDF)."""
        p = self.p
        v_eff = v + self._width_shift_v(width_s, count)
        if p.v_bd_sigma_v == 0.0:
            return 1.0 if v_eff >= p.v_bd_mean_v else 0.0
        return NormalDist(p.v_bd_mean_v, p.v_bd_sigma_v).cdf(v_eff)

    # -- plugin interface -------------------------------------------------------------
    def sample_d2d(self, shape, generator, device="cpu", dtype=torch.float32) -> D2D:
        """Per-cell breakdown voltage V_bd ~ N(mu, sigma) (V)."""
        p = self.p
        xi = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return {"v_bd_v": xi.mul_(p.v_bd_sigma_v).add_(p.v_bd_mean_v)}

    def initial_state(self, d2d, shape, generator, device="cpu", dtype=torch.float32) -> Tensor:
        """Pristine: G = g_pristine_s (optionally log-normal), formed flag 0."""
        p = self.p
        state = torch.zeros((*shape, 3), device=device, dtype=dtype)
        if p.g_pristine_log_sigma > 0:
            xi = torch.randn(shape, generator=generator, device=device, dtype=dtype)
            state[..., 0] = xi.mul_(p.g_pristine_log_sigma).exp_().mul_(p.g_pristine_s)
        else:
            state[..., 0] = p.g_pristine_s
        return state

    def conductance(self, state: Tensor, d2d: D2D, v_read: float | Tensor, t_s: float) -> Tensor:
        return state[..., 0].clone()

    def conductance_range(self) -> tuple[float, float]:
        """(pristine, median formed) conductance: unformed = HRS floor, formed = LRS."""
        return (self.p.g_pristine_s, self.p.g_formed_median_s)

    def step(self, state, d2d, v, width_s, count, t_s, generator, compliance_a=None) -> Tensor:
        """Forming, SET and RESET events; all abrupt, one log-normal draw per event."""
        p = self.p
        g = state[..., 0]
        formed = state[..., 1] > 0.5
        pulsed = count > 0
        pos = pulsed & (v > 0)
        v_bd = d2d["v_bd_v"]
        if p.v_bd_per_decade_v != 0.0:
            v_bd = v_bd - self._width_shift_v(width_s, count.clamp_min(1).to(width_s.dtype))
        form = pos & ~formed & (v >= v_bd)
        set_ = pos & formed & (v >= p.v_set_v)
        reset = pulsed & formed & (v <= -p.v_reset_v)
        lrs = form | set_
        if not bool((lrs | reset).any()):
            return state.clone()
        xi = torch.randn(g.shape, generator=generator, device=g.device, dtype=g.dtype)
        g_lrs = torch.exp(xi * p.g_formed_log_sigma + math.log(p.g_formed_median_s))
        if compliance_a is not None:
            g_lrs = torch.minimum(g_lrs, compliance_a / v.abs().clamp_min(1e-12))
        ln_hrs = xi * p.g_reset_log_sigma + math.log(p.g_reset_median_s)
        resets_seen = state[..., 2]
        if p.wear_cycles > 0:
            ln_hrs = ln_hrs + self.window_lost_log(resets_seen)
        out = state.clone()
        out[..., 0] = torch.where(lrs, g_lrs, torch.where(reset, torch.exp(ln_hrs), g))
        out[..., 1] = (formed | form).to(state.dtype)
        out[..., 2] = resets_seen + reset.to(state.dtype)
        return out

    def window_lost_log(self, resets_seen: Any) -> Any:
        """How far (in ln G) the HRS median has risen after ``resets_seen`` RESETs:
        ln W0 * (1 - exp(-(n / wear_cycles)^wear_shape)), W0 the fresh LRS/HRS median ratio."""
        p = self.p
        if p.wear_cycles == 0:
            return 0.0 * resets_seen
        ln_w0 = math.log(p.g_formed_median_s / p.g_reset_median_s)
        n = (
            torch.as_tensor(resets_seen, dtype=torch.float64)
            if not isinstance(resets_seen, Tensor)
            else resets_seen
        )
        return ln_w0 * (1.0 - torch.exp(-((n / p.wear_cycles) ** p.wear_shape)))
