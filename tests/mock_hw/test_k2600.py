"""The Keithley 2600B emulator under the unmodified QCoDeS ``Keithley2636B`` driver.

The driver connects through pyvisa-py to ``TCPIP0::127.0.0.1::<port>::SOCKET`` exactly as
to a bench instrument; currents come from the chip model, time from its virtual clock.

Chip of the acceptance tests: a 4 x 4 passive crossbar of Yakopcic devices (default
Boise-State parameters, seed 7, no read noise), cell (1, 2) wired to smua (HI -> row 1,
LO -> column 2, sneak paths through the other cells included). NPLC 0.001 at 60 Hz
integrates 16.7 us per point: with A_p = 4000/s a point at +1 V moves x by ~0.1, so the
state switches gradually along a 41-point ±1 V sweep and the loop opens without
saturating (see the figures asserted below).
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
from pyvisa import constants
from pyvisa.errors import VisaIOError
from qcodes.dataset import LinSweep
from qcodes.instrument import Instrument
from qcodes.instrument_drivers.Keithley import Keithley2636B
from qcodes.instrument_drivers.Keithley._Keithley_2600 import (
    Keithley2600MeasurementStatus,
)

from memhil.instruments.adapters.keithley2600 import Keithley2600SourceMeter, create
from memhil.instruments.capabilities import SourceMeter
from memhil.mock_hw.bench import MockBench
from memhil.mock_hw.chip import MockChip
from memhil.mock_hw.emulators.k2600 import BUFFER_STATUS_COMPLIANCE, Keithley2600Emulator
from memhil.mock_hw.server import LineServer

CFG = {"rows": 4, "cols": 4, "device": {"model": "yakopcic"}, "seed": 7}
ROW, COL = 1, 2
NPLC, LINEFREQ = 0.001, 60.0
T_INT = NPLC / LINEFREQ
VMAX, NPTS = 1.0, 41  # 0.05 V steps, V = 0 is point 20
# float32 binary readback, rounded towards zero by the emulator: relative error < 2^-23
RTOL_REAL32 = 2.5e-7


def _router(key: str):
    return ([("row", ROW)], [("col", COL)]) if key == "smu.smua" else ([], [])


def _lab(cfg=CFG, router=_router) -> SimpleNamespace:
    chip = MockChip(cfg)
    bench = MockBench(chip, router)
    emu = Keithley2600Emulator(bench, name="smu", linefreq=LINEFREQ)
    server = LineServer(emu.handle, terminator="\n", name="k2600").start()
    return SimpleNamespace(chip=chip, bench=bench, emu=emu, server=server)


@pytest.fixture
def lab():
    lab = _lab()
    yield lab
    Instrument.close_all()
    lab.server.stop()


@pytest.fixture
def keith(lab):
    k = Keithley2636B("k2636b", lab.server.resource_name, visalib="@py", timeout=5)
    yield k
    Instrument.close_all()


def fast_sweep(channel, start: float, stop: float, npts: int) -> np.ndarray:
    channel.setup_fastsweep(LinSweep(channel.volt, start, stop, npts))
    return np.asarray(channel.fastsweep(), dtype=float)


def lua_setpoints(start: float, stop: float, npts: int) -> np.ndarray:
    """The levels the driver's Lua loop computes (startX and dX sent with 12 decimals)."""
    start_x = float(f"{start:.12f}")
    dx = float(f"{(stop - start) / (npts - 1):.12f}")
    return np.array([start_x + k * dx for k in range(npts)])


def reference_sweep(chip: MockChip, levels: np.ndarray) -> np.ndarray:
    """What the sweep must return, straight from the chip model: per point, hold the
    drive for the integration time, then read the current row 1 sources."""
    out = []
    for v in levels:
        chip.hold({ROW: float(v)}, {COL: 0.0}, T_INT)
        out.append(chip.currents({ROW: float(v)}, {COL: 0.0})[0][ROW])
    return np.array(out)


