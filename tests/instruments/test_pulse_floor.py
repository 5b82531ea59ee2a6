"""A bench advertises only pulses it makes: the nominal SET/RESET of its capabilities
respect ``limits.width_min_s`` (the example mock station's 1 us floor included), and a
station whose chip would advertise a shorter one is refused when the backend opens."""

from __future__ import annotations

from pathlib import Path

import pytest

from memhil.core.config import load_yaml
from memhil.core.errors import ConfigError, LimitError
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


def test_the_cell_strategy_pulses_no_shorter_than_the_smu_makes(caplog):
    """On a station whose array board pulses in 1 us, the cell strategy pulses with the
    2636B: its 100 us floor binds there (request refused naming the SMU, the board's 1 us
    nominal pulses not advertised), the same in the pre-flight from the files alone."""
    from memhil.runs.protocol_file import offline_backend

    station = load_yaml(STATION)
    backend = MockLab.open_backend(station, strategy="cell")
    try:
        lim = backend.limits
        assert lim.width_min_s == pytest.approx(100e-6) and station["limits"]["width_min_s"] == 1e-6
        assert backend.capabilities.min_pulse_width_s == pytest.approx(100e-6)
        assert backend.capabilities.set_pulse is None  # 1 us: the SMU cannot make it
        assert "not advertised as a nominal pulse" in caplog.text
        with pytest.raises(LimitError, match=r"instruments.smu \(keithley2636b\).*1e-06 s"):
            backend.pulse([(0, 0, 0)], 0.206, 1e-6)
        backend.pulse([(0, 0, 0)], 0.206, 100e-6)  # what the 2636B makes is sent
    finally:
        backend.close()
    dry = offline_backend({"mock_lab": str(STATION), "strategy": "cell"})
    assert dry.limits.width_min_s == pytest.approx(100e-6)
    assert dry.capabilities.set_pulse is None
    assert offline_backend({"mock_lab": str(STATION)}).limits.width_min_s == 1e-6  # the board


def test_a_station_pulsing_only_with_a_2636b_may_not_promise_shorter_pulses():
    station = load_yaml(STATION)
    del station["instruments"]["board"]  # the SMU is the only pulser left
    with pytest.raises(ConfigError, match=r"limits.width_min_s.*instruments.smu.*0.0001"):
        MockLab.open_backend(station)


def test_an_unset_floor_is_the_shortest_pulse_the_bench_makes():
    from memhil.instruments.station import load_station_config

    station = load_yaml(STATION)
    del station["instruments"]["board"]
    del station["limits"]["width_min_s"]  # unset: the 2636B's floor, not Limits' 1 ns
    assert load_station_config(station).limits.width_min_s == pytest.approx(100e-6)
    station["instruments"]["board"] = load_yaml(STATION)["instruments"]["board"]
    assert load_station_config(station).limits.width_min_s == 1e-9  # the board pulses
