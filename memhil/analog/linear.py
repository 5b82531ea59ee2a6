"""``AnalogLinear``: ``torch.nn.Linear`` whose weight matrix lives on a Backend.

Forward is one ``mvm`` of the array (inputs as read voltages, outputs decoded from
currents) plus a digital bias; ``transpose`` (and the input gradient) is one ``mvm_t``.
The ``weight`` parameter holds the intended weights: ``program`` writes it to the
devices, hardware-aware training (``hwa_noise``) trains it in float with device noise
injected, and ``apply_delta`` changes the devices online through an update scheme.
How the layer sits on the array is one ``AnalogLinearConfig`` (keywords or a YAML
mapping build it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

import torch
from torch import Tensor, nn

from memhil.analog.mapping import Layout, WeightMapping
from memhil.analog.pulse_response import measure_set_response
from memhil.analog.weights import AnalogWeights, InputScaling
from memhil.backends.base import Backend
from memhil.core.config import from_mapping, require
from memhil.core.types import PulseSpec

if TYPE_CHECKING:
    from memhil.analog.program import Method


class _ArrayMatmul(torch.autograd.Function):
    """y = x @ W.T + b computed in the array (b digital, in the decoding pass, as
    ``nn.Linear`` adds it in its product); dL/dx by the transpose read (or digitally),
    dL/dW = dL/dy.T @ x (the outer product an update scheme turns into pulses)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, layer: AnalogLinear) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.layer = layer
        w = layer.weights
        return w.matvec(x.to(w.backend.dtype), bias).to(x.dtype)

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
        grad_b = grad_y.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


Backward = Literal["analog", "digital"]


