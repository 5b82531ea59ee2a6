"""Pulse responses for calibration: the measurement lives in ``memhil.analog.pulse_response``
(re-exported here); this module adds the response a device model predicts."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from memhil.analog.pulse_response import (PulseResponse, measure_pulse_response,
                                          measure_set_response)

__all__ = ["PulseResponse", "measure_pulse_response", "measure_set_response",
           "model_pulse_response"]


def model_pulse_response(device: str | Mapping[str, Any], amplitude_v: float, width_s: float,
                         n_pulses: int, *, prepare: tuple[float, float, int] | None = None,
                         n_cells: int = 4096, seed: int = 0, **sim_config: Any) -> PulseResponse:
    """The mean response a device model predicts, measured on a simulated population of
    ``n_cells`` (so it includes D2D spread and C2C noise the way a measurement would)."""
    from memhil.backends.sim import SimBackend  # calibration -> backends, one way

    side = max(1, int(n_cells ** 0.5))
    limits = {"count_max": max(1000, n_pulses), **sim_config.pop("limits", {})}
    sim = SimBackend({"rows": side, "cols": side, "device": device, "seed": seed,
                      "limits": limits, **sim_config})
    cells = torch.ones(sim.shape, dtype=torch.bool)
    return measure_pulse_response(sim, cells, amplitude_v, width_s, n_pulses, prepare=prepare)
