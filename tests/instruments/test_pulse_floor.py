"""A bench advertises only pulses it makes: the nominal SET/RESET of its capabilities
respect ``limits.width_min_s`` (the example mock station's 1 us floor included), and a
station whose chip would advertise a shorter one is refused when the backend opens."""

from __future__ import annotations

from pathlib import Path

import pytest

from memhil.core.config import load_yaml
from memhil.core.errors import ConfigError
from memhil.mock_hw.lab import MockLab

STATION = Path(__file__).resolve().parents[2] / "examples" / "mock_station.yaml"


def test_the_mock_station_advertises_a_set_pulse_it_accepts():
    station = load_yaml(STATION)  # its chip and limits, on its array board alone (faster)
    station["instruments"] = {"board": station["instruments"]["board"]}
    station["wiring"] = {}
    backend = MockLab.open_backend(station)
    try:
        caps = backend.capabilities
        assert caps.set_pulse.width_s >= backend.limits.width_min_s
        assert caps.reset_pulse.width_s >= backend.limits.width_min_s
        g0 = float(backend.read_conductance([(0, 0, 0)])[0])
        backend.pulse([(0, 0, 0)], *caps.set_pulse)  # refused before the fix (10 ns < 1 us)
        assert float(backend.read_conductance([(0, 0, 0)])[0]) > g0
    finally:
        backend.close()


def test_a_nominal_pulse_shorter_than_the_floor_is_refused_at_open():
    station = load_yaml(STATION)
    del station["chip"]["set_pulse"]  # VTEAM's own: 0.21 V for 10 ns
    with pytest.raises(ConfigError, match=r"chip.set_pulse.*1e-08 s.*width_min_s = 1e-06"):
        MockLab.open_backend(station)
    # the refusal left no connection and no QCoDeS instrument name behind: the corrected
    # station opens at once in the same process
    station["chip"]["set_pulse"] = [0.206, 1e-6]
    MockLab.open_backend(station).close()
