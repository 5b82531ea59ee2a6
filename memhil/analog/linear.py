"""``AnalogLinear``: ``torch.nn.Linear`` whose weight matrix lives on a Backend.

Forward is one ``mvm`` of the array (inputs as read voltages, outputs decoded from
currents) plus a digital bias; ``transpose`` (and the input gradient) is one ``mvm_t``.
The ``weight`` parameter holds the intended weights: ``program`` writes it to the
devices, hardware-aware training (``hwa_noise``) trains it in float with device noise
injected, and ``apply_delta`` changes the devices online through an update scheme.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
from torch import Tensor, nn

from memhil.analog.mapping import Layout, WeightMapping
from memhil.analog.pulse_response import measure_set_response
from memhil.analog.weights import AnalogWeights, InputScaling, PulseSpec
from memhil.backends.base import Backend

if TYPE_CHECKING:
    from memhil.analog.program import Method


class _ArrayMatmul(torch.autograd.Function):
    """y = x @ W.T computed in the array; dL/dx by the transpose read (or digitally),
    dL/dW = dL/dy.T @ x (the outer product an update scheme turns into pulses)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, layer: AnalogLinear) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.layer = layer
        return layer.weights.matvec(x.to(layer.weights.backend.dtype)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        x, weight = ctx.saved_tensors
        layer: AnalogLinear = ctx.layer
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            if layer.backward_mode == "analog":
                grad_x = layer.weights.matvec_t(grad_y.to(layer.weights.backend.dtype)).to(
                    grad_y.dtype
                )
            else:
                grad_x = grad_y @ weight
        if ctx.needs_input_grad[1]:
            grad_w = grad_y.t() @ x
        return grad_x, grad_w, None


class AnalogLinear(nn.Module):
    """A linear layer on crossbar devices; works on any Backend.

    ``g_window_s`` (default: the backend's usable conductance range) and ``w_max`` set
    the weight scale; ``layout``/``n_devices`` choose differential pairs, multi-device
    cells or a reference column; the region starts at (``tile``, ``row_offset``,
    ``col_offset``). ``update`` names the online update scheme (see
    ``memhil.analog.updates.schemes``) or is None for inference-only layers.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        backend: Backend,
        *,
        bias: bool = True,
        layout: Layout = "differential",
        n_devices: int = 1,
        tile: int = 0,
        row_offset: int = 0,
        col_offset: int = 0,
        w_max: float = 1.0,
        g_window_s: tuple[float, float] | None = None,
        set_pulse: PulseSpec | tuple[float, float] | None = None,
        reset_pulse: PulseSpec | tuple[float, float] | None = None,
        v_read: float | None = None,
        input_scaling: InputScaling = "absmax",
        x_max: float = 1.0,
        backward: Literal["analog", "digital"] = "analog",
        hwa_noise: float = 0.0,
        update: Any = None,
        seed: int = 0,
    ):
        super().__init__()
        caps = backend.capabilities
        g_lo, g_hi = g_window_s if g_window_s is not None else caps.conductance_range_s
        mapping = WeightMapping(
            in_features,
            out_features,
            g_lo,
            g_hi,
            w_max=w_max,
            layout=layout,
            n_devices=n_devices,
            tile=tile,
            row_offset=row_offset,
            col_offset=col_offset,
        )
        set_pulse = _pulse_spec(set_pulse, caps.set_pulse, "set_pulse")
        reset_pulse = _pulse_spec(reset_pulse, caps.reset_pulse, "reset_pulse")
        self.weights = AnalogWeights(
            backend,
            mapping,
            set_pulse,
            reset_pulse,
            v_read=v_read,
            input_scaling=input_scaling,
            x_max=x_max,
        )
        self.in_features, self.out_features = in_features, out_features
        self.backward_mode = backward
        self.hwa_noise = hwa_noise
        self._gen = torch.Generator().manual_seed(seed)
        bound = min(1.0 / math.sqrt(in_features), w_max)
        w = (torch.rand(out_features, in_features, generator=self._gen) * 2 - 1) * bound
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.scheme = None
        if update is not None:
            self.set_update_scheme(update)

    # -- conversion from and to float layers (aihwkit's from_digital / to_digital) ----------
    @classmethod
    def from_digital(
        cls, module: nn.Module, backend: Backend, *, window_margin: float = 0.02, **kw: Any
    ) -> AnalogLinear:
        """An AnalogLinear (in eval mode) holding ``module``'s ``weight`` (out, in) and
        ``bias``, not yet programmed (call ``program``); ``w_max`` defaults to the largest
        |w|. Without ``g_window_s`` the backend's window is shrunk by ``window_margin`` of
        its span at each end, so float32 targets never round outside it and the verify
        loop avoids the saturated ends. Other keywords go to the constructor."""
        bias = getattr(module, "bias", None)
        return cls.from_weights(
            cast(Tensor, module.weight), bias, backend, window_margin=window_margin, **kw
        )

    @classmethod
    def from_weights(
        cls,
        weight: Tensor,
        bias: Tensor | None,
        backend: Backend,
        *,
        window_margin: float = 0.02,
        **kw: Any,
    ) -> AnalogLinear:
        """``from_digital`` for a bare (out, in) ``weight`` and optional ``bias``."""
        weight = weight.detach()
        out_f, in_f = weight.shape
        kw.setdefault("w_max", float(weight.abs().max().clamp_min(1e-12)))
        if kw.get("g_window_s") is None:
            g_lo, g_hi = backend.capabilities.conductance_range_s
            margin = window_margin * (g_hi - g_lo)
            kw["g_window_s"] = (g_lo + margin, g_hi - margin)
        layer = cls(in_f, out_f, backend, bias=bias is not None, **kw)
        with torch.no_grad():
            layer.weight.copy_(weight.float())
            if bias is not None:
                assert layer.bias is not None  # built with bias=True
                layer.bias.copy_(bias.detach().float())
        layer.eval()
        return layer

    @torch.no_grad()
    def to_digital(self, *, realistic: bool = True) -> nn.Linear:
        """A float ``nn.Linear`` with this layer's weights: those the devices hold now (one
        read) with ``realistic``, else the intended ``weight``; the bias is copied."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        w = self.read_weights() if realistic else self.weight
        out.weight.copy_(w.detach().to(out.weight.dtype).cpu())
        if self.bias is not None:
            out.bias.copy_(self.bias.detach())
        return out

    # -- device I/O -----------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        return self.weights.backend

    def program(self, method: Method = "verify", **kw: Any):
        """Write ``weight`` onto the devices (``memhil.analog.program``); returns the
        ProgramReport."""
        from memhil.analog.program import program_weights

        return program_weights(self.weights, self.weight.detach(), method=method, **kw)

    def read_weights(self) -> Tensor:
        """The (out, in) weights the devices hold now (one read)."""
        return self.weights.read_weights()

    # -- compute --------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if self.training and self.hwa_noise > 0:
            y = x2 @ self._noisy_weight().t()
        elif self.scheme is not None and self.scheme.effective_weight() is not None:
            y = x2 @ self.scheme.effective_weight().to(x2.dtype).t()
        else:
            y = _ArrayMatmul.apply(x2, self.weight, self)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def transpose(self, y: Tensor) -> Tensor:
        """``y @ W`` through the array's transpose read (e.g. a backward pass on chip)."""
        lead = y.shape[:-1]
        out = self.weights.matvec_t(y.reshape(-1, self.out_features))
        return out.reshape(*lead, self.in_features)

    def _noisy_weight(self) -> Tensor:
        """Hardware-aware training: Gaussian weight noise (std ``hwa_noise * w_max``) drawn
        per forward, straight-through: the gradient reaches ``weight`` unchanged."""
        w_max = self.weights.mapping.w_max
        noise = torch.randn(self.weight.shape, generator=self._gen) * (self.hwa_noise * w_max)
        return self.weight.clamp(-w_max, w_max) + noise.to(self.weight.dtype)

    # -- online learning on the devices -----------------------------------------------------
    def set_update_scheme(self, scheme: Any, response=None, **params: Any) -> None:
        """Attach an online update scheme (a name or an instance) and bind it to the devices;
        the SET pulse response is measured on this layer's own cells unless given."""
        from memhil.analog.updates.schemes import UpdateScheme, build_update_scheme

        if not isinstance(scheme, UpdateScheme):
            scheme = build_update_scheme(scheme, **params)
        if response is None:
            response = self.measure_set_response()
        scheme.bind(self.weights, response)
        self.scheme = scheme

    def measure_set_response(self, n_pulses: int = 20):
        """Mean SET response of this layer's devices, measured on them; they are RESET
        before and after (so do this before programming)."""
        w = self.weights
        cells = w.mapping.cell_mask(w.backend.shape).to(w.backend.torch_device)
        # a gradual RESET takes a train 4x the curve to reach the bottom of the window
        return measure_set_response(
            w.backend, cells, w.set_pulse, w.reset_pulse, n_pulses, n_reset=4 * n_pulses
        )

    @torch.no_grad()
    def apply_delta(self, delta_w: Tensor):
        """Request the weight change ``delta_w`` (out, in) from the update scheme; ``weight``
        follows the requested trajectory. Returns the scheme's step record."""
        if self.scheme is None:
            raise RuntimeError("no update scheme: pass update=... or call set_update_scheme")
        step = self.scheme.apply(delta_w.detach())
        w_max = self.weights.mapping.w_max
        self.weight.add_(delta_w.to(self.weight.dtype)).clamp_(-w_max, w_max)
        return step

    @torch.no_grad()
    def sgd_step(self, lr: float):
        """One online SGD step from ``weight.grad``: ``apply_delta(-lr * grad)``."""
        if self.weight.grad is None:
            raise RuntimeError("weight.grad is None: run backward first")
        step = self.apply_delta(-lr * self.weight.grad)
        if self.bias is not None and self.bias.grad is not None:
            self.bias.sub_(lr * self.bias.grad)
        return step

    def extra_repr(self) -> str:
        m = self.weights.mapping
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, layout={m.layout}, n_devices={m.n_devices}, "
            f"tile={m.tile}, device={self.backend.capabilities.device_model}"
        )


def _pulse_spec(value, default, name: str) -> PulseSpec:
    if value is None:
        value = default
    if value is None:
        raise ValueError(f"{name} is needed: the backend does not name nominal programming pulses")
    return value if isinstance(value, PulseSpec) else PulseSpec(float(value[0]), float(value[1]))
