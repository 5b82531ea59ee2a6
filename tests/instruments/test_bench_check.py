"""``memhil bench check``: the bring-up checklist on the example benches over the mock lab
(it passes), with the test resistor out of tolerance and with a prober that cannot make
contact (it fails with a clear line), and on a station without a test structure (it
refuses before anything is opened)."""

from __future__ import annotations

from pathlib import Path

import pytest

from memhil.cli.app import main
from memhil.core.config import load_yaml
from memhil.mock_hw.lab import MockLab
from memhil.runs.bench_check import check_bench

BENCHES = Path(__file__).resolve().parents[2] / "examples" / "benches"


def test_the_checklist_passes_on_the_bench(bench_station, capsys):
    # the --bench station on its instruments, else the B1500A example over the mock lab
    station, mock = bench_station
    assert main(["bench", "check", station, *(["--mock"] if mock else [])]) == 0
    out = capsys.readouterr().out
    for check in ("identity", "safe state", "prober contact", "compliance clamp"):
        line = next(x for x in out.splitlines() if x.startswith(check))
        assert " PASS " in line or " n/a " in line, line
    assert "bench check passed: " in out


def test_a_resistor_out_of_tolerance_and_a_lost_contact_fail_with_a_clear_line():
    station = load_yaml(BENCHES / "k2636b_b2201_velox.yaml")
    station["test_structure"]["r_ohm"] = 1.0e5  # the structure reads ~2.1 Mohm
    backend = MockLab.open_backend(station)
    try:
        results = {r.name: r for r in check_bench(backend)}
        assert results["device read"].passed is False
        assert results["device read"].tolerance == "1e+05 ohm +- 10 %"
        assert results["prober contact"].passed and results["compliance clamp"].passed
        assert results["safe state at the end"].passed
        backend.lab.emulators["prober"].lose_contact(persistent=True)
        results = {r.name: r for r in check_bench(backend)}
        assert results["prober contact"].passed is False
        assert results["prober contact"].value.startswith(
            "no contact: the test structure reads open"
        )
        assert results["safe state at the end"].passed
    finally:
        backend.close()


def test_the_cli_prints_the_failed_check_and_exits_1(tmp_path, capsys):
    import yaml

    station = load_yaml(BENCHES / "k2636b_b2201_velox.yaml")
    station["test_structure"]["r_ohm"] = 1.0e5
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(station))
    assert main(["bench", "check", str(path), "--mock"]) == 1
    err = capsys.readouterr().err
    assert "bench check FAILED: device read: " in err and "(expected 1e+05 ohm +- 10 %)" in err


def test_a_station_without_a_test_structure_is_refused_before_anything_opens(capsys):
    station = BENCHES.parent / "mock_station.yaml"
    assert main(["bench", "check", str(station), "--mock"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "declares no test_structure" in err[0]
    assert "Connected to" not in capsys.readouterr().out


@pytest.mark.parametrize("bad,match", [({"kind": "fuse"}, "kind"), ({"cell": [9, 0]}, "outside")])
def test_a_bad_test_structure_names_its_key(bad, match):
    from memhil.core.errors import ConfigError
    from memhil.instruments.station import load_station_config

    station = load_yaml(BENCHES / "k2636b_b2201_velox.yaml")
    station["test_structure"].update(bad)
    with pytest.raises(ConfigError, match=rf"test_structure.*{match}"):
        load_station_config(station)


def test_a_bench_that_cannot_be_opened_is_one_line(tmp_path, capsys):
    import yaml

    station = load_yaml(BENCHES / "k2636b_b2201_velox.yaml")
    station["instruments"]["smu"]["address"] = "TCPIP0::127.0.0.1::1::SOCKET"  # nothing there
    station["instruments"]["smu"]["options"] = {"visalib": "@py", "timeout": 1}
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(station))
    assert main(["bench", "check", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("memhil bench check: error: cannot open")
