"""Global drift compensation (aihwkit style, Joshi et al., Nat. Commun. 11, 2473 (2020);
``docs/devices.md#drift-compensation``).

At programming time the compensator records r0 = mean |F(probe)| of the tile's noisy
forward pass on probe inputs (default: one-hot rows at the read voltage). Later,
alpha = r0 / max(mean |F(probe)|, eps) and every output is multiplied by alpha. This undoes
the common part of PCM conductance drift (G ~ t^-nu), whose spread of nu across cells
remains. ``per_column=True`` is the per-column variant (one alpha per output line).

``F`` is a backend (its ``mvm`` is used, optionally one ``tile``) or any callable
``inputs -> outputs`` (e.g. an analog layer's matvec); outputs' last axis is the column.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from memhil.backends.base import Backend

Forward = Backend | Callable[[Tensor], Tensor]


def one_hot_probes(n_lines: int, amplitude_v: float = 0.2, dtype=torch.float32) -> Tensor:
    """``(n_lines, n_lines)`` one-hot read inputs of ``amplitude_v``."""
    return torch.eye(n_lines, dtype=dtype) * amplitude_v


class DriftCompensator:
    """Stores r0 at programming time; ``factor()`` gives alpha now, ``apply`` scales outputs."""

    def __init__(self, *, per_column: bool = False, eps: float = 1e-12, tile: int | None = None):
        self.per_column = per_column
        self.eps = eps  # floor on the current mean (A); aihwkit's 1e-4 is in normalised units
        self.tile = tile
        self.r0: Tensor | None = None
        self.t0_s: float | None = None
        self._forward: Forward | None = None
        self._probe: Tensor | None = None
        self.alpha: Tensor | None = None

    # -- internals ------------------------------------------------------------------------
    def _run(self, forward: Forward, probe: Tensor) -> Tensor:
        if isinstance(forward, Backend):
            out = forward.mvm(probe, tile=self.tile)
        else:
            out = forward(probe)
        return torch.as_tensor(out).detach().double().cpu()

    def _stat(self, out: Tensor) -> Tensor:
        a = out.abs()
        if self.per_column:
            return a.reshape(-1, a.shape[-1]).mean(0)
        return a.mean()

    # -- API ------------------------------------------------------------------------------
    def reference(self, forward: Forward, probe_inputs: Tensor | None = None) -> Tensor:
        """Record r0 = mean |F(probe)| now (right after programming). Default probes: one-hot
        rows at the backend's nominal read voltage (0.2 V) when ``forward`` is a backend."""
        if probe_inputs is None:
            if not isinstance(forward, Backend):
                raise ValueError("probe_inputs are required when forward is not a backend")
            probe_inputs = one_hot_probes(forward.shape[1], 0.2, forward.dtype)
        self._forward, self._probe = forward, torch.as_tensor(probe_inputs)
        self.r0 = self._stat(self._run(forward, self._probe))
        if isinstance(forward, Backend):
            self.t0_s = forward.clock.now()
        self.alpha = None
        return self.r0

    def factor(self, forward: Forward | None = None, probe_inputs: Tensor | None = None) -> Tensor:
        """alpha = r0 / max(mean |F(probe)| now, eps) (re-measured; stored as ``alpha``)."""
        if self.r0 is None:
            raise RuntimeError("DriftCompensator: call reference() right after programming first")
        forward = forward if forward is not None else self._forward
        probe = torch.as_tensor(probe_inputs) if probe_inputs is not None else self._probe
        if forward is None or probe is None:  # restored by from_dict(): nothing to re-measure
            raise RuntimeError(
                "DriftCompensator: give factor() the forward (and probe_inputs) to re-measure "
                "with; a compensator restored by from_dict() keeps only its reference"
            )
        now = self._stat(self._run(forward, probe))
        self.alpha = self.r0 / now.clamp_min(self.eps)
        return self.alpha

    def apply(self, outputs: Tensor, alpha: Tensor | None = None) -> Tensor:
        """``outputs * alpha`` (the last measured one unless given; broadcast over the
        last axis in per-column mode)."""
        a = alpha if alpha is not None else self.alpha
        if a is None:
            raise RuntimeError("DriftCompensator: call factor() before apply()")
        out = torch.as_tensor(outputs)
        return out * a.to(out.device, out.dtype if out.is_floating_point() else torch.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "drift_compensation",
            "per_column": self.per_column,
            "r0": None if self.r0 is None else self.r0.tolist(),
            "t0_s": self.t0_s,
            "alpha": None if self.alpha is None else self.alpha.tolist(),
            "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftCompensator:
        comp = cls(per_column=bool(data.get("per_column", False)))
        if data.get("r0") is not None:
            comp.r0 = torch.tensor(data["r0"], dtype=torch.float64)
        if data.get("alpha") is not None:
            comp.alpha = torch.tensor(data["alpha"], dtype=torch.float64)
        comp.t0_s = data.get("t0_s")
        return comp


__all__ = ["DriftCompensator", "one_hot_probes"]