# -- acceptance: pinched hysteresis through the unmodified driver ---------------------------


def test_fast_sweep_traces_a_pinched_hysteresis_loop_that_matches_the_chip_model(lab, keith):
    smua = keith.smua
    smua.nplc(NPLC)
    smua.limiti(0.1)  # far above the loop's largest current (~9 mA): never in compliance
    up = fast_sweep(smua, -VMAX, VMAX, NPTS)
    down = fast_sweep(smua, VMAX, -VMAX, NPTS)
    v = np.linspace(-VMAX, VMAX, NPTS)
    down_at_v = down[::-1]  # same V order as the up branch
    k0, kp, km = NPTS // 2, int(np.argmin(abs(v - 0.5))), int(np.argmin(abs(v + 0.5)))

    # pinched at the origin: no current at 0 V on either branch
    assert abs(up[k0]) < 1e-12 and abs(down_at_v[k0]) < 1e-12
    # a loop: at the same |V| the branches differ. The down branch comes after +1 V
    # has SET the device (x up), so at +0.5 V it conducts > 2x more than the up branch
    # (3.3x measured); at -0.5 V the up branch was taken from the fresh HRS state and the
    # down branch just after SET: > 3x (4.5x measured).
    assert down_at_v[kp] / up[kp] > 2.0
    assert down_at_v[km] / up[km] > 3.0
    # the sinh I-V keeps the sign of V on both branches (no offset, no crossing); at 0 V
    # the reading is the instrument's noise floor, of either sign
    nz = v != 0
    assert np.all(np.sign(up[nz]) == np.sign(v[nz]))
    assert np.all(np.sign(down_at_v[nz]) == np.sign(v[nz]))
    # area enclosed by the two lobes, ∫|I_down - I_up| dV, against the I-V scale
    area = np.trapezoid(np.abs(down_at_v - up), v)
    assert area > 0.2 * np.abs(up).max() * VMAX

    # point by point equal to the chip model driven with the same holds and reads
    ref = MockChip(CFG)
    ref_up = reference_sweep(ref, lua_setpoints(-VMAX, VMAX, NPTS))
    ref_down = reference_sweep(ref, lua_setpoints(VMAX, -VMAX, NPTS))
    # atol: 5 sigma of the 2636B's noise floor (smu_ranges.K2636B.noise_floor_a, 20 fA)
    np.testing.assert_allclose(up, ref_up, rtol=RTOL_REAL32, atol=1e-13)
    np.testing.assert_allclose(down, ref_down, rtol=RTOL_REAL32, atol=1e-13)
    # ... and the chip was held for 2 x 41 integration times of virtual time (the
    # simulator applies widths in float32: relative rounding < 6e-8)
    assert lab.chip.clock.now() == pytest.approx(2 * NPTS * T_INT, rel=1e-6)
    assert lab.emu.errors == []


def test_low_compliance_clamps_every_point_and_sets_the_status(lab, keith):
    limit = 2e-3
    smua = keith.smua
    smua.nplc(NPLC)
    smua.limiti(limit)
    data = np.concatenate(
        [fast_sweep(smua, -VMAX, VMAX, NPTS), fast_sweep(smua, VMAX, -VMAX, NPTS)]
    )
    assert np.abs(data).max() <= limit  # never above the compliance, not even by rounding
    clamped = np.isclose(np.abs(data), limit, rtol=1e-6)
    assert clamped.sum() >= 10  # the ends of both branches sit at the limit
    # the instrument flagged exactly those readings in its buffer (last sweep)
    raw = keith.ask_raw(
        f"format.data = format.ASCII printbuffer(1, {NPTS}, smua.nvbuffer1.statuses)"
    )
    statuses = np.array([float(x) for x in raw.split(",")]).astype(int)
    flagged = (statuses & BUFFER_STATUS_COMPLIANCE) != 0
    np.testing.assert_array_equal(flagged, clamped[NPTS:])

    # a spot reading at +1 V reports the current limit through the driver's status
    smua.volt(VMAX)
    i = smua.curr()
    assert smua.curr.measurement_status == Keithley2600MeasurementStatus.CURRENT_COMPLIANCE_ERROR
    assert i == pytest.approx(limit)
    # the source really lowered its voltage: the chip sees less than 1 V and carries the limit
    term = lab.bench.terminal("smu.smua")
    assert 0 < term.voltage_v < 0.9 * VMAX
    assert abs(lab.bench.current("smu.smua")) == pytest.approx(limit, rel=1e-5)
    assert smua.volt() == pytest.approx(term.voltage_v, rel=1e-5)  # 6-digit ASCII
    # below the limit the status is back to normal
    smua.volt(0.05)
    smua.curr()
    assert smua.curr.measurement_status == Keithley2600MeasurementStatus.NORMAL


