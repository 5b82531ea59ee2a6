"""The Keithley 2450 emulator under the unmodified QCoDeS ``Keithley2450`` driver (SCPI).

Chip: the 4 x 4 Yakopcic crossbar of the 2600 tests, cell (1, 2) wired to the 2450
(HI -> row 1, LO -> column 2). The 2450's shortest integration is 0.01 PLC (167 us at
60 Hz), ten times the 2600's, so the switching rates are ten times lower
(A_p = A_n = 400/s): the same gradual switching per point as in the 2600 tests.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from pyvisa import constants
from pyvisa.errors import VisaIOError
from qcodes.instrument import Instrument
from qcodes.instrument_drivers.Keithley import Keithley2450

from memhil.instruments.adapters.keithley2450 import Keithley2450SourceMeter, create
from memhil.instruments.capabilities import SourceMeter
from memhil.mock_hw.bench import MockBench
from memhil.mock_hw.chip import MockChip
from memhil.mock_hw.emulators.k2450 import SOURCE_STATUS_LIMIT, Keithley2450Emulator
from memhil.mock_hw.server import LineServer

CFG = {
    "rows": 4,
    "cols": 4,
    "seed": 7,
    "device": {"model": "yakopcic", "a_p_per_s": 400.0, "a_n_per_s": 400.0},
}
ROW, COL = 1, 2
NPLC, LINEFREQ = 0.01, 60.0
T_INT = NPLC / LINEFREQ
VMAX, NPTS = 1.0, 41
# readings travel as "%.7E" ASCII: 8 significant digits, relative error <= 5e-8
RTOL_ASCII = 1e-7


def _router(key: str):
    return ([("row", ROW)], [("col", COL)]) if key == "smu2450.smu" else ([], [])


@pytest.fixture
def lab():
    chip = MockChip(CFG)
    bench = MockBench(chip, _router)
    emu = Keithley2450Emulator(bench, name="smu2450", linefreq=LINEFREQ)
    server = LineServer(emu.handle, terminator="\n", name="k2450").start()
    yield SimpleNamespace(chip=chip, bench=bench, emu=emu, server=server)
    Instrument.close_all()
    server.stop()


@pytest.fixture
def k2450(lab):
    k = Keithley2450("k2450", lab.server.resource_name, visalib="@py", timeout=5)
    k.source_function("voltage")
    k.sense_function("current")
    k.sense.nplc(NPLC)
    yield k
    Instrument.close_all()


def reference_sweep(chip: MockChip, levels) -> np.ndarray:
    out = []
    for v in levels:
        chip.hold({ROW: float(v)}, {COL: 0.0}, T_INT)
        out.append(chip.currents({ROW: float(v)}, {COL: 0.0})[0][ROW])
    return np.array(out)


def test_dual_sweep_traces_a_pinched_hysteresis_loop_that_matches_the_chip_model(lab, k2450):
    k2450.source.limit(0.1)  # above the loop's largest current: never in compliance
    k2450.source.sweep_setup(-VMAX, VMAX, NPTS, delay=0, fail_abort="OFF", dual="ON")
    k2450.source.sweep_start()
    buf = k2450.buffer("defbuffer1")
    n = buf.number_of_readings()
    assert n == 2 * NPTS  # start -> stop -> start
    data = np.array(buf.get_data(1, n, readings_only=True))
    up, down_at_v = data[:NPTS], data[NPTS:][::-1]
    v = np.linspace(-VMAX, VMAX, NPTS)
    k0, kp, km = NPTS // 2, int(np.argmin(abs(v - 0.5))), int(np.argmin(abs(v + 0.5)))
    assert abs(up[k0]) < 1e-12 and abs(down_at_v[k0]) < 1e-12  # pinched at 0 V
    assert down_at_v[kp] / up[kp] > 2.0  # 3.3x measured
    assert down_at_v[km] / up[km] > 3.0  # 4.5x measured
    assert np.trapezoid(np.abs(down_at_v - up), v) > 0.2 * np.abs(up).max() * VMAX

    ref = reference_sweep(MockChip(CFG), np.concatenate([v, v[::-1]]))
    # atol: 10 sigma of the 2450's noise floor (smu_ranges.K2450.noise_floor_a, 0.1 pA)
    np.testing.assert_allclose(data, ref, rtol=RTOL_ASCII, atol=1e-12)
    assert k2450.source.limit_tripped() is False
    assert lab.emu.errors == []


def test_compliance_clamps_the_driver_sweep_and_trips_the_limit(lab, k2450):
    limit = 2e-3
    k2450.source.limit(limit)
    k2450.output_enabled(True)
    buf = k2450.buffer("defbuffer1")
    buf.elements(["measurement", "source_value", "source_value_status"])
    k2450.source.sweep_setup(0.0, VMAX, 21, fail_abort="OFF")
    data = np.asarray(k2450.sense.sweep(), dtype=float)  # the driver's ParameterWithSetpoints
    assert data.shape == (21,)
    assert data.max() <= limit
    clamped = np.isclose(data, limit, rtol=1e-7)
    assert 5 <= clamped.sum() < 21
    extra = np.array(k2450.sense.sweep.get_selected(), dtype=float).reshape(21, 3)
    np.testing.assert_array_equal((extra[:, 2].astype(int) & SOURCE_STATUS_LIMIT) != 0, clamped)
    assert np.all(extra[clamped, 1] < np.linspace(0.0, VMAX, 21)[clamped])  # V was lowered
    # the output sits at +1 V, in compliance: the driver's limit_tripped says so
    assert k2450.source.limit_tripped() is True
    assert k2450.sense.current() == pytest.approx(limit)
    assert abs(lab.bench.current("smu2450.smu")) == pytest.approx(limit, rel=1e-5)
    k2450.source.voltage(0.05)
    assert k2450.source.limit_tripped() is False


def test_fail_abort_stops_the_sweep_at_the_first_limited_point(lab, k2450):
    k2450.source.limit(1e-3)
    k2450.source.sweep_setup(0.0, VMAX, 21, fail_abort="ON")
    k2450.source.sweep_start()
    buf = k2450.buffer("defbuffer1")
    n = buf.number_of_readings()
    assert 1 < n < 21
    data = np.array(buf.get_data(1, n, readings_only=True))
    assert data[-1] == pytest.approx(1e-3) and np.all(data[:-1] < 1e-3)


# -- faults --------------------------------------------------------------------------------


def test_injected_silence_is_a_visa_timeout_and_the_link_recovers(lab, k2450):
    k2450.sense.nplc()  # a query: the fixture's writes have all been handled,
    k2450.timeout(0.3)  # so the silence cannot fall on one of them
    lab.server.faults.timeout_next()
    with pytest.raises(VisaIOError) as err:
        k2450.source.limit()
    assert err.value.error_code == constants.StatusCode.error_timeout
    k2450.timeout(10)  # the short timeout was for the silence; a loaded machine may be slow
    assert k2450.source.limit() == pytest.approx(1.05e-4)


def test_garbled_replies_are_parse_errors_not_wrong_numbers(lab, k2450):
    lab.server.faults.garble_next()
    with pytest.raises(ValueError, match="could not convert"):
        k2450.source.limit()
    lab.server.faults.garble_next()
    with pytest.raises(KeyError, match="not in val_mapping"):  # a garbled "0" / "1"
        k2450.output_enabled()
    assert k2450.source.limit() == pytest.approx(1.05e-4)


def test_dropped_connection_raises_instead_of_answering(lab, k2450):
    k2450.timeout(0.3)
    lab.server.faults.drop_next()
    with pytest.raises(VisaIOError):  # pyvisa-py reports the closed socket as a timeout
        k2450.source.limit()
    with pytest.raises((VisaIOError, OSError)):
        k2450.source.limit()


def test_wrong_language_mode_is_refused_by_the_adapter(lab):
    lab.emu.language = "TSP"
    with pytest.raises(RuntimeError, match="SCPI"):
        create(lab.server.resource_name, "k2450_tsp", visalib="@py", timeout=5)


# -- the SourceMeter adapter -----------------------------------------------------------------


@pytest.fixture
def smu(lab):
    s = create(lab.server.resource_name, "k2450_adapter", visalib="@py", timeout=5)
    yield s
    Instrument.close_all()


def test_adapter_implements_source_meter_and_registers(smu):
    from memhil.instruments.registry import instrument_types

    assert isinstance(smu, SourceMeter) and isinstance(smu, Keithley2450SourceMeter)
    assert instrument_types().get("keithley2450") == "smu"


def test_adapter_measure_sweep_and_compliance_flags(lab, smu):
    smu.set_source_mode("voltage")
    smu.set_nplc(NPLC)
    smu.set_compliance(0.1)
    smu.set_level(0.3)
    smu.output(True)
    m = smu.measure()
    assert m.voltage_v == pytest.approx(0.3) and m.current_a > 0 and not m.in_compliance
    smu.set_compliance(2e-3)
    r = smu.sweep(-VMAX, VMAX, 21, dual=True)
    assert r.source.shape == r.current_a.shape == r.in_compliance.shape == (42,)
    assert np.abs(r.current_a).max() <= 2e-3
    np.testing.assert_array_equal(r.in_compliance, np.isclose(abs(r.current_a), 2e-3, rtol=1e-7))
    assert r.in_compliance.any() and not r.in_compliance.all()
    assert np.all(np.abs(r.voltage_v[r.in_compliance]) < np.abs(r.source[r.in_compliance]))
    m = smu.measure()  # left at -1 V, in compliance
    assert m.in_compliance and m.current_a == pytest.approx(-2e-3) and -VMAX < m.voltage_v < 0
    assert smu.in_compliance()
    smu.safe_state()
    assert not smu.output_is_on() and not lab.bench.terminal("smu2450.smu").output_on
    with pytest.raises(ValueError, match="NPLC"):
        smu.set_nplc(0.001)


def test_adapter_pulses_are_timed_by_the_sweep_engine(lab, smu):
    smu.set_source_mode("voltage")
    smu.set_nplc(NPLC)
    smu.set_compliance(0.1)
    g0 = float(lab.chip.sim.true_conductance()[0, ROW, COL])
    t0 = lab.chip.clock.now()
    smu.pulse(0.8, 1e-3, count=5)
    # 5 x (level + base), each held for the source delay + integration = width
    # (the simulator applies widths in float32: relative rounding < 6e-8)
    assert lab.chip.clock.now() - t0 == pytest.approx(10 * 1e-3, rel=1e-6)
    assert float(lab.chip.sim.true_conductance()[0, ROW, COL]) > 1.5 * g0
    assert smu.output_is_on() and lab.bench.terminal("smu2450.smu").voltage_v == 0.0
    with pytest.raises(ValueError, match="duty"):
        smu.pulse(0.8, 1e-3, period_s=5e-3)
    with pytest.raises(ValueError, match="integration"):
        smu.pulse(0.8, 1e-4)


def test_adapter_current_source_mode_and_voltage_compliance(lab, smu):
    smu.set_source_mode("current")
    smu.set_nplc(NPLC)
    smu.set_compliance(1.0)
    smu.set_level(1e-4)
    smu.output(True)
    m = smu.measure()
    assert m.current_a == pytest.approx(1e-4) and not m.in_compliance
    assert 0 < m.voltage_v < 0.16
    smu.set_level(0.1)
    m = smu.measure()
    assert m.in_compliance and m.voltage_v == pytest.approx(1.0) and 0 < m.current_a < 0.1
    smu.safe_state()
