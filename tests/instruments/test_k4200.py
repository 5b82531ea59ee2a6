"""The Keithley 4200A-SCS adapter over PyMeasure's unmodified ``Keithley4200`` (KXCI user
mode, NUL-terminated over LAN), talking to the mock lab's KXCI emulator through pyvisa-py.

Chip: a 4 x 4 NeuroSim crossbar without sneak paths; SMU 1 drives row 1, its LO is
column 2 (a fixed route), so every reading is cell (1, 2)'s current."""

from __future__ import annotations

import numpy as np
import pytest

from memhil.instruments.adapters.k4200 import K4200SourceMeter, create
from memhil.instruments.capabilities import SourceMeter
from memhil.mock_hw.bench import MockBench
from memhil.mock_hw.chip import MockChip
from memhil.mock_hw.emulators.k4200 import Keithley4200Emulator
from memhil.mock_hw.server import LineServer

ROW, COL = 1, 2


@pytest.fixture
def lab():
    chip = MockChip(
        {"rows": 4, "cols": 4, "seed": 3, "device": {"model": "neurosim"}}, sneak_paths=False
    )
    bench = MockBench(
        chip, lambda key: ([("row", ROW)], [("col", COL)]) if key == "spa.smu1" else ([], [])
    )
    emu = Keithley4200Emulator(bench, name="spa", smus=2)
    server = LineServer(emu.handle, name="k4200", terminator="\0").start()
    smus = create(server.resource_name, "spa", visa_library="@py")
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


def test_a_pulse_is_refused_clearly_and_nothing_is_sent(lab):
    _, emu, smus = lab
    before = emu.commands()
    with pytest.raises(NotImplementedError, match="4225-PMU"):
        smus["smu1"].pulse(1.0, 1e-3)
    assert emu.commands() == before
