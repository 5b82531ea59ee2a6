"""Mock labs and benches release what they hold: the example stations serve on free ports
(port 0) so two labs never collide; a port that cannot be bound is a ConfigError naming the
instrument, and the servers already started are stopped; closing a ``{station:}`` backend
closes its instruments, so the bench opens again in the same process."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from memhil.cli.app import main as cli_main
from memhil.core.errors import ConfigError
from memhil.instruments.station import load_station_config
from memhil.mock_hw.lab import MockLab
from memhil.runs.backend_config import open_backend
from tests.served_lab import serve_mock_lab

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def busy_port():
    """A loopback port held by another listener."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def _with_port(tmp_path, station: str, instrument: str, port: int) -> Path:
    data = yaml.safe_load((EXAMPLES / station).read_text())
    data["instruments"][instrument]["address"] = f"TCPIP0::127.0.0.1::{port}::SOCKET"
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_readme_usages_serve_and_run_at_once_on_free_ports(tmp_path):
    """``memhil mock-lab serve examples/mock_station.yaml`` (its own process) and a run on
    ``--mock-lab examples/mock_station.yaml`` (this process) at the same time."""
    live = tmp_path / "live.yaml"
    with serve_mock_lab(EXAMPLES / "mock_station.yaml", live) as lab_process:
        served = {i.address for i in load_station_config(live).instruments.values()}
        assert not any(a.endswith((":0", "::0::SOCKET")) for a in served)  # ports reported
        lab = MockLab(EXAMPLES / "mock_station.yaml").start()
        try:
            mine = {lab.address(n) for n in lab.servers}
            assert mine and not mine & served
        finally:
            lab.stop()
    assert lab_process.returncode == 0, lab_process.out
    for address in served:  # each reported on the console
        assert address in lab_process.out


def test_a_busy_port_is_a_config_error_and_releases_the_servers_started(busy_port, tmp_path):
    path = _with_port(tmp_path, "mock_station.yaml", "prober", busy_port)  # the 3rd served
    lab = MockLab(path)
    with pytest.raises(
        ConfigError,
        match=rf"bench\.yaml: instruments\.prober\.address: cannot "
        rf"serve on 127\.0\.0\.1:{busy_port}",
    ):
        lab.start()
    assert lab.servers == {}


def test_memhil_run_and_serve_with_a_busy_port_exit_2_and_leave_no_database(
    busy_port, tmp_path, capsys
):
    path = _with_port(tmp_path, "mock_station.yaml", "matrix", busy_port)
    proto = tmp_path / "p.yaml"
    proto.write_text("protocol: conductance_map\n")
    db = tmp_path / "runs.db"
    assert (
        cli_main(["run", str(proto), "--mock-lab", str(path), "--db", str(db), "--no-progress"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "instruments.matrix.address" in err, err
    assert not db.exists()
    assert cli_main(["mock-lab", "serve", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"127.0.0.1:{busy_port}" in err, err


def test_closing_a_station_backend_closes_its_instruments_and_it_reopens(tmp_path):
    lab = MockLab(EXAMPLES / "mock_station.yaml", serve_array_board_tcp=True).start()
    try:
        live = tmp_path / "live.yaml"
        live.write_text(yaml.safe_dump(lab.station_config().to_dict(), sort_keys=False))
        for _ in range(2):  # the second open collided with the first's QCoDeS names
            backend = open_backend({"station": str(live)})
            assert backend.read_conductance([(0, 0, 0)]).shape == (1,)
            backend.close()
        assert lab.sources_off()
    finally:
        lab.stop()
