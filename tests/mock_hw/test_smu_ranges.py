"""SMU ranges as the instruments have them: requested ranges snap to real ones, readings
beyond a fixed measure range overflow, a level beyond a fixed source range is refused
(nothing reaches the chip), limits have the instrument's minimum, an open circuit reads
the noise floor, and a short through the matrix is compliance-limited, not an error."""

from __future__ import annotations

import pytest

from memhil.mock_hw.bench import MockBench
from memhil.mock_hw.chip import MockChip
from memhil.mock_hw.emulators.k2450 import Keithley2450Emulator
from memhil.mock_hw.emulators.k2600 import Keithley2600Emulator
from memhil.mock_hw.smu_ranges import K2450, K2636B

CFG = {"rows": 4, "cols": 4, "device": {"model": "vteam"}, "seed": 3}


def _k2600(routes=None):
    chip = MockChip(CFG)
    routes = routes if routes is not None else {"smu.smua": ([("row", 1)], [("col", 2)])}
    bench = MockBench(chip, lambda key: routes.get(key, ([], [])))
    emu = Keithley2600Emulator(bench, name="smu")
    return emu, chip


def ask(emu, chunk: str) -> str:
    out = emu.handle(chunk)
    return out.decode().strip() if out else ""


def errors(emu) -> list[tuple[int, str]]:
    errs = list(emu.errors)
    emu.status.errors.clear()
    return errs


def test_2636b_ranges_snap_up_and_turn_autorange_off():
    emu, _ = _k2600()
    emu.handle("smua.source.rangev = 1.5 smua.measure.rangei = 3e-6")
    assert float(ask(emu, "print(smua.source.rangev)")) == 2.0
    assert float(ask(emu, "print(smua.measure.rangei)")) == 10e-6
    assert ask(emu, "print(smua.source.autorangev, smua.measure.autorangei)") == (
        "0.00000e+00\t0.00000e+00"
    )
    emu.handle("smua.source.rangev = 300")  # beyond the 200 V range: refused
    assert errors(emu) and float(ask(emu, "print(smua.source.rangev)")) == 2.0
    emu.handle("smua.source.autorangev = 1 smua.source.levelv = 0.15")
    assert float(ask(emu, "print(smua.source.rangev)")) == 0.2  # the level chooses


def test_2636b_level_beyond_a_fixed_source_range_is_refused_and_never_applied():
    emu, chip = _k2600()
    g0 = chip.sim.true_conductance().clone()
    emu.handle("smua.source.rangev = 0.2 smua.source.levelv = 1.5")  # output off: stored
    assert errors(emu) == []
    emu.handle("smua.source.output = 1")
    ((code, msg),) = errors(emu)
    assert code == 5005 and "1.5 V on the 0.2 V range" in msg
    assert ask(emu, "print(smua.source.output)") == "0.00000e+00"  # nothing went out
    assert not emu.bench.terminal("smu.smua").output_on
    emu.handle("smua.source.levelv = 0.1 smua.source.output = 1")
    emu.handle("smua.source.levelv = 1.5")  # with the output on: refused, 0.1 V stays
    assert [c for c, _ in errors(emu)] == [5005]
    assert emu.bench.terminal("smu.smua").voltage_v == pytest.approx(0.1)
    assert (chip.sim.true_conductance() == g0).all()  # 1.5 V never reached the cell


def test_2636b_reading_beyond_a_fixed_measure_range_overflows():
    emu, _ = _k2600()
    emu.handle("smua.measure.nplc = 0.001")  # short holds: the test is about ranges
    emu.handle("smua.source.levelv = 0.2 smua.source.limiti = 0.1 smua.source.output = 1")
    i_auto = float(ask(emu, "print(smua.measure.i())"))
    assert 1e-6 < abs(i_auto) < 0.1  # a VTEAM cell at 0.2 V: far above 100 nA
    emu.handle("smua.measure.rangei = 100e-9")
    assert float(ask(emu, "print(smua.measure.i())")) == K2636B.overflow == 9.91e37
    assert errors(emu) == []


def test_2636b_minimum_limits_and_nplc():
    emu, _ = _k2600()
    for chunk in (
        "smua.source.limiti = 0",
        "smua.source.limiti = 10e-12",
        "smua.source.limitv = 0.001",
        "smua.measure.nplc = 0",
        "smua.measure.nplc = 26",
    ):
        emu.handle(chunk)
        assert len(errors(emu)) == 1, chunk
    emu.handle("smua.source.limiti = 100e-12 smua.measure.nplc = 0.001")
    assert errors(emu) == []
    assert float(ask(emu, "print(smua.source.limiti)")) == pytest.approx(100e-12)


