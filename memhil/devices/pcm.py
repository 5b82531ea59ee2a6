"""Phase-change memory (PCM) after Nandakumar et al., J. Appl. Phys. 124, 152135 (2018).

A statistical per-pulse model fitted on ~10k doped-GST mushroom cells, as used for e-prop
in ``YigitDemirag/srnn-pcm`` (MIT); see ``docs/devices.md#pcm``. PCM potentiates
gradually with SET pulses (state-dependent mean step, cycle-to-cycle noise as large as the
mean) and depresses only by an abrupt RESET; the conductance drifts as a power law of the
time since programming, and reads carry a state-dependent Gaussian noise.

Units: every parameter and every conductance at the interface is SI (siemens, seconds,
volts). The published fit constants are in µS; here ``c1_s``, ``a1_s``, ``c2_s``, ``a2_s``,
``c3_s`` hold them converted to siemens and the slopes ``m1``, ``m2``, ``m3`` are
dimensionless, so the per-pulse law is the published one with G in siemens. The state
is ``(*shape, 3)``: [G (S), P (pulse-history term, 1 after RESET), t_p (s, time of the
last programming event)].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from memhil.core.config import require
from memhil.devices.base import (
    D2D,
    DeviceModel,
    lognormal_spread,
    register_device,
    standard_normals_,
)

#: Mean pulses-to-conductance curve P(G) = 0.027 G^3 - 0.15 G^2 + 0.81 G, G in µS
#: (Nandakumar et al. 2018; coefficients of G^3, G^2, G).
PULSE_CURVE_COEFFS_US = (0.027, -0.15, 0.81)


@dataclass(frozen=True)
class PCMParams:
    """Constants of the Nandakumar PCM model (SI units; published µS values converted).

    SET: P <- P e^{-1/a_pulses}; dG ~ N(mu, sigma^2), mu = m1 G + c1_s + a1_s P,
    sigma = m2 G + c2_s + a2_s P; G <- clip(G + dG, g_min_s, g_max_s).
    RESET: G ~ N(g_reset_s, (g_reset_std g_reset_s)^2) clamped >= g_reset_floor_s, P = 1.
    Drift: G_d = G (max(t - t_p, t0_s) / t0_s)^(-nu). Read noise: sigma_n = m3 G_d + c3_s.
    ``g_max_s`` = 12 µS is the srnn-pcm value (20e-6 reproduces the model paper's Fig. 5;
    the mean step vanishes near 10.5 µS either way). D2D (``*_dtod``, relative log-normal
    spreads, default 0): the published sigma was fitted across ~10k devices and already
    lumps device-to-device with cycle-to-cycle variability, so the defaults add none.
    Pulse amplitude and width do not enter the fit; ``v_set_min_v`` / ``v_reset_min_v``
    only gate which pulses program (a memhil choice: the fit has none).
    """

    # SET update law (Nandakumar 2018, Table/Eq. of the statistical model)
    m1: float = -0.084
    c1_s: float = 0.880e-6
    a1_s: float = 1.40e-6
    m2: float = 0.091
    c2_s: float = 0.260e-6
    a2_s: float = 2.15e-6
    a_pulses: float = 2.6  # decay constant of P, in pulses
    g_min_s: float = 0.1e-6  # lower clip of SET updates
    g_max_s: float = 12e-6  # upper clip of SET updates
    # RESET
    g_reset_s: float = 0.1e-6  # G0
    g_reset_std: float = 0.1  # relative spread of the RESET state
    g_reset_floor_s: float = 0.01e-6
    # drift and read noise
    nu: float = 0.04
    t0_s: float = 38.6
    m3: float = 0.03
    c3_s: float = 0.13e-6
    # device-to-device spreads (relative, log-normal), default none
    nu_dtod: float = 0.0
    g_max_dtod: float = 0.0
    # pulse gating (a memhil choice)
    v_set_min_v: float = 0.5
    v_reset_min_v: float = 0.5
    # auxiliary relation for update schemes: reliable granularity per pulse
    granularity_s: float = 0.75e-6

    def __post_init__(self) -> None:
        require(self.a_pulses > 0, "a_pulses", f"must be > 0, got {self.a_pulses}")
        require(
            0 <= self.g_min_s < self.g_max_s,
            "g_min_s",
            f"need 0 <= g_min_s ({self.g_min_s}) < g_max_s ({self.g_max_s})",
        )
        require(self.g_reset_s > 0, "g_reset_s", f"must be > 0, got {self.g_reset_s}")
        require(
            self.g_reset_floor_s >= 0,
            "g_reset_floor_s",
            f"must be >= 0, got {self.g_reset_floor_s}",
        )
        require(self.t0_s > 0, "t0_s", f"must be > 0, got {self.t0_s}")
        require(self.nu >= 0, "nu", f"must be >= 0, got {self.nu}")
        for name in ("g_reset_std", "nu_dtod", "g_max_dtod", "granularity_s"):
            require(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")
        for name in ("v_set_min_v", "v_reset_min_v"):
            require(getattr(self, name) > 0, name, f"must be > 0 V, got {getattr(self, name)}")


@register_device("pcm")
class PCMDevice(DeviceModel):
    """Nandakumar PCM: gradual stochastic SET, abrupt RESET, power-law drift, read noise.

    A positive pulse with ``v >= v_set_min_v`` is a SET pulse; a negative one with
    ``|v| >= v_reset_min_v`` RESETs (``count`` RESETs equal one); weaker pulses do nothing.
    Every programmed cell records ``t_p = t_s``.
    """

    nominal_set_pulse = (1.0, 100e-9)
    nominal_reset_pulse = (-2.5, 50e-9)

    name = "pcm"
    state_names = ("g_s", "p", "t_p_s")
    bipolar = False
    drifts = True
    Params = PCMParams

    # -- D2D and initial state --------------------------------------------------------
    def sample_d2d(self, shape, generator, device="cpu", dtype=torch.float32) -> D2D:
        """Per-device drift exponent ``nu`` and SET ceiling ``g_max_s`` (only when spread > 0)."""
        p = self.p
        d2d: D2D = {}
        if p.nu_dtod > 0:
            d2d["nu"] = lognormal_spread(p.nu, p.nu_dtod, shape, generator, device, dtype)
        if p.g_max_dtod > 0:
            d2d["g_max_s"] = lognormal_spread(
                p.g_max_s, p.g_max_dtod, shape, generator, device, dtype
            ).clamp_min_(p.g_min_s)
        return d2d

    def initial_state(self, d2d, shape, generator, device="cpu", dtype=torch.float32) -> Tensor:
        """As fabricated after an initial RESET: G from the RESET distribution, P = 1, t_p = 0."""
        state = torch.empty((*shape, 3), device=device, dtype=dtype)
        state[..., 0] = self._reset_draw(shape, generator, device, dtype)
        state[..., 1] = 1.0
        state[..., 2] = 0.0
        return state

    # -- read -------------------------------------------------------------------------
    def conductance(self, state: Tensor, d2d: D2D, v_read: float | Tensor, t_s: float) -> Tensor:
        """Drifted conductance G (max(t - t_p, T0)/T0)^(-nu) in S.

        For ``t - t_p < T0`` (and before programming) no drift is applied: the fit's G is
        the value at the first read, T0 = 38.6 s after programming, so earlier reads return
        that value instead of extrapolating the power law to t -> t_p where it diverges.
        """
        p = self.p
        g = state[..., 0]
        nu = d2d.get("nu", p.nu)
        if not isinstance(nu, Tensor) and nu == 0.0:
            return g.clone()
        ratio = (t_s - state[..., 2]).clamp_min_(p.t0_s).div_(p.t0_s)
        if isinstance(nu, Tensor):
            return g * ratio.log_().mul_(nu).neg_().exp_()
        return g * ratio.pow_(-nu)

    def drift_onset_s(self) -> float:
        """T0: the drift law uses max(t - t_p, T0)."""
        return self.p.t0_s

    #: Run SET trains as compiled CPU loops (train_kernels); False takes the torch ops,
    #: the reference the compiled loops are tested against.
    compiled_trains = True
    uniform_requests = True

    def read_noise_std(self, g_s: Tensor, d2d: D2D) -> Tensor:
        """sigma_n = m3 G_d + c3 (S), with ``g_s`` the drifted conductance being read."""
        return g_s * self.p.m3 + self.p.c3_s

    def conductance_range(self) -> tuple[float, float]:
        return (self.p.g_min_s, self.p.g_max_s)

    def conductance_ceiling(self, d2d: D2D) -> float:
        """SET clips at G_max and drift only lowers G."""
        return float(d2d["g_max_s"].max()) if "g_max_s" in d2d else self.p.g_max_s

    # -- programming ------------------------------------------------------------------
    def step(self, state, d2d, v, width_s, count, t_s, generator, compliance_a=None) -> Tensor:
        """``count`` SET pulses (v >= v_set_min_v) or one RESET (v <= -v_reset_min_v)."""
        p = self.p
        g_max = d2d.get("g_max_s", p.g_max_s)
        # Fast path (benchmark case): every cell gets the same number of SET pulses.
        if v.numel() == 1 and count.numel() == 1:  # one request for every cell
            if float(v) >= p.v_set_min_v:
                n = int(count)
                return state.clone() if n <= 0 else self._set_all(state, g_max, n, t_s, generator)
            cells = state.shape[:-1]
            v, count = v.reshape(()).expand(cells), count.reshape(()).expand(cells)
        elif v.numel() and float(v.amin()) >= p.v_set_min_v:
            cmin, cmax = (int(x) for x in torch.aminmax(count))
            if cmin == cmax:
                if cmax <= 0:
                    return state.clone()
                return self._set_all(state, g_max, cmax, t_s, generator)
        return self._step_general(state, g_max, v, count, t_s, generator)

    def _set_all(
        self, state: Tensor, g_max, n: int, t_s: float, generator: torch.Generator
    ) -> Tensor:
        """All cells, ``n`` SET pulses, no masks and no gathers. One pulse goes straight into
        the output's (strided) columns; a train runs on contiguous copies of G and P (each
        pulse's ~10 passes then vectorize) that are written back once, so the cost per
        pulse does not grow with ``n``."""
        out = torch.empty_like(state)
        if state.device.type == "cpu" and state.is_contiguous() and self.compiled_trains:
            self._set_train_compiled(state, out, g_max, n, t_s, generator)
            return out
        if n == 1:
            g_out, p_out = out[..., 0], out[..., 1]
            self._set_pulses(state[..., 0], state[..., 1], g_out, p_out, n, g_max, generator)
        else:
            g, pp = state[..., 0].contiguous(), state[..., 1].contiguous()
            self._set_pulses(g, pp, g, pp, n, g_max, generator)
            out[..., 0] = g
            out[..., 1] = pp
        out[..., 2] = t_s
        return out

    def _set_train_compiled(
        self, state: Tensor, out: Tensor, g_max, n: int, t_s: float, generator: torch.Generator
    ) -> None:
        """:meth:`_set_pulses` on every cell as one compiled loop per block of pulses
        (:func:`memhil.devices.train_kernels.pcm_set_train`): the same arithmetic, FMAs
        where torch's ``add_(alpha=)`` has them, and the same draws, pulse by pulse."""
        import numpy as np

        from memhil.devices import train_kernels

        src, dst = state.view(-1, 3).numpy(), out.view(-1, 3).numpy()
        dtype = src.dtype
        if isinstance(g_max, Tensor):
            top = g_max.reshape(-1).contiguous().numpy()
        else:
            top = np.array([g_max], dtype=dtype)
        consts = self._pcm_consts(t_s, dtype)
        block = train_kernels.block_pulses(n, src.shape[0], src.itemsize)
        for k0 in range(0, n, block):
            xi = torch.empty((min(block, n - k0), src.shape[0]), dtype=state.dtype)
            for row in xi:  # pulse by pulse, as _set_pulses draws them
                standard_normals_(row, generator)
            train_kernels.pcm_set_train(src if k0 == 0 else dst, xi.numpy(), top, consts, dst)

    def _pcm_consts(self, t_s: float, dtype) -> Any:
        """The compiled SET kernels' constants (see :mod:`memhil.devices.train_kernels`)."""
        import numpy as np

        p = self.p
        return np.array(
            [math.exp(-1.0 / p.a_pulses), p.m2, p.a2_s, p.c2_s, 1.0 + p.m1]
            + [p.a1_s, p.c1_s, p.g_min_s, t_s],
            dtype=dtype,
        )

    def _set_counts_compiled(
        self,
        flat: Tensor,
        order: Tensor,
        steps: list[int],
        g_max,
        t_s: float,
        generator: torch.Generator,
    ) -> None:
        """:meth:`_step_general`'s prefix passes as one compiled loop, in place on the
        contiguous CPU state ``flat`` (cells, 3)
        (:func:`memhil.devices.train_kernels.pcm_set_counts`): the same arithmetic and
        the same draws (one ``standard_normals_`` per pass over its prefix, in pass order), with no
        gather, scatter or per-pass torch ops."""
        import numpy as np

        from memhil.devices import train_kernels

        xi = torch.empty(sum(steps), dtype=flat.dtype)
        start = 0
        for m in steps:  # as the torch path draws them: pass by pass
            standard_normals_(xi[start : start + m], generator)
            start += m
        if isinstance(g_max, Tensor):
            top = g_max.reshape(-1).contiguous().numpy()
        else:
            top = np.array([g_max], dtype=flat.numpy().dtype)
        train_kernels.pcm_set_counts(
            flat.numpy(),
            order.numpy(),
            np.asarray(steps, dtype=np.int64),
            xi.numpy(),
            top,
            self._pcm_consts(t_s, flat.numpy().dtype),
        )

    def _set_pulses(
        self,
        g_in: Tensor,
        p_in: Tensor,
        g_out: Tensor,
        p_out: Tensor,
        n: int,
        g_max,
        generator: torch.Generator,
    ) -> None:
        """``n`` SET pulses from (``g_in``, ``p_in``) into (``g_out``, ``p_out``), which may alias.

        Per pulse: one draw of normals (``standard_normals_``) and nine elementwise ops,
        P <- P e^{-1/a}; G <- clip((1+m1) G + c1 + A1 P + (m2 G + c2 + A2 P) xi, g_min, g_max).
        """
        p = self.p
        decay = math.exp(-1.0 / p.a_pulses)
        xi = torch.empty(g_out.shape, device=g_out.device, dtype=g_out.dtype)
        sig = torch.empty_like(xi)
        tensor_max = isinstance(g_max, Tensor)
        for k in range(n):
            g_src, p_src = (g_in, p_in) if k == 0 else (g_out, p_out)
            torch.mul(p_src, decay, out=p_out)
            standard_normals_(xi, generator)
            torch.mul(g_src, p.m2, out=sig).add_(p_out, alpha=p.a2_s).add_(p.c2_s).mul_(xi)
            sig.add_(g_src, alpha=1.0 + p.m1).add_(p_out, alpha=p.a1_s).add_(p.c1_s)
            if tensor_max:
                torch.minimum(sig.clamp_min_(p.g_min_s), g_max, out=g_out)
            else:
                torch.clamp(sig, p.g_min_s, g_max, out=g_out)

    def _step_general(
        self, state: Tensor, g_max, v: Tensor, count: Tensor, t_s: float, generator: torch.Generator
    ) -> Tensor:
        """Mixed SET / RESET / idle cells and per-cell counts: gather the programmed cells,
        sort SET cells by count so pass ``k`` works on a prefix (no masks), scatter back."""
        p = self.p
        k = state.shape[-1]
        out = state.clone(memory_format=torch.contiguous_format)
        flat = out.view(-1, k)
        cnt = count.reshape(-1)
        vf = v.reshape(-1)
        active = cnt > 0
        set_idx = ((vf >= p.v_set_min_v) & active).nonzero().squeeze(1)
        reset_idx = ((vf <= -p.v_reset_min_v) & active).nonzero().squeeze(1)
        if set_idx.numel():
            n = cnt.index_select(0, set_idx)
            n_max = int(n.max())
            if int(n.min()) == n_max:
                order = set_idx
                steps = [set_idx.numel()] * n_max
            else:
                n_sorted, perm = torch.sort(n, descending=True)
                order = set_idx.index_select(0, perm)
                # number of cells still receiving pulse k: #{n > k}
                hist = torch.bincount(n_sorted, minlength=n_max + 1)
                steps = (n_sorted.numel() - torch.cumsum(hist, 0)[:n_max]).tolist()
            if flat.device.type == "cpu" and self.compiled_trains:
                self._set_counts_compiled(flat, order, steps, g_max, t_s, generator)
            else:
                sub = flat.index_select(0, order)
                g = sub[:, 0].contiguous()
                pp = sub[:, 1].contiguous()
                gm = (
                    g_max.reshape(-1).index_select(0, order) if isinstance(g_max, Tensor) else g_max
                )
                for m in steps:  # pass k: the first m cells (count > k), in place on views
                    gm_m = gm[:m] if isinstance(gm, Tensor) else gm
                    self._set_pulses(g[:m], pp[:m], g[:m], pp[:m], 1, gm_m, generator)
                sub[:, 0] = g
                sub[:, 1] = pp
                sub[:, 2] = t_s
                flat.index_copy_(0, order, sub)
        if reset_idx.numel():
            m = reset_idx.numel()
            sub = torch.empty((m, k), device=state.device, dtype=state.dtype)
            sub[:, 0] = self._reset_draw((m,), generator, state.device, state.dtype)
            sub[:, 1] = 1.0
            sub[:, 2] = t_s
            flat.index_copy_(0, reset_idx, sub)
        return out

    def _reset_draw(self, shape, generator, device, dtype) -> Tensor:
        """G ~ N(G0, (g_reset_std G0)^2) clamped >= g_reset_floor_s (S)."""
        p = self.p
        xi = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return xi.mul_(p.g_reset_std * p.g_reset_s).add_(p.g_reset_s).clamp_min_(p.g_reset_floor_s)

    # -- auxiliary relations for update schemes ---------------------------------------
    def mean_step(self, g_s: Any, p_term: Any) -> Any:
        """Mean SET step mu = m1 G + c1 + A1 P (S) at conductance ``g_s`` and history ``p_term``
        (P already decayed for this pulse)."""
        return self.p.m1 * g_s + self.p.c1_s + self.p.a1_s * p_term

    def step_std(self, g_s: Any, p_term: Any) -> Any:
        """Std of the SET step sigma = m2 G + c2 + A2 P (S)."""
        return self.p.m2 * g_s + self.p.c2_s + self.p.a2_s * p_term

    @staticmethod
    def mean_pulse_curve(g_s: Any) -> Tensor:
        """Mean number of SET pulses from RESET to ``g_s``: P(G) = 0.027 G^3 - 0.15 G^2 + 0.81 G
        (G in µS inside the polynomial)."""
        g = torch.as_tensor(g_s, dtype=torch.float64) * 1e6
        a3, a2, a1 = PULSE_CURVE_COEFFS_US
        return ((a3 * g + a2) * g + a1) * g

    def pulses_for(self, g_from_s: Any, g_to_s: Any) -> Tensor:
        """SET pulses to go from ``g_from_s`` to ``g_to_s`` on the mean curve:
        n = floor(P(G_t) - P(G_c)), never negative (SET cannot lower G), as int64."""
        n = torch.floor(self.mean_pulse_curve(g_to_s) - self.mean_pulse_curve(g_from_s))
        return n.clamp_min_(0).to(torch.int64)
