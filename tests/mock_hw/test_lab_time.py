"""Chip time in a mock lab: ``mock.time`` realtime catches the chip up with the wall
clock (a host-timed bias stress acts on the cell as the model predicts for its duration),
latency makes instrument time take wall time, and the default stays virtual."""

from __future__ import annotations

import time

import pytest
import pyvisa

from memhil.core.errors import ConfigError
from memhil.mock_hw.chip import MockChip
from memhil.mock_hw.lab import MockLab

CHIP = {"rows": 2, "cols": 2, "device": "yakopcic"}


def station(time_section: dict | None) -> dict:
    mock: dict = {"seed": 0, "routes": {"smu.smua": {"hi": [["row", 0]], "lo": [["col", 0]]}}}
    if time_section is not None:
        mock["time"] = time_section
    return {
        "chip": CHIP,
        "limits": {"v_pulse_max_v": 2.0, "v_read_max_v": 0.3, "compliance_max_a": 0.1},
        "instruments": {
            "smu": {"type": "keithley2636b", "address": "TCPIP0::127.0.0.1::0::SOCKET"}
        },
        "mock": mock,
    }


def open_smu(lab: MockLab):
    rm = pyvisa.ResourceManager("@py")
    smu = rm.open_resource(
        lab.address("smu"), read_termination="\n", write_termination="\n", timeout=10_000
    )
    return rm, smu


def test_a_host_timed_bias_stress_acts_on_the_cell_for_the_wall_time_that_passed():
    """-0.2 V held with ``time.sleep`` RESETs a Yakopcic cell gradually (7 % of its
    conductance in 1 ms, half in 10 ms): the cell ends where the chip model puts it after
    the chip time that passed, which is at least the wall time slept."""
    sleep_s = 0.005
    # warm torch up first: a first pulse's one-off cost would be wall time that the chip
    # catches up on (correctly, but it makes the test slow)
    MockChip({**CHIP, "seed": 1}).hold({0: -0.2}, {0: 0.0}, 1e-6)
    with MockLab(station({"mode": "realtime", "scale": 1.0})) as lab:
        lab.chip.applied = []  # record every drive the chip receives
        rm, smu = open_smu(lab)
        smu.write("smua.source.levelv = -0.2 smua.source.limiti = 0.1 smua.source.output = 1")
        assert smu.query("print(smua.source.output)") == "1.00000e+00"
        time.sleep(sleep_s)
        smu.write("smua.source.output = 0")
        assert smu.query("print(errorqueue.count)") == "0.00000e+00"
        g_lab = float(lab.chip.sim.true_conductance()[0, 0, 0])
        stress = [a for a in lab.chip.applied if a.kind == "hold" and a.v_cell[0, 0] < -0.1]
        held_s = sum(a.duration_s * a.count for a in stress)
        rm.close()
    assert held_s >= sleep_s  # at least the wall time that passed, with the source on
    ref = MockChip({**CHIP, "seed": 0})
    g0 = float(ref.sim.true_conductance()[0, 0, 0])
    for a in stress:  # the same drive, as one closed-form reference per hold
        ref.hold({0: -0.2}, {0: 0.0}, a.duration_s, a.count)
    g_ref = float(ref.sim.true_conductance()[0, 0, 0])
    assert g_lab < 0.9 * g0  # the stress RESET the cell (time.sleep was not ignored)
    # the lab's drive is the model's: float32 state, rounding only
    assert g_lab == pytest.approx(g_ref, rel=1e-5)


def test_latency_makes_a_reading_take_its_aperture_in_wall_time():
    with MockLab(station({"latency": True})) as lab:
        rm, smu = open_smu(lab)
        smu.write("smua.measure.nplc = 1 smua.measure.count = 3")
        t0 = time.monotonic()
        smu.query("print(smua.measure.i())")
        elapsed = time.monotonic() - t0
        rm.close()
    assert elapsed >= 3 * (1 / 60)  # three 1-NPLC apertures at 60 Hz; sleep waits at least


def test_the_default_lab_is_virtual_and_bad_time_sections_name_the_key():
    lab = MockLab(station(None))
    assert lab.time.mode == "virtual" and not lab.time.latency
    assert lab.clock.pace_scale is None
    served = MockLab(station(None), served=True)  # what `mock-lab serve` builds
    assert served.time.mode == "realtime" and served.time.latency
    with pytest.raises(ConfigError, match=r"mock\.time\.mode"):
        MockLab(station({"mode": "fast"}))
    with pytest.raises(ConfigError, match=r"mock\.time\.scale"):
        MockLab(station({"scale": 0}))
