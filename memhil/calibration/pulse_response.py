"""Pulse responses for calibration: the measurement lives in ``memhil.analog.pulse_response``
(one mechanism for every SET/RESET response measurement) and is re-exported here."""

from __future__ import annotations

from memhil.analog.pulse_response import PulseResponse, measure_pulse_response, measure_set_response

__all__ = ["PulseResponse", "measure_pulse_response", "measure_set_response"]
