"""The MPI SENTIO adapter over MPI's unmodified ``sentio-prober-control``, talking the
native remote command set to the mock lab's SENTIO emulator over a loopback socket, and
the bench check on a station with it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sentio_prober_control.Sentio.ProberBase import ProberException

from memhil.core.config import load_yaml
from memhil.instruments.adapters.sentio import SentioProberAdapter, sentio_address
from memhil.instruments.adapters.velox import ProberInterlockError
from memhil.instruments.capabilities import Prober
from memhil.mock_hw.chip import MockChip, WaferSpec
from memhil.mock_hw.emulators.sentio import SentioEmulator
from memhil.mock_hw.lab import MockLab
from memhil.mock_hw.server import LineServer
from memhil.runs.bench_check import check_bench

BENCHES = Path(__file__).resolve().parents[2] / "examples" / "benches"


@pytest.fixture
def station():
    chip = MockChip(
        {"rows": 2, "cols": 2, "device": {"model": "neurosim"}},
        wafer=WaferSpec(dies=((0, 0), (1, 0), (2, 1))),
    )
    emu = SentioEmulator(chip, name="sentio")
    server = LineServer(emu.handle, name="sentio").start()
    prober = SentioProberAdapter(server.resource_name, "sentio")
    yield chip, emu, prober
    prober.close()
    server.stop()


def test_the_adapter_steps_touches_down_and_separates_through_the_vendor_package(station):
    chip, emu, prober = station
    assert isinstance(prober, Prober)
    assert emu.commands()[:2] == ["*RCS 1", "status:get_version"]  # the package's opening
    prober.load_map([(0, 0), (1, 0), (2, 1)])
    prober.step_to((2, 1))
    assert prober.position() == ((2, 1), 0) and chip.die == (2, 1)
    assert "map:step_die 2, 1, 0" in emu.commands()
    prober.contact()
    assert prober.in_contact() and prober.contact_ok() and emu.contact_ok
    prober.safe_state()
    assert not prober.in_contact() and not emu.in_contact


def test_a_step_in_contact_is_refused_before_anything_moves(station):
    chip, emu, prober = station
    prober.contact()
    before = len(emu.commands())
    with pytest.raises(ProberInterlockError, match="separate first"):
        prober.step_to((1, 0))
    moved = [c for c in emu.commands()[before:] if c.startswith("map:step")]
    assert moved == [] and chip.die == (0, 0)
    with pytest.raises(ValueError, match="not in the loaded map"):
        prober.load_map([(0, 0)])
        prober.step_to((1, 0))


def test_sentio_refuses_a_step_in_contact_itself(station):
    _, _, prober = station
    prober.contact()
    with pytest.raises(ProberException, match="in contact"):
        prober.sentio.map.step_die(1, 0, 0)  # past the adapter's interlock: SENTIO says no


def test_a_socket_address_is_required():
    assert sentio_address("TCPIP0::192.168.1.5::35555::SOCKET") == "192.168.1.5:35555"
    with pytest.raises(ValueError, match="35555"):
        sentio_address("GPIB0::20::INSTR")


def test_the_bench_check_passes_with_sentio_and_fails_without_contact():
    cfg = load_yaml(BENCHES / "k2636b_b2201_velox.yaml")
    cfg["instruments"]["prober"] = {
        "type": "mpi_sentio",
        "address": "TCPIP0::127.0.0.1::0::SOCKET",
    }
    backend = MockLab.open_backend(cfg)
    try:
        results = {r.name: r for r in check_bench(backend)}
        assert all(r.passed for r in results.values()), results
        backend.lab.emulators["prober"].lose_contact(persistent=True)
        results = {r.name: r for r in check_bench(backend)}
        assert results["prober contact"].passed is False
    finally:
        backend.close()
