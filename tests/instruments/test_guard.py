"""The safety guard: refused requests raise LimitError and send nothing; compliance comes
before output-on; forbidden relays never close; the prober never moves in contact;
safe_session leaves the bench safe however the block ends."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memhil.core.errors import LimitError
from memhil.core.limits import Limits, exceeds
from memhil.instruments.capabilities import ArrayIO, Prober, SourceMeter, SwitchMatrix
from memhil.instruments.guard import (
    GuardedArrayIO,
    GuardedProber,
    GuardedSourceMeter,
    GuardedSwitchMatrix,
    InterlockError,
    SafeStateError,
    safe_session,
    safe_state_all,
)
from tests.instruments.fakes import FakeArray, FakeMatrix, FakeProber, FakeSMU

LIMITS = Limits(
    v_pulse_max_v=2.0,
    v_read_max_v=0.3,
    compliance_max_a=1e-3,
    compliance_default_a=1e-4,
    width_min_s=1e-6,
    width_max_s=1.0,
    count_max=1000,
    energy_max_j=1e-6,
)


def guarded(mode: str | None = "voltage", compliance: float | None = 1e-4):
    fake = FakeSMU()
    smu = GuardedSourceMeter(fake, LIMITS)
    if mode is not None:
        smu.set_source_mode(mode)
    if compliance is not None:
        smu.set_compliance(compliance)
    fake.calls.clear()
    return smu, fake


def test_guarded_instruments_implement_the_protocols(
    fake_smu, fake_matrix, fake_prober, fake_array
):
    assert isinstance(GuardedSourceMeter(fake_smu, LIMITS), SourceMeter)
    assert isinstance(GuardedSwitchMatrix(fake_matrix), SwitchMatrix)
    assert isinstance(GuardedProber(fake_prober), Prober)
    assert isinstance(GuardedArrayIO(fake_array, LIMITS), ArrayIO)


# -- SMU: value limits -------------------------------------------------------------------


@pytest.mark.parametrize("value", [2.0001, -2.5, 100.0, math.nan, math.inf, -math.inf])
def test_voltage_level_beyond_limit_is_refused_and_nothing_sent(value):
    smu, fake = guarded()
    with pytest.raises(LimitError):
        smu.set_level(value)
    assert fake.commands() == []


@pytest.mark.parametrize("value", [2.0, -2.0, 0.0, 1.5])
def test_voltage_level_within_limit_passes(value):
    smu, fake = guarded()
    smu.set_level(value)
    assert fake.calls == [("set_level", value)]


def test_current_mode_level_is_checked_against_compliance_max():
    smu, fake = guarded(mode="current", compliance=1.0)  # a 1 V voltage compliance
    smu.set_level(1e-3)
    with pytest.raises(LimitError, match="A"):
        smu.set_level(2e-3)
    assert fake.commands() == [("set_level", 1e-3)]


@pytest.mark.parametrize(
    "mode,value",
    [
        ("voltage", 2e-3),
        ("voltage", 0.0),
        ("voltage", -1e-4),
        ("voltage", math.nan),
        ("current", 2.5),
        ("current", 0.0),
    ],
)
def test_compliance_beyond_limit_is_refused(mode, value):
    smu, fake = guarded(mode=mode, compliance=None)
    with pytest.raises(LimitError):
        smu.set_compliance(value)
    assert fake.commands() == []
    assert smu.compliance is None


def test_current_mode_voltage_compliance_up_to_v_pulse_max():
    smu, fake = guarded(mode="current", compliance=None)
    smu.set_compliance(2.0)
    assert fake.commands() == [("set_compliance", 2.0)]


def test_non_numbers_are_refused():
    smu, fake = guarded()
    for bad in ("1.0", None, True, [1.0]):
        with pytest.raises(LimitError):
            smu.set_level(bad)
    assert fake.commands() == []


def test_requests_before_a_source_mode_are_refused():
    smu, fake = guarded(mode=None, compliance=None)
    for call in (
        lambda: smu.set_level(0.1),
        lambda: smu.set_compliance(1e-4),
        lambda: smu.output(True),
        lambda: smu.sweep(0, 0.1, 3),
        lambda: smu.pulse(1.0, 1e-3),
    ):
        with pytest.raises(InterlockError, match="source mode"):
            call()
    assert fake.commands() == []
    with pytest.raises(InterlockError):
        smu.set_source_mode("power")
    assert fake.commands() == []


# -- SMU: compliance before output -------------------------------------------------------


def test_output_on_needs_a_compliance_since_the_last_mode_change():
    smu, fake = guarded(compliance=None)
    with pytest.raises(InterlockError, match="compliance"):
        smu.output(True)
    assert fake.commands() == []
    smu.set_compliance(1e-4)
    smu.output(True)
    assert fake.commands() == [("set_compliance", 1e-4), ("output", True)]
    smu.output(False)
    smu.set_source_mode("current")  # compliance meaning changed: must be set again
    fake.calls.clear()
    with pytest.raises(InterlockError):
        smu.output(True)
    assert fake.commands() == []


def test_refused_compliance_does_not_count():
    smu, fake = guarded(compliance=None)
    with pytest.raises(LimitError):
        smu.set_compliance(1.0)
    with pytest.raises(InterlockError):
        smu.output(True)
    assert fake.commands() == []


def test_mode_change_refused_while_output_on():
    smu, fake = guarded()
    smu.output(True)
    with pytest.raises(InterlockError, match="output"):
        smu.set_source_mode("current")
    assert fake.commands() == [("output", True)]
    assert smu.source_mode == "voltage" and smu.compliance == 1e-4


def test_set_level_refused_when_output_is_on_without_compliance(fake_smu):
    fake = fake_smu
    fake.on = True  # left on by a previous run
    smu = GuardedSourceMeter(fake, LIMITS)
    with pytest.raises(InterlockError):
        smu.set_source_mode("voltage")
    fake.on = False
    smu.set_source_mode("voltage")
    fake.on = True
    with pytest.raises(InterlockError):
        smu.set_level(0.5)
    assert ("set_level", 0.5) not in fake.calls


def test_reads_and_output_off_pass():
    smu, fake = guarded(mode=None, compliance=None)
    smu.measure()
    smu.output(False)
    smu.output_is_on()
    smu.in_compliance()
    smu.set_nplc(1.0)
    smu.safe_state()
    # the level is unknown before a source mode is set: the measure asks whether the output
    # is on (it is off: nothing to bound)
    assert [c[0] for c in fake.calls] == [
        "output_is_on",
        "measure",
        "output",
        "output_is_on",
        "in_compliance",
        "set_nplc",
        "safe_state",
        "output_is_on",
    ]


# -- SMU: sweeps and pulses --------------------------------------------------------------


@pytest.mark.parametrize(
    "start,stop,points",
    [(0.0, 2.5, 11), (-3.0, 0.0, 5), (0.0, 1.0, 0), (0.0, math.nan, 3), (0.0, 1.0, 2.5)],
)
def test_sweep_checked_before_anything_is_sent(start, stop, points):
    smu, fake = guarded()
    with pytest.raises(LimitError):
        smu.sweep(start, stop, points)
    assert fake.commands() == []


def test_sweep_needs_compliance_and_passes_within_limits():
    smu, fake = guarded(compliance=None)
    with pytest.raises(InterlockError):
        smu.sweep(0.0, 1.0, 5)
    smu.set_compliance(1e-4)
    result = smu.sweep(-2.0, 2.0, 5)
    assert fake.commands()[-1] == ("sweep", -2.0, 2.0, 5)
    assert len(result.source) == 5


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(level=2.1, width_s=1e-3),  # amplitude
        dict(level=1.0, width_s=1e-7),  # too short
        dict(level=1.0, width_s=2.0),  # too long
        dict(level=1.0, width_s=1e-3, count=1001),  # too many
        dict(level=1.0, width_s=1e-3, count=-1),
        dict(level=1.0, width_s=1e-3, count=1.5),
        dict(level=1.0, width_s=1e-3, count=20),  # energy 1 V * 1e-4 A * 1e-3 s * 20 = 2e-6 J
        dict(level=1.0, width_s=1e-3, base=-2.5),  # base beyond the level limit
        dict(level=1.0, width_s=math.nan),
        dict(level=1.0, width_s=1e-3, period_s=1e-4),  # period shorter than the width
    ],
)
def test_pulse_refusals_send_nothing(kwargs):
    smu, fake = guarded()
    with pytest.raises(LimitError):
        smu.pulse(**kwargs)
    assert fake.commands() == []


def test_pulse_within_limits_passes_and_energy_uses_the_compliance():
    smu, fake = guarded()
    smu.pulse(1.0, 1e-3, 10, period_s=2e-3)  # 1e-6 J: at the limit
    assert fake.commands() == [("pulse", 1.0, 1e-3, 10, 0.0, 2e-3), ("output", False)]
    smu.set_compliance(1e-3)  # ten times the worst-case current
    with pytest.raises(LimitError, match="energy"):
        smu.pulse(1.0, 1e-3, 10)
    smu.pulse(-1.0, 1e-3, 1)
    assert fake.commands()[-2:] == [("pulse", -1.0, 1e-3, 1, 0.0, None), ("output", False)]


def test_pulse_needs_compliance_and_zero_count_sends_nothing():
    smu, fake = guarded(compliance=None)
    with pytest.raises(InterlockError):
        smu.pulse(1.0, 1e-3)
    smu.set_compliance(1e-4)
    fake.calls.clear()
    smu.pulse(1.0, 1e-3, 0)
    assert fake.commands() == []


def test_current_mode_pulse_energy_at_the_voltage_compliance():
    smu, fake = guarded(mode="current", compliance=2.0)
    smu.pulse(1e-4, 1e-3, 5)  # 2 V * 1e-4 A * 1e-3 s * 5 = 1e-6 J
    with pytest.raises(LimitError, match="energy"):
        smu.pulse(1e-4, 1e-3, 6)
    with pytest.raises(LimitError):
        smu.pulse(2e-3, 1e-6)
    assert fake.commands() == [("pulse", 1e-4, 1e-3, 5, 0.0, None), ("output", False)]


# -- matrix, prober, array -------------------------------------------------------------


def test_forbidden_relay_never_closes(fake_matrix):
    fake = fake_matrix
    m = GuardedSwitchMatrix(fake, [[1, 9], (2, 3)])
    with pytest.raises(InterlockError, match="forbidden"):
        m.connect(1, 9)
    with pytest.raises(LimitError):
        m.connect_many([(1, 1), (2, 2), (2, 3)])
    assert fake.commands() == [] and fake.closed_relays == set()
    m.connect(1, 10)
    m.connect_many([(2, 1), (1, 1)])
    assert fake.closed_relays == {(1, 10), (2, 1), (1, 1)}
    with pytest.raises(InterlockError):
        m.connect_many([("a", 1)])
    m.open_all()
    assert fake.closed_relays == set()


def test_prober_never_steps_in_contact(fake_prober):
    fake = fake_prober
    p = GuardedProber(fake)
    p.step_to((1, 2))
    p.contact()
    with pytest.raises(InterlockError, match="contact"):
        p.step_to((3, 4), 1)
    assert ("step_to", (3, 4), 1) not in fake.calls
    assert p.position() == ((1, 2), 0)
    p.separate()
    p.step_to((3, 4), 1)
    assert p.position() == ((3, 4), 1)


def test_prober_interlock_asks_the_prober_every_time(fake_prober):
    fake = fake_prober
    p = GuardedProber(fake)
    fake.contacted = True  # contact made behind the guard's back (e.g. by the front panel)
    with pytest.raises(InterlockError):
        p.step_to((0, 1))
    assert not any(c[0] == "step_to" for c in fake.calls)


def test_array_reads_and_pulses_are_checked(fake_array):
    fake = fake_array
    a = GuardedArrayIO(fake, LIMITS)
    a.read_columns([0.1, 0.2, 0.3, -0.3])
    a.read_rows([0.0, 0.1, 0.2])
    n = len(fake.calls)
    for call in (
        lambda: a.read_columns([0.1, 0.2, 0.31, 0.0]),
        lambda: a.read_columns([0.1, 0.2, 0.3]),
        lambda: a.read_rows([0.0, math.nan, 0.0]),
        lambda: a.pulse_cells(np.ones((4, 3), bool), 2.5, 1e-3),
        lambda: a.pulse_cells(np.ones((4, 3), bool), 1.0, 1e-9),
        lambda: a.pulse_cells(np.ones((3, 3), bool), 1.0, 1e-3),
        lambda: a.pulse_cells(np.ones((4, 3)), 1.0, 1e-3),
        lambda: a.pulse_cells(
            np.ones((4, 3), bool), 1.0, 1e-3, compliance_a=2 * LIMITS.compliance_max_a
        ),
        lambda: a.pulse_cells(np.ones((4, 3), bool), 1.0, 1e-3, compliance_a=0.0),
    ):
        with pytest.raises(LimitError):
            call()
    assert len(fake.calls) == n
    a.pulse_cells(np.eye(4, 3, dtype=bool), 1.5, 1e-3, 2)
    assert fake.calls[-1][0] == "pulse_cells"
    assert fake.calls[-1][-1] == LIMITS.compliance_default_a  # the default is always sent
    a.pulse_cells(np.eye(4, 3, dtype=bool), 1.5, 1e-6, 2, compliance_a=LIMITS.compliance_max_a / 2)
    assert fake.calls[-1][-1] == LIMITS.compliance_max_a / 2


# -- safe_session ------------------------------------------------------------------------


def bench():
    smus = {
        "smu.smua": GuardedSourceMeter(FakeSMU("smua"), LIMITS),
        "smu.smub": GuardedSourceMeter(FakeSMU("smub"), LIMITS),
    }
    fakes = SimpleNamespace(
        smua=smus["smu.smua"]._smu,
        smub=smus["smu.smub"]._smu,
        matrix=FakeMatrix(),
        prober=FakeProber(),
        array=FakeArray(),
    )
    station = SimpleNamespace(
        smus=smus,
        matrix=GuardedSwitchMatrix(fakes.matrix, [(1, 9)]),
        prober=GuardedProber(fakes.prober),
        array=GuardedArrayIO(fakes.array, LIMITS),
    )
    return station, fakes


def drive(station, fakes):
    smu = station.smus["smu.smua"]
    smu.set_source_mode("voltage")
    smu.set_compliance(1e-4)
    smu.set_level(1.0)
    smu.output(True)
    station.matrix.connect(1, 1)
    station.prober.contact()
    fakes.array.lines_v = 0.2
    assert fakes.smua.on and fakes.matrix.closed_relays and fakes.prober.contacted


def assert_safe(fakes):
    for smu in (fakes.smua, fakes.smub):
        assert not smu.on and smu.level == 0.0
        # the safe state, then a query confirming it
        assert smu.calls[-2:] == [("safe_state",), ("output_is_on",)]
    assert fakes.matrix.closed_relays == set()
    assert not fakes.prober.contacted
    assert fakes.array.lines_v == 0.0


def test_safe_session_on_success():
    station, fakes = bench()
    with safe_session(station) as st_:
        assert st_ is station
        drive(station, fakes)
    assert_safe(fakes)


def test_safe_session_on_exception_reraises():
    station, fakes = bench()
    with pytest.raises(ZeroDivisionError):
        with safe_session(station):
            drive(station, fakes)
            1 / 0  # noqa: B018 - the error the safe session must survive
    assert_safe(fakes)


def test_safe_session_on_keyboard_interrupt_reraises():
    station, fakes = bench()
    with pytest.raises(KeyboardInterrupt):
        with safe_session(station):
            drive(station, fakes)
            raise KeyboardInterrupt
    assert_safe(fakes)


def test_safe_session_order_outputs_off_before_relays_open_before_lift():
    station, fakes = bench()
    order = []
    for who, fake in (
        ("smua", fakes.smua),
        ("smub", fakes.smub),
        ("matrix", fakes.matrix),
        ("prober", fakes.prober),
        ("array", fakes.array),
    ):
        original = fake.safe_state
        fake.safe_state = lambda o=original, w=who: (order.append(w), o())
    with safe_session(station):
        pass
    assert order == ["smua", "smub", "array", "matrix", "prober"]


def test_safe_state_error_reraised_after_all_others(caplog):
    station, fakes = bench()
    fakes.smua.fail_safe_state = OSError("VISA timeout")
    with pytest.raises(SafeStateError, match="VISA timeout") as info:
        with safe_session(station):
            drive(station, fakes)
    assert isinstance(info.value.__cause__, OSError)
    assert not fakes.smub.on and fakes.matrix.closed_relays == set()
    assert not fakes.prober.contacted
    assert "VISA timeout" in caplog.text


def test_safe_state_report_names_each_component_and_what_its_query_confirmed():
    station, fakes = bench()
    drive(station, fakes)
    report = safe_state_all(station)
    assert report.confirmed
    assert [e.component for e in report.entries] == [
        "smu smu.smua",
        "smu smu.smub",
        "array",
        "matrix",
        "prober",
    ]
    assert "output off" in report.lines()[0] and "separated" in report.lines()[-1]
    # a safe state the query contradicts is not confirmed, and says what is unknown
    fakes.prober.safe_state = lambda: None  # the command "succeeds", the chuck stays down
    fakes.prober.contacted = True
    with pytest.raises(SafeStateError, match="prober") as info:
        safe_state_all(station)
    (bad,) = info.value.report.unconfirmed
    assert bad.component == "prober" and "needles may be down" in bad.line()
    assert all(e.confirmed for e in info.value.report.entries if e.component != "prober")


def test_several_safe_state_errors_all_reported_and_body_error_chained():
    station, fakes = bench()
    fakes.smua.fail_safe_state = OSError("smua dead")
    fakes.matrix.fail_safe_state = RuntimeError("relay stuck")
    with pytest.raises(SafeStateError) as info:
        with safe_session(station):
            drive(station, fakes)
            raise ValueError("in the body")
    msg = str(info.value)
    assert "smua dead" in msg and "relay stuck" in msg
    assert len(info.value.errors) == 2
    assert not fakes.prober.contacted and not fakes.smub.on
    # the block's exception is not lost: it is the context of the cleanup error
    ctx, seen = info.value, []
    while ctx is not None:
        seen.append(ctx)
        ctx = ctx.__context__
    assert any(isinstance(e, ValueError) and "in the body" in str(e) for e in seen)


def test_keyboard_interrupt_during_cleanup_still_cleans_the_rest():
    station, fakes = bench()
    fakes.smua.fail_safe_state = KeyboardInterrupt()
    fakes.matrix.fail_safe_state = OSError("relay")
    with pytest.raises(KeyboardInterrupt):
        with safe_session(station):
            drive(station, fakes)
    assert not fakes.smub.on and not fakes.prober.contacted and fakes.array.lines_v == 0.0


# -- property: nothing unsafe ever reaches the SMU -----------------------------------------

anyfloat = st.one_of(st.floats(), st.sampled_from([2.0, -2.0, 1e-3, -1e-3, 0.0, 2.0000001]))
volts = st.floats(min_value=-2.2, max_value=2.2)
amps = st.floats(min_value=-1.2e-3, max_value=1.2e-3)
value = st.one_of(volts, amps, anyfloat)
mode_request = st.tuples(st.just("mode"), st.sampled_from(["voltage", "current", "bogus"]))
compliance_request = st.tuples(
    st.just("compliance"), st.one_of(st.floats(1e-6, 1.1e-3), st.floats(0.01, 2.2), anyfloat)
)
requests = st.one_of(
    mode_request,
    compliance_request,
    st.tuples(st.just("level"), value),
    st.tuples(st.just("output"), st.booleans()),
    st.tuples(st.just("sweep"), value, value, st.integers(-1, 30)),
    st.tuples(
        st.just("pulse"),
        value,
        st.one_of(st.sampled_from([1e-6, 1e-5, 1e-3, 1.0, 1e-7, 1.1]), st.floats(0, 2.0)),
        st.one_of(st.integers(0, 5), st.integers(-1, 2000)),
        st.one_of(st.just(0.0), value),
    ),
    st.tuples(
        st.just("safe"),
    ),
    st.tuples(
        st.just("measure"),
    ),
)


def _level_ok(mode, value):
    limit = LIMITS.v_pulse_max_v if mode == "voltage" else LIMITS.compliance_max_a
    return not exceeds(abs(value), limit)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(mode_request, max_size=1),
    st.lists(compliance_request, max_size=1),
    st.lists(requests, max_size=40),
)
def test_property_no_unsafe_request_reaches_the_smu(prefix_mode, prefix_compliance, seq):
    seq = prefix_mode + prefix_compliance + seq
    fake = FakeSMU()
    smu = GuardedSourceMeter(fake, LIMITS)
    for req in seq:
        op, args = req[0], req[1:]
        try:
            if op == "mode":
                smu.set_source_mode(args[0])
            elif op == "compliance":
                smu.set_compliance(args[0])
            elif op == "level":
                smu.set_level(args[0])
            elif op == "output":
                smu.output(args[0])
            elif op == "sweep":
                smu.sweep(*args)
            elif op == "pulse":
                smu.pulse(args[0], args[1], args[2], base=args[3])
            elif op == "safe":
                smu.safe_state()
            else:
                smu.measure()
        except LimitError:
            pass

    # Replay what the instrument received, tracking its state as the instrument would.
    mode, compliance = None, None
    for call in fake.calls:
        name, a = call[0], call[1:]
        if name == "set_source_mode":
            mode, compliance = a[0], None
            assert mode in ("voltage", "current")
        elif name == "set_compliance":
            cmax = LIMITS.compliance_max_a if mode == "voltage" else LIMITS.v_pulse_max_v
            assert mode is not None and 0 < a[0] and not exceeds(a[0], cmax)
            compliance = a[0]
        elif name == "set_level":
            assert mode is not None and _level_ok(mode, a[0])
        elif name == "output" and a[0]:
            assert compliance is not None, "output on without a compliance"
        elif name == "sweep":
            start, stop, points = a
            assert compliance is not None and points >= 1
            assert all(_level_ok(mode, v) for v in np.linspace(start, stop, points))
        elif name == "pulse":
            level, width, count, base, period = a
            period = 2 * width if period is None else period
            assert compliance is not None
            assert _level_ok(mode, level) and _level_ok(mode, base)
            assert LIMITS.width_min_s * (1 - 1e-6) <= width <= LIMITS.width_max_s * (1 + 1e-6)
            assert 1 <= count <= LIMITS.count_max
            # the time at base counts (the output is switched off after the pulse)
            energy = compliance * (abs(level) * width + abs(base) * (period - width)) * count
            assert not exceeds(energy, LIMITS.energy_max_j)


def test_safe_state_is_confirmed_by_a_query():
    class StuckOn(FakeSMU):
        def safe_state(self):
            self.calls.append(("safe_state",))  # an output that ignores the off command

    from memhil.instruments.guard import InterlockError

    smu = GuardedSourceMeter(StuckOn(), LIMITS)
    smu._smu.on = True
    with pytest.raises(InterlockError, match="still on"):
        smu.safe_state()
