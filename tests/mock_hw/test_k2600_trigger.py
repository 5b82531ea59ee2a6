"""The 2600B trigger model at the wire: the manual's linear-sweep script, list and log
sweeps, a pulsed sweep timed by trigger.timer[1], buffers filled point by point, the idle
level restored, and an empty error queue at the end; the sweep running in the background
of the chip's time (virtual and realtime), with its status bits, abort and waitcomplete."""

from __future__ import annotations

import numpy as np
import pytest

from memhil.mock_hw.bench import MockBench
from memhil.mock_hw.chip import MockChip
from memhil.mock_hw.emulators.k2600 import Keithley2600Emulator
from memhil.mock_hw.lab_time import PacedClock, SyncedEmulator, WallClockSync

CFG = {"rows": 4, "cols": 4, "device": {"model": "vteam"}, "seed": 3}


def _k2600() -> Keithley2600Emulator:
    routes = {"smu.smua": ([("row", 1)], [("col", 2)])}
    bench = MockBench(MockChip(CFG), lambda key: routes.get(key, ([], [])))
    return Keithley2600Emulator(bench, name="smu")


def ask(emu, chunk: str) -> str:
    out = emu.handle(chunk)
    return (out.decode() if isinstance(out, bytes) else out or "").strip()


def values(emu, chunk: str) -> np.ndarray:
    return np.array([float(x) for x in ask(emu, chunk).replace("\t", ",").split(",")])


# The "Linear voltage sweep" shape of the 2600B manual's sweep examples (SweepVLinMeasureI).
LINEAR_SWEEP = """
smua.reset()
smua.source.func = smua.OUTPUT_DCVOLTS
smua.source.limiti = 0.01
smua.measure.nplc = 0.01
smua.nvbuffer1.clear() smua.nvbuffer1.collecttimestamps = 1
smua.nvbuffer2.clear() smua.nvbuffer2.collecttimestamps = 1
smua.trigger.source.linearv(0, 0.1, 11)
smua.trigger.source.limiti = 0.01
smua.trigger.measure.action = smua.ENABLE
smua.trigger.measure.iv(smua.nvbuffer1, smua.nvbuffer2)
smua.trigger.endpulse.action = smua.SOURCE_HOLD
smua.trigger.endsweep.action = smua.SOURCE_IDLE
smua.trigger.count = 11
smua.trigger.source.action = smua.ENABLE
smua.source.output = smua.OUTPUT_ON
smua.trigger.initiate()
waitcomplete()
smua.source.output = smua.OUTPUT_OFF
"""


def test_the_manuals_linear_sweep_fills_both_buffers_point_by_point():
    emu = _k2600()
    for line in LINEAR_SWEEP.strip().splitlines():
        assert ask(emu, line) == ""
    assert ask(emu, "print(smua.nvbuffer1.n, smua.nvbuffer2.n)") == "1.10000e+01\t1.10000e+01"
    v = values(emu, "printbuffer(1, smua.nvbuffer2.n, smua.nvbuffer2.readings)")
    np.testing.assert_allclose(v, np.linspace(0, 0.1, 11), atol=1e-12)  # exact: no accuracy
    i = values(emu, "printbuffer(1, smua.nvbuffer1.n, smua.nvbuffer1.readings)")
    # a VTEAM cell below threshold: I grows with V (0 V reads the 20 fA noise floor)
    assert np.all(np.diff(i[1:]) > 0) and i[-1] > 1e-6
    t = values(emu, "printbuffer(1, smua.nvbuffer1.n, smua.nvbuffer1.timestamps)")
    assert np.all(np.diff(t) > 0)
    assert float(ask(emu, "print(smua.source.levelv)")) == 0.0  # endsweep: the idle level
    assert ask(emu, "print(errorqueue.count)") == "0.00000e+00"


