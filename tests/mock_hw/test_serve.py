"""`memhil mock-lab serve station.yaml` runs the lab as a separate process that a Station
in this process drives over loopback, and stops cleanly on SIGTERM."""

from __future__ import annotations

from pathlib import Path

from qcodes.instrument import Instrument

from memhil.instruments.station import Station, load_station_config
from tests.served_lab import serve_mock_lab

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mock_station.yaml"


def _free_port_station(tmp_path: Path) -> tuple[dict, Path]:
    """The example station on free ports (tests may run in parallel), written to a file."""
    import yaml

    cfg = yaml.safe_load(EXAMPLE.read_text())
    for inst in cfg["instruments"].values():
        inst["address"] = (
            "socket://127.0.0.1:0"
            if inst["type"] == "memhil_array_board"
            else "TCPIP0::127.0.0.1::0::SOCKET"
        )
    station_file = tmp_path / "station.yaml"
    station_file.write_text(yaml.safe_dump(cfg))
    return cfg, station_file


def test_serve_in_a_separate_process(tmp_path):
    cfg, station_file = _free_port_station(tmp_path)
    live_file = tmp_path / "live.yaml"
    with serve_mock_lab(station_file, live_file) as served:
        live = load_station_config(live_file)
        assert live.instruments["smu"].address != cfg["instruments"]["smu"]["address"]
        with Station.from_config(live) as station:
            station.prober.load_map([(0, 0), (1, 0), (2, 0)])
            station.prober.step_to((0, 0))
            station.prober.contact()  # without contact the needles route nothing
            smu = station.smus["smu.smua"]
            station.matrix.connect_many([(1, 1), (12, 9)])
            smu.set_source_mode("voltage")
            smu.set_compliance(1e-3)
            smu.set_nplc(1.0)  # the guard bounds a measurement's energy by its integration time
            smu.set_level(0.05)
            smu.output(True)
            m = smu.measure()
            assert m.current_a > 0  # a VTEAM cell conducts (>= 1 mS * 0.05 V with sneak paths)
            assert station.array.read_columns([0.05] * 8).shape == (8,)
        Instrument.close_all()
    assert served.returncode == 0, served.out
    assert "mock lab stopped" in served.out


def test_a_stop_as_soon_as_the_station_file_appears_is_a_clean_stop(tmp_path):
    # the lab takes SIGTERM before it writes the live station file, and writes it whole
    # (apart, then renamed): a client reading it at once gets the whole file, and a stop
    # right then ends the lab through its clean path, not the default SIGTERM kill
    cfg, station_file = _free_port_station(tmp_path)
    live_file = tmp_path / "live.yaml"
    with serve_mock_lab(station_file, live_file) as served:
        assert set(load_station_config(live_file).instruments) == set(cfg["instruments"])
    assert served.returncode == 0, served.out
    assert "mock lab stopped" in served.out
    assert not (tmp_path / "live.yaml.partial").exists()