def test_time_trace_readings_are_dt_apart_on_the_virtual_clock():
    # 1 x 1 chip of a drifting PCM cell without read noise: a retention measurement.
    cfg = {"rows": 1, "cols": 1, "device": {"model": "pcm", "m3": 0.0, "c3_s": 0.0}, "seed": 3}
    lab = _lab(cfg, lambda key: ([("row", 0)], [("col", 0)]) if key == "smu.smua" else ([], []))
    try:
        lab.chip.sim.pulse(None, 1.0, 100e-9, 10)  # SET the cell (t_p = end of the pulses)
        t_p = float(lab.chip.sim.state[0, 0, 0, 2])
        lab.chip.wait(100.0)  # past the drift onset T0 = 38.6 s
        k = Keithley2636B("k2636b_tt", lab.server.resource_name, visalib="@py", timeout=5)
        smua = k.smua
        smua.nplc(0.01)
        smua.volt(0.1)  # a read level: below the 0.5 V SET gate, the state is untouched
        smua.output("on")
        npts, dt = 200, 10.0
        smua.timetrace_npts(npts)
        smua.timetrace_dt(dt)
        smua.timetrace_mode("current")
        t0, wall0 = lab.chip.clock.now(), time.perf_counter()
        data = np.asarray(smua.timetrace(), dtype=float)
        wall = time.perf_counter() - wall0
        assert data.shape == (npts,)
        t_int = 0.01 / LINEFREQ
        # float32 hold durations in the simulator: each reading is within ~1 us of its slot
        assert lab.chip.clock.now() - t0 == pytest.approx((npts - 1) * dt + t_int, abs=2e-6)
        assert wall < 0.01 * npts * dt  # 2000 s of virtual time in well under 20 s
        raw = k.ask_raw(
            f"format.asciiprecision = 12 format.data = format.ASCII "
            f"printbuffer(1, {npts}, smua.nvbuffer1.timestamps)"
        )
        stamps = np.array([float(x) for x in raw.split(",")])
        np.testing.assert_allclose(np.diff(stamps), dt, rtol=0, atol=2e-6)
        # the readings follow the PCM drift law G ~ (t - t_p)^-nu of the simulator
        t_read = t0 + t_int + dt * np.arange(npts)
        expected = data[0] * ((t_read - t_p) / (t_read[0] - t_p)) ** -0.04
        np.testing.assert_allclose(data, expected, rtol=2e-6)  # float32 model arithmetic
        assert data[-1] < 0.9 * data[0]
    finally:
        Instrument.close_all()
        lab.server.stop()


# -- faults --------------------------------------------------------------------------------


def test_injected_silence_is_a_visa_timeout_and_the_link_recovers(lab, keith):
    keith.smua.nplc()  # a query: earlier writes have all been handled, so the silence
    keith.timeout(0.3)  # cannot fall on one of them
    lab.server.faults.timeout_next()
    with pytest.raises(VisaIOError) as err:
        keith.smua.nplc()
    assert err.value.error_code == constants.StatusCode.error_timeout
    keith.timeout(10)  # the short timeout was for the silence; a loaded machine may be slow
    assert keith.smua.nplc() == 1.0  # nothing stale left on the line


