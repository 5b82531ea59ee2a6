"""The pre-norm residual backbone shared by BMRU/CMRU/αCMRU, FQ-BMRU, LRU and minGRU
(``docs/algorithms.md#backbone-and-training``).

    input Linear [→ concatenated sinusoidal positional encoding → MLP]
    → L × [LayerNorm → cell → output gate σ(W_g x̂ + 4) ⊙ h → residual (learned scale)
                        → LayerNorm → GLU-MLP (×mlp_ratio, dropout) → residual] → LayerNorm → MLP → Linear

Only the recurrent cell changes between models, so comparisons are at (nearly) equal parameter
counts; :func:`state_size_for_budget` picks each cell's state size to match a budget.
The optional positional encoding gives input-gated cells a notion of *when*: with a
scalar input (pixel-by-pixel digits) and no position, a latch or counter whose switching depends
on the current input only can encode intensities but not where in the sequence they occurred.
"""

from __future__ import annotations

import math
from typing import Literal, TypedDict, cast

import torch
from torch import Tensor, nn

from memhil.algorithms.cmru.units import CandidatePerturbation, MemoryRecurrentUnit
from memhil.nn.lru import LRU
from memhil.nn.mingru import MinGRU
from memhil.nn.pooling import last_state, mean_state
from memhil.nn.scan import linear_scan

#: Cell names the backbone understands.
CELL_KINDS = ("bmru", "cmru", "acmru", "acmru_learned", "fq_bmru", "fq_cmru", "lru", "mingru")
Readout = Literal["last", "mean", "all"]


class _MemoryUnitOptions(TypedDict):
    """The keyword arguments :func:`build_cell` passes to every memory unit."""

    generator: torch.Generator | None
    slope: float
    threshold_bias_init: float
    amplitude_init: float


class LRUCell(nn.Module):
    """Adapter giving :class:`memhil.nn.lru.LRU` the cells' ``forward(x, perturb)``
    signature; ``perturb`` acts on the complex input drive γ ⊙ (B x_t), the LRU's candidate."""

    def __init__(self, lru: LRU):
        super().__init__()
        self.lru = lru

    def forward(self, x: Tensor, perturb: CandidatePerturbation | None = None) -> Tensor:
        lam, bx = self.lru.drive(x)
        if perturb is not None:
            bx = perturb(bx)
        return self.lru.readout(linear_scan(lam.view(1, 1, -1), bx), x)


def build_cell(
    kind: str,
    d_model: int,
    d_state: int,
    *,
    generator: torch.Generator | None = None,
    eps: float | None = None,
    slope: float = 1.0,
    threshold_bias_init: float = 1.0,
    amplitude_init: float = 1.0,
    lru_r_min: float = 0.9,
    lru_r_max: float = 0.999,
    lru_max_phase: float = math.pi / 10,
    mingru_max_timescale: float | None = 1000.0,
) -> nn.Module:
    """A cell mapping (B, T, d_model) → (B, T, d_model) with ``d_state`` recurrent units.

    ``kind`` is one of :data:`CELL_KINDS`; ``eps`` overrides the αCMRU ε (default 0.5; the
    initial value when learned); ``slope`` is the surrogate slope of the memory units and
    ``threshold_bias_init`` their threshold bias b_β at init (FQ: 2 × β₁), ``amplitude_init``
    their output amplitude α at init. Baseline inits for long memory: the LRU ring
    |λ| ∈ [``lru_r_min``, ``lru_r_max``] with phases in [0, ``lru_max_phase``] (Orvieto et al.
    2023 use r_min 0.9, r_max 0.999, phase π/10 on long-range tasks); the minGRU chrono gate
    bias with timescales up to ``mingru_max_timescale`` steps (None: uniform like the weights).
    """
    mem: _MemoryUnitOptions = {
        "generator": generator,
        "slope": slope,
        "threshold_bias_init": threshold_bias_init,
        "amplitude_init": amplitude_init,
    }
    if kind == "bmru":
        return MemoryRecurrentUnit(d_model, d_state, d_model, eps=0.0, **mem)
    if kind == "cmru":
        return MemoryRecurrentUnit(d_model, d_state, d_model, eps=1.0, **mem)
    if kind == "acmru":
        return MemoryRecurrentUnit(
            d_model, d_state, d_model, eps=0.5 if eps is None else eps, **mem
        )
    if kind == "acmru_learned":
        return MemoryRecurrentUnit(
            d_model, d_state, d_model, eps=0.9 if eps is None else eps, learn_eps=True, **mem
        )
    if kind == "fq_bmru":
        return MemoryRecurrentUnit(d_model, d_state, d_model, eps=0.0, variant="fq", **mem)
    if kind == "fq_cmru":
        return MemoryRecurrentUnit(d_model, d_state, d_model, eps=1.0, variant="fq", **mem)
    if kind == "lru":
        return LRUCell(
            LRU(
                d_model,
                d_state,
                r_min=lru_r_min,
                r_max=lru_r_max,
                max_phase=lru_max_phase,
                generator=generator,
            )
        )
    if kind == "mingru":
        return MinGRU(
            d_model, d_state, d_model, max_timescale=mingru_max_timescale, generator=generator
        )
    raise ValueError(f"unknown cell kind {kind!r}; choose from {CELL_KINDS}")


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars (a complex parameter would count twice; none is used)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def state_size_for_budget(kind: str, d_model: int, n_params: int, *, max_state: int = 1024) -> int:
    """The state size whose ``kind`` cell has the parameter count closest to ``n_params``."""
    best, best_err = 1, math.inf
    for d_state in range(1, max_state + 1):
        err = abs(count_parameters(build_cell(kind, d_model, d_state)) - n_params)
        if err < best_err:
            best, best_err = d_state, err
        elif err > best_err:  # the count grows with d_state: past the optimum
            break
    return best


