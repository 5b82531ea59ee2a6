"""SMU readings carry the instrument's accuracy (memhil.mock_hw.smu_accuracy): each reading
is off by at most its range's datasheet specification, by the same error reading after
reading (a unit's calibration), reproducibly from the station's seed; with the accuracy
switched off the readings are the exact physics."""

from __future__ import annotations

import pytest

from memhil.mock_hw.bench import MockBench
from memhil.mock_hw.chip import MockChip
from memhil.mock_hw.emulators.k2450 import Keithley2450Emulator
from memhil.mock_hw.emulators.k2600 import Keithley2600Emulator
from memhil.mock_hw.lab import MockLab
from memhil.mock_hw.smu_accuracy import K2450_ACCURACY, K2636B_ACCURACY, ReadingErrors

CFG = {"rows": 4, "cols": 4, "device": {"model": "vteam"}, "seed": 3}
ROUTES = {"smu.smua": ([("row", 1)], [("col", 2)]), "k.smu": ([("row", 1)], [("col", 2)])}


def _bench() -> MockBench:
    """A fresh chip of the same seed each time: the physics of two emulators is identical."""
    return MockBench(MockChip(CFG), lambda key: ROUTES.get(key, ([], [])))


def _k2600(accuracy: bool, seed: int = 5) -> Keithley2600Emulator:
    return Keithley2600Emulator(_bench(), name="smu", seed=seed, accuracy=accuracy)


def ask(emu, chunk: str) -> str:
    out = emu.handle(chunk)
    return (out.decode() if isinstance(out, bytes) else out or "").strip()


def _read_2636b(emu: Keithley2600Emulator, level_v: float, limit_a: float) -> tuple[float, float]:
    emu.handle("smua.measure.nplc = 0.001")  # a short hold: the cell barely moves
    emu.handle(f"smua.source.levelv = {level_v} smua.source.limiti = {limit_a}")
    emu.handle("smua.source.output = 1")
    i, v = (float(x) for x in ask(emu, "print(smua.measure.iv())").split("\t"))
    emu.handle("smua.source.output = 0")
    assert ask(emu, "print(errorqueue.count)") == "0.00000e+00"
    return i, v


def test_2636b_readings_are_off_by_at_most_the_datasheet_accuracy():
    i_exact, v_exact = _read_2636b(_k2600(False), 0.1, 0.1)
    i_read, v_read = _read_2636b(_k2600(True), 0.1, 0.1)
    assert v_exact == 0.1  # without accuracy: the sourced level, read back exactly
    v_spec = K2636B_ACCURACY.spec("v", 0.2)  # 0.1 V autoranges onto the 200 mV range
    assert 0 < abs(v_read - v_exact) <= v_spec.bound(v_exact)
    i_range = K2636B_ACCURACY.ranges.snap(K2636B_ACCURACY.ranges.measure_i, i_exact)
    assert i_range is not None
    # the same chip, drive and noise stream: the difference is the unit's error alone
    assert 0 < abs(i_read - i_exact) <= K2636B_ACCURACY.spec("i", i_range).bound(i_exact)


def test_2636b_a_compliance_reading_carries_the_accuracy_of_its_range():
    i_exact, _ = _read_2636b(_k2600(False), 0.2, 1e-6)  # a VTEAM cell draws mA at 0.2 V
    i_read, _ = _read_2636b(_k2600(True), 0.2, 1e-6)
    assert i_exact == 1e-6  # clamped at the limit, exactly, without accuracy
    assert 0 < abs(i_read - 1e-6) <= K2636B_ACCURACY.spec("i", 1e-6).bound(1e-6)


def test_reading_errors_are_one_unit_per_seed_and_systematic():
    a, b, c = (ReadingErrors(K2636B_ACCURACY, "smu.smua", seed) for seed in (5, 5, 6))
    assert a.apply("i", 1e-3, 5e-4) == b.apply("i", 1e-3, 5e-4)  # reproducible
    assert a.apply("i", 1e-3, 5e-4) != c.apply("i", 1e-3, 5e-4)  # another unit
    assert a.apply("i", None, 5e-4) == a.apply("i", 1e-3, 5e-4)  # autorange: the 1 mA range
    assert a.apply("i", 10e-3, 5e-4) != a.apply("i", 1e-3, 5e-4)  # another range's error
    off = ReadingErrors(K2636B_ACCURACY, "smu.smua", 5, enabled=False)
    assert off.apply("v", 2.0, 1.234) == 1.234


def test_2450_readings_are_off_by_at_most_the_datasheet_accuracy():
    def read(accuracy: bool) -> float:
        emu = Keithley2450Emulator(_bench(), name="k", seed=5, accuracy=accuracy)
        for cmd in (
            '*RST;:SENS:FUNC "CURR";:SENS:CURR:NPLC 0.01;:SENS:CURR:RANG 0.01',
            ":SOUR:FUNC VOLT;:SOUR:VOLT 0.05;:SOUR:VOLT:ILIM 0.1;:OUTP ON",
        ):
            emu.handle(cmd)
        i = float(ask(emu, ":READ?"))
        emu.handle(":OUTP OFF")
        assert ask(emu, ":SYST:ERR:COUN?") == "0"
        return i

    i_exact, i_read = read(False), read(True)
    assert 0 < abs(i_read - i_exact) <= K2450_ACCURACY.spec("i", 0.01).bound(i_exact)


@pytest.mark.parametrize(
    ("mock", "as_bench", "on"),
    [({}, False, False), ({}, True, True), ({"accuracy": False}, True, False)],
)
def test_accuracy_is_on_for_a_lab_used_as_a_bench_unless_the_station_says_no(mock, as_bench, on):
    station = {
        "name": "s",
        "chip": {"rows": 2, "cols": 2, "device": "vteam"},
        "limits": {"v_pulse_max_v": 1.0, "v_read_max_v": 0.3, "compliance_max_a": 1e-3},
        "instruments": {
            "smu": {"type": "keithley2636b", "address": "TCPIP0::127.0.0.1::0::SOCKET"}
        },
        "mock": mock,
    }
    lab = MockLab(station, as_bench=as_bench)  # not started: nothing is served
    assert lab.emulators["smu"].smus["smua"].reading_errors.enabled is on


def test_2450_error_strings_carry_the_event_type_and_time_stamp():
    """``code,"message;type;YYYY/MM/DD HH:MM:SS.mmm"`` (the 2450's event log fields), and
    ``0,"No error;0;0 0"`` once the queue is empty."""
    import re

    emu = Keithley2450Emulator(_bench(), name="k")
    emu.handle(":SOUR:VOLT:ILIM 0")  # below the 1 nA minimum: refused
    reply = ask(emu, ":SYST:ERR?")
    assert re.fullmatch(r'-222,"[^";]+;1;\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{3}"', reply), reply
    assert ask(emu, ":SYST:ERR?") == '0,"No error;0;0 0"'
