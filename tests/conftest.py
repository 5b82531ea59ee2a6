"""Shared fixtures: ``but`` (each backend under test in turn) and ``make_backend``, and the
``--bench STATION.yaml`` option: the Backend conformance suite and the bench check run on
that station (a real bench, or the live station file of a served mock lab) and nothing
else is collected."""

from functools import cache
from pathlib import Path

import pytest

from tests.backends import BACKENDS, CONFORMANCE_BACKENDS, BackendUnderTest

#: What runs under ``--bench``: the conformance suite and the bring-up checklist (first,
#: so that it sees the test structure before the suite pulses the chip).
BENCH_CHECK_TEST = "test_the_checklist_passes_on_the_bench"
BENCH_TESTS = ("tests/conformance/",)


def pytest_addoption(parser):
    parser.addoption(
        "--bench",
        metavar="STATION.yaml",
        default=None,
        help="run the Backend conformance suite and the bench check against this station "
        "(its instruments are opened at their addresses); every other test is deselected",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--bench") is None:
        return
    keep = [
        item
        for item in items
        if item.nodeid.startswith(BENCH_TESTS) or item.name.startswith(BENCH_CHECK_TEST)
    ]
    keep.sort(key=lambda item: not item.name.startswith(BENCH_CHECK_TEST))
    config.hook.pytest_deselected(items=[i for i in items if i not in keep])
    items[:] = keep


@cache
def _bench_backend(station: str) -> BackendUnderTest:
    """The station of ``--bench`` as a backend under test: its chip section's nominal
    pulses, half the read limit for reads, and the MVM tolerances of the mock stations
    (1 % read noise; a bench with noisier reads needs wider ones here)."""
    from memhil.instruments.station import load_station_config
    from memhil.runs.backend_config import open_backend

    cfg = load_station_config(station)

    def make():
        return open_backend({"station": str(Path(station))})

    probe = make()
    try:
        caps = probe.capabilities
        set_pulse = (caps.set_pulse.amplitude_v, caps.set_pulse.width_s)
        reset_pulse = (caps.reset_pulse.amplitude_v, caps.reset_pulse.width_s)
    finally:
        probe.close()
    return BackendUnderTest(
        name=f"bench-{cfg.name}",
        make=make,
        set_pulse=set_pulse,
        reset_pulse=reset_pulse,
        v_read=0.5 * cfg.limits.v_read_max_v,
        mvm_rtol=0.08,
        mvm_atol_a=2e-8,
    )


def pytest_generate_tests(metafunc):
    """``but``: the ``--bench`` station alone when given, else every entry of BACKENDS
    (CONFORMANCE_BACKENDS, with the bench stations, in the conformance suite)."""
    if "but" not in metafunc.fixturenames:
        return
    station = metafunc.config.getoption("--bench")
    conformance = metafunc.definition.nodeid.startswith(BENCH_TESTS)
    if station is not None:
        backends = [_bench_backend(station)]
    else:
        backends = CONFORMANCE_BACKENDS if conformance else BACKENDS
    metafunc.parametrize("but", backends, ids=[b.name for b in backends])


@pytest.fixture
def bench_station(request) -> tuple[str, bool]:
    """(station file, mock): the ``--bench`` station on its instruments, else the B1500A
    example bench over an in-process mock lab."""
    station = request.config.getoption("--bench")
    if station is not None:
        return station, False
    root = Path(__file__).resolve().parents[1]
    return str(root / "examples" / "benches" / "b1500a_b2201_velox.yaml"), True


@pytest.fixture
def make_backend():
    """``make_backend(but)`` builds ``but``'s backend and closes it after the test (the
    hardware backend's instruments, servers and mock lab are released)."""
    made = []

    def make(but):
        backend = but.make()
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()