@dataclass(frozen=True)
class AnalogLinearConfig:
    """Everything about an ``AnalogLinear`` but its shape and backend: weight scale,
    cell layout, placement, pulses, read path, training mode and update scheme. Load it
    from YAML with ``from_mapping(AnalogLinearConfig, data)`` (unknown keys rejected)."""

    bias: bool = True
    """A digital bias added after the array's product."""
    layout: Layout = "differential"
    """Differential pairs (+ and - side) or one reference column."""
    n_devices: int = 1
    """Devices per side of a cell (multi-device cells)."""
    tile: int = 0
    """Tile the region lies on."""
    row_offset: int = 0
    """First row of the region."""
    col_offset: int = 0
    """First column of the region."""
    w_max: float | None = None
    """Weight mapped to the full window; None: 1.0 (``from_digital``: the largest |w|)."""
    g_window_s: tuple[float, float] | None = None
    """Conductance window (S) for weights; None: the backend's usable range."""
    set_pulse: PulseSpec | None = None
    """SET pulse (amplitude V, width s); None: the backend's nominal one."""
    reset_pulse: PulseSpec | None = None
    """RESET pulse (amplitude V, width s); None: the backend's nominal one."""
    v_read: float | None = None
    """Read voltage (V) of the input encoding; None: the backend's own."""
    input_scaling: InputScaling = "absmax"
    """Inputs scaled per batch by their largest |x|, or by the fixed ``x_max``."""
    x_max: float = 1.0
    """Input mapped to the full read voltage with fixed scaling."""
    backward: Backward = "analog"
    """Input gradient by the array's transpose read, or digitally from ``weight``."""
    hwa_noise: float = 0.0
    """Hardware-aware training: weight-noise std in units of w_max (0: off)."""
    update: Any = None
    """Online update scheme: a name of ``memhil.analog.updates.schemes``, an instance,
    or None for an inference-only layer."""
    update_params: dict[str, Any] = field(default_factory=dict)
    """Parameters of the named update scheme (the fields of its ``Params``)."""
    seed: int = 0
    """Seed of the initial weights and of the hardware-aware noise."""

    def __post_init__(self) -> None:
        require(self.layout in get_args(Layout), "layout", f"must be one of {get_args(Layout)}")
        require(self.n_devices >= 1, "n_devices", f"must be >= 1, got {self.n_devices}")
        for key in ("tile", "row_offset", "col_offset"):
            require(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        require(
            self.w_max is None or self.w_max > 0, "w_max", f"must be > 0 or None, got {self.w_max}"
        )
        if self.g_window_s is not None:
            g_lo, g_hi = self.g_window_s
            require(0 <= g_lo < g_hi, "g_window_s", f"must be 0 <= g_lo < g_hi S, got {g_lo, g_hi}")
        for key in ("set_pulse", "reset_pulse"):
            object.__setattr__(self, key, _as_pulse(getattr(self, key), key))
        require(
            self.input_scaling in get_args(InputScaling),
            "input_scaling",
            f"must be one of {get_args(InputScaling)}",
        )
        require(self.x_max > 0, "x_max", f"must be > 0, got {self.x_max}")
        require(self.backward in get_args(Backward), "backward", "must be 'analog' or 'digital'")
        require(self.hwa_noise >= 0, "hwa_noise", f"must be >= 0, got {self.hwa_noise}")
        require(
            isinstance(self.update_params, Mapping),
            "update_params",
            f"must be a mapping, got {self.update_params!r}",
        )


def _as_pulse(value: Any, key: str) -> PulseSpec | None:
    """``value`` as a PulseSpec: None, a PulseSpec or an (amplitude V, width s) pair."""
    if value is None or isinstance(value, PulseSpec):
        return value
    ok = (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
    )
    require(ok, key, f"expected (amplitude V, width s), got {value!r}")
    return PulseSpec(float(value[0]), float(value[1]))


def build_config(
    config: AnalogLinearConfig | Mapping[str, Any] | None = None, **kw: Any
) -> AnalogLinearConfig:
    """``config`` (a config, a mapping or None: the defaults) with the keywords ``kw``
    overriding its fields; unknown keys and bad values raise ConfigError naming the key."""
    if isinstance(config, AnalogLinearConfig):
        if not kw:
            return config
        config = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    return from_mapping(AnalogLinearConfig, {**(config or {}), **kw})


class AnalogLinear(nn.Module):
    """A linear layer on crossbar devices; works on any Backend.

    Configured by an ``AnalogLinearConfig`` (or a mapping of its fields), the keywords
    overriding it: ``g_window_s`` (default: the backend's usable conductance range) and
    ``w_max`` set the weight scale; ``layout``/``n_devices`` choose differential pairs,
    multi-device cells or a reference column; the region starts at (``tile``,
    ``row_offset``, ``col_offset``). ``update`` names the online update scheme (see
    ``memhil.analog.updates.schemes``) or is None for inference-only layers.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        backend: Backend,
        config: AnalogLinearConfig | Mapping[str, Any] | None = None,
        **kw: Any,
    ):
        super().__init__()
        cfg = self.config = build_config(config, **kw)
        caps = backend.capabilities
        g_lo, g_hi = cfg.g_window_s if cfg.g_window_s is not None else caps.conductance_range_s
        w_max = 1.0 if cfg.w_max is None else cfg.w_max
        mapping = WeightMapping(
            in_features,
            out_features,
            g_lo,
            g_hi,
            w_max=w_max,
            layout=cfg.layout,
            n_devices=cfg.n_devices,
            tile=cfg.tile,
            row_offset=cfg.row_offset,
            col_offset=cfg.col_offset,
        )
        set_pulse = _pulse_spec(cfg.set_pulse, caps.set_pulse, "set_pulse")
        reset_pulse = _pulse_spec(cfg.reset_pulse, caps.reset_pulse, "reset_pulse")
        self.weights = AnalogWeights(
            backend,
            mapping,
            set_pulse,
            reset_pulse,
            v_read=cfg.v_read,
            input_scaling=cfg.input_scaling,
            x_max=cfg.x_max,
        )
        self.in_features, self.out_features = in_features, out_features
        self.backward_mode = cfg.backward
        self.hwa_noise = cfg.hwa_noise
        self._gen = torch.Generator().manual_seed(cfg.seed)
        bound = min(1.0 / math.sqrt(in_features), w_max)
        w = (torch.rand(out_features, in_features, generator=self._gen) * 2 - 1) * bound
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(torch.zeros(out_features)) if cfg.bias else None
        self.scheme = None
        if cfg.update is not None:
            self.set_update_scheme(cfg.update, **cfg.update_params)

    # -- conversion from and to float layers (aihwkit's from_digital / to_digital) ----------
    @classmethod
    def from_digital(
        cls,
        module: nn.Module,
        backend: Backend,
        config: AnalogLinearConfig | Mapping[str, Any] | None = None,
        *,
        window_margin: float = 0.02,
        **kw: Any,
    ) -> AnalogLinear:
        """An AnalogLinear (in eval mode) holding ``module``'s ``weight`` (out, in) and
        ``bias``, not yet programmed (call ``program``); ``w_max`` defaults to the largest
        |w|. Without ``g_window_s`` the backend's window is shrunk by ``window_margin`` of
        its span at each end, so float32 targets never round outside it and the verify
        loop avoids the saturated ends. ``config`` and the keywords configure the layer as
        in the constructor (``bias`` follows the module)."""
        bias = getattr(module, "bias", None)
        return cls.from_weights(
            cast(Tensor, module.weight), bias, backend, config, window_margin=window_margin, **kw
        )

    @classmethod
    def from_weights(
        cls,
        weight: Tensor,
        bias: Tensor | None,
        backend: Backend,
        config: AnalogLinearConfig | Mapping[str, Any] | None = None,
        *,
        window_margin: float = 0.02,
        **kw: Any,
    ) -> AnalogLinear:
        """``from_digital`` for a bare (out, in) ``weight`` and optional ``bias``."""
        weight = weight.detach()
        out_f, in_f = weight.shape
        cfg = build_config(config, **kw)
        fill: dict[str, Any] = {"bias": bias is not None}
        if cfg.w_max is None:
            fill["w_max"] = float(weight.abs().max().clamp_min(1e-12))
        if cfg.g_window_s is None:
            g_lo, g_hi = backend.capabilities.conductance_range_s
            margin = window_margin * (g_hi - g_lo)
            fill["g_window_s"] = (g_lo + margin, g_hi - margin)
        layer = cls(in_f, out_f, backend, build_config(cfg, **fill))
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
            y = _ArrayMatmul.apply(x2, self.weight, self.bias, self)  # the bias included
            return y.reshape(*lead, self.out_features)
        if self.bias is not None:
            # in place: y is this call's own product (nothing saved it for backward), and a
            # fresh batch-sized tensor cost ~0.4 ms of a 512-wide forward of 1024 samples
            y = y.add_(self.bias)
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
