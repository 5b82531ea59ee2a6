"""Commands that third-party drivers and lab scripts send, beyond what memhil's adapters
use: IEEE 488.2 registers and self-test, the 2636B's dynamic buffers, Lua library,
contact check and filters; the 2450's buffers, statistics, trigger-model template,
status presets and error count. Syntax from the 2600B and 2450 reference manuals."""

from __future__ import annotations

import pytest

from memhil.mock_hw.bench import MockBench
from memhil.mock_hw.chip import MockChip
from memhil.mock_hw.emulators.k2450 import Keithley2450Emulator
from memhil.mock_hw.emulators.k2600 import Keithley2600Emulator

CFG = {"rows": 2, "cols": 2, "device": "vteam", "seed": 0}
ROUTES = {"smu.smua": ([("row", 0)], [("col", 0)]), "k.smu": ([("row", 0)], [("col", 0)])}


def bench() -> MockBench:
    return MockBench(MockChip(CFG), lambda key: ROUTES.get(key, ([], [])))


def tsp(emu, chunk: str) -> str:
    out = emu.handle(chunk)  # bytes from a TSP chunk, str from a common command
    return (out.decode() if isinstance(out, bytes) else out or "").strip()


@pytest.fixture
def k2600():
    emu = Keithley2600Emulator(bench(), name="smu")
    yield emu
    assert emu.errors == []  # every test ends with an empty error queue


def test_2636b_common_registers_and_self_test(k2600):
    assert tsp(k2600, "*TST?") == "0"
    k2600.handle("*ESE 60")
    k2600.handle("*SRE 32")
    assert (tsp(k2600, "*ESE?"), tsp(k2600, "*SRE?")) == ("60", "32")
    k2600.handle("*SRE 256")  # an 8-bit register
    assert k2600.errors[0][0] == -222
    k2600.status.errors.clear()


def test_2636b_lua_library_of_lab_scripts(k2600):
    assert tsp(k2600, 'print(string.format("%d pts, %.3f V, %s", 11, 0.25, "up"))') == (
        "11 pts, 0.250 V, up"
    )
    assert tsp(k2600, 'print(string.sub("abcdef", 2, 4), string.upper("v"))') == "bcd\tV"
    chunk = (
        "t = {} table.insert(t, 1) table.insert(t, 3) table.insert(t, 2, 2) "
        "x = table.remove(t) print(table.concat(t, ','), x, table.getn(t), #t)"
    )
    assert tsp(k2600, chunk) == "1,2\t3.00000e+00\t2.00000e+00\t2.00000e+00"
    assert tsp(k2600, "print(type(t), type(1), type('s'), type(nil), type(print))") == (
        "table\tnumber\tstring\tnil\tfunction"
    )
    assert float(tsp(k2600, "print(math.log10(1000) + math.exp(0) + math.pow(2, 3))")) == 12.0


def test_2636b_makebuffer_contact_check_and_filter(k2600):
    k2600.handle("smua.measure.nplc = 0.001 smua.source.levelv = 0.1 smua.source.output = 1")
    k2600.handle("buf = smua.makebuffer(3) smua.measure.count = 3 smua.measure.i(buf)")
    assert tsp(k2600, "print(buf.n, buf.capacity)") == "3.00000e+00\t3.00000e+00"
    values = tsp(k2600, "printbuffer(1, buf.n, buf.readings)").split(",")
    assert len(values) == 3 and all(float(v) > 0 for v in values)
    assert tsp(k2600, "print(smua.contact.check())") == "true"
    assert tsp(k2600, "print(smub.contact.check())") == "false"  # smub reaches nothing
    k2600.handle(
        "smua.measure.filter.type = smua.FILTER_MOVING_AVG smua.measure.filter.count = 4 "
        "smua.measure.filter.enable = smua.ENABLE"
    )
    assert tsp(k2600, "print(smua.measure.filter.count)") == "4.00000e+00"
    k2600.handle("smua.source.output = 0 localnode.showerrors = 1")


@pytest.fixture
def k2450():
    emu = Keithley2450Emulator(bench(), name="k")
    yield emu
    assert emu.handle(":SYST:ERR:COUN?") == "0"


def test_2450_reset_restores_buffer_sizes_and_clears_with_the_pymeasure_forms(k2450):
    k2450.handle(":TRAC:POIN 10")
    assert k2450.handle(":TRAC:POIN?") == "10"
    k2450.handle("*RST;:stat:pres;:*CLS;")  # PyMeasure's reset(), leading colon and all
    assert k2450.handle(":TRAC:POIN?") == "100000"
    assert k2450.handle("*TST?") == "0"
    k2450.handle("*SRE 1;:STAT:MEAS:ENAB 512")
    assert k2450.handle(":STAT:MEAS:ENAB?") == "512"
    k2450.handle(":STAT:PRES")
    assert k2450.handle(":STAT:MEAS:ENAB?") == "0"


def test_2450_trigger_template_statistics_read_elements_and_format(k2450):
    k2450.handle(":SOUR:VOLT 0.1;:SOUR:VOLT:ILIM 0.01;:SENS:CURR:NPLC 0.01;:OUTP ON")
    k2450.handle(':TRIG:LOAD "SimpleLoop", 4;:INIT;*WAI')
    assert k2450.handle(":TRAC:ACT?") == "4"
    data = [float(x) for x in k2450.handle(":FORM:DATA ASCII;:TRAC:DATA?").split(",")]
    assert len(data) == 4
    mean = float(k2450.handle(":TRAC:STAT:AVER?"))
    assert mean == pytest.approx(sum(data) / 4, rel=1e-5)  # 6 significant digits each
    assert float(k2450.handle(':TRAC:STAT:MAX? "defbuffer1"')) == pytest.approx(max(data))
    reading, source = k2450.handle(':READ? "defbuffer1", READ, SOUR').split(",")
    assert float(source) == pytest.approx(0.1) and float(reading) > 0
    k2450.handle(":OUTP:VOLT:SMOD HIMP;:SENS:CURR:AVER:TCON MOV;:SENS:CURR:AVER:COUNT 5")
    assert k2450.handle(":OUTP:VOLT:SMOD?") == "HIMP"
    assert k2450.handle(":SENS:CURR:AVER:COUN?") == "5"
    k2450.handle(":FORM:DATA REAL")  # binary transfer is not emulated: refused, not ignored
    assert k2450.handle(":SYST:ERR:COUN?") == "1"
    assert k2450.handle(":SYST:ERR?").startswith("-224")
    k2450.handle(":OUTP OFF")


def test_2450_lang_takes_effect_after_a_power_cycle(k2450):
    k2450.handle("*LANG TSP")
    assert k2450.handle("*LANG?") == "SCPI"  # still the active command set
    assert k2450.handle(":SOUR:FUNC?") == "VOLT"  # SCPI still served
    k2450.power_cycle()
    assert k2450.handle("*LANG?") == "TSP"
    k2450.handle(":SOUR:FUNC?")  # a SCPI header in TSP mode: refused
    assert [c for c, _ in k2450.errors] == [-113]
    k2450.handle("*LANG SCPI")
    k2450.power_cycle()  # the error queue starts empty after power-on
