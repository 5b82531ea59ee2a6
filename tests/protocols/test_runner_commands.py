"""The Runner's command table: one loop for the pre-flight and the run, extended by
registering handlers; refused requests name their protocol parameter from the
LimitError's fields."""

from __future__ import annotations

import pytest

from memhil.backends.sim import SimBackend
from memhil.core.errors import LimitError
from memhil.protocols import ListSink, ProtocolError, ProtocolLimitError, Runner, build_protocol
from memhil.protocols.plan import Pulse, Read, Record, keys


def sim():
    return SimBackend({"rows": 2, "cols": 2, "device": "neurosim", "seed": 3})


def test_a_registered_handler_sees_both_passes_and_keeps_the_default_work():
    runner = Runner(sim(), sink=ListSink(), progress=False)
    seen = []
    record = runner.commands[Record]
    runner.register_command(Record, lambda msg, p: (seen.append(p.dry), record(msg, p))[1])
    runner.run(build_protocol("conductance_map", {}))
    n = len(runner.sink.points)
    assert n > 0 and seen == [True] * n + [False] * n


def test_a_new_message_type_is_handled_once_registered():
    class Marker:
        pass

    def plan(caps):
        got = yield Marker()
        yield Record({"k": 0}, {"got": got})

    runner = Runner(sim(), sink=ListSink(), progress=False)
    with pytest.raises(ProtocolError, match="unknown plan message"):
        runner.run(plan)
    runner.register_command(Marker, lambda msg, p: "dry" if p.dry else "real")
    runner.run(plan)
    assert runner.sink.points == [{"k": 0, "got": "real"}]


def test_the_preflight_names_every_parameter_of_a_refused_energy():
    b = SimBackend(
        {"rows": 2, "cols": 2, "device": "neurosim", "seed": 3, "limits": {"energy_max_j": 1e-12}}
    )

    def plan(caps):
        yield Pulse(
            None, 2.0, 1e-6, 1, 1e-3, keys(amplitude="v", width="w", count="n", compliance="i_cc")
        )
        yield Read(None)

    plan.name = "demo"
    with pytest.raises(ProtocolLimitError) as info:
        Runner(b, progress=False).preflight(plan)
    exc = info.value
    assert exc.field == "energy" and exc.protocol == "demo"
    assert exc.params == ("v", "w", "n", "i_cc")
    assert exc.param == "demo.v / demo.w / demo.n / demo.i_cc"
    assert str(exc).startswith("demo.v / demo.w / demo.n / demo.i_cc (worst-case")


def test_limit_errors_carry_their_facts_as_attributes():
    b = sim()
    with pytest.raises(LimitError) as info:
        b.pulse(None, 100.0, 1e-7)
    exc = info.value
    assert (exc.field, exc.value, exc.limit, exc.unit, exc.param) == (
        "amplitude",
        100.0,
        b.limits.v_pulse_max_v,
        "V",
        None,
    )