def sinusoidal_positions(seq_len: int, dims: int, *, max_period: float = 10_000.0) -> Tensor:
    """(seq_len, dims) sinusoidal position code: [sin(t ω_k), cos(t ω_k)], ω_k = max_period^(−2k/dims)."""
    if dims < 2 or dims % 2:
        raise ValueError(f"positional dims={dims} must be an even number >= 2")
    t = torch.arange(seq_len, dtype=torch.float32).unsqueeze(1)
    omega = max_period ** (-torch.arange(0, dims, 2, dtype=torch.float32) / dims)
    return torch.cat([torch.sin(t * omega), torch.cos(t * omega)], dim=1)


class ResidualBlock(nn.Module):
    """LayerNorm → cell → output gate → residual (learned scale) → LayerNorm → GLU-MLP → residual."""

    def __init__(self, cell: nn.Module, d_model: int, *, mlp_ratio: int = 4, dropout: float = 0.1):
        super().__init__()
        self.cell = cell
        self.norm_cell = nn.LayerNorm(d_model)
        self.gate = nn.Linear(d_model, d_model)
        nn.init.constant_(self.gate.bias, 4.0)  # gate starts open: σ(4) ≈ 0.98
        self.scale = nn.Parameter(torch.ones(d_model))
        self.norm_mlp = nn.LayerNorm(d_model)
        hidden = mlp_ratio * d_model
        self.mlp_in = nn.Linear(d_model, 2 * hidden)
        self.mlp_out = nn.Linear(hidden, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, u: Tensor, perturb: CandidatePerturbation | None = None) -> Tensor:
        x_hat = self.norm_cell(u)
        h = self.cell(x_hat, perturb)
        u = u + self.scale * torch.sigmoid(self.gate(x_hat)) * h
        y = nn.functional.glu(self.mlp_in(self.norm_mlp(u)), dim=-1)
        return u + self.dropout(self.mlp_out(self.dropout(y)))


class RecurrentBackbone(nn.Module):
    """Sequence model around any cell of :data:`CELL_KINDS`: (B, T, n_features) → logits.

    ``readout="last"`` classifies from the last step, ``"mean"`` from the mean over steps
    (``lengths`` masks end padding), ``"all"`` returns per-step logits (B, T, n_out) for
    per-step targets. ``positional_dims`` > 0 concatenates that many sinusoidal position
    channels to the encoded input and mixes them back to ``d_model`` with an MLP.
    ``cell_kw`` goes to :func:`build_cell`.
    """

    def __init__(
        self,
        n_features: int,
        n_out: int,
        *,
        cell: str = "cmru",
        d_model: int = 32,
        d_state: int = 32,
        depth: int = 1,
        mlp_ratio: int = 4,
        dropout: float = 0.1,
        readout: Readout = "last",
        positional_dims: int = 0,
        seed: int = 0,
        **cell_kw,
    ):
        super().__init__()
        if readout not in ("last", "mean", "all"):
            raise ValueError(f"unknown readout {readout!r} (last, mean, all)")
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # nn.Linear / LayerNorm init use the global generator
        self.kind, self.readout = cell, readout
        self.encoder = nn.Linear(n_features, d_model)
        if positional_dims < 0 or positional_dims % 2:
            raise ValueError(f"positional_dims={positional_dims} must be 0 or an even number")
        self.positional_dims = positional_dims
        self.positional_mlp = (
            None
            if positional_dims == 0
            else nn.Sequential(
                nn.Linear(d_model + positional_dims, d_model),
                nn.GELU(),
                nn.Linear(d_model, d_model),
            )
        )
        self.blocks = nn.ModuleList(
            ResidualBlock(
                build_cell(cell, d_model, d_state, generator=gen, **cell_kw),
                d_model,
                mlp_ratio=mlp_ratio,
                dropout=dropout,
            )
            for _ in range(depth)
        )
        self.norm_out = nn.LayerNorm(d_model)
        self.head = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, n_out))

    @property
    def cells(self) -> list[nn.Module]:
        return [cast(ResidualBlock, b).cell for b in self.blocks]

    def forward(
        self, x: Tensor, lengths: Tensor | None = None, perturb: CandidatePerturbation | None = None
    ) -> Tensor:
        u = self.encoder(x)
        if self.positional_mlp is not None:
            pos = sinusoidal_positions(x.shape[1], self.positional_dims).to(u)
            u = self.positional_mlp(torch.cat([u, pos.expand(u.shape[0], -1, -1)], dim=-1))
        for block in self.blocks:
            u = block(u, perturb)
        u = self.norm_out(u)
        if self.readout == "all":
            return self.head(u)
        pooled = last_state(u, lengths) if self.readout == "last" else mean_state(u, lengths)
        return self.head(pooled)