def test_open_circuit_reads_the_noise_floor_not_zero():
    emu, _ = _k2600(routes={})  # smua reaches nothing
    emu.handle("smua.source.levelv = 0.2 smua.source.output = 1 smua.measure.count = 50")
    emu.handle("smua.nvbuffer1.clear()")
    emu.handle("smua.measure.i(smua.nvbuffer1)")
    readings = [
        float(x) for x in ask(emu, "printbuffer(1, 50, smua.nvbuffer1.readings)").split(",")
    ]
    assert all(r != 0.0 for r in readings)
    # RMS of 50 normal draws: within 40 % of sigma (chi distribution, > 4 sigma margin)
    rms = (sum(r * r for r in readings) / len(readings)) ** 0.5
    assert rms == pytest.approx(K2636B.noise_floor_a, rel=0.4)


def test_a_source_shorted_to_ground_is_compliance_limited_with_its_status():
    """smua's HI reaches row 1, which a ground port also holds: a short through the
    matrix. The source limits at its compliance and says so; no TSP error; the line
    (and every cell on it) sits at ground."""
    routes = {"smu.smua": ([("row", 1)], [("row", 1)])}
    emu, _ = _k2600(routes)
    emu.handle("smua.measure.nplc = 0.001")
    emu.handle("smua.source.levelv = 1 smua.source.limiti = 1e-3 smua.source.output = 1")
    i = float(ask(emu, "print(smua.measure.i())"))
    assert i == pytest.approx(1e-3, rel=1e-6)
    assert ask(emu, "print(status.measurement.instrument.smua.condition)") == "2.00000e+00"
    assert errors(emu) == []
    assert emu.bench.terminal("smu.smua").voltage_v == pytest.approx(2e-3, rel=1e-3)  # I R
    assert emu.bench.drive()[0] == {1: 0.0}


def test_two_smus_on_one_line_both_limit():
    routes = {"smu.smua": ([("row", 1)], [("col", 2)]), "smu.smub": ([("row", 1)], [])}
    emu, _ = _k2600(routes)
    emu.handle("smua.measure.nplc = 0.001 smub.measure.nplc = 0.001")
    emu.handle("smua.source.levelv = 0.5 smua.source.limiti = 1e-3 smua.source.output = 1")
    emu.handle("smub.source.levelv = -0.5 smub.source.limiti = 1e-3 smub.source.output = 1")
    ia = float(ask(emu, "print(smua.measure.i())"))
    ib = float(ask(emu, "print(smub.measure.i())"))
    assert ia == pytest.approx(1e-3, rel=1e-6) and ib == pytest.approx(-1e-3, rel=1e-6)
    assert errors(emu) == []


# -- 2450 ---------------------------------------------------------------------------------


def _k2450():
    chip = MockChip(CFG)
    routes = {"k.smu": ([("row", 1)], [("col", 2)])}
    bench = MockBench(chip, lambda key: routes.get(key, ([], [])))
    return Keithley2450Emulator(bench, name="k"), chip


def scpi_errors(emu) -> list[int]:
    out = []
    while True:
        code = int(emu.handle(":SYST:ERR?").split(",")[0])
        if code == 0:
            return out
        out.append(code)


def test_2450_ranges_overflow_refusal_and_minimum_limit():
    emu, chip = _k2450()
    emu.handle(":SOUR:VOLT:RANG 1.5")
    assert float(emu.handle(":SOUR:VOLT:RANG?")) == 2.0
    emu.handle(":SENS:CURR:RANG 3e-6")
    assert float(emu.handle(":SENS:CURR:RANG?")) == 10e-6
    assert scpi_errors(emu) == []
    g0 = chip.sim.true_conductance().clone()
    emu.handle(":SOUR:VOLT:RANG 0.2")
    emu.handle(":SOUR:VOLT 1.5")  # beyond the 0.2 V range (210 mV full scale): refused
    assert scpi_errors(emu) == [-222]
    assert float(emu.handle(":SOUR:VOLT?")) == 0.0
    emu.handle(":SOUR:VOLT:ILIM 0")  # below the 1 nA minimum
    assert scpi_errors(emu) == [-222]
    emu.handle(":SOUR:VOLT:ILIM 0.1")
    emu.handle(":SOUR:VOLT 0.2")
    emu.handle(":OUTP ON")
    emu.handle(":SENS:CURR:RANG 100e-9")
    assert float(emu.handle(":MEAS:CURR?")) == K2450.overflow
    emu.handle(":SENS:CURR:RANG:AUTO 1")
    assert 1e-6 < float(emu.handle(":MEAS:CURR?")) < 0.1
    assert scpi_errors(emu) == []
    emu.handle(":OUTP OFF")
    # 0.2 V reads do not switch a VTEAM cell: what changed it would have been the 1.5 V
    assert (chip.sim.true_conductance() - g0).abs().max() < 1e-3 * g0.abs().max()
