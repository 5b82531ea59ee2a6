"""The Keysight B1500A adapter over the unmodified QCoDeS ``KeysightB1500`` driver, talking
FLEX to the mock lab's B1500 emulator through pyvisa-py, and a cell-wise station on it.

Chip: a 4 x 4 NeuroSim crossbar without sneak paths; SMU 1 (slot 1) drives row 1, its LO
is column 2 (a fixed route, no matrix), so every reading is cell (1, 2)'s current.
"""

from __future__ import annotations

import numpy as np
import pytest
from qcodes.instrument import Instrument

from memhil.core.errors import ConfigError
from memhil.instruments.adapters.b1500 import PULSE_WIDTH_MIN_S, B1500SourceMeter, create
from memhil.instruments.capabilities import SourceMeter
from memhil.instruments.station import load_station_config
from memhil.mock_hw.bench import MockBench
from memhil.mock_hw.chip import MockChip
from memhil.mock_hw.emulators.b1500 import B1500Emulator
from memhil.mock_hw.server import LineServer
from tests.backends import B1500_BACKEND, _b1500_station

ROW, COL = 1, 2
CFG = {"rows": 4, "cols": 4, "seed": 3, "device": {"model": "neurosim"}}


@pytest.fixture
def lab():
    chip = MockChip(CFG, sneak_paths=False)
    bench = MockBench(
        chip, lambda key: ([("row", ROW)], [("col", COL)]) if key == "spa.smu1" else ([], [])
    )
    emu = B1500Emulator(bench, name="spa")
    server = LineServer(emu.handle, name="b1500").start()
    yield chip, emu, server
    Instrument.close_all()
    server.stop()


@pytest.fixture
def smu(lab) -> B1500SourceMeter:
    _, _, server = lab
    smus = create(server.resource_name, "spa", visalib="@py", timeout=5)
    assert sorted(smus) == ["smu1", "smu2", "smu3"]  # the modules UNT? reports
    return smus["smu1"]


def _g(chip: MockChip) -> float:
    return float(chip.sim.read_conductance([(0, ROW, COL)])[0])


def test_the_adapter_is_a_source_meter_and_reads_the_cell_through_dv_and_ti(lab, smu):
    chip, emu, _ = lab
    assert isinstance(smu, SourceMeter)
    smu.set_source_mode("voltage")
    smu.set_compliance(1e-3)
    smu.set_level(0.2)  # output off: kept, forced when the relay closes
    assert "DV 1,0,0.2,0.001" not in emu.commands()
    smu.output(True)
    m = smu.measure()
    sent = emu.commands()
    assert sent.index("CN 1") < sent.index("DV 1,0,0.2,0.001") < sent.index("TI 1")
    # the emulator answers from the chip (1 % read noise of NeuroSim's default read path
    # and a +-0.5e-6 relative ASCII rounding: 5 % covers both)
    assert m.voltage_v == 0.2 and not m.in_compliance
    assert m.current_a == pytest.approx(0.2 * _g(chip), rel=0.05)
    assert smu.output_is_on()
    smu.safe_state()
    assert emu.commands()[-2:] == ["CL 1", "ERRX?"]
    assert not emu.channels[1].enabled and emu.channels[1].terminal.voltage_v == 0.0


def test_compliance_clamps_the_reading_and_status_c_reports_it(lab, smu):
    smu.set_compliance(1e-9)
    smu.output(True)
    smu.set_level(0.3)
    m = smu.measure()
    assert m.in_compliance and m.current_a == pytest.approx(1e-9, rel=1e-5)
    assert 0 < m.voltage_v < 0.3  # the source was lowered to hold the limit (measured by TV)


def test_a_pulse_below_the_smu_floor_is_refused_before_anything_is_sent(lab, smu):
    _, emu, _ = lab
    before = emu.commands()
    with pytest.raises(ValueError, match=r"500 us|0\.0005|5e-04"):
        smu.pulse(2.0, 80e-9)
    with pytest.raises(ValueError, match="period"):
        smu.pulse(2.0, 1e-3, period_s=2e-3)  # below width + 2 ms
    assert emu.commands() == before


def test_a_pulse_train_is_one_pwv_timed_by_the_instrument_and_raises_g(lab, smu):
    chip, emu, _ = lab
    smu.set_compliance(1e-3)
    g0 = _g(chip)
    t0 = chip.clock.now()
    smu.pulse(2.0, 1e-3, 3)
    sent = emu.commands()
    assert "PT 0.0,0.001,0.005" in sent
    assert any(c.startswith("PWV 1,1,0,0.0,2.0,2.0,3") for c in sent)  # not QCoDeS's "PWI"
    assert "MM 4,1" in sent and sent[-1] == "XE"
    assert chip.clock.now() - t0 == pytest.approx(3 * 5e-3, rel=1e-6)  # 3 periods
    assert _g(chip) > g0
    smu.pulse(-2.0, PULSE_WIDTH_MIN_S)  # one pulse: pulsed spot
    assert emu.commands()[-3:] == ["MM 3,1", "ERRX?", "XE"]


def test_the_emulator_refuses_a_pulse_below_the_floor_as_the_instrument_does(lab, smu):
    # through the driver alone (no adapter check): FLEX error 150, raised by QCoDeS's ERRX?
    with pytest.raises(RuntimeError, match="150"):
        smu.instrument.write("PT 0,1E-6,0.005")


def test_a_staircase_sweep_returns_every_step_with_its_compliance_flag(lab, smu):
    chip, _, _ = lab
    smu.set_compliance(5e-8)  # below 0.3 V x G (G ~ 5e-7 S): the last steps clamp
    result = smu.sweep(0.0, 0.3, 7)
    assert result.source.shape == result.current_a.shape == (7,)
    np.testing.assert_allclose(result.voltage_v, np.linspace(0, 0.3, 7), atol=1e-12)
    assert result.in_compliance[-1] and not result.in_compliance[0]
    assert np.all(np.abs(result.current_a) <= 5e-8 * (1 + 1e-5))


def test_a_station_may_not_promise_pulses_shorter_than_the_b1500_smu_makes():
    station = _b1500_station(4, 6)
    station["limits"]["width_min_s"] = 1e-9
    with pytest.raises(ConfigError, match=r"limits.width_min_s.*instruments.spa.*0.0005"):
        load_station_config(station)


def test_the_b1500_station_declares_the_smu_pulse_floor():
    """The B1500A station of the conformance suite (tests/backends.py) promises no pulse
    shorter than the SMU makes."""
    backend = B1500_BACKEND.make()
    try:
        assert backend.capabilities.min_pulse_width_s == PULSE_WIDTH_MIN_S
    finally:
        backend.close()
