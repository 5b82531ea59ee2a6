"""The device-model plugin interface and the registry that picks a model by name.

A device model is stateless physics: it owns constants (a frozen ``Params`` dataclass
in SI units), draws per-device (device-to-device, D2D) parameter tensors once, and maps
state tensors to conductances and to new states after pulses. The simulator holds the
state tensor ``(*shape, k)`` and the D2D tensors ``(*shape)``; every method is
vectorized over the leading ``shape`` (tiles, rows, cols), so no model loops over cells.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from memhil.core.config import from_mapping, load_yaml
from memhil.core.errors import ConfigError

D2D = dict[str, Tensor]


class DeviceModel(ABC):
    """Physics of one memristive device type, batched over any leading shape.

    Subclasses set ``name``, ``state_names`` (the k state components), ``Params`` (a
    frozen dataclass of constants, SI units, with ``*_dtod`` relative D2D spreads and
    ``*_std`` relative cycle-to-cycle spreads), and implement the four abstract methods.
    """

    #: set per class, and per instance by ``device_model`` to the registered alias
    name: str = ""
    state_names: ClassVar[tuple[str, ...]] = ()
    #: True when negative pulses lower G gradually (RRAM, ion drift); False for devices
    #: that only potentiate gradually and depress by an abrupt RESET (PCM).
    bipolar: ClassVar[bool] = True
    #: True when conductance depends on the time since programming (drift).
    drifts: ClassVar[bool] = False
    Params: ClassVar[type]
    #: Nominal programming pulses (amplitude V, width s) that move this device's state
    #: gradually up (SET) and down (RESET); reported through the backend's capabilities.
    nominal_set_pulse: ClassVar[tuple[float, float] | None] = None
    nominal_reset_pulse: ClassVar[tuple[float, float] | None] = None
    #: True when :meth:`step` also takes one request shared by every cell as one-element
    #: tensors: the simulator then skips three array-sized fills of ``v``, ``width_s``
    #: and ``count``, and the model the reductions it would run over them.
    uniform_requests: ClassVar[bool] = False

    def __init__(self, params: Any | None = None, **overrides: Any):
        if params is None:
            params = from_mapping(self.Params, overrides, prefix=self.name)
        elif overrides:
            params = dataclasses.replace(params, **overrides)
        self.p = params

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        mapping: Mapping[str, Any] | None = None,
        *,
        source: str | None = None,
        prefix: str = "device",
    ) -> DeviceModel:
        return cls(from_mapping(cls.Params, mapping or {}, source=source, prefix=prefix))

    def config(self) -> dict[str, Any]:
        """The constants as a plain dict (``model`` key included), for snapshots and files."""
        return {"model": self.name, **dataclasses.asdict(self.p)}

    # -- the plugin interface ---------------------------------------------------------
    def sample_d2d(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> D2D:
        """Draw the per-device parameters (fixed for the device's life). Default: none."""
        return {}

    @abstractmethod
    def initial_state(
        self,
        d2d: D2D,
        shape: tuple[int, ...],
        generator: torch.Generator,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """The as-fabricated state, shape ``(*shape, k)``."""

    @abstractmethod
    def conductance(self, state: Tensor, d2d: D2D, v_read: float | Tensor, t_s: float) -> Tensor:
        """Noise-free conductance in siemens (chord I(v_read)/v_read) at absolute time ``t_s``;
        ``v_read`` is a float or a tensor broadcastable to the cell shape (per-cell bias)."""

    def read_noise_std(self, g_s: Tensor, d2d: D2D) -> Tensor | None:
        """Std of the device's own read noise in siemens, per cell; None when it has none."""
        return None

    @abstractmethod
    def step(
        self,
        state: Tensor,
        d2d: D2D,
        v: Tensor,
        width_s: Tensor,
        count: Tensor,
        t_s: float,
        generator: torch.Generator,
        compliance_a: Tensor | None = None,
    ) -> Tensor:
        """State after ``count`` identical pulses of amplitude ``v`` (V) and width ``width_s``.

        ``v``, ``width_s`` and ``count`` (int64) are tensors of the full cell ``shape``
        (or, where ``uniform_requests`` is True, one-element tensors when every cell gets
        the same request); cells with ``count == 0`` or ``v == 0`` must come back
        unchanged. ``t_s`` is the absolute time at the end of the pulses (models with
        drift record it as the programming time). Positive ``v`` potentiates (SET), negative ``v`` depresses
        (RESET). ``compliance_a`` (A, per cell, or None) is the current limit the source
        enforced; the simulator has already reduced ``v`` so that ``|v|*G <= compliance``
        at the start of the pulse, and models whose outcome the compliance sets (forming)
        use it directly.
        """

    def drift_onset_s(self) -> float:
        """Age (s since a cell's programming) below which its conductance does not drift:
        a power law of max(age, onset). The simulator's read cache measures the time since
        the last write from at least this, so reads within it reuse one conductance."""
        return 0.0

    def compliance_train(
        self,
        state: Tensor,
        d2d: D2D,
        v: Tensor,
        width_s: Tensor,
        count: Tensor,
        compliance_a: Tensor,
        generator: torch.Generator,
    ) -> Tensor | None:
        """The state after ``count`` pulses per cell where each pulse's voltage is first
        lowered so that ``|v| * G <= compliance_a`` with G (:meth:`conductance`) at that
        pulse's start: what the simulator otherwise does pulse by pulse with :meth:`step`,
        fused. ``v``, ``width_s``, ``count``, ``compliance_a`` are broadcastable to the cell
        shape (a one-element tensor for a request every cell shares). Only for models whose
        conductance does not depend on time; None where the model has no fused path for
        its configuration (the simulator then loops)."""
        return None

    @abstractmethod
    def conductance_range(self) -> tuple[float, float]:
        """Nominal usable (g_min, g_max) in siemens, for weight mapping."""

    def conductance_ceiling(self, d2d: D2D) -> float | None:
        """A hard upper bound (S) on any cell's conductance, or None when there is none.

        Lets the simulator skip the compliance computation when ``|v| * ceiling`` cannot
        reach the compliance current.
        """
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.p})"


