"""The Keithley 4200A-SCS adapter over PyMeasure's unmodified ``Keithley4200`` (KXCI user
mode, NUL-terminated over LAN), talking to the mock lab's KXCI emulator through pyvisa-py,
and its pulse path through a 4225-PMU channel whose RPM shares SMU 1's output (checked
byte for byte with PyMeasure's ``expected_protocol``, and on the emulator's chip).

Chip: a 4 x 4 NeuroSim crossbar without sneak paths; SMU 1 drives row 1, its LO is
column 2 (a fixed route), so every reading is cell (1, 2)'s current."""

from __future__ import annotations

import numpy as np
import pytest
from pymeasure.instruments.keithley.keithley4200 import Keithley4200
from pymeasure.test import expected_protocol

from memhil.instruments.adapters.k4200 import K4200SourceMeter, create
from memhil.instruments.capabilities import SourceMeter
from memhil.mock_hw.bench import MockBench
from memhil.mock_hw.chip import MockChip
from memhil.mock_hw.emulators.k4200 import Keithley4200Emulator
from memhil.mock_hw.server import LineServer

ROW, COL = 1, 2


def _lab(rpm=None):
    chip = MockChip(
        {"rows": 4, "cols": 4, "seed": 3, "device": {"model": "neurosim"}}, sneak_paths=False
    )
    bench = MockBench(
        chip, lambda key: ([("row", ROW)], [("col", COL)]) if key == "spa.smu1" else ([], [])
    )
    emu = Keithley4200Emulator(bench, name="spa", smus=2, rpm=rpm)
    server = LineServer(emu.handle, name="k4200", terminator="\0").start()
    return chip, emu, server


@pytest.fixture
def lab():
    chip, emu, server = _lab()
    smus = create(server.resource_name, "spa", visa_library="@py")
    yield chip, emu, smus
    smus["smu1"].close()
    server.stop()


@pytest.fixture
def pmu_lab():
    """SMU 1 cabled through the RPM of PMU channel 1 (``options.rpm``)."""
    chip, emu, server = _lab(rpm={"smu1": "PMU1-1"})
    smus = create(server.resource_name, "spa", visa_library="@py", rpm={"smu1": "PMU1-1"})
    yield chip, emu, smus
    smus["smu1"].close()
    server.stop()


def test_the_smus_the_4200_reports_become_source_meters(lab):
    _, emu, smus = lab
    assert sorted(smus) == ["smu1", "smu2"] and emu.commands()[0] == "*OPT?"
    assert all(isinstance(s, SourceMeter) for s in smus.values())


def test_a_read_forces_dv_with_its_compliance_and_reads_ti(lab):
    chip, emu, smus = lab
    smu: K4200SourceMeter = smus["smu1"]
    smu.set_compliance(1e-3)
    smu.set_level(0.2)
    assert not any(c.startswith("US;DV1,") for c in emu.commands())  # off: kept
    smu.output(True)
    m = smu.measure()
    assert "US;DV1,0,0.2,0.001" in emu.commands() and emu.commands()[-1] == "US;TI1"
    g = float(chip.sim.read_conductance([(0, ROW, COL)])[0])
    # 1 % read noise of NeuroSim's default read path and 7-digit ASCII: 5 % covers both
    assert m.current_a == pytest.approx(0.2 * g, rel=0.05) and not m.in_compliance
    smu.safe_state()
    assert emu.commands()[-1] == "US;DV1" and not smu.output_is_on()
    assert emu.commands()[-1] == "US;TV1"  # off is confirmed by a voltage reading


def test_compliance_is_flagged_from_the_reading_status(lab):
    _, _, smus = lab
    smu = smus["smu1"]
    smu.set_compliance(1e-9)
    smu.output(True)
    smu.set_level(0.3)
    m = smu.measure()
    assert m.in_compliance and m.current_a == pytest.approx(1e-9, rel=1e-5)
    result = smu.sweep(0.0, 0.3, 4)
    assert result.in_compliance[-1] and np.all(np.abs(result.current_a) <= 1e-9 * (1 + 1e-5))


def test_a_pulse_on_an_smu_without_an_rpm_is_refused_and_nothing_is_sent(lab):
    _, emu, smus = lab
    before = emu.commands()
    with pytest.raises(NotImplementedError, match="4225-RPM.*options.rpm"):
        smus["smu1"].pulse(1.0, 1e-3)
    assert emu.commands() == before


