"""Sequential reservoir baselines: the memristive-friendly ESN (MF-ESN) and the leaky ESN.

MF-ESN (Pistolesi et al., APL Mach. Learn. 2025): each unit is the normalised conductance
h in [0, 1] of a volatile memristor whose potentiation/depression rates depend
exponentially on a voltage set by the input and the recurrent state; the recurrent term
W h_{t-1} inside the rates is what forces a loop over time. Both baselines are vectorised
over batch and units and loop only over time steps; their states feed a ridge readout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from memhil.nn.pooling import Pooling, check_pooling, valid_mask


@dataclass(frozen=True)
class MFDevice:
    """Constants of the volatile memristor model behind the MF cell (MF-ESN defaults).

    Rates: kp = kp0 exp(eta_p alpha v), kd = kd0 exp(-eta_d alpha v), with the drive voltage
    v in [v_lo_v, v_hi_v] (V); kp0, kd0 are rates per unit time step.
    """

    kp0: float = 1e-4
    kd0: float = 0.5
    eta_p: float = 10.0
    eta_d: float = 1.0
    alpha: float = 1.0
    v_lo_v: float = 0.35
    v_hi_v: float = 1.15

    def __post_init__(self) -> None:
        if not 0 <= self.v_lo_v < self.v_hi_v:
            raise ValueError(f"need 0 <= v_lo_v < v_hi_v, got {self.v_lo_v}, {self.v_hi_v} V")
        for name in ("kp0", "kd0", "eta_p", "eta_d", "alpha"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    def voltage(self, z: Tensor, p: float) -> Tensor:
        """Drive voltage v = v_lo + (v_hi - v_lo) sigmoid(p z)."""
        return self.v_lo_v + (self.v_hi_v - self.v_lo_v) * torch.sigmoid(p * z)

    def rates(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """(kp, kd): potentiation and depression rates at voltage ``v``."""
        kp = self.kp0 * torch.exp((self.eta_p * self.alpha) * v)
        kd = self.kd0 * torch.exp((-self.eta_d * self.alpha) * v)
        return kp, kd

    def log_rate_lines(self) -> tuple[float, float, float, float]:
        """(lp0, lp1, ld0, ld1) with ln kp = lp0 + lp1 s and ln kd = ld0 - ld1 s for
        s = sigmoid(p z): the rates as exponentials of one affine map of s, which lets a
        step of the MF cell fold its constants (and dt) into two exps."""
        span = self.v_hi_v - self.v_lo_v
        up, down = self.eta_p * self.alpha, self.eta_d * self.alpha
        return (
            math.log(self.kp0) + up * self.v_lo_v,
            up * span,
            math.log(self.kd0) - down * self.v_lo_v,
            down * span,
        )

    def rate_sum_range(self) -> tuple[float, float]:
        """Exact (min, max) of kp + kd over the voltage window: the sum is convex in v, so the
        maximum sits at an end of the window and the minimum at the stationary point (clipped)."""
        a, b = self.eta_p * self.alpha, self.eta_d * self.alpha

        def total(v: float) -> float:
            return self.kp0 * math.exp(a * v) + self.kd0 * math.exp(-b * v)

        v_star = math.log(self.kd0 * b / (self.kp0 * a)) / (a + b)
        v_star = min(max(v_star, self.v_lo_v), self.v_hi_v)
        return total(v_star), max(total(self.v_lo_v), total(self.v_hi_v))


def check_decay_range(gamma: float, dt: float, device: MFDevice) -> tuple[float, float]:
    """The range (a_min, a_max) of the MF state decay a = gamma - dt (kp + kd); raise
    ValueError naming the value when it leaves (0, 1) (the scan then loses its stability)."""
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must lie in (0, 1], got {gamma}")
    if not dt > 0.0:
        raise ValueError(f"dt must be > 0, got {dt}")
    s_min, s_max = device.rate_sum_range()
    a_min, a_max = gamma - dt * s_max, gamma - dt * s_min
    if a_min <= 0.0:
        raise ValueError(
            f"decay a = gamma - dt*(kp+kd) reaches {a_min:.6g} <= 0 (gamma={gamma}, "
            f"dt={dt}, max kp+kd={s_max:.6g}); need a in (0, 1): lower dt below "
            f"{gamma / s_max:.6g}"
        )
    if a_max >= 1.0:
        raise ValueError(
            f"decay a = gamma - dt*(kp+kd) reaches {a_max:.6g} >= 1 (gamma={gamma}, "
            f"dt={dt}); need a in (0, 1)"
        )
    return a_min, a_max


def uniform(shape: tuple[int, ...], scale: float, generator: torch.Generator) -> Tensor:
    """Entries drawn from U(-scale, scale)."""
    return (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1).float() * scale


def recurrent_matrix(n_units: int, rho: float, generator: torch.Generator) -> Tensor:
    """Random W with entries U(-a, a), a = rho sqrt(3/N): entry std rho/sqrt(N), so the
    spectral radius is close to ``rho`` (circular law)."""
    if not rho >= 0:
        raise ValueError(f"rho must be >= 0, got {rho}")
    return uniform((n_units, n_units), rho * math.sqrt(3.0 / n_units), generator)


class _SequentialReservoir(nn.Module):
    """Shared loop: run ``step`` over time and pool the states online (no (B, T, N) copy)."""

    n_units: int
    w_in: Tensor
    w: Tensor
    b: Tensor

    def initial_state(self, batch: int, like: Tensor) -> Tensor:
        return torch.zeros(batch, self.n_units, dtype=like.dtype, device=like.device)

    def step(self, x_t: Tensor, h: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_input(self, x: Tensor) -> None:
        if x.dim() != 3 or x.shape[-1] != self.w_in.shape[1]:
            raise ValueError(f"x must be (batch, T, {self.w_in.shape[1]}), got {tuple(x.shape)}")

    @torch.no_grad()
    def states(self, x: Tensor) -> Tensor:
        """All states (batch, T, units) of the sequential recurrence from h_0 = 0."""
        self.check_input(x)
        h = self.initial_state(x.shape[0], x)
        out = []
        for t in range(x.shape[1]):
            h = self.step(x[:, t], h)
            out.append(h)
        return torch.stack(out, 1)

    @torch.no_grad()
    def features(self, x: Tensor, lengths: Tensor | None = None, pool: Pooling = "last") -> Tensor:
        """Pooled readout features (batch, F): the last valid state (the published readout),
        the mean over valid steps, or both; computed on the fly in the time loop."""
        check_pooling(pool)
        self.check_input(x)
        batch, steps, _ = x.shape
        mask = valid_mask(batch, steps, lengths, x.device).to(x.dtype).unsqueeze(-1)
        last_t = mask.squeeze(-1).sum(1).long() - 1
        h = self.initial_state(batch, x)
        total = torch.zeros_like(h)
        last = torch.zeros_like(h)
        for t in range(steps):
            h = self.step(x[:, t], h)
            if pool != "last":
                total = total + mask[:, t] * h
            if lengths is None:
                if t == steps - 1:
                    last = h
            else:
                last = torch.where((last_t == t).unsqueeze(-1), h, last)
        mean = total / mask.sum(1)
        if pool == "last":
            return last
        if pool == "mean":
            return mean
        return torch.cat([mean, last], -1)


class MFESN(_SequentialReservoir):
    """Memristive-friendly ESN, run sequentially (the baseline MARS parallelises).

    z_t = W_in x_t + W h_{t-1} + b; v_t = v_lo + (v_hi - v_lo) sigmoid(p z_t);
    h_t = gamma h_{t-1} + dt (kp_t (1 - h_{t-1}) - kd_t h_{t-1}).
    W_in ~ U(-input_scale, input_scale), b ~ U(-bias_scale, bias_scale), W as
    :func:`recurrent_matrix` with spectral radius ~``rho``; nothing is trained here.
    """

    def __init__(
        self,
        n_features: int,
        n_units: int = 100,
        *,
        rho: float = 0.9,
        input_scale: float = 1.0,
        bias_scale: float = 0.1,
        gamma: float = 1.0,
        p: float = 5.0,
        dt: float = 0.01,
        device: MFDevice = MFDevice(),
        seed: int = 0,
    ):
        super().__init__()
        if n_features < 1 or n_units < 1:
            raise ValueError(f"n_features={n_features} and n_units={n_units} must be >= 1")
        self.decay_range = check_decay_range(gamma, dt, device)
        gen = torch.Generator().manual_seed(seed)
        self.n_units, self.gamma, self.p, self.dt, self.device_model = n_units, gamma, p, dt, device
        self.register_buffer("w_in", uniform((n_units, n_features), input_scale, gen))
        self.register_buffer("w", recurrent_matrix(n_units, rho, gen))
        self.register_buffer("b", uniform((n_units,), bias_scale, gen))

    def step(self, x_t: Tensor, h: Tensor) -> Tensor:
        """One MF update of h (batch, units) driven by x_t (batch, features)."""
        z = x_t @ self.w_in.t() + h @ self.w.t() + self.b
        kp, kd = self.device_model.rates(self.device_model.voltage(z, self.p))
        return self.gamma * h + self.dt * (kp * (1 - h) - kd * h)


class LeakyESN(_SequentialReservoir):
    """Leaky-integrator ESN: h_t = (1 - leak) h_{t-1} + leak tanh(W_in x_t + W h_{t-1} + b),
    same initialisation as the MF-ESN."""

    def __init__(
        self,
        n_features: int,
        n_units: int = 100,
        *,
        rho: float = 0.9,
        input_scale: float = 1.0,
        bias_scale: float = 0.1,
        leak: float = 0.5,
        seed: int = 0,
    ):
        super().__init__()
        if not 0.0 < leak <= 1.0:
            raise ValueError(f"leak must lie in (0, 1], got {leak}")
        if n_features < 1 or n_units < 1:
            raise ValueError(f"n_features={n_features} and n_units={n_units} must be >= 1")
        gen = torch.Generator().manual_seed(seed)
        self.n_units, self.leak = n_units, leak
        self.register_buffer("w_in", uniform((n_units, n_features), input_scale, gen))
        self.register_buffer("w", recurrent_matrix(n_units, rho, gen))
        self.register_buffer("b", uniform((n_units,), bias_scale, gen))

    def step(self, x_t: Tensor, h: Tensor) -> Tensor:
        pre = x_t @ self.w_in.t() + h @ self.w.t() + self.b
        return (1 - self.leak) * h + self.leak * torch.tanh(pre)
