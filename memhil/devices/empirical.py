"""A data-driven device model: the measured distribution of the conductance change per pulse,
conditioned on the present conductance and on the pulse, as a regular device plugin.

What a digital twin needs when no physical law fits the chip (docs/twin.md): for each
measured pulse class c (amplitude, width; the polarity is the amplitude's sign) and at
conductance knots g_k, the mean step ``mu_c(g_k)`` and its cycle-to-cycle std
``sigma_c(g_k)``; between knots both are interpolated linearly, beyond the end knots held
flat. One pulse of class c on a device whose conductance is G::

    G <- clip(G + s_d mu_c(G) + sigma_c(G) xi,  g_min, g_max),   xi ~ N(0, 1) per event

on a device with no device-to-device spread. A real device ``d`` has its own response (the
device-to-device part that repeated trains of one cell separate from the cycle-to-cycle
part, ``memhil.calibration.twin``): its own conductance axis, stretched by ``a_d`` about
``g_min_s`` (its own saturation level, ``g_min + a_d (g_max - g_min)``), and its own step
scale ``s_dc`` per class (a device that switches readily, or hardly, at this pulse)::

    u = g_min + (G - g_min) / a_d                                  (G on the nominal axis)
    G <- clip(G + s_dc a_d mu_c(u) + sigma_c(u) xi,  g_min, g_min + a_d (g_max - g_min))

``(a_d, s_d0, s_d1, ...)`` is drawn once per device, jointly, from the measured devices'
own responses (``device_axis_scale``, ``device_step_scale``: an empirical distribution,
which keeps its shape: the devices of a threshold switch that hardly move at a pulse, the
few that run away), times, when ``step_dtod[c] > 0``, a log-normal step scale of median 1.
With ``step_std_relative`` the cycle-to-cycle std scales with the device's step
(``s_dc a_d sigma_c(u)``, as a threshold switch's does).

With ``step_axis: resistance`` a device's own response acts on its resistance ``R = 1/G``
instead (a threshold switch such as VTEAM moves its resistance by a fixed amount per
pulse, Kvatinsky et al., IEEE TCAS-II 2015, so devices that differ only in their rate have
steps proportional in R, not in G). The tables keep their meaning (the step in G of the
reference device at G); the reference step in R at ``R_u`` is ``1/(G_u + mu_c(G_u)) -
R_u``, ``sigma`` is mapped linearly (``sigma_c R_u^2``), the stretch is about
``R_lo = 1/g_max`` (each device's own floor ``1/(R_lo + a_d (1/g_min - R_lo))``)::

    R_u = R_lo + (R - R_lo) / a_d
    R <- clip(R + s_dc a_d dR_c(R_u) + sigma_c R_u^2 xi,  R_lo,  R_lo + a_d (1/g_min - R_lo))

Read noise is ``read_noise_rel G + read_noise_floor_s`` (std), the chord conductance is G
at any read voltage (an ohmic read, as the pulse-train data it is built from was read at
one voltage).

With ``drift_nu > 0`` the conductance drifts after each programming as PCM's does
(Nandakumar et al., J. Appl. Phys. 124, 152135 (2018); ``memhil.devices.pcm``): a read at
time t returns ``G (max(t - t_p, T0) / T0)^(-nu)``, t_p the cell's last pulse, ``nu`` per
device log-normal about ``drift_nu`` with relative spread ``drift_nu_dtod`` (both from
retention runs, ``memhil.calibration.fit.pcm.fit_drift``); the state then carries t_p.
Where retention runs measured several programmed levels (``drift_g_levels_s``, one
exponent each in ``drift_nu_levels``), the exponent depends on the level the cell was
programmed to, interpolated linearly in ln G between the levels and held beyond them (a
PCM cell drifts faster the more amorphous it is: Boybat et al., Nat. Commun. 9, 2514
(2018), Fig. 1; Le Gallo et al., Adv. Electron. Mater. 4, 1700627 (2018)), times the
device's own log-normal factor of median 1.

Cells that never switched where they were measured (a forming run's cells that did not
form, a conductance map's open cells) are a fraction ``stuck_fraction`` of the twin's
devices: each is drawn stuck at one of the measured conductances ``stuck_g_s`` and no
pulse moves it.

A pulse is matched to the measured class of the same polarity nearest in
``|ln(|v|/|v_c|)| + |ln(w/w_c)|``; a pulse weaker than ``min_amplitude_ratio`` times the
smallest measured amplitude of its polarity leaves the device unchanged (the model knows
nothing about pulses it never saw, and says so in its range rather than extrapolating).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from memhil.core.config import require
from memhil.devices.base import D2D, DeviceModel, lognormal_spread, register_device


@dataclass(frozen=True)
class EmpiricalParams:
    """Step tables of an empirical device (SI units: siemens, volts, seconds).

    ``step_mean_s[c][k]`` and ``step_std_s[c][k]``: mean and cycle-to-cycle std of the
    conductance change of one pulse of class ``c`` (``pulse_v[c]``, ``pulse_width_s[c]``) at
    conductance ``g_knots_s[k]``. ``g0_mean_s``/``g0_std_s``: the as-fabricated (first
    read) conductance distribution. ``device_axis_scale[d]`` and ``device_step_scale[d][c]``:
    the measured devices' own responses (axis stretch, step scale per class), one draw of
    them per simulated device; empty for a device-free table. ``drift_g_levels_s`` and
    ``drift_nu_levels``: drift exponents per programmed level (empty: ``drift_nu``).
    """

    g_min_s: float = 1e-6
    g_max_s: float = 1e-5
    g_knots_s: tuple[float, ...] = (1e-6, 1e-5)
    pulse_v: tuple[float, ...] = (1.0, -1.0)
    pulse_width_s: tuple[float, ...] = (1e-6, 1e-6)
    step_mean_s: tuple[tuple[float, ...], ...] = ((1e-7, 1e-7), (-1e-7, -1e-7))
    step_std_s: tuple[tuple[float, ...], ...] = ((0.0, 0.0), (0.0, 0.0))
    step_dtod: tuple[float, ...] = (0.0, 0.0)
    g0_mean_s: float = 1e-6
    g0_std_s: float = 0.0
    read_noise_rel: float = 0.0
    read_noise_floor_s: float = 0.0
    min_amplitude_ratio: float = 0.5
    step_std_relative: bool = False
    device_axis_scale: tuple[float, ...] = ()
    device_step_scale: tuple[tuple[float, ...], ...] = ()
    step_axis: str = "conductance"
    stuck_fraction: float = 0.0
    stuck_g_s: tuple[float, ...] = ()
    drift_nu: float = 0.0
    drift_nu_dtod: float = 0.0
    drift_t0_s: float = 38.6
    drift_g_levels_s: tuple[float, ...] = ()
    drift_nu_levels: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for key in ("drift_nu", "drift_nu_dtod"):
            require(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        levels = self.drift_g_levels_s
        require(
            len(self.drift_nu_levels) == len(levels),
            "drift_nu_levels",
            f"needs {len(levels)} exponents (one per drift_g_levels_s entry)",
        )
        require(all(g > 0 for g in levels), "drift_g_levels_s", "must be > 0 S")
        require(
            all(a < b for a, b in zip(levels, levels[1:])),
            "drift_g_levels_s",
            "must be strictly increasing",
        )
        require(all(nu >= 0 for nu in self.drift_nu_levels), "drift_nu_levels", "must be >= 0")
        require(self.drift_t0_s > 0, "drift_t0_s", f"must be > 0 s, got {self.drift_t0_s}")
        require(
            0.0 <= self.stuck_fraction <= 1.0,
            "stuck_fraction",
            f"must be in [0, 1], got {self.stuck_fraction}",
        )
        require(
            self.stuck_fraction == 0.0 or len(self.stuck_g_s) > 0,
            "stuck_g_s",
            "needs the measured conductances of the stuck cells when stuck_fraction > 0",
        )
        require(all(g >= 0 for g in self.stuck_g_s), "stuck_g_s", "must be >= 0 S")
        require(
            self.step_axis in ("conductance", "resistance"),
            "step_axis",
            f"must be 'conductance' or 'resistance', got {self.step_axis!r}",
        )
        require(
            self.step_axis == "conductance" or self.g_min_s > 0,
            "g_min_s",
            "must be > 0 with step_axis 'resistance' (the floor's resistance 1/g_min_s)",
        )
        require(0 <= self.g_min_s < self.g_max_s, "g_max_s", "needs 0 <= g_min_s < g_max_s")
        k = len(self.g_knots_s)
        require(k >= 1, "g_knots_s", "needs at least one knot")
        require(
            all(a < b for a, b in zip(self.g_knots_s, self.g_knots_s[1:])),
            "g_knots_s",
            "must be strictly increasing",
        )
        c = len(self.pulse_v)
        require(c >= 1, "pulse_v", "needs at least one pulse class")
        require(len(self.pulse_width_s) == c, "pulse_width_s", f"needs {c} widths (one per class)")
        require(all(v != 0 for v in self.pulse_v), "pulse_v", "amplitudes must be non-zero")
        require(all(w > 0 for w in self.pulse_width_s), "pulse_width_s", "widths must be > 0")
        for key in ("step_mean_s", "step_std_s"):
            table = getattr(self, key)
            require(
                len(table) == c and all(len(row) == k for row in table),
                key,
                f"must be {c} rows (pulse classes) of {k} values (knots)",
            )
        require(min(min(r) for r in self.step_std_s) >= 0, "step_std_s", "must be >= 0")
        require(
            len(self.step_dtod) == c and min(self.step_dtod) >= 0,
            "step_dtod",
            f"must be {c} values >= 0 (one per pulse class)",
        )
        d = len(self.device_axis_scale)
        require(
            len(self.device_step_scale) == d
            and all(len(row) == c and min(row) >= 0 for row in self.device_step_scale),
            "device_step_scale",
            f"must be {d} rows (one per device_axis_scale entry) of {c} values >= 0",
        )
        require(all(a > 0 for a in self.device_axis_scale), "device_axis_scale", "must be > 0")
        for key in ("g0_std_s", "read_noise_rel", "read_noise_floor_s"):
            require(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        require(
            0 < self.min_amplitude_ratio <= 1,
            "min_amplitude_ratio",
            f"must be in (0, 1], got {self.min_amplitude_ratio}",
        )


def _balanced_draw(n: int, shape, generator, device) -> Tensor:
    """Indices into ``n`` measured devices for ``shape`` simulated ones: consecutive random
    permutations of all ``n``, so that every block of ``n`` cells (in C order) holds each
    measured device once. A balanced bootstrap (Davison, Hinkley & Schechtman, Biometrika
    73, 555 (1986)): the simulated devices then differ from the measured population only
    as the measured sample did, without the extra spread of drawing with replacement (which
    made held-out checks of a twin reject where the measured halves of a chip agree)."""
    numel = math.prod(shape)
    rounds = -(-numel // n) if numel else 0
    keys = torch.rand((rounds, n), generator=generator, device=device)
    return keys.argsort(1).flatten()[:numel].reshape(shape)


@register_device("empirical")
class EmpiricalDevice(DeviceModel):
    """Measured step statistics as a device model (see the module docstring)."""

    name = "empirical"
    state_names = ("g_s",)
    bipolar = True
    drifts = False
    Params = EmpiricalParams

    def __init__(self, params=None, **overrides):
        super().__init__(params, **overrides)
        p = self.p
        # the measured pulses are the nominal ones: the most positive and most negative class
        ups = [(v, w) for v, w in zip(p.pulse_v, p.pulse_width_s) if v > 0]
        downs = [(v, w) for v, w in zip(p.pulse_v, p.pulse_width_s) if v < 0]
        self.nominal_set_pulse = max(ups) if ups else None
        self.nominal_reset_pulse = min(downs) if downs else None
        self._tables: dict[tuple, tuple[Tensor, Tensor, Tensor, Tensor, Tensor]] = {}
        if p.drift_nu > 0 or any(nu > 0 for nu in p.drift_nu_levels):
            # a drifting twin keeps each cell's time of last programming
            self.state_names = ("g_s", "t_prog_s")
            self.drifts = True

    def _t(self, device, dtype) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(knots, mean table, std table, class amplitudes, class widths) on device/dtype."""
        key = (str(device), dtype)
        if key not in self._tables:
            p = self.p
            t = lambda x: torch.tensor(x, device=device, dtype=dtype)
            self._tables[key] = (
                t(p.g_knots_s),
                t(p.step_mean_s),
                t(p.step_std_s),
                t(p.pulse_v),
                t(p.pulse_width_s),
            )
        return self._tables[key]

    # -- plugin interface -------------------------------------------------------------
    def sample_d2d(self, shape, generator, device="cpu", dtype=torch.float32) -> D2D:
        """Each device's response: one measured device's ``axis_scale`` and
        ``step_scale_<c>`` (drawn jointly, each measured device once per block of as many
        simulated ones: ``_balanced_draw``), times a log-normal step scale
        where ``step_dtod[c] > 0``."""
        p = self.p
        d2d: D2D = {}
        if p.device_axis_scale:
            pick = _balanced_draw(len(p.device_axis_scale), shape, generator, device)
            axis = torch.tensor(p.device_axis_scale, device=device, dtype=dtype)
            steps = torch.tensor(p.device_step_scale, device=device, dtype=dtype)
            d2d["axis_scale"] = axis[pick]
            for c in range(len(p.pulse_v)):
                d2d[f"step_scale_{c}"] = steps[:, c][pick]
        for c, sigma in enumerate(p.step_dtod):
            if sigma > 0:
                drawn = lognormal_spread(1.0, sigma, shape, generator, device, dtype)
                key = f"step_scale_{c}"
                d2d[key] = d2d[key] * drawn if key in d2d else drawn
        if p.drift_g_levels_s and p.drift_nu_dtod > 0:  # the level sets nu, times this
            d2d["drift_nu_factor"] = lognormal_spread(
                1.0, p.drift_nu_dtod, shape, generator, device, dtype
            )
        elif p.drift_nu > 0 and p.drift_nu_dtod > 0:
            d2d["drift_nu"] = lognormal_spread(
                p.drift_nu, p.drift_nu_dtod, shape, generator, device, dtype
            )
        if p.stuck_fraction > 0:  # 1.0 where stuck, and the conductance it is stuck at
            u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
            d2d["stuck"] = (u < p.stuck_fraction).to(dtype)
            levels = torch.tensor(p.stuck_g_s, device=device, dtype=dtype)
            pick = torch.randint(len(p.stuck_g_s), shape, generator=generator, device=device)
            d2d["stuck_g_s"] = levels[pick]
        return d2d

    def initial_state(self, d2d, shape, generator, device="cpu", dtype=torch.float32) -> Tensor:
        p = self.p
        g = p.g0_mean_s + p.g0_std_s * torch.randn(
            shape, generator=generator, device=device, dtype=dtype
        )
        g = g.clamp(p.g_min_s, p.g_max_s)
        if "stuck" in d2d:
            g = torch.where(d2d["stuck"] > 0, d2d["stuck_g_s"], g)
        if self.drifts:  # programmed at t = 0
            return torch.stack([g, torch.zeros_like(g)], -1)
        return g.unsqueeze(-1)

    def conductance(self, state: Tensor, d2d: D2D, v_read: float | Tensor, t_s: float) -> Tensor:
        """G, drifted by ``(max(t - t_p, T0) / T0)^(-nu)`` when the twin drifts."""
        if not self.drifts:
            return state[..., 0].clone()
        p = self.p
        if p.drift_g_levels_s:
            nu = self.drift_exponent(state[..., 0]) * d2d.get("drift_nu_factor", 1.0)
        else:
            nu = d2d.get("drift_nu", p.drift_nu)
        age = (t_s - state[..., 1]).clamp_min(p.drift_t0_s) / p.drift_t0_s
        return state[..., 0] * torch.exp(-nu * age.log())

    def drift_exponent(self, g_s: Tensor) -> Tensor:
        """The exponent of cells programmed to ``g_s``: ``drift_nu_levels`` interpolated
        linearly in ln G between ``drift_g_levels_s``, held beyond the end levels."""
        levels = torch.tensor(self.p.drift_g_levels_s, device=g_s.device, dtype=g_s.dtype)
        nus = torch.tensor(self.p.drift_nu_levels, device=g_s.device, dtype=g_s.dtype)
        if levels.numel() == 1:
            return nus[0].expand_as(g_s)
        x = g_s.clamp_min(torch.finfo(g_s.dtype).tiny).log()
        knots = levels.log()
        # the count of levels below G (a handful: a comparison beats searchsorted on CPU)
        i = (x.unsqueeze(-1) > knots).sum(-1).clamp(1, knots.numel() - 1)
        w = ((x - knots[i - 1]) / (knots[i] - knots[i - 1])).clamp(0.0, 1.0)
        return nus[i - 1] + w * (nus[i] - nus[i - 1])

    def drift_onset_s(self) -> float:
        """T0 of the drift law (0 for a twin that does not drift)."""
        return self.p.drift_t0_s if self.drifts else 0.0

    def read_noise_std(self, g_s: Tensor, d2d: D2D) -> Tensor | None:
        p = self.p
        if p.read_noise_rel == 0 and p.read_noise_floor_s == 0:
            return None
        return p.read_noise_rel * g_s.abs() + p.read_noise_floor_s

    def conductance_range(self) -> tuple[float, float]:
        return self.p.g_min_s, self.p.g_max_s

    def conductance_ceiling(self, d2d: D2D) -> float | None:
        p = self.p
        if p.step_axis == "resistance":  # the stretch moves each device's floor only
            return p.g_max_s
        axis = d2d.get("axis_scale")
        stretch = float(axis.max()) if axis is not None and axis.numel() else 1.0
        return p.g_min_s + stretch * (p.g_max_s - p.g_min_s)

    def pulse_class(self, v: Tensor, width_s: Tensor) -> Tensor:
        """Index of the measured pulse class each pulse maps to, -1 where none applies."""
        _, _, _, cv, cw = self._t(v.device, v.dtype)
        tiny = torch.finfo(v.dtype).tiny
        av = v.abs().clamp_min(tiny).unsqueeze(-1)
        dist = (av.log() - cv.abs().log()).abs() + (
            width_s.clamp_min(tiny).unsqueeze(-1).log() - cw.log()
        ).abs()
        same_sign = torch.sign(v).unsqueeze(-1) == torch.sign(cv)
        dist = torch.where(same_sign, dist, torch.full_like(dist, torch.inf))
        cls = dist.argmin(-1)
        weakest = torch.where(same_sign, cv.abs(), torch.full_like(dist, torch.inf)).amin(-1)
        programs = (v != 0) & (v.abs() >= self.p.min_amplitude_ratio * weakest)
        return torch.where(programs, cls, torch.full_like(cls, -1))

    def step_statistics(self, g_s: Tensor, cls: Tensor) -> tuple[Tensor, Tensor]:
        """Interpolated (mean, std) of the step of class ``cls`` at conductance ``g_s``."""
        knots, mean_t, std_t, _, _ = self._t(g_s.device, g_s.dtype)
        k = knots.numel()
        c = cls.clamp_min(0)
        if k == 1:
            return mean_t[c, 0], std_t[c, 0]
        if k <= 64:
            # the count of knots below G, by comparison: torch.searchsorted costs ~100x
            # more on CPU at the sizes a twin replays (measured 28 ms vs 0.3 ms, 1024 cells)
            i = (g_s.unsqueeze(-1) > knots).sum(-1).clamp(1, k - 1)
        else:
            i = torch.searchsorted(knots, g_s.contiguous()).clamp(1, k - 1)
        lo, hi = knots[i - 1], knots[i]
        w = ((g_s - lo) / (hi - lo)).clamp(0.0, 1.0)
        flat_mean, flat_std = mean_t.flatten(), std_t.flatten()
        a, b = c * k + i - 1, c * k + i
        mean = flat_mean[a] + w * (flat_mean[b] - flat_mean[a])
        std = flat_std[a] + w * (flat_std[b] - flat_std[a])
        return mean, std

    def step(self, state, d2d, v, width_s, count, t_s, generator, compliance_a=None) -> Tensor:
        p = self.p
        cls = self.pulse_class(v, width_s)
        count = torch.where(cls >= 0, count, torch.zeros_like(count))
        if "stuck" in d2d:  # no pulse moves a stuck cell
            count = torch.where(d2d["stuck"] > 0, torch.zeros_like(count), count)
        scale = None  # each cell's own step scale for the class of its pulse
        for c in range(len(self.p.pulse_v)):  # a loop over the few pulse classes
            if f"step_scale_{c}" in d2d:
                base = torch.ones_like(state[..., 0]) if scale is None else scale
                scale = torch.where(cls == c, d2d[f"step_scale_{c}"], base)
        axis = d2d.get("axis_scale")
        g = state[..., 0]
        n_max = int(count.max().item()) if count.numel() else 0
        if p.step_axis == "resistance":
            g = self._step_resistance(g, cls, scale, axis, count, n_max, generator)
        else:
            g = self._step_conductance(g, cls, scale, axis, count, n_max, generator)
        if not self.drifts:
            return g.unsqueeze(-1)
        # a pulsed cell's drift restarts at the end of its pulses
        now = torch.as_tensor(t_s, dtype=g.dtype, device=g.device)
        t_prog = torch.where(count > 0, now, state[..., 1])
        return torch.stack([g, t_prog.expand_as(g)], -1)

    def _step_conductance(self, g, cls, scale, axis, count, n_max, generator) -> Tensor:
        """``step`` with each device's response on its conductance (module docstring)."""
        p = self.p
        ceiling = None if axis is None else p.g_min_s + axis * (p.g_max_s - p.g_min_s)
        # a loop over the pulse index only (each pulse's step depends on the G it starts
        # from, and the table has no closed-form composition); all cells move at once
        for n in range(n_max):
            active = count > n
            u = g if axis is None else p.g_min_s + (g - p.g_min_s) / axis
            mean, std = self.step_statistics(u, cls)
            mean, std = self._per_device(mean, std, scale, axis)
            xi = torch.randn(g.shape, generator=generator, device=g.device, dtype=g.dtype)
            new = g + mean + std * xi
            if ceiling is None:
                new = new.clamp(p.g_min_s, p.g_max_s)
            else:  # each device saturates on its own axis
                new = torch.minimum(new.clamp_min(p.g_min_s), ceiling)
            g = torch.where(active, new, g)
        return g

    def _per_device(
        self, mean: Tensor, std: Tensor, scale: Tensor | None, axis: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """A step's mean and spread for each device: its step scale and axis stretch
        multiply the mean, and the spread too when the spread is relative."""
        for factor in (scale, axis):
            if factor is not None:
                mean = mean * factor
                std = std * factor if self.p.step_std_relative else std
        return mean, std

    def _step_resistance(self, g, cls, scale, axis, count, n_max, generator) -> Tensor:
        """``step`` with each device's response on its resistance (module docstring)."""
        p = self.p
        tiny = torch.finfo(g.dtype).tiny
        r_lo, r_hi = 1.0 / p.g_max_s, 1.0 / p.g_min_s
        r = 1.0 / g.clamp_min(p.g_min_s)
        ceiling = r_hi if axis is None else r_lo + axis * (r_hi - r_lo)
        for n in range(n_max):  # the pulse index only, as in ``step``
            active = count > n
            r_u = r if axis is None else r_lo + (r - r_lo) / axis
            g_u = 1.0 / r_u
            mean_g, std_g = self.step_statistics(g_u, cls)
            mean = 1.0 / (g_u + mean_g).clamp_min(tiny) - r_u
            std = std_g * r_u * r_u
            mean, std = self._per_device(mean, std, scale, axis)
            xi = torch.randn(g.shape, generator=generator, device=g.device, dtype=g.dtype)
            new = torch.minimum((r + mean + std * xi).clamp_min(r_lo), torch.as_tensor(ceiling))
            r = torch.where(active, new, r)
        return 1.0 / r