# -- shared vectorized building blocks ------------------------------------------------


def lognormal_spread(
    nominal: float,
    rel_sigma: float,
    shape: tuple[int, ...],
    generator: torch.Generator,
    device,
    dtype,
) -> Tensor:
    """Per-device values ``nominal * exp(rel_sigma * xi)``: positive, median ``nominal``."""
    if rel_sigma == 0.0:
        return torch.full(shape, nominal, device=device, dtype=dtype)
    xi = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    return nominal * torch.exp(rel_sigma * xi)


def standard_normals_(out: Tensor, generator: torch.Generator) -> Tensor:
    """Fill ``out`` in place with N(0, 1) draws from ``generator``'s stream: a contiguous
    float32 CPU tensor by compiled Philox4x32-10 keyed with two words of the stream
    (:func:`memhil.core.philox_normals.fill_normals`: ~1.6 ns a normal against ~2.7 ns for
    torch's Mersenne Twister ``normal_`` on one core, with the same 24-bit uniforms), any
    other tensor by ``normal_``. Seeded runs reproduce either way."""
    if out.device.type == "cpu" and out.dtype == torch.float32 and out.is_contiguous():
        import numpy as np

        from memhil.core.philox_normals import fill_normals  # numba: imported on first use

        k0, k1 = torch.randint(0, 2**32, (2,), generator=generator).tolist()
        fill_normals(out.view(-1).numpy(), np.uint64(k0), np.uint64(k1))
        return out
    return out.normal_(generator=generator)


def c2c_factor(
    shape: tuple[int, ...], rel_sigma: float, generator: torch.Generator, device, dtype
) -> Tensor | float:
    """Cycle-to-cycle multiplier ``1 + rel_sigma * xi`` (or 1.0 when the spread is zero)."""
    if rel_sigma == 0.0:
        return 1.0
    return 1.0 + rel_sigma * torch.randn(shape, generator=generator, device=device, dtype=dtype)


def repeat_pulses(
    state: Tensor, count: Tensor, one_pulse: Callable[[Tensor, Tensor], Tensor]
) -> Tensor:
    """Apply ``one_pulse(state, active_mask)`` ``max(count)`` times, a vectorized loop over
    the pulse index only: on pass ``n`` only cells with ``count > n`` change."""
    n_max = int(count.max().item()) if count.numel() else 0
    for n in range(n_max):
        active = count > n
        new = one_pulse(state, active)
        state = torch.where(active.unsqueeze(-1), new, state)
    return state


# -- registry -------------------------------------------------------------------------

_REGISTRY: dict[str, tuple[type[DeviceModel], dict[str, Any]]] = {}


def register_device(
    name: str, defaults: Mapping[str, Any] | None = None
) -> Callable[[type[DeviceModel]], type[DeviceModel]]:
    """Class decorator: make a model selectable by ``name`` (optionally with preset params)."""

    def deco(cls: type[DeviceModel]) -> type[DeviceModel]:
        register_alias(name, cls, defaults)
        return cls

    return deco


def register_alias(
    name: str, cls: type[DeviceModel], defaults: Mapping[str, Any] | None = None
) -> None:
    """Register ``cls`` under ``name`` with preset parameter overrides (e.g. a window)."""
    if name in _REGISTRY and _REGISTRY[name][0] is not cls:
        raise ValueError(f"device model name {name!r} is already registered")
    _REGISTRY[name] = (cls, dict(defaults or {}))


def device_model_names() -> list[str]:
    """Names accepted by ``build_device_model``."""
    _load_builtin_models()
    return sorted(_REGISTRY)


def build_device_model(
    config: str | Path | Mapping[str, Any] | DeviceModel, *, source: str | None = None
) -> DeviceModel:
    """A device model from a name, a mapping ``{"model": name, **params}`` or a YAML file.

    A fitted parameter file is just such a YAML mapping. Unknown names or keys raise
    ``ConfigError`` naming the file and key.
    """
    _load_builtin_models()
    if isinstance(config, DeviceModel):
        return config
    if isinstance(config, Path) or (isinstance(config, str) and config.endswith((".yaml", ".yml"))):
        source = str(config)
        config = load_yaml(config)
    if isinstance(config, str):
        config = {"model": config}
    if not isinstance(config, Mapping):
        raise ConfigError("device", f"expected a model name or mapping, got {config!r}", source)
    params = dict(config)
    name = params.pop("model", None)
    if name is None:
        raise ConfigError(
            "device.model", "missing (one of: " + ", ".join(sorted(_REGISTRY)) + ")", source
        )
    if name not in _REGISTRY:
        raise ConfigError(
            "device.model", f"unknown model {name!r} (known: {sorted(_REGISTRY)})", source
        )
    cls, defaults = _REGISTRY[name]
    merged = {**defaults, **params}
    model = cls.from_config(merged, source=source, prefix="device")
    model.name = name  # the registered alias, so config() round-trips
    return model


def _load_builtin_models() -> None:
    # Importing the package registers every built-in model exactly once.
    import memhil.devices  # noqa: F401 - imported to register the models
