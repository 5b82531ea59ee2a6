"""MARS: memristive-friendly reservoirs evaluated in parallel over time (provisional).

Removing the recurrent term from the MF-ESN rates makes them input-driven, so each unit
follows the diagonal affine recurrence h_t = a_t h_{t-1} + c_t with
a_t = gamma - dt (kp_t + kd_t) in (0, 1) and c_t = dt kp_t, which a parallel prefix scan
evaluates (``memhil.nn.scan.linear_scan``). Layers stack with an optional
subtractive skip between them; only a ridge readout on pooled states is trained.

Layer equation, skip and pooling are memhil design choices (``docs/algorithms.md#mars``) until the
paper text confirms them; every candidate is an option.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal, cast

import numpy as np
import torch
from torch import Tensor, nn

from memhil.algorithms.mars.reservoirs import MFDevice, check_decay_range, uniform
from memhil.nn.pooling import Pooling, check_pooling, pool_states, valid_mask
from memhil.nn.scan import linear_recurrence_loop, linear_scan, linear_scan_in_place

Skip = Literal["input", "temporal", "equilibrium", "none"]
SKIPS: tuple[str, ...] = ("input", "temporal", "equilibrium", "none")
Method = Literal["scan", "chunked", "loop"]
METHODS: tuple[str, ...] = ("scan", "chunked", "loop")
#: Target size in bytes of one (batch, T, units) state tensor in ``MARS.features``.
BLOCK_BYTES = 4_000_000
#: Elements per block of the in-place coefficient chain: three float32 blocks stay in L2.
BLOCK_ELEMENTS = 65_536
#: Up to this many input features the fused kernel projects inside its loop (K N
#: multiply-adds per step beat a separate matmul pass over (batch, T, units) there).
FUSED_MAX_INPUTS = 16
#: (x or projected x, w, bias, p, ln c0, c1, ln d0, d1, gamma) of the compiled kernels.
_KernelArgs = tuple[
    np.ndarray,
    np.ndarray | None,
    np.ndarray,
    np.float32,
    np.ndarray,
    np.float32,
    np.ndarray,
    np.float32,
    np.float32,
]
#: A replacement for a layer's input projection x @ W_in.T (e.g. a crossbar read).
Projection = Callable[[Tensor], Tensor]


def diagonal_recurrence(a: Tensor, c: Tensor, method: Method = "scan", chunk: int = 32) -> Tensor:
    """h_t = a_t h_{t-1} + c_t along dim 1 from h_0 = 0, for (batch, T, units) tensors.

    ``scan``: Hillis–Steele scan over all T (log2 T parallel rounds, only products of a_t).
    ``chunked``: sequential inside chunks of ``chunk`` steps, all chunks at once, then a
    scan across chunk boundaries. ``loop``: the sequential reference. All three agree to
    float rounding; which is fastest depends on the hardware (see benchmarks/mars.py).
    """
    if method == "scan":
        return linear_scan(a, c, dim=1)
    if method == "loop":
        return linear_recurrence_loop(a, c, dim=1)
    if method != "chunked":
        raise ValueError(f"unknown recurrence method {method!r} (choose from {', '.join(METHODS)})")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    batch, steps, units = c.shape
    n_chunks = math.ceil(steps / chunk)
    pad = n_chunks * chunk - steps
    a, c = torch.broadcast_tensors(a, c)
    if pad:  # identity steps (a = 1, c = 0) leave the carried state unchanged
        a = nn.functional.pad(a, (0, 0, 0, pad), value=1.0)
        c = nn.functional.pad(c, (0, 0, 0, pad))
    a = a.reshape(batch, n_chunks, chunk, units)
    c = c.reshape(batch, n_chunks, chunk, units)
    local = linear_recurrence_loop(a, c, dim=2)  # state inside each chunk, started from 0
    gain = torch.cumprod(a, dim=2)  # how the state entering the chunk propagates
    ends = linear_scan(gain[:, :, -1], local[:, :, -1], dim=1)  # true state at chunk ends
    start = torch.cat([torch.zeros_like(ends[:, :1]), ends[:, :-1]], dim=1)
    h = local + gain * start.unsqueeze(2)
    return h.reshape(batch, n_chunks * chunk, units)[:, :steps]


class MARSLayer(nn.Module):
    """One input-driven MF reservoir: (batch, T, n_in) -> states (batch, T, n_units) in (0, 1).

    W_in ~ U(-input_scale, input_scale), b ~ U(-bias_scale, bias_scale) (fixed, untrained);
    ``dt`` is one step for all units or a range (dt_min, dt_max) from which each unit draws
    its own step log-uniformly (a spread of time constants, as ParalESN spreads its
    eigenvalues). The decay range is checked at construction (ValueError naming the value).
    """

    w_in: Tensor
    b: Tensor
    dt: Tensor

    def __init__(
        self,
        n_in: int,
        n_units: int,
        *,
        input_scale: float = 1.0,
        bias_scale: float = 0.1,
        gamma: float = 1.0,
        p: float = 5.0,
        dt: float | tuple[float, float] = 0.01,
        device: MFDevice | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if n_in < 1 or n_units < 1:
            raise ValueError(f"n_in={n_in} and n_units={n_units} must be >= 1")
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        device = MFDevice() if device is None else device
        if isinstance(dt, (tuple, list)):
            dt_min, dt_max = (float(v) for v in dt)
            if not 0 < dt_min <= dt_max:
                raise ValueError(f"dt range must satisfy 0 < dt_min <= dt_max, got {dt}")
            check_decay_range(gamma, dt_min, device)
            self.decay_range = (
                check_decay_range(gamma, dt_max, device)[0],
                check_decay_range(gamma, dt_min, device)[1],
            )
            u = torch.rand(n_units, generator=gen, dtype=torch.float64)
            steps = torch.exp(math.log(dt_min) + u * (math.log(dt_max) - math.log(dt_min)))
        else:
            self.decay_range = check_decay_range(gamma, dt, device)
            steps = torch.full((n_units,), float(dt), dtype=torch.float64)
        self.n_in, self.n_units = n_in, n_units
        self.gamma, self.p, self.device_model = gamma, p, device
        self.register_buffer("w_in", uniform((n_units, n_in), input_scale, gen))
        self.register_buffer("b", uniform((n_units,), bias_scale, gen))
        self.register_buffer("dt", steps.float())

    def project(self, x: Tensor) -> Tensor:
        """The input projection x @ W_in.T: the part a crossbar computes."""
        return x @ self.w_in.t()

    def _log_lines(self) -> tuple[Tensor, float, Tensor, float]:
        """Per-unit (ln c0, c1, ln d0, d1) with c_t = exp(ln c0 + c1 s_t) = dt kp_t and
        dt kd_t = exp(ln d0 - d1 s_t), s_t = sigmoid(p (W_in x_t + b))."""
        lp0, lp1, ld0, ld1 = self.device_model.log_rate_lines()
        log_dt = torch.log(self.dt)
        return log_dt + lp0, lp1, log_dt + ld0, ld1

    def coefficients(self, projected: Tensor) -> tuple[Tensor, Tensor]:
        """(a_t, c_t) of the recurrence from the projected input W_in x_t:
        a = gamma - dt (kp + kd), c = dt kp."""
        lc0, c1, ld0, d1 = self._log_lines()
        s = torch.sigmoid((projected + self.b) * self.p)
        c = torch.exp(torch.add(lc0, s, alpha=c1))
        return self.gamma - c - torch.exp(torch.add(ld0, s, alpha=-d1)), c

    def _coefficients_blocked(self, x: Tensor, projected: Tensor | None) -> tuple[Tensor, Tensor]:
        """The same (a, c) as :meth:`coefficients` (no autograd), as a chain of in-place
        ops over row blocks of :data:`BLOCK_ELEMENTS`: the ~8 passes run in cache instead of
        through memory, and no temporaries are allocated (measured ~5x faster on a CPU)."""
        lc0, c1, ld0, d1 = self._log_lines()
        rows = x.shape[0] * x.shape[1]
        a = torch.empty(rows, self.n_units, dtype=x.dtype, device=x.device)
        c = torch.empty_like(a)
        if projected is None:
            x_rows, w_t = x.reshape(rows, -1), self.w_in.t()
        else:
            z_rows = projected.reshape(rows, self.n_units)
        step = max(1, BLOCK_ELEMENTS // self.n_units)
        # the same ops in the same order as coefficients(), so both give identical bits
        # (a - 1 cancels in the equilibria, which would magnify any rounding difference)
        for lo in range(0, rows, step):
            ab, cb = a[lo : lo + step], c[lo : lo + step]
            if projected is None:
                torch.matmul(x_rows[lo : lo + step], w_t, out=ab)
            else:
                ab.copy_(z_rows[lo : lo + step])
            ab.add_(self.b).mul_(self.p).sigmoid_()
            torch.add(lc0, ab, alpha=c1, out=cb).exp_()
            torch.add(ld0, ab, alpha=-d1, out=ab).exp_()
            torch.sub(torch.rsub(cb, self.gamma), ab, out=ab)
        shape = (*x.shape[:2], self.n_units)
        return a.view(shape), c.view(shape)

    def _fused_args(self, x: Tensor, projected: Tensor | None) -> _KernelArgs:
        """Arguments of the compiled kernels: the input and the input weights, or the
        projected input and None beyond :data:`FUSED_MAX_INPUTS` features, and the
        coefficient lines, as float32 arrays."""
        lc0, c1, ld0, d1 = self._log_lines()
        if projected is None and self.n_in > FUSED_MAX_INPUTS:
            projected = self.project(x)
        if projected is None:
            src = x.detach().contiguous()
            w = self.w_in.detach().t().float().contiguous().numpy()
        else:
            src, w = projected.detach().contiguous(), None
        f32 = np.float32
        return (
            src.numpy(),
            w,
            self.b.detach().float().contiguous().numpy(),
            f32(self.p),
            lc0.float().contiguous().numpy(),
            f32(c1),
            ld0.float().contiguous().numpy(),
            f32(d1),
            f32(self.gamma),
        )

    def _states_fused(self, x: Tensor, projected: Tensor | None) -> Tensor:
        """The states from the compiled fused kernel (float32 CPU, no autograd): the
        coefficients of :meth:`coefficients` and the recurrence in one pass; the input
        projection runs inside it too for up to :data:`FUSED_MAX_INPUTS` features."""
        from memhil.algorithms.mars.kernels import mf_states  # numba: imported on first use

        out = torch.empty(*x.shape[:2], self.n_units, dtype=torch.float32)
        mf_states(*self._fused_args(x, projected), out.numpy())
        return out

    @staticmethod
    def pools_fused(x: Tensor, method: Method, projection: Projection | None) -> bool:
        """Whether :meth:`pooled` runs its kernel for input ``x``: the scan method, float32
        on a CPU and no autograd (with a projection, none at all: its output could need
        gradients)."""
        grad = torch.is_grad_enabled() and (x.requires_grad or projection is not None)
        return method == "scan" and not grad and x.device.type == "cpu" and x.dtype == torch.float32

    def pooled(
        self,
        x: Tensor,
        lengths: Tensor | None,
        pool: Pooling,
        *,
        method: Method = "scan",
        projection: Projection | None = None,
    ) -> Tensor | None:
        """``pool_states(self(x)[0], lengths, pool)`` from the compiled kernel that pools
        as it runs (:func:`memhil.algorithms.mars.kernels.mf_pooled`: the valid steps
        only, no (batch, T, units) states in memory; the mean summed in float64) where
        :meth:`forward` would run the fused kernel; None elsewhere."""
        check_pooling(pool)
        # a projection may be an array read: decide before calling it, never call it twice
        if not self.pools_fused(x, method, projection):
            return None
        from memhil.algorithms.mars.kernels import mf_pooled  # numba: imported on first use

        batch, steps = x.shape[:2]
        valid_mask(batch, steps, lengths, x.device)  # raises unless every length is in 1..T
        n = torch.full((batch,), steps) if lengths is None else lengths.to(torch.int64)
        mean = torch.empty(batch, self.n_units, dtype=torch.float32)
        last = torch.empty_like(mean)
        args = self._fused_args(x, None if projection is None else projection(x))
        mf_pooled(*args, n.contiguous().numpy(), mean.numpy(), last.numpy())
        return {"mean": mean, "last": last, "mean_last": torch.cat([mean, last], -1)}[pool]

    def forward(
        self,
        x: Tensor,
        *,
        method: Method = "scan",
        chunk: int = 32,
        projection: Projection | None = None,
        equilibrium: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """States h (batch, T, units) and, with ``equilibrium``, the instantaneous
        equilibria h*_t = c_t / (1 - a_t) (else None).

        Without autograd on a CPU, ``scan`` runs the fused compiled kernel (float32, no
        equilibria) or the blocked coefficients and the compiled recurrence in place;
        otherwise plain tensor ops."""
        projected = None if projection is None else projection(x)
        grad = torch.is_grad_enabled() and (
            x.requires_grad or (projected is not None and projected.requires_grad)
        )
        fast = method == "scan" and not grad and x.device.type == "cpu"
        if fast and not equilibrium and x.dtype == torch.float32:
            return self._states_fused(x, projected), None
        if fast and x.dtype in (torch.float32, torch.float64):
            a, c = self._coefficients_blocked(x, projected)
            h_eq = c / (1 - a) if equilibrium else None
            return linear_scan_in_place(a, c, dim=1), h_eq
        a, c = self.coefficients(self.project(x) if projected is None else projected)
        h_eq = c / (1 - a) if equilibrium else None
        return diagonal_recurrence(a, c, method, chunk), h_eq


class MARS(nn.Module):
    """A stack of ``depth`` MARS layers with a subtractive skip between layers.

    The signal u passed to layer l+1 is, for layer l's states h, input x and equilibria h*:
    ``input``: h - P x (P = identity when dims match, else a fixed random projection);
    ``temporal``: h_t - h_{t-1}; ``equilibrium``: h - h*; ``none``: h. With ``normalize``
    each sample's u is scaled to unit RMS over its valid steps (a gain, no centring), and
    upper layers use W_in ~ U(-s, s), s = upper_input_scale sqrt(3 / n_units), so every
    option feeds the next layer signals of the same size and the options differ only in
    what they subtract. Defaults (per-unit dt log-uniform in [0.001, 0.09], ``temporal``
    skip) come from the ablation in benchmarks/mars.py.
    """

    skip_proj: Tensor

    def __init__(
        self,
        n_features: int,
        n_units: int = 100,
        depth: int = 1,
        *,
        skip: Skip = "temporal",
        input_scale: float = 1.0,
        bias_scale: float = 0.1,
        gamma: float = 1.0,
        p: float = 5.0,
        dt: float | tuple[float, float] = (0.001, 0.09),
        upper_input_scale: float = 1.0,
        upper_dt: float | tuple[float, float] | None = None,
        normalize: bool = True,
        device: MFDevice | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if skip not in SKIPS:
            raise ValueError(f"unknown skip {skip!r} (choose from {', '.join(SKIPS)})")
        gen = torch.Generator().manual_seed(seed)
        self.skip, self.normalize, self.depth = skip, normalize, depth
        upper_scale = upper_input_scale * math.sqrt(3.0 / n_units)
        layers = [
            MARSLayer(
                n_features,
                n_units,
                input_scale=input_scale,
                bias_scale=bias_scale,
                gamma=gamma,
                p=p,
                dt=dt,
                device=device,
                generator=gen,
            )
        ]
        for _ in range(depth - 1):
            layers.append(
                MARSLayer(
                    n_units,
                    n_units,
                    input_scale=upper_scale,
                    bias_scale=bias_scale,
                    gamma=gamma,
                    p=p,
                    dt=dt if upper_dt is None else upper_dt,
                    device=device,
                    generator=gen,
                )
            )
        self.layers = nn.ModuleList(layers)
        # fixed random projection of the raw input for the ``input`` skip of layer 1
        self.register_buffer(
            "skip_proj", torch.randn(n_units, n_features, generator=gen) / math.sqrt(n_features)
        )

    @property
    def n_units(self) -> int:
        return cast(MARSLayer, self.layers[0]).n_units

    def _skip_signal(
        self, level: int, x: Tensor, h: Tensor, h_eq: Tensor | None, mask: Tensor
    ) -> Tensor:
        if self.skip == "none":
            u = h
        elif self.skip == "equilibrium":
            assert h_eq is not None  # layer_states asks for the equilibria with this skip
            u = h - h_eq
        elif self.skip == "temporal":
            u = h - nn.functional.pad(h, (0, 0, 1, 0))[:, :-1]
        else:
            u = h - (x @ self.skip_proj.t() if level == 0 else x)
        if not self.normalize:
            return u
        m = mask.to(u.dtype).unsqueeze(-1)
        rms = ((u * m).pow(2).sum((1, 2)) / (m.sum((1, 2)) * u.shape[-1])).sqrt()
        return u / rms.clamp_min(1e-12).view(-1, 1, 1)

    def layer_states(
        self,
        x: Tensor,
        lengths: Tensor | None = None,
        *,
        method: Method = "scan",
        chunk: int = 32,
        projections: Sequence[Projection | None] | None = None,
    ) -> list[Tensor]:
        """States (batch, T, units) of every layer for inputs x (batch, T, features).

        ``projections`` optionally replaces each layer's x @ W_in.T (e.g. by an array read).
        Padding beyond ``lengths`` never influences valid steps (the recurrence is causal).
        """
        if x.dim() != 3 or x.shape[-1] != self.layers[0].n_in:
            raise ValueError(f"x must be (batch, T, {self.layers[0].n_in}), got {tuple(x.shape)}")
        if projections is not None and len(projections) != self.depth:
            raise ValueError(
                f"give one projection per layer ({self.depth}), got {len(projections)}"
            )
        return self._run_layers(x, lengths, method, chunk, projections)[0]

    def _run_layers(
        self,
        x: Tensor,
        lengths: Tensor | None,
        method: Method,
        chunk: int,
        projections: Sequence[Projection | None] | None,
        top_pool: Pooling | None = None,
    ) -> tuple[list[Tensor], Tensor | None]:
        """:meth:`layer_states`; with ``top_pool``, the top layer's pooled features
        (:meth:`MARSLayer.pooled`) instead of its states where that kernel applies."""
        mask = valid_mask(x.shape[0], x.shape[1], lengths, x.device)
        out: list[Tensor] = []
        u = x
        for level, layer in enumerate(self.layers):
            proj = None if projections is None else projections[level]
            if top_pool is not None and level + 1 == self.depth:
                pooled = cast(MARSLayer, layer).pooled(
                    u, lengths, top_pool, method=method, projection=proj
                )
                if pooled is not None:
                    return out, pooled
            need_eq = self.skip == "equilibrium" and level + 1 < self.depth
            h, h_eq = layer(u, method=method, chunk=chunk, projection=proj, equilibrium=need_eq)
            out.append(h)
            if level + 1 < self.depth:
                u = self._skip_signal(level, u, h, h_eq, mask)
        return out, None

    @torch.no_grad()
    def features(
        self,
        x: Tensor,
        lengths: Tensor | None = None,
        *,
        pool: Pooling = "mean_last",
        layers: Literal["all", "last"] = "all",
        method: Method = "scan",
        chunk: int = 32,
        batch_size: int | None = None,
        projections: Sequence[Projection | None] | None = None,
    ) -> Tensor:
        """Readout features (batch, F): pooled states of all layers (or of the last),
        computed ``batch_size`` samples at a time. The default keeps each (batch, T, units)
        tensor near :data:`BLOCK_BYTES`: on a CPU, tensors of tens of MB cost more in fresh
        page mappings than in arithmetic (measured 3-5x slower; benchmarks/mars.py)."""
        if layers not in ("all", "last"):
            raise ValueError(f"layers must be 'all' or 'last', got {layers!r}")
        check_pooling(pool)
        top = cast(MARSLayer, self.layers[-1])
        if batch_size is None and self.depth == 1 and top.pools_fused(x, method, None):
            batch_size = max(1, x.shape[0])  # pooled as it runs: no states in memory
        if batch_size is None:
            per_sample = x.shape[1] * self.n_units * x.element_size()
            batch_size = max(1, BLOCK_BYTES // max(per_sample, 1))
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        parts = []
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            lb = None if lengths is None else lengths[start : start + batch_size]
            states, top_pooled = self._run_layers(xb, lb, method, chunk, projections, pool)
            if layers == "last":
                states = states[-1:] if top_pooled is None else []
            feats = [pool_states(s, lb, pool) for s in states]
            parts.append(torch.cat(feats + ([] if top_pooled is None else [top_pooled]), dim=-1))
        return torch.cat(parts, dim=0)
