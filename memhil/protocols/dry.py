"""DryBackend: the pre-flight stand-in. It has the real backend's shape, limits and
capabilities and goes through the same ``Backend.pulse``/``mvm`` argument checks (hence the
same ``Limits.check_pulse``/``check_read``), but only records the operations and answers
reads with a constant conductance, on its own virtual clock."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from memhil.backends.base import Backend, Capabilities
from memhil.backends.clock import VirtualClock
from memhil.core.limits import Limits


class DryBackend(Backend):
    def __init__(self, like: Backend, g_s: float | None = None, *, has_prober: bool | None = None):
        self._shape: tuple[int, int, int] = like.shape
        self._limits = like.limits
        self._caps = like.capabilities
        lo, hi = self._caps.conductance_range_s
        self.g_s = float(g_s) if g_s is not None else (lo * hi) ** 0.5
        self._clock = VirtualClock()
        if has_prober is None:
            has_prober = like.has_prober if isinstance(like, DryBackend) else like.site is not None
        self.has_prober: bool = has_prober
        self._v_read = like.read_voltage_v
        # the real backend's configured device model (R_off, thresholds ...), asked for
        # when a pre-flight needs it, so that it builds what the run builds
        self._like_device_model = getattr(like, "device_model", None)
        self.ops: list[tuple[str, dict]] = []

    def device_model(self) -> Any:
        return None if self._like_device_model is None else self._like_device_model()

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape

    @property
    def limits(self) -> Limits:
        return self._limits

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def clock(self) -> VirtualClock:
        return self._clock

    def _mvm(self, v: Tensor, *, transpose: bool, tile: int | None) -> Tensor:
        self.ops.append(("mvm", {"shape": tuple(v.shape)}))
        return (
            v.sum(-1, keepdim=True)
            * self.g_s
            * torch.ones(self._shape[1] if transpose else self._shape[2], dtype=v.dtype)
        )

    @property
    def read_voltage_v(self) -> float:
        return self._v_read

    @property
    def site(self) -> _DrySite | None:
        return _DrySite() if self.has_prober else None

    def _read_conductance(self, mask: Tensor | None, v_read_v: float | None = None) -> Tensor:
        self.ops.append(("read", {"n": int(mask.sum()) if mask is not None else None}))
        self._clock.advance(1e-6)
        full = torch.full(self._shape, self.g_s)
        return full if mask is None else full[mask]

    def _pulse(self, selected, v, width_s, count, compliance_a) -> None:
        self.ops.append(("pulse", {"v": float(v.abs().max()), "n": int(count.max())}))
        self._clock.advance(float((width_s * count).max()))


class _DrySite:
    """A ``Site`` that moves nothing (the pre-flight of a wafer plan)."""

    def load_map(self, dies, subsites: int = 1) -> None:
        pass

    def move(self, die, subsite: int = 0) -> None:
        pass

    def contact(self) -> None:
        pass

    def separate(self) -> None:
        pass