def test_a_pmu_pulse_is_this_kxci_sequence_and_the_smu_returns_to_base():
    """SMU off, RPM to the pulse path, a standard-mode train on PMU channel 1 (10 V range,
    20 ns edges, off time = width), wait for the test, PMU off, RPM back, SMU at base."""
    with expected_protocol(
        Keithley4200,
        [
            ("*OPT?", "SMU1,SMU2"),
            ("US;DV1,0,0,0.001", "ACK"),
            ("US;DV1", "ACK"),
            (":PMU:RPM:CONFIGURE PMU1-1, 0", "ACK"),
            (":PMU:INIT 0", "ACK"),
            (":PMU:SOURCE:RANGE 1, 10", "ACK"),
            (":PMU:PULSE:TIMES 1, 2e-07, 1e-07, 2e-08, 2e-08", "ACK"),
            (":PMU:PULSE:TRAIN 1, 0, 1.5", "ACK"),
            (":PMU:PULSE:BURST:COUNT 3", "ACK"),
            (":PMU:OUTPUT:STATE 1, 1", "ACK"),
            (":PMU:EXECUTE", "ACK"),
            (":PMU:TEST:STATUS?", "0"),
            (":PMU:OUTPUT:STATE 1, 0", "ACK"),
            (":PMU:RPM:CONFIGURE PMU1-1, 2", "ACK"),
            ("US;DV1,0,0,0.001", "ACK"),
        ],
    ) as driver:
        smu = K4200SourceMeter(driver, 1, "spa.smu1", rpm="PMU1-1")
        smu.output(True)
        smu.pulse(1.5, 100e-9, 3)
        assert smu.output_is_on() and smu.level == 0.0


def test_a_failed_pmu_command_aborts_the_train_and_raises():
    with expected_protocol(
        Keithley4200,
        [
            ("*OPT?", "SMU1,SMU2"),
            (":PMU:RPM:CONFIGURE PMU1-1, 0", "ACK"),
            (":PMU:INIT 0", "ERROR: no 4225-PMU installed"),
            (":PMU:ABORT", "ACK"),
        ],
    ) as driver:
        smu = K4200SourceMeter(driver, 1, "spa.smu1", rpm="PMU1-1")
        with pytest.raises(ValueError, match="no 4225-PMU"):
            smu.pulse(1.5, 100e-9)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"level": 12.0, "width_s": 1e-6}, "10 V range"),
        ({"level": 1.0, "width_s": 20e-9}, "below the 4225-PMU's 4e-08 s"),
        ({"level": 1.0, "width_s": 1e-6, "period_s": 1.05e-6}, "off time"),
        ({"level": 1.0, "width_s": 0.4, "period_s": 2.0}, "period"),
        ({"level": 1.0, "width_s": 1e-6, "count": 0}, "count"),
    ],
)
def test_a_pmu_pulse_outside_its_range_is_refused_before_anything_is_sent(pmu_lab, kw, match):
    _, emu, smus = pmu_lab
    before = emu.commands()
    with pytest.raises(ValueError, match=match):
        smus["smu1"].pulse(**kw)
    assert emu.commands() == before


def test_pmu_pulses_reach_the_cell_through_the_rpm_and_take_their_period(pmu_lab):
    chip, emu, smus = pmu_lab
    smu = smus["smu1"]
    assert emu.commands()[-1] == ":PMU:RPM:CONFIGURE PMU1-1, 2"  # opened on the SMU path
    smu.set_compliance(1e-3)
    smu.output(True)
    g0 = float(chip.sim.read_conductance([(0, ROW, COL)])[0])
    t0 = chip.clock.now()
    smu.pulse(2.0, 100e-9, 5)
    assert chip.clock.now() - t0 == pytest.approx(5 * 200e-9, rel=1e-9)  # 5 periods
    # NeuroSim SET steps are far above its 1 % read noise: 5 pulses raise G clearly
    assert float(chip.sim.read_conductance([(0, ROW, COL)])[0]) > 1.5 * g0
    g1 = float(chip.sim.read_conductance([(0, ROW, COL)])[0])
    smu.pulse(-2.0, 100e-9, 5)
    assert float(chip.sim.read_conductance([(0, ROW, COL)])[0]) < 0.7 * g1
    smu.safe_state()
    assert not smu.output_is_on() and emu.commands()[-1] == "US;TV1"


def test_an_smu_behind_an_rpm_on_the_pulse_path_reaches_nothing(pmu_lab):
    """The emulator's RPMs start on the pulse path: only the adapter's switch to the SMU
    path lets a read through, and the RPM refuses to switch while the SMU is on."""
    _, emu, smus = pmu_lab
    smu = smus["smu1"]
    smu.set_level(0.2)
    smu.output(True)
    assert abs(smu.measure().current_a) > 1e-8
    smu.output(False)
    smu._set(":PMU:RPM:CONFIGURE PMU1-1, 0")
    smu.output(True)
    assert smu.measure().current_a == 0.0
    with pytest.raises(ValueError, match="switched with its SMU or PMU output on"):
        smu._set(":PMU:RPM:CONFIGURE PMU1-1, 2")


def test_an_rpm_on_an_smu_the_4200_does_not_have_is_refused(lab):
    _, _, smus = lab
    address = smus["smu1"].driver.adapter.connection.resource_name
    with pytest.raises(ValueError, match=r"options.rpm: \['smu7'\]"):
        create(address, "spa2", visa_library="@py", rpm={"smu7": "PMU1-1"})
