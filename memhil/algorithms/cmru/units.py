"""BMRU / CMRU / αCMRU: memory recurrent units with quantized, persistent states.

One cell family parameterized by ε (reimplemented from the published equations,
arXiv 2601.09495 and 2605.11855; ``docs/algorithms.md#cell``):

    c_t    = W_c x_t + b_c                   candidate
    β_t    = W_β x_t + b_β                   input-dependent threshold (bias init 1)
    z_t    = H(|c_t| − |β_t|)                switch only where the candidate beats the threshold
    u_t    = sign(c_t)                       quantized increment in {−1, +1}
    s_t    = z_t (u_t + ε s_{t−1}) + (1 − z_t) s_{t−1} = A_t s_{t−1} + B_t
    o_t    = W_out (α ⊙ s_t)

ε = 0 is the BMRU latch (states ±1), ε = 1 the CMRU counter (integer states, ∂s_t/∂s_{t−1} = 1),
0 < ε < 1 the relaxed αCMRU. H and sign carry arctan-type surrogate gradients of slope ``a``.
The first-quadrant (FQ, current-mode) variant is a Schmitt trigger on non-negative currents.
Every cell is evaluated with :func:`memhil.nn.scan.linear_scan`; ``forward_loop``
steps the cell equations one time step at a time and is the reference the scan is tested against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from memhil.nn.mingru import CandidatePerturbation
from memhil.nn.scan import linear_scan

if TYPE_CHECKING:
    from memhil.analog.linear import AnalogLinear

Variant = Literal["signed", "fq"]


# ---------------------------------------------------------------------------------------
# Surrogate-gradient step functions
# ---------------------------------------------------------------------------------------
class _HeavisideSurrogate(torch.autograd.Function):
    """H(x) = 1[x > 0] forward; dH/dx ≈ a / (1 + (π a x)²) backward (arctan surrogate)."""

    @staticmethod
    def forward(ctx, x: Tensor, slope: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.slope = slope
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        a = ctx.slope
        return grad * (a / (1.0 + (math.pi * a * x) ** 2)), None


class _SignSurrogate(torch.autograd.Function):
    """sign(x) ∈ {−1, +1} (sign(0) = +1) forward; d sign/dx ≈ 2a / (1 + (π a x)²) backward."""

    @staticmethod
    def forward(ctx, x: Tensor, slope: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.slope = slope
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        a = ctx.slope
        return grad * (2.0 * a / (1.0 + (math.pi * a * x) ** 2)), None


def heaviside(x: Tensor, slope: float = 1.0) -> Tensor:
    """Step function with the arctan surrogate gradient of slope ``slope``."""
    return _HeavisideSurrogate.apply(x, float(slope))


def sign(x: Tensor, slope: float = 1.0) -> Tensor:
    """±1 sign with the arctan surrogate gradient of slope ``slope``."""
    return _SignSurrogate.apply(x, float(slope))


# ---------------------------------------------------------------------------------------
# ε: fixed, learnable or scheduled
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EpsSchedule:
    """ε held at ``start`` for ``hold_steps``, then linear to ``end`` over ``decay_steps``, then
    ``end`` — "train as CMRU, deploy as BMRU" (start 1, end 0)."""

    hold_steps: int
    decay_steps: int
    start: float = 1.0
    end: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.hold_steps:
            return self.start
        if self.decay_steps <= 0 or step >= self.hold_steps + self.decay_steps:
            return self.end
        frac = (step - self.hold_steps) / self.decay_steps
        return self.start + frac * (self.end - self.start)

    def apply(self, model: nn.Module, step: int) -> float:
        """Set ε of every fixed-ε memory unit in ``model`` for training step ``step``."""
        eps = self(step)
        for cell in model.modules():
            if isinstance(cell, MemoryRecurrentUnit) and not cell.learn_eps:
                cell.set_eps(eps)
        return eps


# ---------------------------------------------------------------------------------------
# The cell family
# ---------------------------------------------------------------------------------------
class MemoryRecurrentUnit(nn.Module):
    """BMRU (ε=0), CMRU (ε=1) or αCMRU (0<ε<1, fixed or learnable per unit): (B, T, d_in) →
    (B, T, d_out) through ``d_state`` quantized memory units.

    ``variant="signed"`` is the ±1 cell above; ``"fq"`` the first-quadrant current-mode
    Schmitt-trigger cell (non-negative candidate, two per-unit thresholds β₁ < β₂ = β₁ + δ,
    non-negative amplitude, binary initial state). ``slope`` is the surrogate slope ``a``
    (settable, e.g. for annealing). ``quantize_initial_state`` makes the learned initial
    state ±1 (signed) so states stay quantized; the FQ cell always binarizes it.
    ``d_out=None`` returns the scaled states α ⊙ s without the output map.
    """

    eps_value: Tensor

    def __init__(
        self,
        d_in: int,
        d_state: int,
        d_out: int | None = None,
        *,
        eps: float = 1.0,
        learn_eps: bool = False,
        variant: Variant = "signed",
        slope: float = 1.0,
        amplitude_init: float = 1.0,
        threshold_bias_init: float = 1.0,
        quantize_initial_state: bool = True,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if d_in < 1 or d_state < 1:
            raise ValueError(f"d_in={d_in} and d_state={d_state} must be >= 1")
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"eps={eps} must lie in [0, 1]")
        if variant not in ("signed", "fq"):
            raise ValueError(f"unknown variant {variant!r} (signed, fq)")
        if slope <= 0:
            raise ValueError(f"surrogate slope {slope} must be > 0")
        self.d_in, self.d_state, self.d_out = d_in, d_state, d_out
        self.variant = variant
        self.slope = float(slope)
        self.learn_eps = bool(learn_eps)
        self.quantize_initial_state = bool(quantize_initial_state)
        bound = 1.0 / math.sqrt(d_in)

        def uniform(*shape: int) -> Tensor:
            return (torch.rand(*shape, generator=generator) * 2 - 1) * bound

        if variant == "signed":
            self.w_c = nn.Parameter(uniform(d_state, d_in))
            self.b_c = nn.Parameter(uniform(d_state))
            self.w_beta = nn.Parameter(uniform(d_state, d_in))
            self.b_beta = nn.Parameter(torch.full((d_state,), float(threshold_bias_init)))
            self.amplitude = nn.Parameter(torch.full((d_state,), float(amplitude_init)))
            s0 = torch.randint(0, 2, (d_state,), generator=generator).float() * 2 - 1
        else:
            # W_c >= 0 at init (current mirrors); thresholds are per-unit bias currents
            self.w_c = nn.Parameter(uniform(d_state, d_in).abs())
            self.b_c = nn.Parameter(uniform(d_state).abs())
            self.beta_low = nn.Parameter(torch.full((d_state,), 0.5 * float(threshold_bias_init)))
            self.delta_raw = nn.Parameter(torch.full((d_state,), math.log(math.expm1(0.5))))
            self.amplitude_raw = nn.Parameter(
                torch.full((d_state,), math.log(math.expm1(amplitude_init)))
            )
            s0 = torch.randint(0, 2, (d_state,), generator=generator).float()
        self.initial_state = nn.Parameter(s0)
        if self.learn_eps:
            e = min(max(eps, 0.01), 0.99)
            self.eps_logit = nn.Parameter(torch.full((d_state,), math.log(e / (1 - e))))
        else:
            self.register_buffer("eps_value", torch.tensor(float(eps)))
        #: Optional module computing [c_t; β_t] (FQ: W_c x) in place of the float weights,
        #: e.g. an ``AnalogLinear`` holding ``projection_weights()`` on a crossbar.
        self.input_projection: nn.Module | None = None
        #: A deployment replaces the output map by an ``AnalogLinear``.
        self.out: nn.Linear | AnalogLinear | None = (
            nn.Linear(d_state, d_out) if d_out is not None else None
        )
        if self.out is not None and generator is not None:
            assert d_out is not None  # self.out exists
            with torch.no_grad():
                b = 1.0 / math.sqrt(d_state)
                self.out.weight.copy_((torch.rand(d_out, d_state, generator=generator) * 2 - 1) * b)
                self.out.bias.zero_()

    # -- parameters in physical form ------------------------------------------------------
    @property
    def eps(self) -> Tensor:
        """ε per unit (learnable: σ of a logit, so it stays in (0, 1)) or the fixed scalar."""
        return torch.sigmoid(self.eps_logit) if self.learn_eps else self.eps_value

    def set_eps(self, value: float) -> None:
        """Set a fixed ε (e.g. from an :class:`EpsSchedule`)."""
        if self.learn_eps:
            raise RuntimeError("this unit learns ε; set_eps applies to fixed-ε units only")
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"eps={value} must lie in [0, 1]")
        self.eps_value.fill_(float(value))

    def amplitudes(self) -> Tensor:
        """Per-unit output amplitude α (non-negative in the FQ variant)."""
        if self.variant == "fq":
            return nn.functional.softplus(self.amplitude_raw)
        return self.amplitude

    def thresholds(self) -> tuple[Tensor, Tensor]:
        """FQ only: the per-unit thresholds (β₁, β₂ = β₁ + δ), δ > 0."""
        if self.variant != "fq":
            raise RuntimeError("thresholds() is defined for the FQ variant only")
        return self.beta_low, self.beta_low + nn.functional.softplus(self.delta_raw)

    def state0(self) -> Tensor:
        """The initial state s₀ as the cell uses it (quantized where configured)."""
        if self.variant == "fq":
            return heaviside(self.initial_state.abs() - 0.5, self.slope)
        if self.quantize_initial_state:
            return sign(self.initial_state, self.slope)
        return self.initial_state

    # -- the cell -------------------------------------------------------------------------
    def projection_weights(self) -> tuple[Tensor, Tensor]:
        """The input projections as one (out, in) matrix and bias: [W_c; W_β] (FQ: W_c) —
        what a deployment puts on a crossbar (see ``input_projection``)."""
        if self.variant == "fq":
            return self.w_c, self.b_c
        return torch.cat([self.w_c, self.w_beta], 0), torch.cat([self.b_c, self.b_beta], 0)

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(c_t, β_t) from the float weights, or from ``input_projection`` when one is set."""
        if self.variant == "fq":
            x = torch.relu(x)
        if self.input_projection is not None:
            y = self.input_projection(x)
        else:
            w, b = self.projection_weights()
            y = x @ w.t() + b
        if self.variant == "fq":
            return torch.relu(y), None
        return y[..., : self.d_state], y[..., self.d_state :]

    def candidate(self, x: Tensor) -> Tensor:
        """c_t: the pre-switch candidate (FQ: a non-negative current)."""
        return self._project(x)[0]

    def gates(
        self, x: Tensor, perturb: CandidatePerturbation | None = None
    ) -> tuple[Tensor, Tensor]:
        """Switch gates of the recurrence: (z_t or 1 − hold_t, target written on a switch).

        ``perturb`` maps c_t to a perturbed c_t (the noise-injection evaluation)."""
        c, beta = self._project(x)
        if perturb is not None:
            c = perturb(c)
        if self.variant == "fq":
            beta_lo, beta_hi = self.thresholds()
            force_high = heaviside(c - beta_hi, self.slope)
            force_low = heaviside(beta_lo - c, self.slope)
            return force_high + force_low, force_high  # 1 − hold, target 1 or 0
        assert beta is not None  # the signed variant projects β_t
        z = heaviside(c.abs() - beta.abs(), self.slope)
        return z, sign(c, self.slope)

    def coefficients(
        self, x: Tensor, perturb: CandidatePerturbation | None = None
    ) -> tuple[Tensor, Tensor]:
        """(A_t, B_t) of s_t = A_t s_{t−1} + B_t: A = 1 − z + ε z, B = z · target."""
        z, target = self.gates(x, perturb)
        return 1.0 - z + self.eps * z, z * target

    def states(self, x: Tensor, perturb: CandidatePerturbation | None = None) -> Tensor:
        """All states s_1..s_T (B, T, d_state) by the parallel scan."""
        a, b = self.coefficients(x, perturb)
        s0 = self.state0().to(b.dtype).expand(b.shape[0], -1)
        return linear_scan(a, b, s0, dim=1)

    def states_loop(self, x: Tensor, perturb: CandidatePerturbation | None = None) -> Tensor:
        """The same states by stepping the cell equations (reference for the scan)."""
        z, target = self.gates(x, perturb)
        s = self.state0().to(z.dtype).expand(z.shape[0], -1)
        out = []
        for t in range(z.shape[1]):
            zt = z[:, t]
            s = zt * (target[:, t] + self.eps * s) + (1.0 - zt) * s
            out.append(s)
        return torch.stack(out, 1)

    def _readout(self, s: Tensor) -> Tensor:
        y = self.amplitudes() * s
        if self.variant == "fq":
            y = torch.relu(y)
        return self.out(y) if self.out is not None else y

    def forward(self, x: Tensor, perturb: CandidatePerturbation | None = None) -> Tensor:
        return self._readout(self.states(x, perturb))

    def forward_loop(self, x: Tensor, perturb: CandidatePerturbation | None = None) -> Tensor:
        """Sequential evaluation of the same layer."""
        return self._readout(self.states_loop(x, perturb))

    def extra_repr(self) -> str:
        eps = "learned" if self.learn_eps else f"{float(self.eps_value):g}"
        return (
            f"d_in={self.d_in}, d_state={self.d_state}, d_out={self.d_out}, eps={eps}, "
            f"variant={self.variant}, slope={self.slope:g}"
        )


def bmru(d_in: int, d_state: int, d_out: int | None = None, **kw) -> MemoryRecurrentUnit:
    """The bistable latch (ε = 0)."""
    return MemoryRecurrentUnit(d_in, d_state, d_out, eps=0.0, **kw)


def cmru(d_in: int, d_state: int, d_out: int | None = None, **kw) -> MemoryRecurrentUnit:
    """The cumulative counter (ε = 1)."""
    return MemoryRecurrentUnit(d_in, d_state, d_out, eps=1.0, **kw)


def acmru(
    d_in: int,
    d_state: int,
    d_out: int | None = None,
    *,
    eps: float = 0.5,
    learn_eps: bool = False,
    **kw,
) -> MemoryRecurrentUnit:
    """The relaxed cumulative unit (0 < ε < 1, fixed or learned per unit)."""
    return MemoryRecurrentUnit(d_in, d_state, d_out, eps=eps, learn_eps=learn_eps, **kw)
