"""Property: no request through the hardware backend exceeds a limit at the chip, energy
included, and every refusal is a LimitError with nothing on the wire.

Random pulses, reads and MVMs (amplitudes, widths, counts, compliances and cell sets in and
out of the limits, near them within and beyond the documented slack, NaN) go through
``HardwareBackend`` over the mock lab; the chip records every drive it receives
(``MockChip.applied``) and the emulators count the commands they receive. Many requests per
hypothesis example keep 10^4 requests within a minute; the board strategy runs in-process
and over TCP, the cell strategy (SMUs + matrix) over TCP for a smaller share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memhil.backends.hardware import HardwareBackend
from memhil.core.errors import LimitError
from memhil.core.limits import Limits, below, exceeds
from memhil.instruments.station import Station
from memhil.mock_hw.lab import MockLab
from tests.backends import _mock_station

ROWS, COLS = 4, 4
LIMITS = {
    "v_pulse_max_v": 3.0,
    "v_read_max_v": 0.5,
    "width_min_s": 1e-9,
    "width_max_s": 1e-3,
    "compliance_max_a": 1e-3,
    "compliance_default_a": 1e-4,
    "count_max": 50,
    "energy_max_j": 2e-8,
}

cells = st.one_of(
    st.none(),
    st.lists(
        st.tuples(st.just(0), st.integers(0, ROWS - 1), st.integers(0, COLS - 1)),
        min_size=1,
        max_size=6,
    ),
    st.integers(1, 2 ** (ROWS * COLS) - 1),  # a mask
)
amplitude = st.one_of(
    st.sampled_from([1.0, 3.0, -3.0, 3.0 * (1 + 2.0**-22), -3.0 * (1 + 2.0**-18), math.nan, 0.0]),
    st.floats(-3.5, 3.5),
    st.tuples(st.integers(0, 2**31), st.floats(0.1, 3.5)),  # per cell: seed, scale
)
width = st.sampled_from(
    [1e-7, 5e-10, 1e-9, 1e-8, 1e-6, 1e-5, 1e-4, 1e-3, 1e-3 * (1 + 2.0**-22), 1.5e-3]
)
count = st.one_of(st.integers(1, 8), st.integers(0, 60))
compliance = st.one_of(
    st.none(), st.sampled_from([1e-6, 1e-5, 1e-4, 1e-3, 1e-3 * (1 + 2.0**-22), 1.1e-3])
)
request = st.one_of(
    st.tuples(st.just("pulse"), cells, amplitude, width, count, compliance),
    st.tuples(st.just("read"), cells),
    st.tuples(
        st.just("mvm"),
        st.integers(0, 2**31),
        st.sampled_from([0.1, 0.5, 0.5 * (1 + 2.0**-22), 0.6]),
        st.integers(1, 3),
        st.booleans(),
    ),
)


@dataclass
class Tally:
    requests: int = 0
    refusals: int = 0
    violations: list[str] = field(default_factory=list)


def _cells(spec):
    if isinstance(spec, int):
        bits = torch.tensor([(spec >> k) & 1 for k in range(ROWS * COLS)], dtype=torch.bool)
        return bits.reshape(1, ROWS, COLS)
    return spec


def _amplitude(spec):
    if isinstance(spec, tuple):
        seed, scale = spec
        g = torch.Generator().manual_seed(seed)
        return (torch.rand(1, ROWS, COLS, generator=g, dtype=torch.float64) * 2 - 1) * scale
    return spec


def _send(backend: HardwareBackend, req) -> None:
    if req[0] == "pulse":
        _, c, a, w, n, comp = req
        backend.pulse(_cells(c), _amplitude(a), w, n, compliance_a=comp)
    elif req[0] == "read":
        backend.read_conductance(_cells(req[1]))
    else:
        _, seed, scale, batch, transpose = req
        g = torch.Generator().manual_seed(seed)
        v = (torch.rand(batch, COLS if transpose else ROWS, generator=g) * 2 - 1) * scale
        v[0, 0] = scale  # the extreme value itself
        (backend.mvm_t if transpose else backend.mvm)(v)


def _check_at_the_chip(applied, lim: Limits, dc_max_v: float) -> list[str]:
    """Every drive the chip received within the limits; energy summed per cell over the
    request: at each pulse's per-cell compliance (board) or, where the limit is the
    source's total current (SMUs), at the current each cell carried."""
    bad: list[str] = []
    energy = torch.zeros(ROWS, COLS, dtype=torch.float64)
    for a in applied:
        v = float(a.v_cell.abs().max())
        if a.kind == "dc":
            if exceeds(v, dc_max_v):
                bad.append(f"DC level {v} V")
            continue
        if exceeds(v, lim.v_pulse_max_v):
            bad.append(f"pulse at {v} V")
        if exceeds(a.duration_s, lim.width_max_s) or below(a.duration_s, lim.width_min_s):
            bad.append(f"pulse width {a.duration_s} s")
        if a.count > lim.count_max:
            bad.append(f"pulse count {a.count}")
        if a.compliance_a is not None and exceeds(a.compliance_a, lim.compliance_max_a):
            bad.append(f"pulse compliance {a.compliance_a} A")
        current = a.current_a if a.compliance_a is None else a.compliance_a
        energy += a.v_cell.abs() * current * a.duration_s * a.count
    if lim.energy_max_j is not None and exceeds(float(energy.max()), lim.energy_max_j):
        bad.append(f"energy {float(energy.max())} J in one request")
    return bad