def test_garbled_replies_are_parse_errors_not_wrong_numbers(lab, keith):
    lab.server.faults.garble_next()
    with pytest.raises(ValueError, match="could not convert"):
        keith.smua.linefreq()
    keith.smua.output("on")
    lab.server.faults.garble_next()
    with pytest.raises(ValueError):  # the value<TAB>status reply no longer splits
        keith.smua.curr()
    assert keith.smua.linefreq() == LINEFREQ


def test_dropped_connection_raises_instead_of_answering(lab, keith):
    keith.timeout(0.3)
    lab.server.faults.drop_next()
    # pyvisa-py does not notice the peer closing the socket on a read: it times out
    with pytest.raises(VisaIOError):
        keith.smua.nplc()
    with pytest.raises((VisaIOError, OSError)):  # and the link stays dead
        keith.smua.nplc()


# -- the SourceMeter adapter -----------------------------------------------------------------


@pytest.fixture
def smus(lab):
    chans = create(lab.server.resource_name, "k2636b_adapter", visalib="@py", timeout=5)
    yield chans
    Instrument.close_all()


def test_adapter_implements_source_meter_and_registers(smus):
    from memhil.instruments.registry import instrument_types

    assert set(smus) == {"smua", "smub"}
    assert all(isinstance(s, (SourceMeter, Keithley2600SourceMeter)) for s in smus.values())
    assert isinstance(smus["smua"], SourceMeter)
    assert instrument_types().get("keithley2636b") == "smu"


def test_adapter_measure_sweep_and_compliance_flags(lab, smus):
    a = smus["smua"]
    a.set_source_mode("voltage")
    a.set_nplc(NPLC)
    a.set_compliance(0.1)
    a.set_level(0.3)
    a.output(True)
    assert a.output_is_on()
    m = a.measure()
    assert m.voltage_v == 0.3 and not m.in_compliance and m.current_a > 0
    assert not a.in_compliance()

    a.set_compliance(2e-3)
    r = a.sweep(-VMAX, VMAX, 21, dual=True)
    assert r.source.shape == r.current_a.shape == r.in_compliance.shape == (42,)
    assert np.abs(r.current_a).max() <= 2e-3
    # flagged points are the clamped ones, and there the sourced voltage was lowered
    np.testing.assert_array_equal(r.in_compliance, np.isclose(abs(r.current_a), 2e-3, rtol=1e-6))
    assert r.in_compliance.any() and not r.in_compliance.all()
    assert np.all(np.abs(r.voltage_v[r.in_compliance]) < np.abs(r.source[r.in_compliance]))
    np.testing.assert_allclose(r.voltage_v[~r.in_compliance], r.source[~r.in_compliance], atol=1e-6)
    m = a.measure()  # left at -1 V after the dual sweep: in compliance
    assert m.in_compliance and m.current_a == pytest.approx(-2e-3) and -VMAX < m.voltage_v < 0
    assert a.in_compliance()
    a.safe_state()
    assert not a.output_is_on() and lab.bench.terminal("smu.smua").output_on is False


def test_adapter_pulses_are_timed_on_the_instrument_and_switch_the_cell(lab, smus):
    a = smus["smua"]
    a.set_source_mode("voltage")
    a.set_compliance(0.1)
    g0 = float(lab.chip.sim.true_conductance()[0, ROW, COL])
    t0 = lab.chip.clock.now()
    a.pulse(0.8, 1e-3, count=5, period_s=3e-3)
    # 5 widths + 4 gaps (the last gap is not waited for)
    # (the simulator applies widths in float32: relative rounding < 6e-8)
    assert lab.chip.clock.now() - t0 == pytest.approx(5 * 1e-3 + 4 * 2e-3, rel=1e-6)
    assert float(lab.chip.sim.true_conductance()[0, ROW, COL]) > 1.5 * g0  # SET
    assert a.output_is_on() and lab.bench.terminal("smu.smua").voltage_v == 0.0
    with pytest.raises(ValueError, match="shorter than the width"):
        a.pulse(0.8, 1e-3, period_s=0.5e-3)


