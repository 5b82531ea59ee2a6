"""A layered resistive network for equilibrium propagation, and its batched nodal solver.

The circuit (EBANA-style, ``docs/algorithms.md#circuit``): each input feature drives a voltage
pair (+x, -x) and a bias pair (+V_b, -V_b) is clamped next to them; every layer is a
crossbar of positive conductances G (S) from its input nodes to its output nodes; each
hidden node has a diode pair to ground (a soft clamp at +-V_th, the nonlinearity) and
feeds the next layer through a bidirectional amplifier (voltage gain A forward, current
gain 1/A backward, as in Kendall et al. 2020); the last layer has two nodes per class and
the class score is their difference. With those amplifiers the steady state is the
minimum of one convex co-content

    E(V) = sum_l c_l [ sum_ij G_ij (p_i - V_j)^2 / 2 + sum_j D(V_j) ] + c_L beta L(o),

with c_l = A^(-2(l-1)), p the (amplified) voltages of a layer's input nodes and D the
diode co-content; the nudge ``beta L`` is a current -beta dL/do injected at the outputs.
The solver is damped Newton on the free node voltages, batched over samples with one
dense Cholesky per sample (tens of nodes), no Python loop over nodes or samples.

Conductances enter normalised by ``g_ref_s`` (the circuit is invariant to a common
conductance scale), so node voltages, the solver's tolerances and ``lr`` are independent
of the device's absolute conductance range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor

from memhil.core.config import require


@dataclass(frozen=True)
class NetworkSpec:
    """Topology and analog constants of the network (volts; conductances relative to
    ``g_ref_s``, the largest conductance a device can take).

    ``sizes`` = (features, hidden..., classes). Inputs are ``input_scale_v`` volts per
    (standardised) feature unit, clipped to +-``input_clip_v``. The diode pair conducts
    beyond +-``diode_v_th`` with on-conductance ``diode_g_rel * g_ref_s``, smoothed over
    ``diode_smooth_v`` (an ideal diode with series resistance; softplus-rounded knee).
    Targets: the class score (difference of an output pair) should be ``target_v`` for the
    true class and 0 for the others; L is half the squared error.
    """

    sizes: tuple[int, ...]
    input_scale_v: float = 0.3
    input_clip_v: float = 0.6
    bias_v: float = 0.3
    gain: float = 8.0
    diode_v_th: float = 0.05
    diode_smooth_v: float = 0.01
    diode_g_rel: float = 10.0
    target_v: float = 0.2

    def __post_init__(self) -> None:
        require(
            len(self.sizes) >= 2 and all(int(s) >= 1 for s in self.sizes),
            "sizes",
            f"need (features, hidden..., classes) with every size >= 1, got {self.sizes}",
        )
        for name in (
            "input_scale_v",
            "input_clip_v",
            "bias_v",
            "gain",
            "diode_v_th",
            "diode_smooth_v",
            "diode_g_rel",
            "target_v",
        ):
            require(getattr(self, name) > 0, name, f"must be > 0, got {getattr(self, name)}")

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def layer_shapes(self) -> list[tuple[int, int]]:
        """(input nodes, output nodes) of each conductance layer: 2 d + 2 inputs for the
        first (feature pairs and the bias pair), hidden + 2 (bias pair) for the others,
        two output nodes per class for the last."""
        shapes = []
        for l in range(self.n_layers):
            n_in = 2 * self.sizes[0] + 2 if l == 0 else self.sizes[l] + 2
            n_out = 2 * self.sizes[-1] if l == self.n_layers - 1 else self.sizes[l + 1]
            shapes.append((n_in, n_out))
        return shapes


class ResistiveNetwork:
    """Energy, KCL residual, Newton solver and EqProp quantities of one ``NetworkSpec``.

    Stateless apart from the spec: conductances are passed in on every call as a list of
    per-layer tensors ``(n_in, n_out)`` in siemens, so the same object serves ideal
    weights, a simulator and a hardware backend's read-back conductances.
    """

    def __init__(
        self,
        spec: NetworkSpec,
        g_ref_s: float,
        *,
        tol_v: float = 1e-9,
        max_iter: int = 50,
        dtype: torch.dtype = torch.float64,
    ):
        require(g_ref_s > 0, "g_ref_s", f"must be > 0 S, got {g_ref_s}")
        self.spec = spec
        self.g_ref_s = float(g_ref_s)
        self.tol_v = tol_v
        self.max_iter = max_iter
        self.dtype = dtype
        shapes = spec.layer_shapes()
        outs = [n_out for _, n_out in shapes]
        starts = [sum(outs[:l]) for l in range(len(outs))]
        self._slices = [slice(s, s + n) for s, n in zip(starts, outs)]
        self.n_free = sum(outs)
        self._scale = [spec.gain ** (-2.0 * l) for l in range(spec.n_layers)]

    # -- inputs, outputs, loss ---------------------------------------------------------
    def input_voltages(self, x: Tensor) -> Tensor:
        """Clamped first-layer voltages (B, 2 d + 2): (+x, -x, +V_b, -V_b) in volts."""
        s = self.spec
        v = (x.to(self.dtype) * s.input_scale_v).clamp(-s.input_clip_v, s.input_clip_v)
        bias = torch.tensor([s.bias_v, -s.bias_v], dtype=self.dtype).expand(v.shape[0], 2)
        return torch.cat([v, -v, bias], dim=1)

    def outputs(self, v: Tensor) -> Tensor:
        """Class scores (B, C) in volts: differences of the output node pairs."""
        o = v[:, self._slices[-1]]
        return o[:, 0::2] - o[:, 1::2]

    def targets(self, y: Tensor) -> Tensor:
        return F.one_hot(y.long(), self.spec.sizes[-1]).to(self.dtype) * self.spec.target_v

    def loss(self, v: Tensor, y: Tensor) -> Tensor:
        """Per-sample L = |score - target|^2 / 2 (V^2)."""
        return 0.5 * ((self.outputs(v) - self.targets(y)) ** 2).sum(1)

    def _loss_grad(self, v: Tensor, y: Tensor) -> Tensor:
        """dL/do on the output nodes (B, 2C): +err on the + node, -err on the - node."""
        err = self.outputs(v) - self.targets(y)
        return torch.stack([err, -err], dim=2).reshape(err.shape[0], -1)

    # -- circuit pieces ----------------------------------------------------------------
    def _diode_current(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """Diode-pair current to ground (normalised by g_ref, so in volts) and its slope."""
        s = self.spec
        a = (v - s.diode_v_th) / s.diode_smooth_v
        b = (-v - s.diode_v_th) / s.diode_smooth_v
        i = s.diode_g_rel * s.diode_smooth_v * (F.softplus(a) - F.softplus(b))
        di = s.diode_g_rel * (torch.sigmoid(a) + torch.sigmoid(b))
        return i, di

    def _layer_inputs(self, l: int, v: Tensor, u: Tensor) -> Tensor:
        """Voltages of layer l's input nodes: the clamped inputs, or amplified hidden
        voltages followed by the clamped bias pair."""
        if l == 0:
            return u
        h = v[:, self._slices[l - 1]] * self.spec.gain
        bias = u[:, -2:]
        return torch.cat([h, bias], dim=1)

    def drops(self, v: Tensor, u: Tensor) -> list[Tensor]:
        """Voltage across every conductance, input node minus output node: (B, n_in, n_out)
        per layer."""
        return [
            self._layer_inputs(l, v, u)[:, :, None] - v[:, None, self._slices[l]]
            for l in range(self.spec.n_layers)
        ]

    def gradient(
        self,
        g: Sequence[Tensor],
        v: Tensor,
        u: Tensor,
        beta_rel: float = 0.0,
        y: Tensor | None = None,
    ) -> Tensor:
        """dE/dV (B, n_free) of the scaled co-content, normalised conductances ``g``."""
        s = self.spec
        grad = torch.zeros_like(v)
        for l, gl in enumerate(g):
            c = self._scale[l]
            p = self._layer_inputs(l, v, u)
            vo = v[:, self._slices[l]]
            # downstream: sum_i G_ij (V_j - p_i)
            down = vo * gl.sum(0) - p @ gl
            if l < s.n_layers - 1:
                down = down + self._diode_current(vo)[0]
            grad[:, self._slices[l]] += c * down
            if l > 0:
                # upstream hidden nodes see the backward current through the amplifier
                n_h = s.sizes[l]
                gh = gl[:n_h]
                up = p[:, :n_h] * gh.sum(1) - vo @ gh.T
                grad[:, self._slices[l - 1]] += c * s.gain * up
        if beta_rel != 0.0:
            assert y is not None, "a nudge (beta_rel != 0) needs the targets y"
            grad[:, self._slices[-1]] += self._scale[-1] * beta_rel * self._loss_grad(v, y)
        return grad

    def kcl_residual_a(
        self,
        g_s: Sequence[Tensor],
        v: Tensor,
        x: Tensor,
        beta_rel: float = 0.0,
        y: Tensor | None = None,
    ) -> Tensor:
        """Net current (A) leaving every free node (B, n_free), the amplifiers' backward
        currents and the nudge sources included: zero at an equilibrium (Kirchhoff)."""
        g = self.normalise(g_s)
        u = self.input_voltages(x)
        r = self.gradient(g, v, u, beta_rel, y)
        scale = torch.cat(
            [
                torch.full((sl.stop - sl.start,), c, dtype=self.dtype)
                for sl, c in zip(self._slices, self._scale)
            ]
        )
        return r / scale * self.g_ref_s

    def _hessian_const(self, g: Sequence[Tensor], beta_rel: float) -> Tensor:
        """The V-independent part of d2E/dV2 (n_free, n_free): conductances and nudge."""
        s = self.spec
        k = torch.zeros(self.n_free, self.n_free, dtype=self.dtype)
        for l, gl in enumerate(g):
            c = self._scale[l]
            sl = self._slices[l]
            k[sl, sl] += torch.diag(c * gl.sum(0))
            if l > 0:
                n_h = s.sizes[l]
                gh = gl[:n_h]
                sp = self._slices[l - 1]
                k[sp, sp] += torch.diag(c * s.gain**2 * gh.sum(1))
                k[sp, sl] += -c * s.gain * gh
                k[sl, sp] += -c * s.gain * gh.T
        if beta_rel != 0.0:
            n_c = s.sizes[-1]
            pair = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=self.dtype)
            block = torch.block_diag(*([pair] * n_c)) * (self._scale[-1] * beta_rel)
            sl = self._slices[-1]
            k[sl, sl] += block
        return k

    def _diode_hessian(self, v: Tensor) -> Tensor:
        """The diode slopes on the hidden nodes (B, n_free), scaled by their layer."""
        d = torch.zeros_like(v)
        for l in range(self.spec.n_layers - 1):
            sl = self._slices[l]
            d[:, sl] = self._scale[l] * self._diode_current(v[:, sl])[1]
        return d

    def normalise(self, g_s: Sequence[Tensor]) -> list[Tensor]:
        shapes = self.spec.layer_shapes()
        out = []
        for l, (gl, shape) in enumerate(zip(g_s, shapes)):
            if tuple(gl.shape) != shape:
                raise ValueError(
                    f"layer {l} conductances have shape {tuple(gl.shape)}, "
                    f"the network needs {shape}"
                )
            out.append(gl.to(self.dtype) / self.g_ref_s)
        return out

    # -- the solver --------------------------------------------------------------------
    def solve(
        self,
        g_s: Sequence[Tensor],
        x: Tensor,
        beta_rel: float = 0.0,
        y: Tensor | None = None,
        v0: Tensor | None = None,
    ) -> Tensor:
        """Node voltages (B, n_free) at the minimum of E (+ beta L): damped Newton with a
        backtracking line search on the residual norm, batched over samples. Stops when
        every node's KCL residual, divided by its total conductance (a voltage error),
        is below ``tol_v``; raises if ``max_iter`` iterations do not get there."""
        with torch.no_grad():
            g = self.normalise(g_s)
            u = self.input_voltages(x)
            v = torch.zeros(u.shape[0], self.n_free, dtype=self.dtype) if v0 is None else v0.clone()
            k = self._hessian_const(g, beta_rel)
            kdiag = k.diagonal()
            r = self.gradient(g, v, u, beta_rel, y)
            for _ in range(self.max_iter):
                dh = self._diode_hessian(v)
                if float((r.abs() / (kdiag + dh)).max()) < self.tol_v:
                    return v
                h = k + torch.diag_embed(dh)
                step = -torch.cholesky_solve(r.unsqueeze(-1), torch.linalg.cholesky(h)).squeeze(-1)
                norm = r.norm(dim=1)
                t = torch.ones(v.shape[0], 1, dtype=self.dtype)
                for _ in range(30):  # backtracking, per sample
                    v_try = v + t * step
                    r_try = self.gradient(g, v_try, u, beta_rel, y)
                    bad = r_try.norm(dim=1) > (1.0 - 1e-4 * t.squeeze(1)) * norm
                    if not bool(bad.any()):
                        break
                    t = torch.where(bad.unsqueeze(1), 0.5 * t, t)
                v, r = v_try, r_try
            raise RuntimeError(
                f"nodal solver did not converge in {self.max_iter} iterations "
                f"(largest voltage error {float((r.abs() / kdiag).max()):.3g} V, "
                f"tolerance {self.tol_v} V)"
            )

    # -- EqProp and the reference gradient ----------------------------------------------
    def eqprop_gradient(
        self,
        g_s: Sequence[Tensor],
        x: Tensor,
        y: Tensor,
        beta_rel: float,
        centered: bool = True,
        v_free: Tensor | None = None,
    ) -> tuple[list[Tensor], Tensor]:
        """EqProp estimate of dL/dG per conductance, mean over the batch, in units of
        1/g_ref (i.e. dL/d(G/g_ref), V^2), and the free equilibrium.

        dL/dG_ij = (c_l / c_L) ((dV_ij^beta)^2 - (dV_ij^0)^2) / (2 beta): the local rule;
        the centred form uses the +beta and -beta equilibria instead (bias O(beta^2))."""
        u = self.input_voltages(x)
        if v_free is None:
            v_free = self.solve(g_s, x)
        v_pos = self.solve(g_s, x, beta_rel, y, v0=v_free)
        if centered:
            v_neg = self.solve(g_s, x, -beta_rel, y, v0=v_free)
            lo, span = self.drops(v_neg, u), 2.0 * beta_rel
        else:
            lo, span = self.drops(v_free, u), beta_rel
        hi = self.drops(v_pos, u)
        c_out = self._scale[-1]
        grads = [
            (self._scale[l] / c_out) * 0.5 * (hi[l] ** 2 - lo[l] ** 2).mean(0) / span
            for l in range(self.spec.n_layers)
        ]
        return grads, v_free

    def implicit_gradient(self, g_s: Sequence[Tensor], x: Tensor, y: Tensor) -> list[Tensor]:
        """Reference dL/d(G/g_ref) of the mean free-phase loss by autograd through the
        equilibrium: one differentiable Newton step from the converged voltages has the
        implicit-function-theorem derivative dV*/dG = -H^-1 d(dE/dV)/dG exactly."""
        v_star = self.solve(g_s, x)
        g = [gl.detach().requires_grad_(True) for gl in self.normalise(g_s)]
        u = self.input_voltages(x)
        r = self.gradient(g, v_star, u)
        h = self._hessian_const(g, 0.0) + torch.diag_embed(self._diode_hessian(v_star))
        v = v_star - torch.linalg.solve(h, r.unsqueeze(-1)).squeeze(-1)
        self.loss(v, y).mean().backward()
        # every layer enters the loss through the Newton step, so backward set each .grad
        return [cast(Tensor, gl.grad) for gl in g]

    def predict(self, g_s: Sequence[Tensor], x: Tensor) -> Tensor:
        """Predicted class per sample (argmax of the free-phase scores)."""
        return self.outputs(self.solve(g_s, x)).argmax(1)