def drive(backend: HardwareBackend, lab: MockLab, requests, tally: Tally) -> None:
    """Send ``requests`` one by one, checking each at the chip and on the wire."""
    lim = backend.limits
    # the board's only DC states are reads; SMUs also hold pulse and V/2 bias levels
    dc_max_v = lim.v_read_max_v if backend.strategy == "parallel" else lim.v_pulse_max_v

    def wire() -> int:
        return sum(s.transactions for s in lab.servers.values()) + sum(
            getattr(e, "transactions", 0) for n, e in lab.emulators.items() if n not in lab.servers
        )

    def settle() -> None:
        # A write has no reply, so the server may count the last command of the previous
        # request after this one began: one query per connection (answered in order, after
        # every earlier line) makes the counts final before they are compared.
        for smu in backend.station.smus.values():
            smu.output_is_on()
        if backend.station.matrix is not None:
            backend.station.matrix.connections()

    for req in requests:
        lab.chip.applied = []
        if lab.servers:
            settle()
        before = wire()
        tally.requests += 1
        try:
            _send(backend, req)
        except LimitError:
            tally.refusals += 1
            if wire() != before or lab.chip.applied:
                tally.violations.append(f"{req}: refused after {wire() - before} commands")
        except Exception as exc:  # noqa: BLE001 - any other failure is a violation
            tally.violations.append(f"{req}: {type(exc).__name__}: {exc}")
        else:
            bad = _check_at_the_chip(lab.chip.applied, lim, dc_max_v)
            tally.violations += [f"{req}: {b}" for b in bad]
    lab.chip.applied = None


def _open(strategy: str, served: bool) -> tuple[HardwareBackend, MockLab, Station]:
    cfg = _mock_station(strategy, ROWS, COLS)
    cfg["limits"] = dict(LIMITS)
    if strategy == "cell":  # the 2636B pulses: its 100 us floor (widths 1e-4 and 1e-3 pass)
        cfg["limits"]["width_min_s"] = 1e-4
    cfg["mock"]["sneak_paths"] = True
    lab = MockLab(cfg, serve_array_board_tcp=served).start()
    st_ = Station.from_config(lab.station_config())
    return HardwareBackend(st_, clock=lab.clock, strategy=strategy), lab, st_


SETTINGS = dict(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def run_property(strategy: str, served: bool, examples: int, per_example: int) -> Tally:
    """Run the property over ``examples`` hypothesis examples of ``per_example`` requests on
    one backend; returns the tally (the test asserts it has no violation)."""
    backend, lab, station = _open(strategy, served)
    tally = Tally()

    @settings(max_examples=examples, **SETTINGS)
    @given(st.lists(request, min_size=per_example, max_size=per_example))
    def prop(requests):
        example = Tally()
        drive(backend, lab, requests, example)
        tally.requests += example.requests
        tally.refusals += example.refusals
        tally.violations += example.violations
        assert example.violations == []

    try:
        prop()
    finally:
        station.close()
        lab.stop()
    return tally


@pytest.mark.slow
@pytest.mark.parametrize(
    "strategy,served,examples,per_example",
    [
        ("parallel", False, 40, 200),  # 8000 requests, in-process board
        ("parallel", True, 10, 200),  # 2000 requests over TCP
        ("cell", True, 4, 50),  # 200 requests over TCP: SMUs, bias SMU and matrix
    ],
)
def test_no_request_exceeds_a_limit_and_every_refusal_sends_nothing(
    strategy, served, examples, per_example
):
    tally = run_property(strategy, served, examples, per_example)
    assert tally.violations == []
    assert tally.requests == examples * per_example
    assert 0 < tally.refusals < tally.requests  # requests in and out of the limits
