"""minGRU (Feng et al. 2024, "Were RNNs all we needed?"): the gated baseline of the CMRU family.

    z_t = σ(W_z x_t + b_z),   h̃_t = W_h x_t + b_h,   h_t = (1 − z_t) h_{t−1} + z_t h̃_t,
    y_t = W_out h_t

The gates depend on the input only, so h_t = A_t h_{t−1} + B_t with A = 1 − z, B = z h̃ is
evaluated by the shared parallel scan; ``forward_loop`` is the sequential reference.

Gate-bias init: ``max_timescale=None`` draws b_z like the weights (z ≈ 0.5: every unit
forgets within a few steps). A number T_max applies the chrono initialisation (Tallec &
Ollivier 2018) to this single gate: b_z = −log(τ − 1), τ ~ U(1, T_max), so that at init unit k
retains its state over about τ_k steps (1 − z ≈ 1 − 1/τ) — the fair long-memory init.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from memhil.nn.scan import linear_scan

#: Maps a candidate tensor to a perturbed one (e.g. adds Gaussian noise) inside a cell.
CandidatePerturbation = Callable[[Tensor], Tensor]


class MinGRU(nn.Module):
    """One minGRU layer mapping (B, T, d_in) to (B, T, d_out) through ``d_state`` units
    (``d_out=None``: the hidden states themselves); ``max_timescale`` selects the chrono
    gate-bias init (module docstring)."""

    def __init__(
        self,
        d_in: int,
        d_state: int,
        d_out: int | None = None,
        *,
        max_timescale: float | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if d_in < 1 or d_state < 1:
            raise ValueError(f"d_in={d_in} and d_state={d_state} must be >= 1")
        self.d_in, self.d_state, self.d_out = d_in, d_state, d_out
        bound = 1.0 / math.sqrt(d_in)

        def uniform(*shape: int) -> Tensor:
            return (torch.rand(*shape, generator=generator) * 2 - 1) * bound

        self.w_z = nn.Parameter(uniform(d_state, d_in))
        if max_timescale is None:
            self.b_z = nn.Parameter(uniform(d_state))
        else:
            if max_timescale <= 2:
                raise ValueError(f"max_timescale={max_timescale} must be > 2 steps")
            tau = 1.0 + torch.rand(d_state, generator=generator) * (max_timescale - 1.0)
            self.b_z = nn.Parameter(-torch.log((tau - 1.0).clamp_min(1e-3)))
        self.w_h = nn.Parameter(uniform(d_state, d_in))
        self.b_h = nn.Parameter(uniform(d_state))
        self.out = None
        if d_out is not None:
            self.out = nn.Linear(d_state, d_out)
            with torch.no_grad():
                b = 1.0 / math.sqrt(d_state)
                self.out.weight.copy_((torch.rand(d_out, d_state, generator=generator) * 2 - 1) * b)
                self.out.bias.zero_()

    def candidate(self, x: Tensor) -> Tensor:
        """h̃_t, the candidate state (where the noise-injection evaluation adds its noise)."""
        return x @ self.w_h.t() + self.b_h

    def coefficients(
        self, x: Tensor, perturb: CandidatePerturbation | None = None
    ) -> tuple[Tensor, Tensor]:
        """(A_t, B_t) = (1 − z_t, z_t h̃_t)."""
        z = torch.sigmoid(x @ self.w_z.t() + self.b_z)
        h_tilde = self.candidate(x)
        if perturb is not None:
            h_tilde = perturb(h_tilde)
        return 1.0 - z, z * h_tilde

    def states(self, x: Tensor, perturb: CandidatePerturbation | None = None) -> Tensor:
        """h_1..h_T (h_0 = 0) by the parallel scan."""
        a, b = self.coefficients(x, perturb)
        return linear_scan(a, b, dim=1)

    def states_loop(self, x: Tensor, perturb: CandidatePerturbation | None = None) -> Tensor:
        """The same states by stepping the recurrence."""
        z = torch.sigmoid(x @ self.w_z.t() + self.b_z)
        h_tilde = self.candidate(x)
        if perturb is not None:
            h_tilde = perturb(h_tilde)
        h = torch.zeros_like(h_tilde[:, 0])
        out = []
        for t in range(h_tilde.shape[1]):
            h = (1.0 - z[:, t]) * h + z[:, t] * h_tilde[:, t]
            out.append(h)
        return torch.stack(out, 1)

    def forward(self, x: Tensor, perturb: CandidatePerturbation | None = None) -> Tensor:
        h = self.states(x, perturb)
        return self.out(h) if self.out is not None else h

    def forward_loop(self, x: Tensor, perturb: CandidatePerturbation | None = None) -> Tensor:
        h = self.states_loop(x, perturb)
        return self.out(h) if self.out is not None else h
