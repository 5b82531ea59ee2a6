"""Linear Recurrent Unit (Orvieto et al. 2023): the gradient-trained state-space baseline.

Complex diagonal recurrence h_t = λ ⊙ h_{t-1} + γ ⊙ (B x_t), y_t = Re(C h_t) + D ⊙ x_t, with
λ = exp(−e^ν + i e^θ) (stable by construction) and γ = √(1 − |λ|²) normalising the input.
Evaluated with the shared parallel scan; :meth:`LRU.forward_loop` is the sequential reference.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from memhil.nn.pooling import mean_state
from memhil.nn.scan import linear_recurrence_loop, linear_scan


class LRU(nn.Module):
    """One LRU layer mapping (batch, T, d_model) to (batch, T, d_model).

    ``r_min``/``r_max`` bound the initial eigenvalue moduli (ring initialisation) and
    ``max_phase`` their phases; ``generator`` seeds the initialisation reproducibly.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int,
        *,
        r_min: float = 0.0,
        r_max: float = 0.99,
        max_phase: float = 2 * math.pi,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if not 0.0 <= r_min < r_max < 1.0:
            raise ValueError(
                f"need 0 <= r_min < r_max < 1 for a stable LRU, got r_min={r_min}, r_max={r_max}"
            )
        if d_model < 1 or d_state < 1:
            raise ValueError(f"d_model={d_model} and d_state={d_state} must be >= 1")
        u1 = torch.rand(d_state, generator=generator)
        u2 = torch.rand(d_state, generator=generator)
        radius = torch.sqrt(u1 * (r_max**2 - r_min**2) + r_min**2)
        self.nu_log = nn.Parameter(torch.log(-torch.log(radius)))
        self.theta_log = nn.Parameter(torch.log(max_phase * u2 + 1e-8))
        self.gamma_log = nn.Parameter(0.5 * torch.log1p(-(radius**2)))
        scale_b = 1.0 / math.sqrt(2 * d_model)
        self.b_re = nn.Parameter(torch.randn(d_state, d_model, generator=generator) * scale_b)
        self.b_im = nn.Parameter(torch.randn(d_state, d_model, generator=generator) * scale_b)
        scale_c = 1.0 / math.sqrt(d_state)
        self.c_re = nn.Parameter(torch.randn(d_model, d_state, generator=generator) * scale_c)
        self.c_im = nn.Parameter(torch.randn(d_model, d_state, generator=generator) * scale_c)
        self.d = nn.Parameter(torch.randn(d_model, generator=generator))

    def eigenvalues(self) -> Tensor:
        """The diagonal recurrence λ (complex, |λ| < 1)."""
        return torch.exp(torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log)))

    def drive(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The recurrence λ and the normalised input drive γ ⊙ (B x_t), before the scan
        (exposed so callers can perturb the drive, e.g. noise-injection studies)."""
        lam = self.eigenvalues()
        b = torch.complex(self.b_re, self.b_im) * torch.exp(self.gamma_log).unsqueeze(-1)
        return lam, x.to(b.dtype) @ b.transpose(0, 1)

    def readout(self, h: Tensor, x: Tensor) -> Tensor:
        """y_t = Re(C h_t) + D ⊙ x_t from the scanned states."""
        c = torch.complex(self.c_re, self.c_im)
        return (h @ c.transpose(0, 1)).real + self.d * x

    def forward(self, x: Tensor) -> Tensor:
        lam, bx = self.drive(x)
        return self.readout(linear_scan(lam.view(1, 1, -1), bx), x)

    def forward_loop(self, x: Tensor) -> Tensor:
        """Sequential evaluation of the same layer (the reference for the scan)."""
        lam, bx = self.drive(x)
        return self.readout(linear_recurrence_loop(lam.view(1, 1, -1), bx), x)


class LRUClassifier(nn.Module):
    """Gradient-trained sequence classifier: encoder → L × (pre-norm LRU + GLU, residual) → mean pool → linear.

    ``lengths`` (true lengths of end-padded sequences) restricts the pooling to valid steps.
    """

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        *,
        d_model: int = 64,
        d_state: int = 64,
        depth: int = 2,
        r_min: float = 0.5,
        r_max: float = 0.999,
        dropout: float = 0.0,
        seed: int = 0,
    ):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # nn.Linear / LayerNorm init use the global generator
        self.encoder = nn.Linear(n_features, d_model)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(depth))
        self.layers = nn.ModuleList(
            LRU(d_model, d_state, r_min=r_min, r_max=r_max, generator=gen) for _ in range(depth)
        )
        self.glus = nn.ModuleList(nn.Linear(d_model, 2 * d_model) for _ in range(depth))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        u = self.encoder(x)
        for norm, lru, glu in zip(self.norms, self.layers, self.glus):
            y = lru(norm(u))
            u = u + self.dropout(nn.functional.glu(glu(nn.functional.gelu(y)), dim=-1))
        return self.head(mean_state(u, lengths))
