"""Leaky integrate-and-fire recurrent layer with a leaky readout
(``docs/algorithms.md#network-and-learning-rule``).

Discrete time, step ``dt_s``; with alpha = exp(-dt/tau_rec), kappa = exp(-dt/tau_out)::

    v_t = alpha v_{t-1} + I_in,t + W_rec z_{t-1} - thr z_{t-1}     (reset by subtraction)
    z_t = H(v_t - thr)
    y_t = kappa y_{t-1} + W_out z_t + b

The membrane loop is the one inherently sequential part (a Python loop over time steps,
vectorized over batch and neurons); input currents and the readout are computed for all
steps at once, the readout filter by the parallel scan. The spike nonlinearity carries the
piecewise-linear pseudo-derivative psi = gamma_pd max(0, 1 - |v - thr| / thr) as its
autograd gradient, so the same loop gives BPTT (the surrogate-gradient reference e-prop
is checked against).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from memhil.nn.scan import linear_scan


@dataclass(frozen=True)
class LIFParams:
    """Neuron constants: time step and time constants in seconds, threshold in the units
    of the input current (weight units, inputs being 0/1 spikes)."""

    dt_s: float = 1e-3
    tau_rec_s: float = 30e-3
    tau_out_s: float = 30e-3
    thr: float = 1.0
    gamma_pd: float = 0.3

    def __post_init__(self) -> None:
        for name in ("dt_s", "tau_rec_s", "tau_out_s", "thr", "gamma_pd"):
            if not getattr(self, name) > 0:
                raise ValueError(f"LIFParams.{name} must be > 0, got {getattr(self, name)}")

    @property
    def alpha(self) -> float:
        """Membrane decay per step, exp(-dt / tau_rec)."""
        return math.exp(-self.dt_s / self.tau_rec_s)

    @property
    def kappa(self) -> float:
        """Readout decay per step, exp(-dt / tau_out)."""
        return math.exp(-self.dt_s / self.tau_out_s)


def pseudo_derivative(v: Tensor, params: LIFParams) -> Tensor:
    """psi = gamma_pd * max(0, 1 - |v - thr| / thr): the surrogate of dz/dv."""
    thr = params.thr
    return params.gamma_pd * (1.0 - (v - thr).abs() / thr).clamp_min(0.0)


class _Spike(torch.autograd.Function):
    """Heaviside step H(v - thr) forward; the pseudo-derivative backward."""

    @staticmethod
    def forward(ctx, v: Tensor, params: LIFParams) -> Tensor:
        ctx.save_for_backward(v)
        ctx.params = params
        return (v >= params.thr).to(v.dtype)

    @staticmethod
    def backward(ctx, grad_z: Tensor):
        (v,) = ctx.saved_tensors
        return grad_z * pseudo_derivative(v, ctx.params), None


def spike(v: Tensor, params: LIFParams) -> Tensor:
    """z = H(v - thr), differentiable through the pseudo-derivative."""
    return _Spike.apply(v, params)


def low_pass(x: Tensor, decay: float, dim: int = 1) -> Tensor:
    """F_decay(x)_t = decay F_decay(x)_{t-1} + x_t along ``dim`` (parallel scan)."""
    a = torch.full((), decay, dtype=x.dtype, device=x.device)
    return linear_scan(a, x, dim=dim)


def low_pass_reverse(x: Tensor, decay: float, dim: int = 1) -> Tensor:
    """The anticausal filter sum_{t' >= t} decay^(t'-t) x_t': the adjoint of ``low_pass``,
    so that sum_t L_t F(e)_t = sum_t low_pass_reverse(L)_t e_t."""
    return low_pass(x.flip(dim), decay, dim).flip(dim)


@dataclass
class LIFRecord:
    """What one forward pass leaves for the learning rule: membrane potentials ``v`` and
    spikes ``z``, both (batch, T, neurons); ``z_prev`` is z shifted by one step (z_{t-1},
    zeros at t = 0), the presynaptic spikes the recurrent weights saw at step t."""

    v: Tensor
    z: Tensor

    @property
    def z_prev(self) -> Tensor:
        return torch.cat([torch.zeros_like(self.z[:, :1]), self.z[:, :-1]], dim=1)


def run_lif(
    input_current: Tensor,
    recurrent: Callable[[Tensor], Tensor],
    params: LIFParams,
    *,
    reset_grad: bool = False,
) -> LIFRecord:
    """Integrate the LIF layer over time.

    ``input_current`` (batch, T, N) is W_in x_t for every step (computed beforehand in one
    batched product); ``recurrent(z)`` maps the previous spikes (batch, N) to W_rec z. The
    reset term carries no gradient unless ``reset_grad`` (as in Bellec et al. 2020's e-prop,
    whose eligibility traces also ignore it).
    """
    batch, steps, n = input_current.shape
    alpha, thr = params.alpha, params.thr
    v = input_current.new_zeros(batch, n)
    z = input_current.new_zeros(batch, n)
    vs, zs = [], []
    for t in range(steps):
        reset = z if reset_grad else z.detach()
        v = alpha * v + input_current[:, t] + recurrent(z) - thr * reset
        z = spike(v, params)
        vs.append(v)
        zs.append(z)
    return LIFRecord(torch.stack(vs, 1), torch.stack(zs, 1))


def readout(output_current: Tensor, params: LIFParams) -> Tensor:
    """y_t = kappa y_{t-1} + I_out,t for ``output_current`` (batch, T, K) = W_out z_t + b."""
    return low_pass(output_current, params.kappa, dim=1)