def test_list_and_log_sweeps_and_a_count_beyond_the_list_repeats_it():
    emu = _k2600()
    emu.handle("smua.reset() smua.measure.nplc = 0.01 smua.source.levelv = 0.02")
    emu.handle("smua.trigger.source.listv({0.05, 0.1, 0.15})")
    emu.handle("smua.trigger.measure.v(smua.nvbuffer1) smua.trigger.measure.action = smua.ENABLE")
    emu.handle("smua.trigger.source.action = smua.ENABLE smua.trigger.count = 5")
    emu.handle("smua.trigger.endsweep.action = smua.SOURCE_HOLD")
    emu.handle(
        "smua.source.output = 1 smua.trigger.initiate() waitcomplete() smua.source.output = 0"
    )
    v = values(emu, "printbuffer(1, smua.nvbuffer1.n, smua.nvbuffer1.readings)")
    np.testing.assert_allclose(v, [0.05, 0.1, 0.15, 0.05, 0.1], atol=1e-12)
    assert float(ask(emu, "print(smua.source.levelv)")) == pytest.approx(0.1)  # held
    emu.handle("smua.trigger.source.logv(0.001, 0.1, 3, 0) smua.trigger.count = 3")
    emu.handle(
        "smua.source.output = 1 smua.trigger.initiate() waitcomplete() smua.source.output = 0"
    )
    v = values(emu, "printbuffer(1, smua.nvbuffer1.n, smua.nvbuffer1.readings)")
    np.testing.assert_allclose(v, [0.001, 0.01, 0.1], rtol=1e-12)  # cleared at initiate
    assert ask(emu, "print(errorqueue.count)") == "0.00000e+00"


def test_a_pulsed_sweep_lasts_the_timer_and_returns_to_the_idle_level():
    emu = _k2600()
    script = """
    smua.reset() smua.measure.nplc = 0.001 smua.source.levelv = 0
    trigger.timer[1].delay = 0.002
    trigger.timer[1].stimulus = smua.trigger.SOURCE_COMPLETE_EVENT_ID
    smua.trigger.endpulse.stimulus = trigger.timer[1].EVENT_ID
    smua.trigger.endpulse.action = smua.SOURCE_IDLE
    smua.trigger.source.listv({0.05, 0.08})
    smua.trigger.source.action = smua.ENABLE
    smua.trigger.measure.i(smua.nvbuffer1) smua.trigger.measure.action = smua.ENABLE
    smua.trigger.count = 2 smua.trigger.arm.count = 2
    smua.source.output = 1
    """
    for line in script.strip().splitlines():
        emu.handle(line.strip())
    t0 = emu.clock.now()
    emu.handle("smua.trigger.initiate() waitcomplete()")
    assert emu.clock.now() - t0 >= 4 * 0.002  # 2 arms x 2 pulses of 2 ms each
    assert emu.bench.terminal("smu.smua").voltage_v == 0.0  # back at the idle level
    i = values(emu, "printbuffer(1, smua.nvbuffer1.n, smua.nvbuffer1.readings)")
    assert i.shape == (4,) and i[1] > i[0] > 1e-7  # measured at the pulse's level (0.05, 0.08 V)
    assert float(ask(emu, "print(trigger.timer[1].delay)")) == 0.002
    emu.handle("smua.source.output = 0")
    assert ask(emu, "print(errorqueue.count)") == "0.00000e+00"


def test_trigger_settings_out_of_range_are_refused_with_the_manuals_error_numbers():
    """1101 "Parameter too big", 1102 "Parameter too small", 5059 "trigger.source.action
    enabled without configuration" (the 2600 error list, memhil.mock_hw.tsp.errors)."""
    emu = _k2600()
    emu.handle("smua.trigger.source.linearv(0, 300, 3)")  # beyond the 200 V range
    emu.handle("smua.trigger.count = 0")  # infinite: not emulated
    emu.handle("smua.trigger.source.action = smua.ENABLE smua.trigger.initiate()")  # no sweep
    assert ask(emu, "print(errorqueue.count)") == "3.00000e+00"
    assert [code for code, _ in emu.errors] == [1101, 1102, 5059]
    assert emu.errors[0][1] == "Parameter too big: 300 > 200 for smua.trigger.source"


def test_errorqueue_next_gives_the_manuals_fields_and_severity():
    """(code, message, severity, node): an error of improper use is RECOVERABLE (20) in
    the 2600-series manual's levels; the empty queue answers 0, "Queue Is Empty", 0."""
    emu = _k2600()
    emu.handle("smua.measure.nplc = 100")  # beyond 25: refused
    emu.handle("x = = 1")  # a Lua syntax error
    fields = ask(emu, "print(errorqueue.next())").split("\t")
    assert float(fields[2]) == 20 and float(fields[3]) == 0  # severity, node
    code, message, severity, _ = ask(emu, "print(errorqueue.next())").split("\t")
    assert float(code) == -285 and "syntax" in message.lower() and float(severity) == 20
    assert ask(emu, "print(errorqueue.next())").split("\t")[:3] == [
        "0.00000e+00",
        "Queue Is Empty",
        "0.00000e+00",
    ]