def test_adapter_current_source_mode_and_voltage_compliance(lab, smus):
    a = smus["smua"]
    a.set_source_mode("current")
    a.set_nplc(NPLC)
    a.set_compliance(1.0)  # V limit
    a.set_level(1e-4)  # ~0.1 V across the fresh cell: below the switching thresholds
    a.output(True)
    m = a.measure()
    assert m.current_a == 1e-4 and not m.in_compliance and 0 < m.voltage_v < 0.16
    assert lab.bench.current("smu.smua") == pytest.approx(1e-4, rel=1e-6)
    a.set_level(0.1)  # 100 mA cannot flow below 1 V through this cell
    m = a.measure()
    assert m.in_compliance and m.voltage_v == pytest.approx(1.0) and 0 < m.current_a < 0.1
    a.safe_state()


def test_adapter_detects_a_corrupted_binary_sweep(lab):
    # garble exactly the binary block (the driver does not check its '#0' header)
    emu, servers = lab.emu, []

    def handler(line: str):
        if line.strip() == "endscript":
            servers[0].faults.garble_next()
        return emu.handle(line)

    server = LineServer(handler, terminator="\n").start()
    servers.append(server)
    try:
        a = create(server.resource_name, "k2636b_garble", visalib="@py", timeout=5)["smua"]
        a.set_nplc(NPLC)
        with pytest.raises(ValueError, match="corrupt"):
            a.sweep(0.0, 0.5, 11)
    finally:
        Instrument.close_all()
        server.stop()


# -- the TSP interpreter at the wire ----------------------------------------------------------


def test_unknown_commands_are_queued_errors_without_a_reply(lab):
    emu = lab.emu
    assert emu.handle("smua.source.bogus = 1") is None
    assert emu.handle("print(smua.nonsense)") is None
    assert emu.handle("for i = 1, do") is None  # syntax error
    assert emu.handle("print(errorqueue.count)") == b"3.00000e+00\n"
    code, msg = emu.handle("print(errorqueue.next())").decode().split("\t")[:2]
    assert float(code) < 0 and "bogus" in msg
    emu.handle("errorqueue.clear()")
    assert emu.errors == []


def test_tsp_subset_evaluates_lua_and_prints_like_the_instrument(lab):
    emu = lab.emu
    assert emu.handle("print(localnode.model)") == b"2636B\n"
    assert (
        emu.handle("x = 0 for k = 1, 10, 2 do x = x + k end print(x, x .. 'V')")
        == b"2.50000e+01\t25V\n"
    )
    assert emu.handle("if 1 < 2 and not false then print('yes') else print('no') end") == b"yes\n"
    emu.handle("format.data = format.REAL32 format.byteorder = format.LITTLEENDIAN")
    assert (
        emu.handle("printnumber(1.5, -2)") == b"#0" + np.array([1.5, -2], "<f4").tobytes() + b"\n"
    )
    emu.handle("format.byteorder = format.BIGENDIAN")
    assert emu.handle("printnumber(1.5)") == b"#0" + np.array([1.5], ">f4").tobytes() + b"\n"
    # a named script runs later, on demand
    assert emu.handle("loadscript twice") is None
    assert emu.handle("print(2 * 21)") is None
    assert emu.handle("endscript") is None
    assert emu.handle("twice()") == b"4.20000e+01\n"
    assert emu.handle("twice.run()") == b"4.20000e+01\n"
    assert emu.handle("*IDN?") == "Keithley Instruments Inc., Model 2636B, 4242424, 4.0.5"
    assert emu.errors == []