# Ten points of 1 ms each (the source stimulus: trigger.timer[1], a 1 ms period), each
# reading its level into nvbuffer1.
SWEEP_1MS = """
smua.reset() smua.measure.nplc = 0.001 smua.source.levelv = 0
trigger.timer[1].delay = 0.001
smua.trigger.source.stimulus = trigger.timer[1].EVENT_ID
smua.trigger.source.linearv(0.01, 0.1, 10) smua.trigger.source.action = smua.ENABLE
smua.trigger.measure.v(smua.nvbuffer1) smua.trigger.measure.action = smua.ENABLE
smua.trigger.count = 10
"""


def test_initiate_returns_at_once_and_the_sweep_runs_as_chip_time_passes_until_abort():
    """A 2600B runs its sweep in the background: status.operation.sweeping holds the SMUA
    bit (2) and status.operation its SWEEPING bit (8) while the buffer fills; a delay()
    lets points run (one that starts within it runs whole); abort() stops it and the
    endsweep action returns the idle level; waitcomplete() runs a sweep to its end."""
    emu = _k2600()
    emu.handle(SWEEP_1MS)
    t0 = emu.clock.now()
    emu.handle("smua.source.output = 1 smua.trigger.initiate()")
    assert emu.clock.now() == t0  # nothing ran yet: no chip time passed
    state = (
        "print(status.operation.sweeping.condition, status.operation.condition, smua.nvbuffer1.n)"
    )
    assert ask(emu, state) == "2.00000e+00\t8.00000e+00\t0.00000e+00"
    emu.handle("delay(0.0035)")
    assert ask(emu, "print(smua.nvbuffer1.n)") == "4.00000e+00"
    assert emu.clock.now() - t0 == pytest.approx(0.004, abs=1e-12)
    emu.handle("smua.trigger.initiate()")  # still sweeping: refused
    assert emu.errors == [(-221, "Settings conflict: smua is sweeping")]
    emu.handle("smua.abort() delay(0.005)")
    assert ask(emu, state) == "0.00000e+00\t0.00000e+00\t4.00000e+00"  # stopped at 4
    v = values(emu, "printbuffer(1, smua.nvbuffer1.n, smua.nvbuffer1.readings)")
    np.testing.assert_allclose(v, [0.01, 0.02, 0.03, 0.04], atol=1e-12)
    assert float(ask(emu, "print(smua.source.levelv)")) == 0.0  # endsweep: the idle level
    t1 = emu.clock.now()
    emu.handle("smua.trigger.initiate() waitcomplete()")
    assert ask(emu, state) == "0.00000e+00\t0.00000e+00\t1.00000e+01"
    assert emu.clock.now() - t1 == pytest.approx(0.010, abs=1e-12)


def test_in_a_realtime_lab_the_sweep_takes_the_wall_time_between_commands():
    """The chip catches up with the wall clock before each command (a stand-in wall
    clock here, so nothing depends on the host's timing): the sweep's points run in that
    time, so a script reading the buffer while it fills sees it grow."""
    wall = [100.0]
    routes = {"smu.smua": ([("row", 1)], [("col", 2)])}
    chip = MockChip(CFG, clock=PacedClock())
    bench = MockBench(chip, lambda key: routes.get(key, ([], [])))
    emu = SyncedEmulator(
        Keithley2600Emulator(bench, name="smu"),
        WallClockSync(bench, chip.clock, scale=1.0, wall=lambda: wall[0]),
    )
    emu.handle(SWEEP_1MS)
    emu.handle("smua.source.output = 1 smua.trigger.initiate()")
    wall[0] += 0.0025  # the host waits 2.5 ms: the points starting at 0, 1 and 2 ms run
    assert ask(emu, "print(smua.nvbuffer1.n, status.operation.sweeping.condition)") == (
        "3.00000e+00\t2.00000e+00"
    )
    wall[0] += 1.0  # the sweep ends while the host waits
    assert ask(emu, "print(smua.nvbuffer1.n, status.operation.sweeping.condition)") == (
        "1.00000e+01\t0.00000e+00"
    )
    assert ask(emu, "print(errorqueue.count)") == "0.00000e+00"


def test_an_error_in_a_background_point_ends_the_sweep_and_is_queued_by_the_smu():
    """1.5 V on a fixed 200 mV source range: 5005 at that point (whichever hold ran it),
    the sweep ends there with the points before it in the buffer."""
    emu = _k2600()
    emu.handle(SWEEP_1MS)
    emu.handle("smua.source.rangev = 0.2 smua.trigger.source.listv({0.1, 1.5, 0.15})")
    emu.handle("smua.source.output = 1 smua.trigger.initiate() waitcomplete()")
    assert [code for code, _ in emu.errors] == [5005]
    assert ask(emu, "print(smua.nvbuffer1.n, status.operation.sweeping.condition)") == (
        "1.00000e+00\t0.00000e+00"
    )
